//! RFM segments as a typed request: the customers (users with a purchase as
//! of an instant), how many fall in each named segment of a segment set
//! (`queries/rfm_segments.seg`: champions, loyal, at risk, ...), and the
//! customers per R x F score cell. What `tenure rfm` prints and job files
//! write.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use tenure_dsl::{CompileContext, Feature, SegmentLibrary};

use crate::features::{FeatureSpec, feature_table};
use crate::lifecycle::Thresholds;
use crate::table::Events;
use crate::userstats::PurchaseSpec;
use crate::{EngineError, Result};

/// What to compute.
#[derive(Debug, Clone)]
pub struct RfmRequest {
    /// Scores and segments as of this instant (inclusive, UTC µs).
    pub as_of: i64,
    /// The purchase event.
    pub purchase_event: String,
    /// Quintiles or fixed thresholds.
    pub scoring: crate::features::Scoring,
}

/// The segment distribution and the score grid.
#[derive(Debug, Clone)]
pub struct RfmResult {
    /// Rows of [`segments_schema`]: users per segment and their share of
    /// the customers, in the set's order; the last row is all customers.
    pub segments: RecordBatch,
    /// Customers per R x F score cell: `r_score, f_score, users`, R
    /// descending, then F ascending.
    pub grid: RecordBatch,
}

/// `segment, users, share`.
pub fn segments_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, false),
            Field::new("users", DataType::UInt64, false),
            Field::new("share", DataType::Float64, false),
        ]))
    });
    SCHEMA.clone()
}

/// The RFM segments of `library` over `events` (read up to the as-of).
pub async fn rfm(
    events: &Events,
    request: &RfmRequest,
    library: &SegmentLibrary,
) -> Result<RfmResult> {
    let ctx = CompileContext::new(request.as_of);
    let mut features: BTreeSet<Feature> = [
        Feature::Recency,
        Feature::Frequency,
        Feature::Monetary,
        Feature::RScore,
        Feature::FScore,
    ]
    .into();
    let mut compiled = Vec::new();
    for s in library.segments() {
        features.extend(tenure_dsl::features(&s.expr));
        let expr =
            tenure_dsl::compile(&s.expr, &ctx).map_err(|e| EngineError::from_dsl(e, &s.source))?;
        compiled.push((s.name.clone(), expr));
    }
    let spec = FeatureSpec {
        as_of: request.as_of,
        purchase: PurchaseSpec {
            event: request.purchase_event.clone(),
        },
        thresholds: Thresholds::default(),
        buyers_only: true,
        scoring: request.scoring.clone(),
    };
    let table = feature_table(events, &features, &spec).await?;
    let total = table.num_rows() as u64;
    let sctx = SessionContext::new();
    sctx.register_batch("features", table)?;
    let (mut names, mut users) = (Vec::new(), Vec::new());
    for (name, expr) in compiled {
        let n = sctx.table("features").await?.filter(expr)?.count().await?;
        names.push(name);
        users.push(n as u64);
    }
    names.push("(customers)".into());
    users.push(total);
    let share: Float64Array = users
        .iter()
        .map(|&n| {
            Some(if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            })
        })
        .collect();
    let segments = RecordBatch::try_new(
        segments_schema(),
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(users)),
            Arc::new(share),
        ],
    )?;
    let grid = sctx
        .table("features")
        .await?
        .aggregate(
            vec![col("r_score"), col("f_score")],
            vec![datafusion::functions_aggregate::count::count(lit(1)).alias("users")],
        )?
        .sort(vec![
            col("r_score").sort(false, false),
            col("f_score").sort(true, false),
        ])?
        .collect()
        .await?;
    let grid_schema = match grid.first() {
        Some(b) => b.schema(),
        None => {
            let scores =
                tenure_dsl::feature_schema(&BTreeSet::from([Feature::RScore, Feature::FScore]));
            Arc::new(Schema::new(vec![
                scores.field_with_name("r_score")?.clone(),
                scores.field_with_name("f_score")?.clone(),
                Field::new("users", DataType::Int64, false),
            ]))
        }
    };
    let grid = datafusion::arrow::compute::concat_batches(&grid_schema, &grid)?;
    Ok(RfmResult { segments, grid })
}
