//! The per-user feature table segments are evaluated on (the contract is
//! `tenure_dsl::Feature`): computed in as few scans as the expression needs —
//! one for purchase facts (R, F, M, first/last seen, lifecycle, scores, means),
//! one per event count or property actually used, none otherwise.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{cast, col, ident, lit};
use futures::StreamExt;
use tenure_dsl::{Feature, LifecycleAxis, Metric};

use crate::lifecycle::{self, ACTIVITY, TENURE, Thresholds};
use crate::table::Events;
use crate::userstats::{self, NEVER, PurchaseSpec, UserStats};
use crate::{EngineError, Result};

/// Options of the feature table.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// Everything is "as of" this instant (UTC µs); later events must already
    /// be excluded from `events` (open it with `to = as_of`).
    pub as_of: i64,
    /// The purchase event.
    pub purchase: PurchaseSpec,
    /// Lifecycle thresholds.
    pub thresholds: Thresholds,
    /// Only users with at least one purchase (RFM's population: customers).
    pub buyers_only: bool,
}

/// Quintile score (1-5) of each value among `values`, by value so ties share a
/// score: a value scores 1 plus the number of quintile cut points (the values at
/// 1-based ranks ceil(n/5), ceil(2n/5), ceil(3n/5), ceil(4n/5) of the sorted
/// list) it exceeds.
pub fn quintile_scores(values: &[i128]) -> Vec<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let cuts: Vec<i128> = (1..5).map(|k| sorted[(k * n).div_ceil(5) - 1]).collect();
    values
        .iter()
        .map(|v| 1 + cuts.iter().filter(|c| v > c).count() as i64)
        .collect()
}

/// Builds the feature table (`user_key` plus one column per feature) for users
/// seen by `spec.as_of`.
pub async fn feature_table(
    events: &Events,
    features: &BTreeSet<Feature>,
    spec: &FeatureSpec,
) -> Result<RecordBatch> {
    // When nothing needs first/last seen and the whole history up to the newest
    // event is in range, every user key is in the population (each was assigned
    // from a committed event), so only purchase rows need to be read.
    let whole_history = events.options.from.is_none()
        && events.options.to.is_none()
        && events.ts_range.is_some_and(|(_, max)| spec.as_of >= max);
    let needs_seen = features.iter().any(|f| {
        matches!(
            f,
            Feature::FirstSeen | Feature::LastSeen | Feature::Lifecycle(LifecycleAxis::Tenure)
        )
    });
    let purchases_only = whole_history && !needs_seen;
    // Revenue is read only for features built on it.
    let needs_revenue = features.iter().any(|f| {
        !matches!(
            f,
            Feature::Recency
                | Feature::Frequency
                | Feature::FirstSeen
                | Feature::LastSeen
                | Feature::Lifecycle(_)
                | Feature::RScore
                | Feature::FScore
                | Feature::Mean(Metric::Recency | Metric::Frequency)
                | Feature::Property(_)
                | Feature::EventCount { .. }
        )
    });
    let mut stats =
        userstats::scan_with(events, &spec.purchase, purchases_only, needs_revenue).await?;
    if purchases_only {
        // Everyone in the dictionary was seen by `as_of`.
        stats.first_seen.iter_mut().for_each(|t| *t = i64::MIN + 1);
    }
    let users: Vec<usize> = (0..stats.len())
        .filter(|&u| stats.first_seen[u] != NEVER && stats.first_seen[u] <= spec.as_of)
        .filter(|&u| !spec.buyers_only || stats.purchases[u] > 0)
        .collect();
    let mut fields = vec![Field::new("user_key", DataType::UInt32, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from_iter_values(
        users.iter().map(|&u| u as u32),
    ))];
    let recency = |u: usize| {
        let l = stats.last_purchase[u];
        (l != NEVER).then(|| lifecycle::days_between(l, spec.as_of))
    };
    // Scores rank buyers only; users who never bought have no score.
    let buyers: Vec<usize> = users
        .iter()
        .copied()
        .filter(|&u| stats.purchases[u] > 0)
        .collect();
    let score_col = |metric: &dyn Fn(usize) -> i128| -> ArrayRef {
        let scores = quintile_scores(&buyers.iter().map(|&u| metric(u)).collect::<Vec<_>>());
        let by_user: HashMap<usize, i64> = buyers.iter().copied().zip(scores).collect();
        Arc::new(Int64Array::from_iter(
            users.iter().map(|u| by_user.get(u).copied()),
        ))
    };
    for f in features {
        let array: ArrayRef = match f {
            Feature::Recency => Arc::new(Int64Array::from_iter(users.iter().map(|&u| recency(u)))),
            Feature::Frequency => Arc::new(Int64Array::from_iter_values(
                users.iter().map(|&u| stats.purchases[u] as i64),
            )),
            Feature::Monetary => Arc::new(
                Decimal128Array::from_iter_values(users.iter().map(|&u| stats.revenue[u]))
                    .with_precision_and_scale(18, 2)?,
            ),
            Feature::FirstSeen => ts_col(users.iter().map(|&u| Some(stats.first_seen[u]))),
            Feature::LastSeen => ts_col(users.iter().map(|&u| Some(stats.last_seen[u]))),
            Feature::Lifecycle(LifecycleAxis::Tenure) => {
                Arc::new(StringArray::from_iter(users.iter().map(|&u| {
                    lifecycle::tenure_stage(&stats, u, spec.as_of, &spec.thresholds)
                        .map(|s| TENURE[s])
                })))
            }
            Feature::Lifecycle(LifecycleAxis::Activity) => {
                Arc::new(StringArray::from_iter(users.iter().map(|&u| {
                    lifecycle::activity_stage(&stats, u, spec.as_of, &spec.thresholds)
                        .map(|s| ACTIVITY[s])
                        .filter(|s| *s != "none")
                })))
            }
            // More recent is better: score the negated recency.
            Feature::RScore => score_col(&|u| -(recency(u).unwrap_or(i64::MAX) as i128)),
            Feature::FScore => score_col(&|u| stats.purchases[u] as i128),
            Feature::MScore => score_col(&|u| stats.revenue[u]),
            Feature::Mean(m) => mean_col(m, &stats, &users, &recency)?,
            Feature::Property(name) => latest_property(events, name, &users, spec.as_of).await?,
            Feature::EventCount { event, within } => {
                event_counts(
                    events,
                    event,
                    within.map(|d| d.micros()),
                    &users,
                    spec.as_of,
                )
                .await?
            }
        };
        fields.push(Field::new(f.column_name(), array.data_type().clone(), true));
        cols.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn ts_col(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

fn mean_col(
    m: &Metric,
    stats: &UserStats,
    users: &[usize],
    recency: &dyn Fn(usize) -> Option<i64>,
) -> Result<ArrayRef> {
    let n = users.len();
    Ok(match m {
        Metric::Recency => {
            let vals: Vec<i64> = users.iter().filter_map(|&u| recency(u)).collect();
            let mean =
                (!vals.is_empty()).then(|| vals.iter().sum::<i64>() as f64 / vals.len() as f64);
            Arc::new(Float64Array::from(vec![mean; n]))
        }
        Metric::Frequency => {
            let mean = (n > 0).then(|| {
                users
                    .iter()
                    .map(|&u| stats.purchases[u] as f64)
                    .sum::<f64>()
                    / n as f64
            });
            Arc::new(Float64Array::from(vec![mean; n]))
        }
        Metric::Monetary => {
            // Decimal128(22, 6), as DataFusion's avg of Decimal128(18, 2) is.
            let sum: i128 = users.iter().map(|&u| stats.revenue[u]).sum();
            let mean = (n > 0).then(|| sum * 10_000 / n as i128);
            Arc::new(Decimal128Array::from(vec![mean; n]).with_precision_and_scale(22, 6)?)
        }
    })
}

async fn latest_property(
    events: &Events,
    name: &str,
    users: &[usize],
    as_of: i64,
) -> Result<ArrayRef> {
    if !events.has_column(name) || ["user_key", "ts", "ingested_at", "properties"].contains(&name) {
        return Err(EngineError::BadRequest(format!(
            "property `{name}` is not a typed column of this store; declare it in the ingest config (or use variant)"
        )));
    }
    let n = events.users();
    let df = events
        .in_range()
        .await?
        .filter(ident(name).is_not_null())?
        .select(vec![
            col("user_key"),
            col("ts"),
            cast(ident(name), DataType::Utf8).alias("v"),
        ])?;
    let mut best_ts = vec![i64::MIN; n];
    let mut value: Vec<Option<String>> = vec![None; n];
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let v = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            if u < n
                && ts[i] <= as_of
                && (ts[i] > best_ts[u]
                    || (ts[i] == best_ts[u] && Some(v.value(i)) > value[u].as_deref()))
            {
                best_ts[u] = ts[i];
                value[u] = Some(v.value(i).to_string());
            }
        }
    }
    Ok(Arc::new(StringArray::from_iter(
        users.iter().map(|&u| value[u].clone()),
    )))
}

async fn event_counts(
    events: &Events,
    event: &str,
    within: Option<i64>,
    users: &[usize],
    as_of: i64,
) -> Result<ArrayRef> {
    let n = events.users();
    let df = events
        .in_range()
        .await?
        .filter(col("event").eq(lit(event.to_string())))?
        .select(vec![col("user_key"), col("ts")])?;
    let since = within.map(|w| as_of - w).unwrap_or(i64::MIN);
    let mut counts = vec![0i64; n];
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            if u < n && ts[i] >= since && ts[i] <= as_of {
                counts[u] += 1;
            }
        }
    }
    Ok(Arc::new(Int64Array::from_iter_values(
        users.iter().map(|&u| counts[u]),
    )))
}

/// The store's users dictionary as a table (`user_key`, `user_id`), read with
/// DataFusion from the committed segments.
pub async fn users_table(events: &Events) -> Result<datafusion::dataframe::DataFrame> {
    let urls: Vec<String> = events
        .snapshot
        .users
        .segments
        .iter()
        .map(|s| format!("tenure://store/{}", events.store.path(s)))
        .collect();
    if urls.is_empty() {
        return Err(events.empty_error());
    }
    Ok(events
        .ctx
        .read_parquet(urls, datafusion::prelude::ParquetReadOptions::default())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::quintile_scores;

    #[test]
    fn quintiles_by_value_with_ties() {
        assert_eq!(quintile_scores(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5]);
        assert_eq!(quintile_scores(&[10, 10, 10, 10, 10]), [1, 1, 1, 1, 1]);
        assert_eq!(
            quintile_scores(&[1, 1, 1, 1, 1, 1, 1, 1, 2, 3]),
            [1, 1, 1, 1, 1, 1, 1, 1, 5, 5]
        );
        assert_eq!(quintile_scores(&[30, 10, 20]), [4, 1, 2]);
        assert!(quintile_scores(&[]).is_empty());
    }
}
