//! KPIs per reporting period (week or month) and over the whole range.
//!
//! Per period P (a user is active on a day with any event):
//! - `active_users`: distinct users active in P (WAU for weeks, MAU for months);
//! - `dau`: mean over P's days of the users active that day;
//! - `stickiness`: dau / active_users (DAU/MAU for months);
//! - `revenue`, `orders` (purchase events), `purchasers` (distinct);
//! - `arpu` = revenue / active_users; `arppu` = revenue / purchasers;
//!   `aov` = revenue / orders;
//! - `churn_rate`: of users active in P-1, the share not active in P;
//! - `reactivation_rate`: of users active before P-1 but not in P-1, the share
//!   active in P.
//!
//! Over the range: `repurchase_rate` (purchasers with two or more purchases /
//! purchasers) and `first_order_conversion` (users whose first purchase came
//! within N days after their first signup event / users whose first signup
//! came at least N days before the as-of time, so everyone counted had the
//! full N days; a first purchase before the signup is not a conversion).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, PrimitiveArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Decimal64Type, Field, Schema, SchemaRef};
use datafusion::common::exec_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, col, lit};

use crate::Result;
use crate::calendar::{Calendar, DAY_MICROS, Period};
use crate::fold::bits::PeriodBits;
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;
use crate::userstats::{NEVER, PurchaseSpec};

/// One KPI value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KpiRow {
    /// Metric name.
    pub metric: String,
    /// Period start (ISO date), or `all` for range-wide metrics.
    pub period: String,
    /// The value; `None` when its denominator is zero.
    pub value: Option<f64>,
    /// Numerator.
    pub numerator: f64,
    /// Denominator (1 for plain counts and sums).
    pub denominator: f64,
    /// Has the period fully elapsed?
    pub complete: bool,
}

/// A KPI request.
#[derive(Debug, Clone)]
pub struct KpiSpec {
    /// Reporting period.
    pub period: Period,
    /// Time zone.
    pub tz: chrono_tz::Tz,
    /// Purchase event.
    pub purchase: PurchaseSpec,
    /// Window of first-order conversion, in days.
    pub conversion_days: i64,
    /// The event first-order conversion counts from (`signup`).
    pub signup: String,
}

fn row(metric: &str, period: &str, num: f64, den: f64, complete: bool) -> KpiRow {
    KpiRow {
        metric: metric.into(),
        period: period.into(),
        value: (den != 0.0).then(|| num / den),
        numerator: num,
        denominator: den,
        complete,
    }
}

/// Computes the KPIs in one pass over the events ([`KpiFold`]).
pub async fn kpis(events: &Events, spec: &KpiSpec) -> Result<Vec<KpiRow>> {
    let fold = KpiFold::new(events, spec)?;
    let batches = crate::fold::run(events, fold).await?;
    Ok(batches.iter().flat_map(rows_of_batch).collect())
}

/// The output schema (the columns of [`KpiRow`]).
pub fn schema() -> SchemaRef {
    schema_of(false)
}

/// The output schema; with a breakdown a `group` column first.
pub fn schema_of(by: bool) -> SchemaRef {
    let mut fields = Vec::new();
    if by {
        fields.push(Field::new("group", DataType::Utf8, false));
    }
    fields.extend([
        Field::new("metric", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("numerator", DataType::Float64, false),
        Field::new("denominator", DataType::Float64, false),
        Field::new("complete", DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Rows of a batch of [`schema`] (or [`schema_of`] with a group, which is
/// not kept).
pub fn rows_of_batch(b: &RecordBatch) -> Vec<KpiRow> {
    use datafusion::arrow::datatypes::Float64Type;
    let at = usize::from(b.schema().field(0).name() == "group");
    let metric = b.column(at).as_string::<i32>();
    let period = b.column(at + 1).as_string::<i32>();
    let value = b.column(at + 2).as_primitive::<Float64Type>();
    let num = b.column(at + 3).as_primitive::<Float64Type>();
    let den = b.column(at + 4).as_primitive::<Float64Type>();
    let complete = b.column(at + 5).as_boolean();
    (0..b.num_rows())
        .map(|i| KpiRow {
            metric: metric.value(i).to_string(),
            period: period.value(i).to_string(),
            value: value.is_valid(i).then(|| value.value(i)),
            numerator: num.value(i),
            denominator: den.value(i),
            complete: complete.value(i),
        })
        .collect()
}

/// Every KPI in one [`UserFold`]: per user, the days with any event and with a
/// purchase, the number of purchases and the first signup (a first purchase
/// is judged when its day settles); per range, the period counts those give,
/// plus revenue and orders per period.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct KpiFold {
    days: Calendar,
    rep: Calendar,
    /// Reporting period of each day.
    day_rep: Vec<usize>,
    purchase: String,
    signup: String,
    conversion_days: i64,
    max_ts: i64,
}

impl KpiFold {
    /// The fold of `spec` over the events in range.
    pub fn new(events: &Events, spec: &KpiSpec) -> Result<Self> {
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let days = Calendar::new(Period::Day, spec.tz, min_ts, max_ts)?;
        let rep = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
        let day_rep = (0..days.periods())
            .map(|d| rep.period_of(days.day_start(d)).unwrap_or(0) as usize)
            .collect();
        Ok(Self {
            days,
            rep,
            day_rep,
            purchase: spec.purchase.event.clone(),
            signup: spec.signup.clone(),
            conversion_days: spec.conversion_days,
            max_ts,
        })
    }
}

/// [`KpiFold`]'s state for a range of users. Rows arrive file by file,
/// files earliest first ([`Rows::file_min_ts`]): a day that ended before the
/// current file's earliest event gets no more rows, so it is settled (its
/// users counted, and merged into their reporting period) and its bitmap
/// reused. Only the days still open hold a bitmap of their own (one or two
/// with a file per day), so the state is a few bits per user and period,
/// not per day: at 10M users, per-day bitmaps for 91 days were 113 MB to
/// allocate and fault in, more than the reading took.
pub struct KpiState {
    lo: u32,
    /// Words of a bitmap of the range's users.
    words: usize,
    /// The users active on each open day (`None`: none yet, or settled).
    open: Vec<Option<Vec<u64>>>,
    /// Zeroed bitmaps of settled days, to reuse.
    spare: Vec<Vec<u64>>,
    /// Days before this one are settled.
    settled: usize,
    /// Users active per day (settled days).
    dau: Vec<u64>,
    /// The reporting periods each user was active in, and bought in.
    active: PeriodBits,
    bought: PeriodBits,
    /// Users with a purchase, and with two or more.
    once: Vec<u64>,
    twice: Vec<u64>,
    /// First signup per user, as an [`earliest_key`]. The only per-user
    /// time kept: memory never touched costs the kernel's zeroing when first
    /// written (about 1.8 GB/s in this VM), and a first purchase time per
    /// user doubled it (160 MB at 10M users).
    first_signup: Vec<u64>,
    /// Purchases `(user, time)` of each open day, judged for first-order
    /// conversion when the day settles ([`KpiState::convert`]).
    pending: Vec<Vec<(u32, i64)>>,
    /// Users whose first purchase is in a settled day.
    paid: Vec<u64>,
    /// Per user, while a day's purchases are judged: one of them came
    /// before the first signup (or with no signup yet), one within the
    /// window after it.
    early: Vec<u64>,
    within: Vec<u64>,
    /// Users whose first purchase came within the window after their first
    /// signup, that signup at least the window before the as-of time.
    converted: u64,
    /// The conversion window (µs) and the newest event's time.
    window: i64,
    max_ts: i64,
    revenue: Vec<i128>,
    orders: Vec<u64>,
}

/// The revenue column (the first read), in cents: read at its stored
/// 64-bit width ([`FoldInput::narrow`]).
fn cents<'a>(rows: &Rows<'a>) -> DfResult<&'a PrimitiveArray<Decimal64Type>> {
    match rows.column(0).as_primitive_opt::<Decimal64Type>() {
        Some(c) => Ok(c),
        None => exec_err!(
            "column `revenue` is {}, not a 64-bit decimal",
            rows.column(0).data_type()
        ),
    }
}

/// A time as a key where a larger key is an earlier time and 0 is none, so
/// that the earliest of several is a `max` (no branch on the value loaded:
/// the misses of consecutive rows overlap) kept in zeroed memory.
fn earliest_key(t: i64) -> u64 {
    !((t as u64) ^ (1 << 63))
}

/// The time of an [`earliest_key`] other than none (0).
fn key_time(k: u64) -> i64 {
    (!k ^ (1 << 63)) as i64
}

/// The time of an [`earliest_key`], `None` for none.
fn time_of_key(k: u64) -> Option<i64> {
    (k != 0).then(|| key_time(k))
}

impl KpiState {
    /// Settles every day before `d`: counts its users and merges them into
    /// the day's reporting period.
    fn settle(&mut self, d: usize, day_rep: &[usize]) {
        let d = d.min(self.open.len());
        while self.settled < d {
            let day = self.settled;
            self.convert(day);
            if let Some(mut bits) = self.open[day].take() {
                let period = self.active.period_mut(day_rep[day]);
                let mut n = 0u64;
                // Counted, merged and cleared for reuse in one pass.
                for (p, w) in period.iter_mut().zip(bits.iter_mut()) {
                    *p |= *w;
                    n += w.count_ones() as u64;
                    *w = 0;
                }
                self.dau[day] = n;
                self.spare.push(bits);
            }
            self.settled += 1;
        }
    }

    /// Judges the purchases of `day`, which is settling: every row up to its
    /// end has been folded, so a user's first signup, if it is not later
    /// than the day, is final, and a user without a settled day's purchase
    /// (`paid`) has the first purchase among these. That purchase converts
    /// when none of the day's purchases came before the first signup (or
    /// before any signup) and one came within the window after it: the
    /// earliest is then within it, whichever it is.
    fn convert(&mut self, day: usize) {
        let mut pending = std::mem::take(&mut self.pending[day]);
        // Without a branch on the signup loaded, so that the loads (a cache
        // miss each at 10M users) overlap. Users already `paid` get bits
        // too, never read: the second pass skips them.
        for &(u, t) in &pending {
            let (w, m) = ((u / 64) as usize, 1u64 << (u % 64));
            let k = self.first_signup[u as usize];
            let s = key_time(k);
            let after = k != 0 && t >= s;
            let within = after && t.wrapping_sub(s) <= self.window;
            self.within[w] |= m * u64::from(within);
            self.early[w] |= m * u64::from(!after);
        }
        for &(u, _) in &pending {
            let (w, m) = ((u / 64) as usize, 1u64 << (u % 64));
            if self.paid[w] & m != 0 {
                continue;
            }
            self.paid[w] |= m;
            let eligible = time_of_key(self.first_signup[u as usize])
                .is_some_and(|s| s + self.window <= self.max_ts);
            if eligible && self.within[w] & m != 0 && self.early[w] & m == 0 {
                self.converted += 1;
            }
            self.within[w] &= !m;
            self.early[w] &= !m;
        }
        pending.clear();
        self.pending[day] = pending;
    }

    /// The bitmap of open day `d`.
    fn day(&mut self, d: usize) -> DfResult<&mut [u64]> {
        if d < self.settled {
            // Files come earliest first (`Rows::file_min_ts`); a row of a
            // settled day would be counted twice or not at all.
            return datafusion::common::internal_err!(
                "kpi: a row of day {d} after the days before {} were settled",
                self.settled
            );
        }
        let words = self.words;
        let spare = &mut self.spare;
        Ok(self.open[d].get_or_insert_with(|| spare.pop().unwrap_or_else(|| vec![0; words])))
    }

    /// Marks the users of `keys` active on day `d`: a bit set per row, with
    /// no branch on whether the word changed (1.6 against 2.9 ns a row,
    /// measured on a day's sorted keys: the words change every few rows, in
    /// no pattern a predictor learns).
    fn one_day(&mut self, d: usize, keys: &[u32]) -> DfResult<()> {
        let lo = self.lo;
        let today = self.day(d)?;
        for &k in keys {
            let u = (k - lo) as usize;
            if let Some(w) = today.get_mut(u / 64) {
                *w |= 1u64 << (u % 64);
            }
        }
        Ok(())
    }
}

/// Sums over users (per day, per reporting period, over the range).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KpiCounts {
    dau: Vec<u64>,
    active: Vec<u64>,
    purchasers: Vec<u64>,
    churn_base: Vec<u64>,
    churned: Vec<u64>,
    pool: Vec<u64>,
    reactivated: Vec<u64>,
    revenue: Vec<i128>,
    orders: Vec<u64>,
    buyers: u64,
    repeat: u64,
    eligible: u64,
    converted: u64,
}

impl UserFold for KpiFold {
    type State = KpiState;
    type Partial = KpiCounts;

    fn name(&self) -> &'static str {
        "kpi"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: vec!["revenue".into()],
            flags: vec![
                col("event").eq(lit(self.purchase.clone())),
                col("event").eq(lit(self.signup.clone())),
            ],
            until: None,
            narrow: true,
            // Counts and sums per period; per-user state is by key only.
            any_key: true,
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn start(&self, keys: Range<u32>) -> KpiState {
        let users = (keys.end - keys.start) as usize;
        let (nd, np, words) = (self.days.periods(), self.rep.periods(), users.div_ceil(64));
        KpiState {
            lo: keys.start,
            words,
            open: vec![None; nd],
            spare: Vec::new(),
            settled: 0,
            dau: vec![0; nd],
            active: PeriodBits::new(users, np),
            bought: PeriodBits::new(users, np),
            once: vec![0; words],
            twice: vec![0; words],
            first_signup: crate::par::huge_zeroed(users),
            pending: vec![Vec::new(); nd],
            paid: vec![0; words],
            early: vec![0; words],
            within: vec![0; words],
            converted: 0,
            window: self.conversion_days * DAY_MICROS,
            max_ts: self.max_ts,
            revenue: vec![0; np],
            orders: vec![0; np],
        }
    }

    fn update(&self, st: &mut KpiState, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let rev = cents(rows)?;
        let purchase = rows.flag(0);
        let Some((a, b)) = crate::fold::bits::min_max(ts) else {
            return Ok(());
        };
        // No row still to come is earlier than this file's earliest event.
        if let Some(d) = self.days.period_of(rows.file_min_ts()) {
            st.settle(d as usize, &self.day_rep);
        }
        // A batch's rows usually come from one day's file.
        match self
            .days
            .period_of(a)
            .filter(|&d| self.days.period_of(b) == Some(d))
        {
            Some(d) => st.one_day(d as usize, keys)?,
            // Every row: the day's activity bit.
            None => {
                for i in 0..rows.len() {
                    let u = (keys[i] - st.lo) as usize;
                    if let Some(d) = self.days.period_of(ts[i]) {
                        st.day(d as usize)?[u / 64] |= 1u64 << (u % 64);
                    }
                }
            }
        }
        // Signups (about one row per user).
        for i in rows.flag(1).values().set_indices() {
            let f = &mut st.first_signup[(keys[i] - st.lo) as usize];
            *f = (*f).max(earliest_key(ts[i]));
        }
        // Purchases only (a few percent of the rows).
        for i in purchase.values().set_indices() {
            let u = (keys[i] - st.lo) as usize;
            let t = ts[i];
            let Some(d) = self.days.period_of(t) else {
                continue;
            };
            let p = self.day_rep[d as usize];
            st.bought.set(p, u);
            let (w, m) = (u / 64, 1u64 << (u % 64));
            if st.once[w] & m != 0 {
                st.twice[w] |= m;
            } else {
                st.once[w] |= m;
            }
            // Judged for conversion when its day settles.
            st.pending[d as usize].push((u as u32, t));
            st.orders[p] += 1;
            if rev.is_valid(i) {
                st.revenue[p] += i128::from(rev.value(i));
            }
        }
        Ok(())
    }

    fn finish(&self, mut st: KpiState) -> DfResult<KpiCounts> {
        let np = self.rep.periods();
        st.settle(st.open.len(), &self.day_rep);
        let mut c = KpiCounts {
            revenue: st.revenue,
            orders: st.orders,
            dau: st.dau,
            ..KpiCounts::zero(0, np)
        };
        c.buyers = st.once.iter().map(|w| w.count_ones() as u64).sum();
        c.repeat = st.twice.iter().map(|w| w.count_ones() as u64).sum();
        c.eligible = st
            .first_signup
            .iter()
            .filter(|&&f| time_of_key(f).is_some_and(|f| f + st.window <= st.max_ts))
            .count() as u64;
        c.converted = st.converted;
        // 64 users at a time: bit i of `act[p]` is user i's activity in
        // reporting period p, so every count below is a population count.
        for b in 0..st.active.blocks() {
            let act = |p: usize| st.active.word(p, b);
            let pop = |w: u64| w.count_ones() as u64;
            // Users active in some period before the previous one.
            let mut seen_before_prev = 0u64;
            for p in 0..np {
                c.active[p] += pop(act(p));
                c.purchasers[p] += pop(st.bought.word(p, b));
                if p > 0 {
                    let prev = act(p - 1);
                    c.churn_base[p] += pop(prev);
                    c.churned[p] += pop(prev & !act(p));
                    let pool = !prev & seen_before_prev;
                    c.pool[p] += pop(pool);
                    c.reactivated[p] += pop(pool & act(p));
                    seen_before_prev |= prev;
                }
            }
        }
        Ok(c)
    }

    fn merge(&self, a: &mut KpiCounts, b: KpiCounts) -> DfResult<()> {
        a.add(b);
        Ok(())
    }

    fn emit(&self, c: KpiCounts) -> DfResult<RecordBatch> {
        let rows = self.rows_of_counts(&c);
        batch_of(&rows, None)
    }
}

impl KpiFold {
    /// The KPI rows of one population's counts.
    fn rows_of_counts(&self, c: &KpiCounts) -> Vec<KpiRow> {
        let (nd, np) = (self.days.periods(), self.rep.periods());
        let as_of = self.days.end_of_day(self.max_ts);
        let mut rows = Vec::new();
        for p in 0..np {
            let label = self.rep.start_date(p).to_string();
            let complete = self.rep.end_utc(p) <= as_of;
            let day_range: Vec<usize> = (0..nd).filter(|d| self.day_rep[*d] == p).collect();
            let dau_sum: u64 = day_range.iter().map(|d| c.dau[*d]).sum();
            let n_days = day_range.len() as f64;
            let rev = c.revenue[p] as f64 / 100.0;
            let act_p = c.active[p] as f64;
            rows.push(row("active_users", &label, act_p, 1.0, complete));
            rows.push(row("dau", &label, dau_sum as f64, n_days, complete));
            let dau_mean = if n_days > 0.0 {
                dau_sum as f64 / n_days
            } else {
                0.0
            };
            rows.push(row("stickiness", &label, dau_mean, act_p, complete));
            rows.push(row("revenue", &label, rev, 1.0, complete));
            rows.push(row("orders", &label, c.orders[p] as f64, 1.0, complete));
            let buyers = c.purchasers[p] as f64;
            rows.push(row("purchasers", &label, buyers, 1.0, complete));
            rows.push(row("arpu", &label, rev, act_p, complete));
            rows.push(row("arppu", &label, rev, buyers, complete));
            rows.push(row("aov", &label, rev, c.orders[p] as f64, complete));
            if p > 0 {
                rows.push(row(
                    "churn_rate",
                    &label,
                    c.churned[p] as f64,
                    c.churn_base[p] as f64,
                    complete,
                ));
                rows.push(row(
                    "reactivation_rate",
                    &label,
                    c.reactivated[p] as f64,
                    c.pool[p] as f64,
                    complete,
                ));
            }
        }
        rows.push(row(
            "repurchase_rate",
            "all",
            c.repeat as f64,
            c.buyers as f64,
            true,
        ));
        rows.push(row(
            &format!("first_order_conversion_{}d", self.conversion_days),
            "all",
            c.converted as f64,
            c.eligible as f64,
            true,
        ));
        rows
    }
}

/// Rows as a batch of [`schema_of`] (with `group` first when given).
fn batch_of(rows: &[KpiRow], group: Option<&[String]>) -> DfResult<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    if let Some(g) = group {
        cols.push(Arc::new(StringArray::from_iter_values(g.iter())));
    }
    cols.extend::<[ArrayRef; 6]>([
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.period.as_str()),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.numerator),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.denominator),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.complete)),
        )),
    ]);
    Ok(RecordBatch::try_new(schema_of(group.is_some()), cols)?)
}

/// The KPIs broken down by a value at each user's first event in range
/// (`tenure kpi --by`): the same numbers as [`KpiFold`] per group (they add
/// up to its counts), computed per user from their rows read whole and in
/// time order, so [`KpiFold`]'s unordered path stays as it is.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct KpiByFold {
    kpi: KpiFold,
    #[serde(with = "crate::codec::opt_expr")]
    by: Option<Expr>,
}

impl KpiByFold {
    /// The fold of `spec` broken down by `by` (`country` or `country,variant`).
    pub fn new(events: &Events, spec: &KpiSpec, by: &str) -> Result<Self> {
        Ok(Self {
            kpi: KpiFold::new(events, spec)?,
            by: Some(crate::breakdown::by_expr(events, by)?),
        })
    }
}

impl KpiCounts {
    fn zero(nd: usize, np: usize) -> Self {
        Self {
            dau: vec![0; nd],
            active: vec![0; np],
            purchasers: vec![0; np],
            churn_base: vec![0; np],
            churned: vec![0; np],
            pool: vec![0; np],
            reactivated: vec![0; np],
            revenue: vec![0; np],
            orders: vec![0; np],
            buyers: 0,
            repeat: 0,
            eligible: 0,
            converted: 0,
        }
    }

    fn add(&mut self, b: KpiCounts) {
        let add = |x: &mut Vec<u64>, y: Vec<u64>| x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        add(&mut self.dau, b.dau);
        add(&mut self.active, b.active);
        add(&mut self.purchasers, b.purchasers);
        add(&mut self.churn_base, b.churn_base);
        add(&mut self.churned, b.churned);
        add(&mut self.pool, b.pool);
        add(&mut self.reactivated, b.reactivated);
        add(&mut self.orders, b.orders);
        self.revenue
            .iter_mut()
            .zip(b.revenue)
            .for_each(|(x, y)| *x += y);
        self.buyers += b.buyers;
        self.repeat += b.repeat;
        self.eligible += b.eligible;
        self.converted += b.converted;
    }
}

/// Counts per group label.
pub type KpiGroups = std::collections::BTreeMap<String, KpiCounts>;

impl UserFold for KpiByFold {
    type State = KpiGroups;
    type Partial = KpiGroups;

    fn name(&self) -> &'static str {
        "kpi_by"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            values: self.by.iter().cloned().collect(),
            ordered: true,
            ..self.kpi.input()
        }
    }

    fn schema(&self) -> SchemaRef {
        schema_of(true)
    }

    fn start(&self, _keys: Range<u32>) -> KpiGroups {
        KpiGroups::new()
    }

    fn update(&self, st: &mut KpiGroups, rows: &Rows<'_>) -> DfResult<()> {
        let f = &self.kpi;
        let (nd, np) = (f.days.periods(), f.rep.periods());
        let ts = rows.ts();
        let rev = cents(rows)?;
        let values = datafusion::arrow::compute::cast(rows.column(1), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let (purchase, signup) = (rows.flag(0), rows.flag(1));
        let window = f.conversion_days * DAY_MICROS;
        let (mut act, mut bought) = (vec![false; np], vec![false; np]);
        for (_, range) in rows.users() {
            // The group: the value at the first event (at equal times the
            // smallest value).
            let mut first: Option<(i64, Option<&str>)> = None;
            for i in range.clone() {
                let v = values.is_valid(i).then(|| values.value(i));
                match first {
                    Some((t, _)) if t < ts[i] => break,
                    Some((_, w)) if w <= v => {}
                    _ => first = Some((ts[i], v)),
                }
            }
            let Some((_, label)) = first else { continue };
            let label =
                label.map_or_else(|| crate::breakdown::NONE_LABEL.to_string(), str::to_string);
            let c = st.entry(label).or_insert_with(|| KpiCounts::zero(nd, np));
            act.fill(false);
            bought.fill(false);
            let (mut last_day, mut purchases) = (usize::MAX, 0u64);
            let (mut first_signup, mut first_purchase) = (NEVER, NEVER);
            for i in range {
                let Some(d) = f.days.period_of(ts[i]) else {
                    continue;
                };
                let d = d as usize;
                if d != last_day {
                    c.dau[d] += 1;
                    last_day = d;
                }
                let p = f.day_rep[d];
                act[p] = true;
                if signup.value(i) && first_signup == NEVER {
                    first_signup = ts[i];
                }
                if purchase.value(i) {
                    purchases += 1;
                    bought[p] = true;
                    c.orders[p] += 1;
                    if rev.is_valid(i) {
                        c.revenue[p] += i128::from(rev.value(i));
                    }
                    if first_purchase == NEVER {
                        first_purchase = ts[i];
                    }
                }
            }
            let mut seen_before_prev = false;
            for p in 0..np {
                c.active[p] += u64::from(act[p]);
                c.purchasers[p] += u64::from(bought[p]);
                if p > 0 {
                    let prev = act[p - 1];
                    c.churn_base[p] += u64::from(prev);
                    c.churned[p] += u64::from(prev && !act[p]);
                    let pool = !prev && seen_before_prev;
                    c.pool[p] += u64::from(pool);
                    c.reactivated[p] += u64::from(pool && act[p]);
                    seen_before_prev |= prev;
                }
            }
            c.buyers += u64::from(purchases > 0);
            c.repeat += u64::from(purchases > 1);
            if first_signup != NEVER && first_signup + window <= f.max_ts {
                c.eligible += 1;
                c.converted += u64::from(
                    first_purchase != NEVER
                        && first_purchase >= first_signup
                        && first_purchase - first_signup <= window,
                );
            }
        }
        Ok(())
    }

    fn finish(&self, st: KpiGroups) -> DfResult<KpiGroups> {
        Ok(st)
    }

    fn merge(&self, into: &mut KpiGroups, other: KpiGroups) -> DfResult<()> {
        for (g, c) in other {
            match into.get_mut(&g) {
                Some(a) => a.add(c),
                None => {
                    into.insert(g, c);
                }
            }
        }
        Ok(())
    }

    fn emit(&self, groups: KpiGroups) -> DfResult<RecordBatch> {
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        for (g, c) in &groups {
            let mine = self.kpi.rows_of_counts(c);
            labels.extend(std::iter::repeat_n(g.clone(), mine.len()));
            rows.extend(mine);
        }
        batch_of(&rows, Some(&labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_keys_order_times_backwards_and_zero_is_none() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX - 1];
        for w in times.windows(2) {
            assert!(earliest_key(w[0]) > earliest_key(w[1]));
        }
        for t in times {
            assert_ne!(earliest_key(t), 0);
            assert_eq!(time_of_key(earliest_key(t)), Some(t));
        }
        assert_eq!(time_of_key(0), None);
    }
}
