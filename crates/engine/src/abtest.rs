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

mod metric;
pub mod readout;

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::logical_expr::{col, lit};
use tenure_stats::{ArmData, ArmSummary};

use crate::features::{FeatureSpec, feature_table};
use crate::table::Events;
use crate::userstats::NEVER;
use crate::{EngineError, Result};

pub use metric::{Metric, MetricSpec, parse_metric};
pub use readout::{AbtestRequest, summaries};

/// Dimension values read out one by one with `--by-dimension` (GrowthBook's
/// default); the values with fewer users are read together as `(other)`.
pub const MAX_DIMENSIONS: usize = 20;

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
    /// Users of the arms outside the population (`--population`), left out.
    pub outside: u64,
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
    let fold = AssignFold {
        column: column.to_string(),
    };
    let Assigned {
        seen,
        mut first_ts,
        mut arm,
        names,
        ..
    } = crate::fold::partial(events, fold).await?;
    // Only values are numbered (nulls are skipped), so every id has a name.
    let names: Vec<String> = names
        .values()
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect();
    if arm.len() != n {
        return Err(EngineError::Internal(format!(
            "arm assignment covers {} of {n} users",
            arm.len()
        )));
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
        outside: 0,
    })
}

impl Exposures {
    /// The same store, with `events` limited to the events of users in an arm
    /// from their exposure on. Every analysis run on the result (feature tables,
    /// funnels, the metrics here) sees only what happened to users while in
    /// the experiment: the limit is an input of the fold scans
    /// ([`Events::since`]), a vector of exposure times rather than a function
    /// or view in the session, and a DataFusion read of the result
    /// ([`Events::in_range`]) is refused rather than unrestricted.
    pub async fn restrict(&self, events: &Events) -> Result<Events> {
        Ok(Events {
            since: Some(Arc::new(
                self.exposed_at
                    .iter()
                    .map(|&t| if t == NEVER { i64::MAX } else { t })
                    .collect(),
            )),
            ..events.clone()
        })
    }

    /// The test limited to the users of a population (`matches`, by user
    /// key): the others are out of every arm, as if never exposed.
    pub fn population(&self, matches: &[bool]) -> Exposures {
        let keep = |u: usize| matches.get(u).copied().unwrap_or(false);
        let mut limited = self.only(keep);
        limited.outside = self.users.iter().sum::<u64>() - limited.users.iter().sum::<u64>();
        limited.exposed_at = Arc::new(
            self.exposed_at
                .iter()
                .enumerate()
                .map(|(u, &t)| if keep(u) { t } else { NEVER })
                .collect(),
        );
        limited
    }

    /// The same arms holding only the users `keep` says (by user key).
    fn only(&self, keep: impl Fn(usize) -> bool) -> Exposures {
        let k = self.arms.len();
        let mut users = vec![0u64; k];
        let arm_of: Vec<u32> = self
            .arm_of
            .iter()
            .enumerate()
            .map(|(u, &a)| {
                if (a as usize) < k && keep(u) {
                    users[a as usize] += 1;
                    a
                } else if (a as usize) < k {
                    UNASSIGNED
                } else {
                    a
                }
            })
            .collect();
        Exposures {
            arm_of,
            users,
            ..self.clone()
        }
    }

    /// The test's users split by their value of `column` (read on their
    /// events since exposure, `restricted`): one view of the arms per value,
    /// the values with the most users first up to [`MAX_DIMENSIONS`] (the
    /// rest together as `(other)`), then `(several)` for users whose events
    /// carry more than one value and `(none)` for users with none. Each view
    /// has every arm, so its sample-ratio check is its own.
    pub async fn by_dimension(
        &self,
        restricted: &Events,
        column: &str,
    ) -> Result<Vec<(Option<String>, Exposures)>> {
        if column == self.column {
            return Err(EngineError::BadRequest(format!(
                "--by-dimension {column}: that is the arm column (--by)"
            )));
        }
        let dims = exposures(restricted, column).await.map_err(|e| match e {
            EngineError::BadRequest(m) => {
                EngineError::BadRequest(m.replace("cannot read arms from", "cannot split by"))
            }
            other => other,
        })?;
        let k = self.arms.len();
        let n = dims.arms.len();
        let mut counts = vec![0u64; n];
        for (u, &a) in self.arm_of.iter().enumerate() {
            if (a as usize) < k
                && let Some(&d) = dims.arm_of.get(u)
                && (d as usize) < n
            {
                counts[d as usize] += 1;
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| counts[i] > 0).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let other = order.len() > MAX_DIMENSIONS;
        order.truncate(MAX_DIMENSIONS);
        order.sort_unstable(); // by name
        const OTHER: usize = usize::MAX - 2;
        const SEVERAL: usize = usize::MAX - 1;
        const NONE: usize = usize::MAX;
        let mut group = vec![OTHER; n];
        for &i in &order {
            group[i] = i;
        }
        let group_of = |u: usize| match dims.arm_of.get(u).copied() {
            Some(MULTIPLE) => SEVERAL,
            Some(d) if (d as usize) < n => group[d as usize],
            _ => NONE,
        };
        let mut labels: Vec<(String, usize)> =
            order.iter().map(|&i| (dims.arms[i].clone(), i)).collect();
        let present = |g: usize| {
            self.arm_of
                .iter()
                .enumerate()
                .any(|(u, &a)| (a as usize) < k && group_of(u) == g)
        };
        if other {
            labels.push(("(other)".into(), OTHER));
        }
        for (name, g) in [("(several)", SEVERAL), ("(none)", NONE)] {
            if present(g) {
                labels.push((name.into(), g));
            }
        }
        Ok(labels
            .into_iter()
            .map(|(name, g)| (Some(name), self.only(|u| group_of(u) == g)))
            .collect())
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

    /// The arms' statistics of a ratio of per-user numerators and
    /// denominators (indexed by user key; missing users count as 0).
    pub fn ratio(&self, num: &[f64], den: &[f64]) -> Vec<ArmSummary> {
        let k = self.arms.len();
        let mut sums = vec![[0f64; 5]; k];
        for (u, &a) in self.arm_of.iter().enumerate() {
            let a = a as usize;
            if a < k {
                let (m, d) = (
                    num.get(u).copied().unwrap_or(0.0),
                    den.get(u).copied().unwrap_or(0.0),
                );
                let s = &mut sums[a];
                s[0] += m;
                s[1] += m * m;
                s[2] += d;
                s[3] += d * d;
                s[4] += m * d;
            }
        }
        (0..k)
            .map(|a| {
                let [
                    num_sum,
                    num_sum_squares,
                    den_sum,
                    den_sum_squares,
                    num_den_sum_products,
                ] = sums[a];
                ArmSummary {
                    arm: self.arms[a].clone(),
                    data: ArmData::Ratio {
                        n: self.users[a],
                        num_sum,
                        num_sum_squares,
                        den_sum,
                        den_sum_squares,
                        num_den_sum_products,
                    },
                }
            })
            .collect()
    }

    /// `arms` (a count's or sum's means) adjusted by a per-user covariate
    /// (CUPED): the post values again, to pair with the covariate per user.
    pub fn adjusted(&self, arms: Vec<ArmSummary>, post: &[f64], pre: &[f64]) -> Vec<ArmSummary> {
        let k = self.arms.len();
        let mut sums = vec![[0f64; 3]; k];
        for (u, &a) in self.arm_of.iter().enumerate() {
            let a = a as usize;
            if a < k {
                let (y, x) = (
                    post.get(u).copied().unwrap_or(0.0),
                    pre.get(u).copied().unwrap_or(0.0),
                );
                sums[a][0] += x;
                sums[a][1] += x * x;
                sums[a][2] += x * y;
            }
        }
        arms.into_iter()
            .zip(sums)
            .map(
                |(arm, [pre_sum, pre_sum_squares, post_pre_sum_products])| ArmSummary {
                    arm: arm.arm,
                    data: ArmData::Adjusted {
                        post: Box::new(arm.data),
                        pre_sum,
                        pre_sum_squares,
                        post_pre_sum_products,
                    },
                },
            )
            .collect()
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
    let events = col("event").eq(lit(event.to_string()));
    crate::fold::totals::counts(restricted, "ab_event_count", events, None).await
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
    use crate::fold::totals::{PerUser, Sums, Value};
    let fold = PerUser {
        name: "ab_column_sum".into(),
        input: crate::fold::FoldInput {
            columns: vec![column.to_string()],
            ..Default::default()
        },
        value: match scale {
            Some(_) => Value::Exact(target),
            None => Value::Float,
        },
    };
    Ok(
        match (crate::fold::partial(restricted, fold).await?, scale) {
            (Sums::Exact(values), Some(scale)) => ColumnSums::Exact { values, scale },
            (Sums::Float(values), None) => ColumnSums::Float(values),
            _ => {
                return Err(EngineError::Internal(
                    "column sums of the wrong kind".into(),
                ));
            }
        },
    )
}

/// Which restricted users match a segment (indexed by user key), evaluated on
/// the feature table as of `spec.as_of`.
pub async fn segment_matches(
    restricted: &Events,
    segment: &tenure_dsl::Segment,
    spec: &FeatureSpec,
) -> Result<Vec<bool>> {
    let table = feature_table(restricted, &segment.features, spec).await?;
    crate::features::keys_matching(table, &segment.expr, restricted.users()).await
}

/// Every user's arm value(s) and first time with one, per key range.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Assigned {
    lo: u32,
    seen: Vec<bool>,
    #[serde(with = "crate::fold::compact")]
    first_ts: Vec<i64>,
    /// Id in `names`, or [`UNASSIGNED`] / [`MULTIPLE`].
    #[serde(with = "crate::fold::compact")]
    arm: Vec<u32>,
    names: crate::fold::Interner,
}

/// Arm assignment as a fold: the arm column's values per user.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AssignFold {
    pub(crate) column: String,
}

impl crate::fold::UserFold for AssignFold {
    type State = Assigned;
    type Partial = Assigned;

    fn name(&self) -> &'static str {
        "ab_assignment"
    }

    fn input(&self) -> crate::fold::FoldInput {
        crate::fold::FoldInput {
            columns: vec![self.column.clone()],
            ..Default::default()
        }
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        use datafusion::arrow::datatypes::{Field, Schema};
        Arc::new(Schema::new(vec![
            Field::new("user_key", DataType::UInt32, false),
            Field::new("arm", DataType::Utf8, true),
            Field::new(
                "exposed_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    fn start(&self, keys: std::ops::Range<u32>) -> Assigned {
        let n = (keys.end - keys.start) as usize;
        Assigned {
            lo: keys.start,
            seen: vec![false; n],
            first_ts: vec![NEVER; n],
            arm: vec![UNASSIGNED; n],
            ..Default::default()
        }
    }

    fn update(
        &self,
        st: &mut Assigned,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let c = rows.column(0);
        let values = match c.data_type() {
            DataType::Utf8 => c.clone(),
            _ => datafusion::arrow::compute::cast(c, &DataType::Utf8)?,
        };
        let values = values.as_string::<i32>();
        for i in 0..rows.len() {
            let u = (keys[i] - st.lo) as usize;
            st.seen[u] = true;
            if !values.is_valid(i) {
                continue;
            }
            let a = st.names.id(Some(values.value(i)));
            st.arm[u] = match st.arm[u] {
                UNASSIGNED => a,
                same if same == a => a,
                _ => MULTIPLE,
            };
            if st.first_ts[u] == NEVER || ts[i] < st.first_ts[u] {
                st.first_ts[u] = ts[i];
            }
        }
        Ok(())
    }

    fn finish(&self, st: Assigned) -> datafusion::error::Result<Assigned> {
        Ok(st)
    }

    fn merge(&self, into: &mut Assigned, other: Assigned) -> datafusion::error::Result<()> {
        let remap = into.names.absorb(&other.names);
        crate::fold::append_exact(&mut into.seen, other.seen);
        crate::fold::append_exact(&mut into.first_ts, other.first_ts);
        let arm = other.arm.into_iter().map(|a| match a {
            UNASSIGNED | MULTIPLE => a,
            a => remap[a as usize],
        });
        crate::fold::append_exact(&mut into.arm, arm.collect());
        Ok(())
    }

    fn emit(
        &self,
        st: Assigned,
    ) -> datafusion::error::Result<datafusion::arrow::array::RecordBatch> {
        let n = st.arm.len();
        let arm = datafusion::arrow::array::StringArray::from_iter(
            st.arm.iter().map(|&a| st.names.get(a)),
        );
        let at = TimestampMicrosecondArray::from_iter(
            (0..n).map(|u| st.names.get(st.arm[u]).is_some().then_some(st.first_ts[u])),
        )
        .with_timezone("UTC");
        Ok(datafusion::arrow::array::RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(datafusion::arrow::array::UInt32Array::from_iter_values(
                    0..n as u32,
                )),
                Arc::new(arm),
                Arc::new(at),
            ],
        )?)
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
