//! Cohort retention (DESIGN.md, Semantics: Retention).
//!
//! A user's cohort is the period of their first start event; they are retained
//! in period k if they did a return event in the k-th period after it (`n-day`),
//! in period k or any later one (`unbounded`), or in any period of a bracket
//! (`bracket`, e.g. `0,1-3,4-7`). A cohort x period cell that has not fully
//! elapsed at the as-of time is incomplete: reported without numbers, and left
//! out of the size-weighted averages.

use chrono_tz::Tz;
use datafusion::logical_expr::Expr;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;

use crate::activity::{self, bit, first_bit};
use crate::breakdown::NONE_LABEL;
use crate::calendar::{Calendar, Period};
use crate::fold::bits::PeriodBits;
use crate::table::Events;
use crate::{EngineError, Result};

/// How a return counts towards period k.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// A return in exactly the k-th period after the cohort's.
    NDay,
    /// A return in the k-th period or any later one.
    Unbounded,
    /// Custom ranges of periods, inclusive: `[(0,0), (1,3), (4,7)]`.
    Bracket(Vec<(u32, u32)>),
}

impl Mode {
    /// Parses `n-day`, `unbounded` or `bracket:0,1-3,4-7` (with `brackets` given
    /// separately as `0,1-3,4-7`).
    pub fn parse(mode: &str, brackets: Option<&str>) -> Result<Self> {
        match mode {
            "n-day" | "nday" | "exact" => Ok(Self::NDay),
            "unbounded" => Ok(Self::Unbounded),
            "bracket" => {
                let spec = brackets.ok_or_else(|| {
                    EngineError::BadRequest(
                        "--mode bracket needs --brackets, e.g. 0,1-3,4-7".into(),
                    )
                })?;
                Ok(Self::Bracket(parse_brackets(spec)?))
            }
            other => Err(EngineError::BadRequest(format!(
                "unknown retention mode `{other}`; expected n-day, unbounded or bracket"
            ))),
        }
    }
}

/// Parses `0,1-3,4-7` into ranges; they must be ascending and not overlap.
pub fn parse_brackets(spec: &str) -> Result<Vec<(u32, u32)>> {
    let bad = |m: String| EngineError::BadRequest(format!("bad brackets `{spec}`: {m}"));
    let mut out: Vec<(u32, u32)> = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| bad(format!("`{part}` is not a period or range")))?;
        let b: u32 = b
            .parse()
            .map_err(|_| bad(format!("`{part}` is not a period or range")))?;
        if b < a {
            return Err(bad(format!("`{part}` ends before it starts")));
        }
        if let Some(&(_, prev)) = out.last()
            && a <= prev
        {
            return Err(bad(format!(
                "`{part}` overlaps or precedes the range before it"
            )));
        }
        out.push((a, b));
    }
    Ok(out)
}

/// A retention request.
#[derive(Debug, Clone)]
pub struct RetentionSpec {
    /// Cohort period.
    pub period: Period,
    /// Time zone of the calendar.
    pub tz: Tz,
    /// Start-event condition (`None`: any event).
    pub start: Option<Expr>,
    /// Return-event condition (`None`: any event).
    pub ret: Option<Expr>,
    /// Mode.
    pub mode: Mode,
    /// Cells ending after this instant are incomplete; default: the end of the
    /// day (in `tz`) of the newest event.
    pub as_of: Option<i64>,
    /// Split cohorts by this column's value at each user's first start event.
    pub by: Option<String>,
    /// Read returns by day within weekly or monthly cohorts (`--period week
    /// --read day`): column k is the k-th day after each user's own first
    /// start day; a cell is complete once the cohort period's last day plus
    /// k days has ended (every possible member has had it). `None`: the
    /// cohort period.
    pub read: Option<Period>,
    /// Also sum the revenue of the cohort's return events per cell
    /// (`--value revenue`; n-day and bracket modes).
    pub revenue: bool,
}

/// One row of the result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionRow {
    /// `cohort` for a cohort's cell, `average` for the size-weighted average.
    pub kind: &'static str,
    /// Breakdown value (with `by`), else `None`.
    pub group: Option<String>,
    /// Cohort period start (ISO date); `None` on average rows.
    pub cohort: Option<String>,
    /// Period index k (or bracket index in bracket mode).
    pub period: u32,
    /// Label of the period (`3` or a bracket like `1-3`).
    pub period_label: String,
    /// Users in the cohort (on average rows: total size of the cohorts averaged).
    pub cohort_size: u64,
    /// Users retained; `None` when the cell is incomplete.
    pub users: Option<u64>,
    /// `users / cohort_size`; `None` when incomplete or the cohort is empty.
    pub rate: Option<f64>,
    /// Has the cell fully elapsed?
    pub complete: bool,
    /// With `--value revenue`: the revenue of the cohort's return events in
    /// the cell's period(s), in cents; `None` when incomplete or not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_cents: Option<i128>,
}

/// The whole result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retention {
    /// Period kind.
    pub period: &'static str,
    /// Cohort rows then average rows.
    pub rows: Vec<RetentionRow>,
    /// The as-of instant used (UTC µs).
    pub as_of: i64,
}

/// Computes retention over an opened store: one [`RetentionFold`] over the
/// events (conditions, range and breakdown are inputs of the same plan).
pub async fn retention(events: &Events, spec: &RetentionSpec) -> Result<Retention> {
    let fold = RetentionFold::new(events, spec)?;
    let (period, as_of) = (period_name(fold.cal.period), fold.as_of);
    let batches = crate::fold::run(events, fold).await?;
    let mut rows = Vec::new();
    for b in &batches {
        rows.extend(rows_of_batch(b)?);
    }
    Ok(Retention {
        period,
        rows,
        as_of,
    })
}

/// The retention table from per-user bitmaps (public for tests and benches).
pub fn from_activity(
    act: &activity::Activity,
    cal: &Calendar,
    mode: &Mode,
    as_of: i64,
) -> Retention {
    let mut rows = grouped(act, cal, mode, as_of, 1, |_| Some(0));
    Retention {
        period: period_name(cal.period),
        rows: rows.pop().unwrap_or_default(),
        as_of,
    }
}

/// The name of a period as output rows and headings say it.
pub fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// The columns of a retention table: one per period, or one per bracket.
fn columns_of(mode: &Mode, periods: usize) -> Vec<(u32, u32)> {
    match mode {
        Mode::Bracket(b) => b.clone(),
        _ => (0..periods as u32).map(|k| (k, k)).collect(),
    }
}

/// Cohort sizes and retained users of one group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Users per cohort (`periods`).
    sizes: Vec<u64>,
    /// Retained users per cohort and column (`periods * columns`).
    cells: Vec<u64>,
    /// Revenue (cents) per cohort and column, with `--value revenue`.
    revenue: Vec<i128>,
}

impl Counts {
    fn new(periods: usize, columns: usize) -> Self {
        Self {
            sizes: vec![0; periods],
            cells: vec![0; periods * columns],
            revenue: vec![0; periods * columns],
        }
    }

    fn add(&mut self, other: &Counts) {
        for (a, b) in self.sizes.iter_mut().zip(&other.sizes) {
            *a += b;
        }
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            *a += b;
        }
        for (a, b) in self.revenue.iter_mut().zip(&other.revenue) {
            *a += b;
        }
    }

    /// Adds one user's revenue (`(period of bits, cents)` of their return
    /// events) to the cells of their cohort: the column whose period(s)
    /// hold it, counted from the user's first start period.
    fn user_revenue(
        &mut self,
        start: &[u64],
        paid: &[(u32, i128)],
        mode: &Mode,
        cohort_of: Option<&[usize]>,
    ) {
        let Some(c) = first_bit(start) else {
            return;
        };
        let cohort = cohort_of.map_or(c, |m| m[c]);
        let w = self.revenue.len() / self.sizes.len().max(1);
        let row = &mut self.revenue[cohort * w..(cohort + 1) * w];
        for &(p, cents) in paid {
            let Some(k) = (p as usize).checked_sub(c) else {
                continue;
            };
            let column = match mode {
                Mode::Bracket(b) => b
                    .iter()
                    .position(|&(lo, hi)| (lo as usize..=hi as usize).contains(&k)),
                _ => (k < w).then_some(k),
            };
            if let Some(j) = column {
                row[j] += cents;
            }
        }
    }

    /// Counts one user with these start and return bits (`n` periods of
    /// bits); `cohort_of` maps the first start period to the user's cohort
    /// when cohorts are coarser than the bits (`--read`).
    #[inline]
    fn user(
        &mut self,
        start: &[u64],
        ret: &[u64],
        n: usize,
        mode: &Mode,
        cohort_of: Option<&[usize]>,
    ) {
        let Some(c) = first_bit(start) else {
            return;
        };
        let cohort = cohort_of.map_or(c, |m| m[c]);
        let w = self.cells.len() / self.sizes.len().max(1);
        self.sizes[cohort] += 1;
        let row = &mut self.cells[cohort * w..(cohort + 1) * w];
        match mode {
            Mode::NDay => {
                for (k, cell) in row.iter_mut().enumerate().take(n - c) {
                    *cell += bit(ret, c + k) as u64;
                }
            }
            Mode::Unbounded => {
                let highest = ret
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, w)| **w != 0)
                    .map(|(i, w)| i * 64 + 63 - w.leading_zeros() as usize);
                if let Some(h) = highest
                    && h >= c
                {
                    for cell in row.iter_mut().take(h - c + 1) {
                        *cell += 1;
                    }
                }
            }
            Mode::Bracket(b) => {
                for (j, &(lo, hi)) in b.iter().enumerate() {
                    let lo = c + lo as usize;
                    let hi = (c + hi as usize).min(n - 1);
                    if lo < n && (lo..=hi).any(|p| bit(ret, p)) {
                        row[j] += 1;
                    }
                }
            }
        }
    }

    /// Cohort rows then average rows.
    fn rows(&self, cal: &Calendar, mode: &Mode, as_of: i64) -> Vec<RetentionRow> {
        self.rows_read(cal, None, mode, as_of, false)
    }

    /// Cohort rows then average rows; with `read` (the finer calendar of the
    /// bits and the cohort of each of its periods), columns count read
    /// periods from each user's own start, and a cell is complete when the
    /// cohort's last member has had its column.
    fn rows_read(
        &self,
        cal: &Calendar,
        read: Option<(&Calendar, &[usize])>,
        mode: &Mode,
        as_of: i64,
        revenue: bool,
    ) -> Vec<RetentionRow> {
        let n = read.map_or(cal.periods(), |(r, _)| r.periods());
        let columns = columns_of(mode, n);
        let w = columns.len();
        let mut rows = Vec::new();
        let mut avg_size = vec![0u64; w];
        let mut avg_users = vec![0u64; w];
        let mut avg_revenue = vec![0i128; w];
        for c in 0..cal.periods() {
            let size = self.sizes[c];
            // The cohort's first and last periods of bits.
            let (first, last_start) = match read {
                None => (c, c),
                Some((_, of)) => {
                    let mut mine = (0..n).filter(|&p| of[p] == c);
                    let Some(first) = mine.next() else { continue };
                    (first, mine.next_back().unwrap_or(first))
                }
            };
            let end_cal = read.map_or(cal, |(r, _)| r);
            for (j, &(lo, hi)) in columns.iter().enumerate() {
                let last = last_start + hi as usize;
                if first + lo as usize >= n {
                    break;
                }
                // A cell is complete when its last period has ended by `as_of`.
                let complete = last < n && end_cal.end_utc(last) <= as_of;
                let users = self.cells[c * w + j];
                let cents = self.revenue[c * w + j];
                if complete {
                    avg_size[j] += size;
                    avg_users[j] += users;
                    avg_revenue[j] += cents;
                }
                rows.push(RetentionRow {
                    kind: "cohort",
                    group: None,
                    cohort: Some(cal.start_date(c).to_string()),
                    period: j as u32,
                    period_label: label(lo, hi),
                    cohort_size: size,
                    users: complete.then_some(users),
                    rate: (complete && size > 0).then(|| users as f64 / size as f64),
                    complete,
                    revenue_cents: (revenue && complete).then_some(cents),
                });
            }
        }
        for (j, &(lo, hi)) in columns.iter().enumerate() {
            if j >= n {
                break;
            }
            rows.push(RetentionRow {
                kind: "average",
                group: None,
                cohort: None,
                period: j as u32,
                period_label: label(lo, hi),
                cohort_size: avg_size[j],
                users: (avg_size[j] > 0).then_some(avg_users[j]),
                rate: (avg_size[j] > 0).then(|| avg_users[j] as f64 / avg_size[j] as f64),
                complete: avg_size[j] > 0,
                revenue_cents: (revenue && avg_size[j] > 0).then_some(avg_revenue[j]),
            });
        }
        rows
    }
}

/// Rows per group in one pass over the users; `group_of(u)` is the user's
/// group in `0..groups`, or `None` to leave the user out.
pub fn grouped(
    act: &activity::Activity,
    cal: &Calendar,
    mode: &Mode,
    as_of: i64,
    groups: usize,
    group_of: impl Fn(usize) -> Option<usize>,
) -> Vec<Vec<RetentionRow>> {
    let n = cal.periods();
    let w = columns_of(mode, n).len();
    let mut counts = vec![Counts::new(n, w); groups];
    for u in 0..act.users {
        let Some(g) = group_of(u) else { continue };
        counts[g].user(act.start_of(u), act.return_of(u), n, mode, None);
    }
    counts.iter().map(|c| c.rows(cal, mode, as_of)).collect()
}

/// The retention of [`RetentionSpec`] as a [`UserFold`](crate::fold::UserFold): per user, bitmaps of
/// the periods with start and return events (and, with a breakdown, the value
/// at the first start event); per range, the counts of each cohort and cell.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RetentionFold {
    cal: Calendar,
    /// With `--read`: the finer calendar of the bits, and the cohort of each
    /// of its periods.
    read: Option<(Calendar, Vec<usize>)>,
    mode: Mode,
    as_of: i64,
    #[serde(with = "crate::codec::opt_expr")]
    start: Option<Expr>,
    #[serde(with = "crate::codec::opt_expr")]
    ret: Option<Expr>,
    /// The breakdown's value per event ([`crate::breakdown::by_expr`]).
    #[serde(with = "crate::codec::opt_expr")]
    by: Option<Expr>,
    /// Sum the revenue of return events per cell.
    #[serde(default)]
    revenue: bool,
}

impl RetentionFold {
    /// The fold of `spec` over `events` (its calendar spans the events in range).
    pub fn new(events: &Events, spec: &RetentionSpec) -> Result<Self> {
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let cal = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
        let read = match spec.read {
            Some(p) if p == spec.period => None,
            // Days nest in weeks and months; weeks do not nest in months.
            Some(p) if p == Period::Day => {
                let r = Calendar::new(p, spec.tz, min_ts, max_ts)?;
                let of = (0..r.periods())
                    .map(|q| {
                        cal.period_of(r.day_start_of_period(q))
                            .map_or(0, |c| c as usize)
                    })
                    .collect();
                Some((r, of))
            }
            Some(p) => {
                return Err(EngineError::BadRequest(format!(
                    "--read {}: returns are read by day within weekly or monthly cohorts \
                     (--read day); cohorts here are by {}",
                    period_name(p),
                    period_name(spec.period)
                )));
            }
            None => None,
        };
        if spec.revenue && spec.mode == Mode::Unbounded {
            return Err(EngineError::BadRequest(
                "--value revenue sums a cell's own period(s): use --mode n-day or bracket".into(),
            ));
        }
        Ok(Self {
            as_of: spec.as_of.unwrap_or_else(|| cal.end_of_day(max_ts)),
            revenue: spec.revenue,
            read,
            cal,
            mode: spec.mode.clone(),
            start: spec.start.clone(),
            ret: spec.ret.clone(),
            by: spec
                .by
                .as_deref()
                .map(|b| crate::breakdown::by_expr(events, b))
                .transpose()?,
        })
    }

    fn separate(&self) -> bool {
        self.start.is_some() || self.ret.is_some()
    }

    /// The calendar of the per-user bits: the read period's, else the
    /// cohorts'.
    fn bits(&self) -> &Calendar {
        self.read.as_ref().map_or(&self.cal, |(r, _)| r)
    }
}

/// [`RetentionFold`]'s state for a range of users.
pub struct RetentionState {
    lo: u32,
    /// The periods with a start event.
    start: PeriodBits,
    /// The periods with a return event, when they differ from start events.
    ret: Option<PeriodBits>,
    /// With a breakdown: time and value of each user's first start event.
    first: Vec<i64>,
    value: Vec<u32>,
    values: crate::fold::Interner,
    /// With `--value revenue`: (user, period of bits, cents) of every
    /// return event with revenue (purchases: a few percent of the rows).
    paid: Vec<(u32, u32, i128)>,
}

/// The counts of every group (label order; one unnamed group without a breakdown).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RetentionCounts {
    groups: std::collections::BTreeMap<String, Counts>,
}

impl crate::fold::UserFold for RetentionFold {
    type State = RetentionState;
    type Partial = RetentionCounts;

    fn name(&self) -> &'static str {
        "retention"
    }

    fn input(&self) -> crate::fold::FoldInput {
        crate::fold::FoldInput {
            columns: self
                .revenue
                .then(|| "revenue".to_string())
                .into_iter()
                .collect(),
            values: self.by.iter().cloned().collect(),
            flags: self.start.iter().chain(&self.ret).cloned().collect(),
            until: None,
            // Counts and sums per cell; per-user state is by key only.
            any_key: true,
            ..Default::default()
        }
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        schema_of(self.revenue)
    }

    fn start(&self, keys: std::ops::Range<u32>) -> RetentionState {
        let users = (keys.end - keys.start) as usize;
        let n = self.bits().periods();
        RetentionState {
            lo: keys.start,
            start: PeriodBits::new(users, n),
            ret: self.separate().then(|| PeriodBits::new(users, n)),
            first: if self.by.is_some() {
                vec![i64::MAX; users]
            } else {
                Vec::new()
            },
            value: if self.by.is_some() {
                vec![u32::MAX; users]
            } else {
                Vec::new()
            },
            values: Default::default(),
            paid: Vec::new(),
        }
    }

    fn update(&self, st: &mut RetentionState, rows: &crate::fold::Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let lo = st.lo as usize;
        let cal = self.bits();
        // Flags: the start condition, then the return condition, if given.
        let s = self.start.is_some().then(|| rows.flag(0));
        let r = self
            .ret
            .is_some()
            .then(|| rows.flag(usize::from(self.start.is_some())));
        if self.by.is_some() {
            // After the revenue column, if read.
            let at = usize::from(self.revenue);
            let values = datafusion::arrow::compute::cast(rows.column(at), &DataType::Utf8)?;
            let v = values.as_string::<i32>();
            for i in 0..rows.len() {
                if s.is_some_and(|s| !s.value(i)) {
                    continue;
                }
                let u = keys[i] as usize - lo;
                let t = ts[i];
                let val = v.is_valid(i).then(|| v.value(i));
                // Earliest start event wins; ties go to the smallest value,
                // so the result does not depend on the reading order.
                let better = st.value[u] == u32::MAX
                    || t < st.first[u]
                    || (t == st.first[u] && val < st.values.get(st.value[u]));
                if better {
                    st.first[u] = t;
                    st.value[u] = st.values.id(val);
                }
            }
        }
        if self.revenue {
            let cents = datafusion::arrow::compute::cast(
                rows.column(0),
                &DataType::Decimal128(38, tenure_schema::REVENUE_SCALE),
            )?;
            let cents = cents.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
            for i in 0..rows.len() {
                if !cents.is_valid(i) || r.is_some_and(|r| !r.value(i)) {
                    continue;
                }
                if let Some(p) = cal.period_of(ts[i]) {
                    st.paid.push((keys[i] - st.lo, p, cents.value(i)));
                }
            }
        }
        // A batch's rows usually come from one day's file: when its earliest
        // and latest times fall in one period, every row does.
        let Some((a, b)) = crate::fold::bits::min_max(ts) else {
            return Ok(());
        };
        let one = cal.period_of(a).filter(|&p| cal.period_of(b) == Some(p));
        match (&mut st.ret, one) {
            (None, Some(p)) => {
                st.start.set_keys(p as usize, keys, st.lo);
            }
            (None, None) => {
                for i in 0..rows.len() {
                    let Some(p) = cal.period_of(ts[i]) else {
                        continue;
                    };
                    st.start.set(p as usize, keys[i] as usize - lo);
                }
            }
            (Some(ret), one) => {
                for i in 0..rows.len() {
                    let is_start = s.is_none_or(|s| s.value(i));
                    let is_return = r.is_none_or(|r| r.value(i));
                    if !is_start && !is_return {
                        continue;
                    }
                    let Some(p) = one.or_else(|| cal.period_of(ts[i])) else {
                        continue;
                    };
                    let u = keys[i] as usize - lo;
                    if is_start {
                        st.start.set(p as usize, u);
                    }
                    if is_return {
                        ret.set(p as usize, u);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self, st: RetentionState) -> DfResult<RetentionCounts> {
        let n = self.bits().periods();
        let w = columns_of(&self.mode, n).len();
        let cohorts = self.cal.periods();
        let cohort_of = self.read.as_ref().map(|(_, of)| of.as_slice());
        let users = st.start.users();
        let labels: Vec<String> = st
            .values
            .values()
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| NONE_LABEL.to_string()))
            .collect();
        let mut per: Vec<Counts> = vec![Counts::new(cohorts, w); labels.len().max(1)];
        let mut paid = st.paid;
        paid.sort_unstable_by_key(|&(u, _, _)| u);
        let mut next_paid = 0;
        let mut mine: Vec<(u32, i128)> = Vec::new();
        // 64 users at a time, their bits turned user-major.
        let words = st.start.words();
        let mut starts = vec![0u64; 64 * words];
        let mut rets = vec![0u64; 64 * words];
        for b in 0..st.start.blocks() {
            st.start.user_major(b, &mut starts);
            if let Some(r) = &st.ret {
                r.user_major(b, &mut rets);
            }
            for i in 0..(users - b * 64).min(64) {
                let start = &starts[i * words..(i + 1) * words];
                let ret = match &st.ret {
                    Some(_) => &rets[i * words..(i + 1) * words],
                    None => start,
                };
                let g = if self.by.is_some() {
                    match st.value[b * 64 + i] {
                        u32::MAX => continue,
                        g => g as usize,
                    }
                } else {
                    0
                };
                per[g].user(start, ret, n, &self.mode, cohort_of);
                if self.revenue {
                    let u = (b * 64 + i) as u32;
                    while next_paid < paid.len() && paid[next_paid].0 < u {
                        next_paid += 1;
                    }
                    mine.clear();
                    while next_paid < paid.len() && paid[next_paid].0 == u {
                        mine.push((paid[next_paid].1, paid[next_paid].2));
                        next_paid += 1;
                    }
                    per[g].user_revenue(start, &mine, &self.mode, cohort_of);
                }
            }
        }
        let mut groups = std::collections::BTreeMap::new();
        if self.by.is_some() {
            for (label, c) in labels.into_iter().zip(per) {
                groups
                    .entry(label)
                    .and_modify(|a: &mut Counts| a.add(&c))
                    .or_insert(c);
            }
        } else {
            groups.insert(String::new(), per.pop().expect("one group"));
        }
        Ok(RetentionCounts { groups })
    }

    fn merge(&self, into: &mut RetentionCounts, other: RetentionCounts) -> DfResult<()> {
        for (label, c) in other.groups {
            match into.groups.get_mut(&label) {
                Some(a) => a.add(&c),
                None => {
                    into.groups.insert(label, c);
                }
            }
        }
        Ok(())
    }

    fn emit(&self, result: RetentionCounts) -> DfResult<RecordBatch> {
        let mut rows = Vec::new();
        for (label, c) in &result.groups {
            let read = self.read.as_ref().map(|(r, of)| (r, of.as_slice()));
            let mut part = c.rows_read(&self.cal, read, &self.mode, self.as_of, self.revenue);
            if self.by.is_some() {
                for r in &mut part {
                    r.group = Some(label.clone());
                }
            }
            rows.extend(part);
        }
        batch_of_rows(&rows, self.revenue)
    }
}

/// The schema of retention results (as the rows of `tenure retention`).
pub fn schema() -> datafusion::arrow::datatypes::SchemaRef {
    schema_of(false)
}

/// The schema of retention results; with `revenue` (`--value revenue`)
/// three more columns: `revenue` (the cell's revenue, exact),
/// `revenue_per_user` (per cohort user) and `revenue_per_retained_user`.
pub fn schema_of(revenue: bool) -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields = vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, true),
        Field::new("cohort", DataType::Utf8, true),
        Field::new("period", DataType::UInt32, false),
        Field::new("period_label", DataType::Utf8, false),
        Field::new("cohort_size", DataType::UInt64, false),
        Field::new("users", DataType::UInt64, true),
        Field::new("rate", DataType::Float64, true),
        Field::new("complete", DataType::Boolean, false),
    ];
    if revenue {
        fields.extend([
            Field::new(
                "revenue",
                DataType::Decimal128(38, tenure_schema::REVENUE_SCALE),
                true,
            ),
            Field::new("revenue_per_user", DataType::Float64, true),
            Field::new("revenue_per_retained_user", DataType::Float64, true),
        ]);
    }
    std::sync::Arc::new(Schema::new(fields))
}

fn batch_of_rows(rows: &[RetentionRow], revenue: bool) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array,
    };
    let mut cols: Vec<ArrayRef> = vec![
        std::sync::Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        std::sync::Arc::new(StringArray::from_iter(rows.iter().map(|r| r.group.clone()))),
        std::sync::Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.cohort.clone()),
        )),
        std::sync::Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.period))),
        std::sync::Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.period_label.clone()),
        )),
        std::sync::Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.cohort_size),
        )),
        std::sync::Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.users))),
        std::sync::Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.rate))),
        std::sync::Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.complete)),
        )),
    ];
    if revenue {
        let per =
            |n: u64, c: Option<i128>| c.filter(|_| n > 0).map(|c| c as f64 / 100.0 / n as f64);
        cols.push(std::sync::Arc::new(
            datafusion::arrow::array::Decimal128Array::from_iter(
                rows.iter().map(|r| r.revenue_cents),
            )
            .with_precision_and_scale(38, tenure_schema::REVENUE_SCALE)?,
        ));
        cols.push(std::sync::Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| per(r.cohort_size, r.revenue_cents)),
        )));
        cols.push(std::sync::Arc::new(Float64Array::from_iter(
            rows.iter()
                .map(|r| per(r.users.unwrap_or(0), r.revenue_cents)),
        )));
    }
    Ok(RecordBatch::try_new(schema_of(revenue), cols)?)
}

/// Rows of a batch of [`schema`].
pub fn rows_of_batch(b: &RecordBatch) -> Result<Vec<RetentionRow>> {
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
    let text = |i: usize| b.column(i).as_string::<i32>();
    let (kind, group, cohort, label) = (text(0), text(1), text(2), text(4));
    let period = b.column(3).as_primitive::<UInt32Type>();
    let size = b.column(5).as_primitive::<UInt64Type>();
    let users = b.column(6).as_primitive::<UInt64Type>();
    let rate = b.column(7).as_primitive::<Float64Type>();
    let complete = b.column(8).as_boolean();
    let revenue = b
        .column_by_name("revenue")
        .map(|c| c.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>());
    let opt = |a: &datafusion::arrow::array::StringArray, i: usize| {
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    Ok((0..b.num_rows())
        .map(|i| RetentionRow {
            kind: if kind.value(i) == "cohort" {
                "cohort"
            } else {
                "average"
            },
            group: opt(group, i),
            cohort: opt(cohort, i),
            period: period.value(i),
            period_label: label.value(i).to_string(),
            cohort_size: size.value(i),
            users: users.is_valid(i).then(|| users.value(i)),
            rate: rate.is_valid(i).then(|| rate.value(i)),
            complete: complete.value(i),
            revenue_cents: revenue.and_then(|r| r.is_valid(i).then(|| r.value(i))),
        })
        .collect())
}

fn label(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}
