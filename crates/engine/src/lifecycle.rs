//! Lifecycle: per-user stages as of a date, and PostHog-style per-period counts
//! of new, returning, resurrecting and dormant users.
//!
//! Stages (thresholds configurable, in whole days):
//! - tenure, by days since first seen: new (0-7), growing (8-30), mature (31-90),
//!   veteran (over 90);
//! - activity, by days since last purchase: active (0-30), cooling (31-90),
//!   silent (91-180), churned (over 180); `none` for users who never purchased.
//!
//! Per period p (any event counts as activity): new = first active in p;
//! returning = active in p and p-1; resurrecting = active in p, not in p-1, but
//! active before; dormant = active in p-1 and not in p (PostHog plots these as
//! negative; here they are a positive count with status `dormant`).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::error::Result as DfResult;

use crate::activity::{bit, first_bit};
use crate::calendar::{Calendar, DAY_MICROS, Period};
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;
use crate::userstats::{NEVER, UserStats};
use crate::{EngineError, Result};

/// Stage boundaries, in whole days (upper bounds, inclusive).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// new / growing / mature upper bounds by days since first seen.
    pub tenure: [i64; 3],
    /// active / cooling / silent upper bounds by days since last purchase.
    pub activity: [i64; 3],
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            tenure: [7, 30, 90],
            activity: [30, 90, 180],
        }
    }
}

impl Thresholds {
    /// Parses `a,b,c` (ascending days) for one axis.
    pub fn parse_axis(s: &str) -> Result<[i64; 3]> {
        let v: Vec<i64> = s
            .split(',')
            .map(|x| x.trim().trim_end_matches('d').parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                EngineError::BadRequest(format!(
                    "thresholds `{s}`: expected three day counts like 7,30,90"
                ))
            })?;
        match v.as_slice() {
            [a, b, c] if 0 <= *a && a < b && b < c => Ok([*a, *b, *c]),
            _ => Err(EngineError::BadRequest(format!(
                "thresholds `{s}`: expected three ascending day counts like 7,30,90"
            ))),
        }
    }
}

/// Names of the tenure stages.
pub const TENURE: [&str; 4] = ["new", "growing", "mature", "veteran"];
/// Names of the activity stages (plus `none`).
pub const ACTIVITY: [&str; 5] = ["active", "cooling", "silent", "churned", "none"];

/// Whole days from `t` to `as_of` (floor).
pub fn days_between(t: i64, as_of: i64) -> i64 {
    (as_of - t).div_euclid(DAY_MICROS)
}

fn bucket(days: i64, bounds: &[i64; 3]) -> usize {
    bounds.iter().position(|b| days <= *b).unwrap_or(3)
}

/// Tenure stage of a user (index into [`TENURE`]), if seen by `as_of`.
pub fn tenure_stage(stats: &UserStats, u: usize, as_of: i64, t: &Thresholds) -> Option<usize> {
    tenure_of(stats.first_seen[u], as_of, t)
}

/// Tenure stage of a user first seen at `f` ([`NEVER`]: not seen).
pub fn tenure_of(f: i64, as_of: i64, t: &Thresholds) -> Option<usize> {
    (f != NEVER && f <= as_of).then(|| bucket(days_between(f, as_of), &t.tenure))
}

/// Activity stage of a user (index into [`ACTIVITY`]), if seen by `as_of`.
pub fn activity_stage(stats: &UserStats, u: usize, as_of: i64, t: &Thresholds) -> Option<usize> {
    activity_of(stats.first_seen[u], stats.last_purchase[u], as_of, t)
}

/// Activity stage of a user first seen at `f` whose last purchase was at `l`.
pub fn activity_of(f: i64, l: i64, as_of: i64, t: &Thresholds) -> Option<usize> {
    if f == NEVER || f > as_of {
        return None;
    }
    Some(if l == NEVER {
        4
    } else {
        bucket(days_between(l, as_of), &t.activity)
    })
}

/// One stage count.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageRow {
    /// `tenure` or `activity`.
    pub axis: &'static str,
    /// Stage name.
    pub stage: &'static str,
    /// Users in it.
    pub users: u64,
    /// Share of all users seen.
    pub share: f64,
}

/// Counts users per stage as of `as_of` (stats must not include later events).
pub fn stage_counts(stats: &UserStats, as_of: i64, t: &Thresholds) -> Vec<StageRow> {
    let mut tenure = [0u64; 4];
    let mut activity = [0u64; 5];
    for u in 0..stats.len() {
        if let Some(s) = tenure_stage(stats, u, as_of, t) {
            tenure[s] += 1;
        }
        if let Some(s) = activity_stage(stats, u, as_of, t) {
            activity[s] += 1;
        }
    }
    stage_rows(tenure, activity)
}

/// The rows of users per stage.
fn stage_rows(tenure: [u64; 4], activity: [u64; 5]) -> Vec<StageRow> {
    let total: u64 = tenure.iter().sum();
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    TENURE
        .iter()
        .zip(tenure)
        .map(|(s, n)| StageRow {
            axis: "tenure",
            stage: s,
            users: n,
            share: share(n),
        })
        .chain(ACTIVITY.iter().zip(activity).map(|(s, n)| StageRow {
            axis: "activity",
            stage: s,
            users: n,
            share: share(n),
        }))
        .collect()
}

/// One per-period count.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeriodRow {
    /// Period start (ISO date).
    pub period: String,
    /// new, returning, resurrecting or dormant.
    pub status: &'static str,
    /// Users.
    pub users: u64,
    /// Has the period fully elapsed?
    pub complete: bool,
}

/// Per-period lifecycle counts. `from` limits the periods reported, not the
/// history: "new" means first seen ever, not first seen in the range.
pub async fn periods(
    events: &Events,
    period: Period,
    tz: chrono_tz::Tz,
    from: Option<i64>,
) -> Result<Vec<PeriodRow>> {
    let fold = LifecycleFold::new(events, period, tz, from)?;
    let batches = crate::fold::run(events, fold).await?;
    let mut rows = Vec::new();
    for b in &batches {
        let period = b.column(0).as_string::<i32>();
        let status = b.column(1).as_string::<i32>();
        let users = b.column(2).as_primitive::<UInt64Type>();
        let complete = b.column(3).as_boolean();
        for i in 0..b.num_rows() {
            rows.push(PeriodRow {
                period: period.value(i).to_string(),
                status: STATUSES
                    .iter()
                    .find(|s| **s == status.value(i))
                    .copied()
                    .unwrap_or("dormant"),
                users: users.value(i),
                complete: complete.value(i),
            });
        }
    }
    Ok(rows)
}

/// The statuses of the per-period counts, in output order.
pub const STATUSES: [&str; 4] = ["new", "returning", "resurrecting", "dormant"];

/// The schema of the per-period counts.
pub fn periods_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("period", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("complete", DataType::Boolean, false),
    ]))
}

/// Per-period lifecycle counts as a [`UserFold`]: per user, a bitmap of active
/// periods; per range, the counts of each status.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LifecycleFold {
    cal: Calendar,
    as_of: i64,
    first_reported: usize,
}

impl LifecycleFold {
    /// The fold over the events in range; `from` as in [`periods`].
    pub fn new(
        events: &Events,
        period: Period,
        tz: chrono_tz::Tz,
        from: Option<i64>,
    ) -> Result<Self> {
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let cal = Calendar::new(period, tz, min_ts, max_ts)?;
        Ok(Self {
            as_of: cal.end_of_day(max_ts),
            first_reported: from.and_then(|t| cal.period_of(t)).unwrap_or(0) as usize,
            cal,
        })
    }

    fn words(&self) -> usize {
        self.cal.periods().div_ceil(64).max(1)
    }
}

/// Active periods of a range's users.
pub struct PeriodBits {
    lo: u32,
    bits: Vec<u64>,
}

impl UserFold for LifecycleFold {
    type State = PeriodBits;
    type Partial = Vec<[u64; 4]>;

    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn input(&self) -> FoldInput {
        FoldInput::default()
    }

    fn schema(&self) -> SchemaRef {
        periods_schema()
    }

    fn start(&self, keys: std::ops::Range<u32>) -> PeriodBits {
        PeriodBits {
            lo: keys.start,
            bits: vec![0; (keys.end - keys.start) as usize * self.words()],
        }
    }

    fn update(&self, st: &mut PeriodBits, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let words = self.words();
        for i in 0..rows.len() {
            let Some(p) = self.cal.period_of(ts[i]) else {
                continue;
            };
            st.bits[(keys[i] - st.lo) as usize * words + p as usize / 64] |= 1u64 << (p % 64);
        }
        Ok(())
    }

    fn finish(&self, st: PeriodBits) -> DfResult<Vec<[u64; 4]>> {
        let mut counts = vec![[0u64; 4]; self.cal.periods()];
        for bits in st.bits.chunks_exact(self.words()) {
            let Some(f) = first_bit(bits) else { continue };
            for (p, c) in counts.iter_mut().enumerate().skip(f) {
                let now = bit(bits, p);
                let prev = p > 0 && bit(bits, p - 1);
                match (now, prev) {
                    (true, _) if p == f => c[0] += 1,
                    (true, true) => c[1] += 1,
                    (true, false) => c[2] += 1,
                    (false, true) => c[3] += 1,
                    (false, false) => {}
                }
            }
        }
        Ok(counts)
    }

    fn merge(&self, into: &mut Vec<[u64; 4]>, other: Vec<[u64; 4]>) -> DfResult<()> {
        for (a, b) in into.iter_mut().zip(other) {
            for i in 0..4 {
                a[i] += b[i];
            }
        }
        Ok(())
    }

    fn emit(&self, counts: Vec<[u64; 4]>) -> DfResult<RecordBatch> {
        let (mut period, mut status, mut users, mut complete) = (vec![], vec![], vec![], vec![]);
        for (p, c) in counts.iter().enumerate().skip(self.first_reported) {
            for (i, s) in STATUSES.iter().enumerate() {
                period.push(self.cal.start_date(p).to_string());
                status.push(*s);
                users.push(c[i]);
                complete.push(Some(self.cal.end_utc(p) <= self.as_of));
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(period)),
            Arc::new(StringArray::from(status)),
            Arc::new(UInt64Array::from(users)),
            Arc::new(BooleanArray::from(complete)),
        ];
        Ok(RecordBatch::try_new(periods_schema(), cols)?)
    }
}

/// Users per lifecycle stage as of `as_of` (inclusive), in one fold: per
/// user, the first event and the last purchase up to `as_of`.
pub async fn stages(
    events: &Events,
    as_of: i64,
    thresholds: &Thresholds,
    purchase: &crate::userstats::PurchaseSpec,
) -> Result<Vec<StageRow>> {
    let fold = StagesFold {
        as_of,
        thresholds: thresholds.clone(),
        purchase: purchase.event.clone(),
    };
    let batches = crate::fold::run(events, fold).await?;
    let mut rows = Vec::new();
    for b in &batches {
        let axis = b.column(0).as_string::<i32>();
        let stage = b.column(1).as_string::<i32>();
        let users = b.column(2).as_primitive::<UInt64Type>();
        let share = b
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            let names: &[&'static str] = if axis.value(i) == "tenure" {
                &TENURE
            } else {
                &ACTIVITY
            };
            rows.push(StageRow {
                axis: if axis.value(i) == "tenure" {
                    "tenure"
                } else {
                    "activity"
                },
                stage: names
                    .iter()
                    .find(|n| **n == stage.value(i))
                    .copied()
                    .unwrap_or("none"),
                users: users.value(i),
                share: share.value(i),
            });
        }
    }
    Ok(rows)
}

/// The schema of the stage counts.
pub fn stages_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("axis", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("share", DataType::Float64, false),
    ]))
}

/// Users per lifecycle stage as a [`UserFold`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StagesFold {
    /// Stages as of this instant (inclusive); later events are not read.
    pub as_of: i64,
    /// Stage boundaries.
    pub thresholds: Thresholds,
    /// The purchase event.
    pub purchase: String,
}

/// First event and last purchase of a range's users.
pub struct StageFacts {
    lo: u32,
    first_seen: Vec<i64>,
    last_purchase: Vec<i64>,
}

impl UserFold for StagesFold {
    type State = StageFacts;
    type Partial = ([u64; 4], [u64; 5]);

    fn name(&self) -> &'static str {
        "lifecycle_stages"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: Vec::new(),
            flags: vec![
                datafusion::logical_expr::col("event")
                    .eq(datafusion::logical_expr::lit(self.purchase.clone())),
            ],
            until: Some(self.as_of.saturating_add(1)),
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        stages_schema()
    }

    fn start(&self, keys: std::ops::Range<u32>) -> StageFacts {
        let n = (keys.end - keys.start) as usize;
        StageFacts {
            lo: keys.start,
            first_seen: vec![NEVER; n],
            last_purchase: vec![NEVER; n],
        }
    }

    fn update(&self, st: &mut StageFacts, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        for i in 0..rows.len() {
            let f = &mut st.first_seen[(keys[i] - st.lo) as usize];
            if *f == NEVER || ts[i] < *f {
                *f = ts[i];
            }
        }
        for i in rows.flag(0).values().set_indices() {
            let l = &mut st.last_purchase[(keys[i] - st.lo) as usize];
            *l = (*l).max(ts[i]);
        }
        Ok(())
    }

    fn finish(&self, st: StageFacts) -> DfResult<([u64; 4], [u64; 5])> {
        let (mut tenure, mut activity) = ([0u64; 4], [0u64; 5]);
        for (&f, &l) in st.first_seen.iter().zip(&st.last_purchase) {
            if let Some(s) = tenure_of(f, self.as_of, &self.thresholds) {
                tenure[s] += 1;
            }
            if let Some(s) = activity_of(f, l, self.as_of, &self.thresholds) {
                activity[s] += 1;
            }
        }
        Ok((tenure, activity))
    }

    fn merge(&self, a: &mut ([u64; 4], [u64; 5]), b: ([u64; 4], [u64; 5])) -> DfResult<()> {
        a.0.iter_mut().zip(b.0).for_each(|(x, y)| *x += y);
        a.1.iter_mut().zip(b.1).for_each(|(x, y)| *x += y);
        Ok(())
    }

    fn emit(&self, (tenure, activity): ([u64; 4], [u64; 5])) -> DfResult<RecordBatch> {
        let rows = stage_rows(tenure, activity);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.axis))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.stage))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.users))),
            Arc::new(datafusion::arrow::array::Float64Array::from_iter_values(
                rows.iter().map(|r| r.share),
            )),
        ];
        Ok(RecordBatch::try_new(stages_schema(), cols)?)
    }
}
