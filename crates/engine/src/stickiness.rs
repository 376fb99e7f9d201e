//! Stickiness: how many days of each week (or month) its active users were
//! active, as a histogram (PostHog's stickiness insight).
//!
//! For each period P of the calendar (ISO weeks or months, in the time zone
//! asked for) and each k in 1..=days(P): `users` is the number of users with
//! qualifying events on exactly k distinct days of P, and `share` is that
//! number over the users active in P (`active_users`). A qualifying event is
//! any event, or the ones matching the request's condition. A period is
//! `complete` when it ended by the as-of time (default: the end of the day of
//! the newest event); an incomplete period is reported with what it has so far.
//!
//! Example: a user active on Monday, Monday and Thursday of one week counts once
//! in `days = 2` of that week.
//!
//! Written as one [`UserFold`]: per user, a bitmap of active days; per range of
//! users, the histogram of each period.

use std::ops::Range;
use std::sync::Arc;

use chrono_tz::Tz;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;

use crate::calendar::{Calendar, Period};
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;
use crate::{EngineError, Result};

/// A stickiness request.
#[derive(Debug, Clone)]
pub struct StickinessSpec {
    /// Reporting period: week or month.
    pub period: Period,
    /// Time zone of the calendar (days and periods).
    pub tz: Tz,
    /// Only events matching this count (`None`: any event).
    pub condition: Option<Expr>,
    /// Periods ending after this instant are incomplete; default: the end of
    /// the day (in `tz`) of the newest event.
    pub as_of: Option<i64>,
}

/// One row of the result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StickinessRow {
    /// Start of the period (ISO date).
    pub period: String,
    /// Distinct active days in the period.
    pub days: u32,
    /// Users active on exactly `days` days of the period.
    pub users: u64,
    /// Users active in the period.
    pub active_users: u64,
    /// `users / active_users`; `None` when nobody was active.
    pub share: Option<f64>,
    /// Has the period ended by the as-of time?
    pub complete: bool,
}

/// The output schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("period", DataType::Utf8, false),
        Field::new("days", DataType::UInt32, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("active_users", DataType::UInt64, false),
        Field::new("share", DataType::Float64, true),
        Field::new("complete", DataType::Boolean, false),
    ]))
}

/// The fold.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StickinessFold {
    days: Calendar,
    rep: Calendar,
    /// Reporting period of each day.
    day_period: Vec<u32>,
    /// First day of each reporting period, and one past the last.
    period_days: Vec<usize>,
    #[serde(with = "crate::codec::opt_expr")]
    condition: Option<Expr>,
    as_of: i64,
}

impl StickinessFold {
    /// The fold of `spec` over the events in range.
    pub fn new(events: &Events, spec: &StickinessSpec) -> Result<Self> {
        if spec.period == Period::Day {
            return Err(EngineError::BadRequest(
                "stickiness counts days per week or month: --period week or month".into(),
            ));
        }
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let rep = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
        // Days over the whole of every reporting period touched.
        let days = Calendar::new(
            Period::Day,
            spec.tz,
            rep.day_start(0),
            rep.end_utc(rep.periods() - 1) - 1,
        )?;
        let day_period: Vec<u32> = (0..days.periods())
            .map(|d| rep.period_of(days.day_start(d)).unwrap_or(0))
            .collect();
        let mut period_days = vec![0; rep.periods() + 1];
        for (d, &p) in day_period.iter().enumerate() {
            period_days[p as usize + 1] = d + 1;
        }
        Ok(Self {
            as_of: spec.as_of.unwrap_or_else(|| rep.end_of_day(max_ts)),
            days,
            rep,
            day_period,
            period_days,
            condition: spec.condition.clone(),
        })
    }

    fn words(&self) -> usize {
        self.days.periods().div_ceil(64).max(1)
    }

    fn longest(&self) -> usize {
        self.period_days
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Per range: each user's active days.
pub struct DaysState {
    lo: u32,
    bits: Vec<u64>,
}

/// Users per period and number of active days (`periods x (longest + 1)`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl UserFold for StickinessFold {
    type State = DaysState;
    type Partial = Histogram;

    fn name(&self) -> &'static str {
        "stickiness"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: Vec::new(),
            flags: self.condition.iter().cloned().collect(),
            until: None,
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn start(&self, keys: Range<u32>) -> DaysState {
        DaysState {
            lo: keys.start,
            bits: vec![0; (keys.end - keys.start) as usize * self.words()],
        }
    }

    fn update(&self, st: &mut DaysState, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let words = self.words();
        let cond: Option<&BooleanArray> = self.condition.is_some().then(|| rows.flag(0));
        for i in 0..rows.len() {
            if cond.is_some_and(|c| !c.value(i)) {
                continue;
            }
            let Some(d) = self.days.period_of(ts[i]) else {
                continue;
            };
            let u = (keys[i] - st.lo) as usize;
            st.bits[u * words + d as usize / 64] |= 1u64 << (d % 64);
        }
        Ok(())
    }

    fn finish(&self, st: DaysState) -> DfResult<Histogram> {
        let words = self.words();
        let width = self.longest() + 1;
        let mut counts = vec![0u64; self.rep.periods() * width];
        let mut per = vec![0u32; self.rep.periods()];
        for bits in st.bits.chunks_exact(words) {
            if bits.iter().all(|w| *w == 0) {
                continue;
            }
            per.iter_mut().for_each(|c| *c = 0);
            for (wi, &w) in bits.iter().enumerate() {
                let mut w = w;
                while w != 0 {
                    let d = wi * 64 + w.trailing_zeros() as usize;
                    per[self.day_period[d] as usize] += 1;
                    w &= w - 1;
                }
            }
            for (p, &k) in per.iter().enumerate() {
                if k > 0 {
                    counts[p * width + k as usize] += 1;
                }
            }
        }
        Ok(Histogram { counts })
    }

    fn merge(&self, into: &mut Histogram, other: Histogram) -> DfResult<()> {
        for (a, b) in into.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        Ok(())
    }

    fn emit(&self, h: Histogram) -> DfResult<RecordBatch> {
        let width = self.longest() + 1;
        let mut rows = Vec::new();
        for p in 0..self.rep.periods() {
            let n = self.period_days[p + 1] - self.period_days[p];
            let cells = &h.counts[p * width..(p + 1) * width];
            let active: u64 = cells.iter().sum();
            for (k, &users) in cells.iter().enumerate().take(n + 1).skip(1) {
                rows.push(StickinessRow {
                    period: self.rep.start_date(p).to_string(),
                    days: k as u32,
                    users,
                    active_users: active,
                    share: (active > 0).then(|| users as f64 / active as f64),
                    complete: self.rep.end_utc(p) <= self.as_of,
                });
            }
        }
        batch_of_rows(&rows)
    }
}

fn batch_of_rows(rows: &[StickinessRow]) -> DfResult<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.period.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.days))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.users))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.active_users),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.share))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.complete)),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// Computes stickiness over an opened store.
pub async fn stickiness(events: &Events, spec: &StickinessSpec) -> Result<Vec<RecordBatch>> {
    let fold = StickinessFold::new(events, spec)?;
    crate::fold::run(events, fold).await
}

/// Rows of a batch of [`schema`].
pub fn rows_of_batch(b: &RecordBatch) -> Vec<StickinessRow> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
    let period = b.column(0).as_string::<i32>();
    let days = b.column(1).as_primitive::<UInt32Type>();
    let users = b.column(2).as_primitive::<UInt64Type>();
    let active = b.column(3).as_primitive::<UInt64Type>();
    let share = b.column(4).as_primitive::<Float64Type>();
    let complete = b.column(5).as_boolean();
    (0..b.num_rows())
        .map(|i| StickinessRow {
            period: period.value(i).to_string(),
            days: days.value(i),
            users: users.value(i),
            active_users: active.value(i),
            share: share.is_valid(i).then(|| share.value(i)),
            complete: complete.value(i),
        })
        .collect()
}
