//! A/B test metrics from events: who is in which arm, and per arm the sufficient
//! statistics (`tenure_stats::ArmData`) that `tenure abtest` reads out.
//!
//! Assignment. A user's arm is the value of the `--by` column (default
//! `variant`) on their events in range. A user whose events carry one value is
//! in that arm from their *exposure*: the earliest event carrying it. A user
//! whose events carry two or more different values saw several arms; such users
//! are counted ([`Exposures::multiple`]) and excluded from every metric, since
//! neither arm's effect is theirs alone. Users with no value are not in the test.
//!
//! Metrics see only the events of exposed users from their exposure on
//! ([`Exposures::restrict`]): what a user did before the experiment reached them
//! is not an effect of it (PostHog, Amplitude and GrowthBook count the same way).
//! Every user of an arm is in its denominator, also those with no metric event
//! (a count or sum of 0, not converted). Sums of decimal columns (`revenue`) are
//! exact integers in the column's unit, as are their squares; only the final per
//! arm totals become floats, through their exact decimal text.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    UInt32Type,
};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast, col,
    ident, lit,
};
use futures::StreamExt;
use tenure_stats::{ArmData, ArmSummary};

use crate::features::{FeatureSpec, feature_table};
use crate::table::Events;
use crate::userstats::NEVER;
use crate::{EngineError, Result};

/// `arm_of` of a user without any value of the arm column.
pub const UNASSIGNED: u32 = u32::MAX;
/// `arm_of` of a user whose events carry more than one arm.
pub const MULTIPLE: u32 = u32::MAX - 1;

/// Columns that cannot name arms: they identify users or times, not variants.
const NOT_ARM_COLUMNS: [&str; 5] = ["user_id", "user_key", "ts", "ingested_at", "event_id"];

/// Every user's arm and exposure time.
#[derive(Debug, Clone)]
pub struct Exposures {
    /// The column arms were read from.
    pub column: String,
    /// Arm names, sorted.
    pub arms: Vec<String>,
    /// Arm index of each user key, or [`UNASSIGNED`] / [`MULTIPLE`].
    pub arm_of: Vec<u32>,
    /// Exposure time (UTC µs) of each user key; [`NEVER`] unless in an arm.
    pub exposed_at: Arc<Vec<i64>>,
    /// Users per arm.
    pub users: Vec<u64>,
    /// Users whose events carry more than one arm (excluded).
    pub multiple: u64,
    /// Users with events in range but no arm value (not in the test).
    pub unassigned: u64,
    /// Values seen only on users who saw more than one arm: arms without users
    /// of their own, left out of the readout.
    pub shared_only: Vec<String>,
}

/// Reads every user's arm from `column` (see the module docs).
pub async fn exposures(events: &Events, column: &str) -> Result<Exposures> {
    if !events.has_column(column) || NOT_ARM_COLUMNS.contains(&column) {
        return Err(EngineError::BadRequest(format!(
            "cannot read arms from `{column}`: not a column of the events table \
             (try variant or a declared property)"
        )));
    }
    let n = events.users();
    let df = events.in_range().await?.select(vec![
        col("user_key"),
        col("ts"),
        cast(ident(column), DataType::Utf8).alias("arm"),
    ])?;
    let mut seen = vec![false; n];
    let mut first_ts = vec![NEVER; n];
    // Arm indices in order of first appearance; sorted at the end.
    let mut arm = vec![UNASSIGNED; n];
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let values = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            if u >= n {
                return Err(EngineError::Unreadable(format!(
                    "user_key beyond the users dictionary ({n} users): the store is inconsistent"
                )));
            }
            seen[u] = true;
            if !values.is_valid(i) {
                continue;
            }
            let v = values.value(i);
            let a = match index.get(v) {
                Some(&a) => a,
                None => {
                    let a = names.len() as u32;
                    index.insert(v.to_string(), a);
                    names.push(v.to_string());
                    a
                }
            };
            arm[u] = match arm[u] {
                UNASSIGNED => a,
                same if same == a => a,
                _ => MULTIPLE,
            };
            if first_ts[u] == NEVER || ts[i] < first_ts[u] {
                first_ts[u] = ts[i];
            }
        }
    }
    let mut order: Vec<u32> = (0..names.len() as u32).collect();
    order.sort_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
    let mut rank = vec![0u32; names.len()];
    for (r, &a) in order.iter().enumerate() {
        rank[a as usize] = r as u32;
    }
    let mut users = vec![0u64; names.len()];
    let (mut multiple, mut unassigned) = (0, 0);
    for u in 0..n {
        match arm[u] {
            UNASSIGNED => {
                unassigned += u64::from(seen[u]);
                first_ts[u] = NEVER;
            }
            MULTIPLE => {
                multiple += 1;
                first_ts[u] = NEVER;
            }
            a => {
                arm[u] = rank[a as usize];
                users[arm[u] as usize] += 1;
            }
        }
    }
    // A value seen only by users who also saw another arm leaves an arm without
    // users of its own: it is named, not read out as an empty arm.
    let mut arms = Vec::new();
    let mut kept_users = Vec::new();
    let mut shared_only = Vec::new();
    let mut renumber = vec![UNASSIGNED; names.len()];
    for (r, &a) in order.iter().enumerate() {
        let name = names[a as usize].clone();
        if users[r] == 0 {
            shared_only.push(name);
        } else {
            renumber[r] = arms.len() as u32;
            arms.push(name);
            kept_users.push(users[r]);
        }
    }
    for a in arm.iter_mut().filter(|a| (**a as usize) < names.len()) {
        *a = renumber[*a as usize];
    }
    Ok(Exposures {
        column: column.to_string(),
        arms,
        arm_of: arm,
        exposed_at: Arc::new(first_ts),
        users: kept_users,
        multiple,
        unassigned,
        shared_only,
    })
}

impl Exposures {
    /// The same store, with `events` limited to the events of users in an arm
    /// from their exposure on. Every analysis run on the result (feature tables,
    /// funnels) sees only what happened to users while in the experiment.
    pub async fn restrict(&self, events: &Events) -> Result<Events> {
        let all = events.ctx.table_provider("events").await?;
        let ctx = SessionContext::new_with_config_rt(
            events.ctx.copied_config(),
            events.ctx.runtime_env(),
        );
        ctx.register_table("events_all", all)?;
        let exposed_at = ScalarUDF::from(ExposedAt::new(self.exposed_at.clone()));
        let view = ctx
            .table("events_all")
            .await?
            .filter(col("ts").gt_eq(exposed_at.call(vec![col("user_key")])))?
            .into_view();
        ctx.register_table("events", view)?;
        Ok(Events {
            ctx,
            since: Some(Arc::new(
                self.exposed_at
                    .iter()
                    .map(|&t| if t == NEVER { i64::MAX } else { t })
                    .collect(),
            )),
            ..events.clone()
        })
    }

    /// The arms' statistics of a per-user conversion flag (indexed by user key).
    pub fn proportion(&self, converted: &[bool]) -> Vec<ArmSummary> {
        let mut conversions = vec![0u64; self.arms.len()];
        for (u, &a) in self.arm_of.iter().enumerate() {
            if (a as usize) < self.arms.len() && converted.get(u).copied().unwrap_or(false) {
                conversions[a as usize] += 1;
            }
        }
        self.arms
            .iter()
            .zip(&self.users)
            .zip(conversions)
            .map(|((arm, &users), conversions)| ArmSummary {
                arm: arm.clone(),
                data: ArmData::Proportion { users, conversions },
            })
            .collect()
    }

    /// The arms' statistics of exact per-user values, in units of 10^-`scale`
    /// (indexed by user key; users without a value count as 0).
    pub fn exact_mean(&self, values: &[i128], scale: u32) -> Result<Vec<ArmSummary>> {
        let k = self.arms.len();
        let (mut sum, mut squares) = (vec![0i128; k], vec![0i128; k]);
        let overflow =
            || EngineError::BadRequest("per-user values too large to sum exactly".to_string());
        for (u, &a) in self.arm_of.iter().enumerate() {
            let a = a as usize;
            let v = values.get(u).copied().unwrap_or(0);
            if a >= k || v == 0 {
                continue;
            }
            sum[a] = sum[a].checked_add(v).ok_or_else(overflow)?;
            let sq = v.checked_mul(v).ok_or_else(overflow)?;
            squares[a] = squares[a].checked_add(sq).ok_or_else(overflow)?;
        }
        Ok((0..k)
            .map(|a| ArmSummary {
                arm: self.arms[a].clone(),
                data: ArmData::Mean {
                    n: self.users[a],
                    sum: decimal_to_f64(sum[a], scale),
                    sum_squares: decimal_to_f64(squares[a], 2 * scale),
                },
            })
            .collect())
    }

    /// The arms' statistics of floating-point per-user values.
    pub fn float_mean(&self, values: &[f64]) -> Vec<ArmSummary> {
        let k = self.arms.len();
        let (mut sum, mut squares) = (vec![0f64; k], vec![0f64; k]);
        for (u, &a) in self.arm_of.iter().enumerate() {
            let a = a as usize;
            if a < k {
                let v = values.get(u).copied().unwrap_or(0.0);
                sum[a] += v;
                squares[a] += v * v;
            }
        }
        (0..k)
            .map(|a| ArmSummary {
                arm: self.arms[a].clone(),
                data: ArmData::Mean {
                    n: self.users[a],
                    sum: sum[a],
                    sum_squares: squares[a],
                },
            })
            .collect()
    }
}

/// `v · 10^-scale` as the nearest float: through the exact decimal text, so the
/// only rounding is the final one (dividing by a power of ten would round twice).
pub fn decimal_to_f64(v: i128, scale: u32) -> f64 {
    let sign = if v < 0 { "-" } else { "" };
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let text = if scale == 0 {
        format!("{sign}{digits}")
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{digits:0>scale$}")
    };
    text.parse().unwrap_or(f64::NAN)
}

/// Per-user number of `event` events among the restricted events.
pub async fn event_counts(restricted: &Events, event: &str) -> Result<Vec<i128>> {
    let n = restricted.users();
    let df = restricted
        .in_range()
        .await?
        .filter(col("event").eq(lit(event.to_string())))?
        .select(vec![col("user_key")])?;
    let mut counts = vec![0i128; n];
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for &u in batch.column(0).as_primitive::<UInt32Type>().values() {
            if let Some(c) = counts.get_mut(u as usize) {
                *c += 1;
            }
        }
    }
    Ok(counts)
}

/// Per-user sums of a numeric column: exact for decimal and integer columns.
pub enum ColumnSums {
    /// Integers in units of 10^-`scale` (decimal and integer columns).
    Exact {
        /// Per-user sums.
        values: Vec<i128>,
        /// Decimal places of the unit.
        scale: u32,
    },
    /// Floating-point columns.
    Float(Vec<f64>),
}

/// Per-user sum of `column` (nulls count as 0) among the restricted events.
pub async fn column_sums(restricted: &Events, column: &str) -> Result<ColumnSums> {
    let schema = tenure_schema::event_schema(&restricted.snapshot.properties);
    let numeric: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type().is_numeric() && f.name() != "user_key")
        .map(|f| f.name().clone())
        .collect();
    let field = schema
        .field_with_name(column)
        .ok()
        .filter(|_| numeric.iter().any(|c| c == column));
    let Some(field) = field else {
        return Err(EngineError::BadRequest(format!(
            "cannot sum `{column}`: not a numeric column of the events table (numeric columns: {})",
            numeric.join(", ")
        )));
    };
    let (target, scale) = match field.data_type() {
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) if *s >= 0 => {
            (DataType::Decimal128(38, *s), Some(*s as u32))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => (DataType::Float64, None),
        DataType::Decimal128(..) | DataType::Decimal256(..) => (DataType::Float64, None),
        _ => (DataType::Int64, Some(0)),
    };
    let n = restricted.users();
    let df = restricted
        .in_range()
        .await?
        .filter(ident(column).is_not_null())?
        .select(vec![
            col("user_key"),
            cast(ident(column), target).alias("v"),
        ])?;
    let mut exact = vec![0i128; if scale.is_some() { n } else { 0 }];
    let mut float = vec![0f64; if scale.is_none() { n } else { 0 }];
    let mut stream = df.execute_stream().await?;
    let overflow = || EngineError::BadRequest(format!("sum of `{column}` too large"));
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let values: &ArrayRef = batch.column(1);
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            if u >= n || !values.is_valid(i) {
                continue;
            }
            match values.data_type() {
                DataType::Decimal128(..) => {
                    let v = values.as_primitive::<Decimal128Type>().value(i);
                    exact[u] = exact[u].checked_add(v).ok_or_else(overflow)?;
                }
                DataType::Int64 => {
                    let v = i128::from(values.as_primitive::<Int64Type>().value(i));
                    exact[u] = exact[u].checked_add(v).ok_or_else(overflow)?;
                }
                _ => float[u] += values.as_primitive::<Float64Type>().value(i),
            }
        }
    }
    Ok(match scale {
        Some(scale) => ColumnSums::Exact {
            values: exact,
            scale,
        },
        None => ColumnSums::Float(float),
    })
}

/// Which restricted users match a segment (indexed by user key), evaluated on
/// the feature table as of `spec.as_of`.
pub async fn segment_matches(
    restricted: &Events,
    segment: &tenure_dsl::Segment,
    spec: &FeatureSpec,
) -> Result<Vec<bool>> {
    let table = feature_table(restricted, &segment.features, spec).await?;
    let ctx = SessionContext::new();
    ctx.register_batch("features", table)?;
    let matched = ctx
        .table("features")
        .await?
        .filter(segment.expr.clone())?
        .select(vec![col("user_key")])?
        .collect()
        .await?;
    let mut out = vec![false; restricted.users()];
    for batch in matched {
        for &u in batch.column(0).as_primitive::<UInt32Type>().values() {
            if let Some(m) = out.get_mut(u as usize) {
                *m = true;
            }
        }
    }
    Ok(out)
}

/// `exposed_at(user_key)`: the user's exposure time, null outside the arms.
/// A lookup in the exposure table instead of a join keeps the scan in file
/// order and partitioning, and costs one array index per row.
#[derive(Debug)]
struct ExposedAt {
    signature: Signature,
    at: Arc<Vec<i64>>,
}

impl ExposedAt {
    fn new(at: Arc<Vec<i64>>) -> Self {
        Self {
            signature: Signature::exact(vec![DataType::UInt32], Volatility::Immutable),
            at,
        }
    }
}

impl PartialEq for ExposedAt {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.at, &other.at)
    }
}

impl Eq for ExposedAt {}

impl Hash for ExposedAt {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.at) as usize).hash(state);
    }
}

impl ScalarUDFImpl for ExposedAt {
    fn name(&self) -> &str {
        "tenure_exposed_at"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let keys = args.args[0].clone().into_array(args.number_rows)?;
        let keys = keys.as_primitive::<UInt32Type>();
        let out: TimestampMicrosecondArray = keys
            .iter()
            .map(|k| {
                k.and_then(|k| self.at.get(k as usize).copied())
                    .filter(|&t| t != NEVER)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out.with_timezone("UTC"))))
    }
}

#[cfg(test)]
mod tests {
    use super::decimal_to_f64;

    #[test]
    fn decimals_convert_through_their_text() {
        assert_eq!(decimal_to_f64(139687, 2), 1396.87);
        assert_eq!(decimal_to_f64(-5, 2), -0.05);
        assert_eq!(decimal_to_f64(5237797670000, 8), 52377.9767);
        assert_eq!(decimal_to_f64(42, 0), 42.0);
        assert_eq!(decimal_to_f64(0, 4), 0.0);
    }
}
