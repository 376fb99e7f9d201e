//! Per-user facts in one scan, indexed by dense `user_key`: first and last seen,
//! purchases, revenue and last purchase. Lifecycle stages, RFM and segment
//! features are functions of these.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Expr, col, lit};
use futures::StreamExt;

use crate::stored::{self, Origin, join};
use crate::table::{Events, Part};
use crate::{EngineError, Result};

/// Sentinel for "never".
pub const NEVER: i64 = i64::MIN;

/// "Seen, before any as-of": what the buyers' pass gives as `first_seen`.
pub const SEEN_BEFORE: i64 = i64::MIN + 1;

/// What counts as a purchase.
#[derive(Debug, Clone)]
pub struct PurchaseSpec {
    /// Event name of purchases (default `purchase`).
    pub event: String,
}

impl Default for PurchaseSpec {
    fn default() -> Self {
        Self {
            event: "purchase".into(),
        }
    }
}

/// Facts about every user key (`users` entries; users without events in range
/// have `first_seen == NEVER`).
#[derive(Debug, Clone)]
pub struct UserStats {
    /// First event time.
    pub first_seen: Vec<i64>,
    /// Last event time.
    pub last_seen: Vec<i64>,
    /// First purchase time.
    pub first_purchase: Vec<i64>,
    /// Last purchase time.
    pub last_purchase: Vec<i64>,
    /// Number of purchase events.
    pub purchases: Vec<u32>,
    /// Sum of purchase revenue, in cents.
    pub revenue: Vec<i128>,
}

impl UserStats {
    fn new(users: usize) -> Self {
        Self {
            first_seen: vec![NEVER; users],
            last_seen: vec![NEVER; users],
            first_purchase: vec![NEVER; users],
            last_purchase: vec![NEVER; users],
            purchases: vec![0; users],
            revenue: vec![0; users],
        }
    }

    /// Number of user keys.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    /// No user keys?
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    /// Appends an entry for a user with no events: every time `NEVER`, no
    /// purchase, no revenue.
    pub fn push_blank(&mut self) {
        self.first_seen.push(NEVER);
        self.last_seen.push(NEVER);
        self.first_purchase.push(NEVER);
        self.last_purchase.push(NEVER);
        self.purchases.push(0);
        self.revenue.push(0);
    }

    fn merge(&mut self, o: UserStats) {
        let min = |a: i64, b: i64| match (a, b) {
            (NEVER, x) | (x, NEVER) => x,
            (a, b) => a.min(b),
        };
        for u in 0..self.len() {
            self.first_seen[u] = min(self.first_seen[u], o.first_seen[u]);
            self.last_seen[u] = self.last_seen[u].max(o.last_seen[u]);
            self.first_purchase[u] = min(self.first_purchase[u], o.first_purchase[u]);
            self.last_purchase[u] = self.last_purchase[u].max(o.last_purchase[u]);
            self.purchases[u] += o.purchases[u];
            self.revenue[u] += o.revenue[u];
        }
    }
}

/// Scans the events once.
pub async fn scan(events: &Events, purchase: &PurchaseSpec) -> Result<UserStats> {
    scan_with(events, purchase, true).await
}

/// Like [`scan`]; without `revenue` the revenue column is not read and
/// `revenue` stays 0.
pub async fn scan_with(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<UserStats> {
    let users = events.users();
    let streams = purchase_columns(events, purchase, false, revenue)
        .await?
        .execute_stream_partitioned()
        .await?;
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut st = UserStats::new(users);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let keys = batch.column(0).as_primitive::<UInt32Type>().values();
                let ts = batch
                    .column(1)
                    .as_primitive::<TimestampMicrosecondType>()
                    .values();
                let purchase = batch.column(2).as_boolean();
                let revenue = batch.column(3).as_primitive::<Decimal128Type>();
                for i in 0..batch.num_rows() {
                    let u = keys[i] as usize;
                    if u >= users {
                        return Err(beyond_dictionary());
                    }
                    let t = ts[i];
                    if st.first_seen[u] == NEVER || t < st.first_seen[u] {
                        st.first_seen[u] = t;
                    }
                    st.last_seen[u] = st.last_seen[u].max(t);
                    if purchase.is_valid(i) && purchase.value(i) {
                        if st.first_purchase[u] == NEVER || t < st.first_purchase[u] {
                            st.first_purchase[u] = t;
                        }
                        st.last_purchase[u] = st.last_purchase[u].max(t);
                        st.purchases[u] += 1;
                        if revenue.is_valid(i) {
                            st.revenue[u] += revenue.value(i);
                        }
                    }
                }
            }
            Ok::<_, EngineError>(st)
        }));
    }
    let mut parts = join(tasks).await?.into_iter();
    let mut acc = parts.next().unwrap_or_else(|| UserStats::new(users));
    parts.for_each(|p| acc.merge(p));
    Ok(acc)
}

/// `user_key`, `ts`, `is_purchase` and `revenue` (a null literal when not
/// wanted: it costs nothing to decode) of the events in range, or of the
/// purchases only.
async fn purchase_columns(
    events: &Events,
    purchase: &PurchaseSpec,
    purchases_only: bool,
    revenue: bool,
) -> Result<datafusion::dataframe::DataFrame> {
    let mut df = events.in_range().await?;
    let is_purchase: Expr = col("event").eq(lit(purchase.event.clone()));
    if purchases_only {
        df = df.filter(is_purchase.clone())?;
    }
    Ok(df.select(vec![
        col("user_key"),
        col("ts"),
        is_purchase.alias("is_purchase"),
        if revenue {
            col("revenue")
        } else {
            lit(datafusion::scalar::ScalarValue::Decimal128(
                None,
                tenure_schema::REVENUE_PRECISION,
                tenure_schema::REVENUE_SCALE,
            ))
            .alias("revenue")
        },
    ])?)
}

fn beyond_dictionary() -> EngineError {
    EngineError::Unreadable("user_key beyond the users dictionary".into())
}

/// The users who bought, with their purchase facts: `stats` entry `i` is the
/// user with key `keys[i]` (ascending).
#[derive(Debug, Clone)]
pub struct Buyers {
    /// Keys of the users with at least one purchase in range, ascending.
    pub keys: Vec<u32>,
    /// Their facts. This pass does not know when users were seen:
    /// `first_seen` is [`SEEN_BEFORE`] and `last_seen` [`NEVER`] for all.
    pub stats: UserStats,
}

/// Reads purchase events only (a small fraction of the rows) and returns the
/// buyers' facts, sized by the number of buyers rather than of users. Without
/// `revenue` the revenue column is not read and `revenue` stays 0.
///
/// When `events` is the stored files themselves, this pass reads them without
/// a DataFusion plan: one task per thread takes files from a shared queue
/// (largest first), keeps `event` as its dictionary so the event name is
/// compared once per distinct value, and takes the matching rows straight
/// from the decoded columns (no filter, copy or coalesce of batches between).
pub async fn scan_buyers(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Buyers> {
    let users = events.users();
    let parts = match &events.parts {
        Some(files) if events.since.is_none() => {
            purchases_direct(events, files, purchase, revenue).await?
        }
        _ => purchases_planned(events, purchase, revenue).await?,
    };
    let threads = crate::table::thread_count(events.options.threads);
    let (keys, stats) = tokio::task::spawn_blocking(move || fold_buyers(&parts, users, threads))
        .await
        .map_err(|e| EngineError::Internal(format!("purchase fold failed: {e}")))?;
    Ok(Buyers { keys, stats })
}

/// A scan task's purchase rows, column by column, as runs sorted by user key
/// (a stored file's purchases, or a stretch of a scan partition).
#[derive(Debug, Default)]
struct PurchaseRows {
    keys: Vec<u32>,
    ts: Vec<i64>,
    /// Revenue in cents, one per row when asked for, else empty.
    revenue: Vec<i128>,
    with_revenue: bool,
    /// Where each run starts.
    starts: Vec<usize>,
    /// The stored file the last run came from (direct reads).
    file: Option<usize>,
}

/// One run of purchase rows.
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    keys: &'a [u32],
    ts: &'a [i64],
    /// Empty when revenue is not read.
    revenue: &'a [i128],
}

impl PurchaseRows {
    fn new(with_revenue: bool) -> Self {
        Self {
            with_revenue,
            ..Self::default()
        }
    }

    fn start_run(&mut self) {
        self.starts.push(self.keys.len());
    }

    /// Appends a row; a key below the previous one starts a new run.
    fn push(&mut self, key: u32, ts: i64, revenue: i128) {
        if self.starts.is_empty() || self.keys.last().is_some_and(|&last| key < last) {
            self.start_run();
        }
        self.keys.push(key);
        self.ts.push(ts);
        if self.with_revenue {
            self.revenue.push(revenue);
        }
    }

    fn runs(&self) -> impl Iterator<Item = Run<'_>> {
        self.starts.iter().enumerate().map(|(i, &s)| {
            let e = self.starts.get(i + 1).copied().unwrap_or(self.keys.len());
            Run {
                keys: &self.keys[s..e],
                ts: &self.ts[s..e],
                revenue: self.revenue.get(s..e).unwrap_or(&[]),
            }
        })
    }

    /// All rows of `runs` in one run sorted by key.
    fn sorted(runs: &[Run<'_>], with_revenue: bool) -> Self {
        let mut all = Self::new(with_revenue);
        for r in runs {
            all.keys.extend_from_slice(r.keys);
            all.ts.extend_from_slice(r.ts);
            if with_revenue {
                // A run read without revenue counts 0 for it.
                match r.revenue.is_empty() {
                    true => all.revenue.resize(all.keys.len(), 0),
                    false => all.revenue.extend_from_slice(r.revenue),
                }
            }
        }
        let mut order: Vec<u32> = (0..all.keys.len() as u32).collect();
        order.sort_unstable_by_key(|&i| all.keys[i as usize]);
        let mut out = Self::new(with_revenue);
        out.start_run();
        out.keys = order.iter().map(|&i| all.keys[i as usize]).collect();
        out.ts = order.iter().map(|&i| all.ts[i as usize]).collect();
        if with_revenue {
            out.revenue = order.iter().map(|&i| all.revenue[i as usize]).collect();
        }
        out
    }
}

/// One buyer's purchase facts.
#[derive(Debug, Clone, Copy)]
struct Facts {
    first: i64,
    last: i64,
    revenue: i128,
    purchases: u32,
}

const NO_FACTS: Facts = Facts {
    first: i64::MAX,
    last: i64::MIN,
    revenue: 0,
    purchases: 0,
};

/// Users per block of the buyers' fold: a block's facts stay in cache.
const BUYER_BLOCK: usize = 16 * 1024;
/// Most runs walked block by block; more (input not sorted by user) are
/// sorted into one.
const MAX_PURCHASE_RUNS: usize = 4096;

/// Folds purchase rows into per-buyer facts, buyers in ascending key order
/// (the stats have room for one more entry, see [`UserStats::push_blank`]).
/// Users are folded block by block (each block's facts dense and in cache,
/// each run's rows for the block read in sequence), ranges of blocks taken by
/// threads as they go.
fn fold_buyers(parts: &[PurchaseRows], users: usize, threads: usize) -> (Vec<u32>, UserStats) {
    let with_revenue = parts.iter().any(|p| p.with_revenue);
    let mut runs: Vec<Run<'_>> = parts
        .iter()
        .flat_map(|p| p.runs())
        .filter(|r| !r.keys.is_empty())
        .collect();
    let sorted: PurchaseRows;
    if runs.len() > MAX_PURCHASE_RUNS {
        sorted = PurchaseRows::sorted(&runs, with_revenue);
        runs = sorted.runs().collect();
    }
    let blocks = users.div_ceil(BUYER_BLOCK).max(1);
    let ranges = (threads.max(1) * 4).min(blocks);
    let per = blocks.div_ceil(ranges) * BUYER_BLOCK;
    let fold = |lo: usize, hi: usize, block: &mut Vec<Facts>| {
        let mut out = BuyerColumns::default();
        let mut cur: Vec<usize> = runs
            .iter()
            .map(|run| run.keys.partition_point(|&k| (k as usize) < lo))
            .collect();
        for first in (lo..hi).step_by(BUYER_BLOCK) {
            let end = (first + BUYER_BLOCK).min(hi);
            for (run, at) in runs.iter().zip(cur.iter_mut()) {
                let stop = *at + run.keys[*at..].partition_point(|&k| (k as usize) < end);
                for i in *at..stop {
                    let f = &mut block[run.keys[i] as usize - first];
                    let t = run.ts[i];
                    f.first = f.first.min(t);
                    f.last = f.last.max(t);
                    f.purchases += 1;
                }
                if !run.revenue.is_empty() {
                    for i in *at..stop {
                        block[run.keys[i] as usize - first].revenue += run.revenue[i];
                    }
                }
                *at = stop;
            }
            for (u, f) in block[..end - first].iter_mut().enumerate() {
                if f.purchases > 0 {
                    out.keys.push((first + u) as u32);
                    out.first.push(f.first);
                    out.last.push(f.last);
                    out.purchases.push(f.purchases);
                    if with_revenue {
                        out.revenue.push(f.revenue);
                    }
                    *f = NO_FACTS;
                }
            }
        }
        out
    };
    let done = crate::par::fold_ranges(users, per, threads, || vec![NO_FACTS; BUYER_BLOCK], fold);
    // Each buyer-sized array allocated once, at its final size.
    let n = done.iter().map(|d| d.keys.len()).sum::<usize>();
    let mut keys = Vec::with_capacity(n);
    let mut st = UserStats {
        first_seen: Vec::new(),
        last_seen: Vec::new(),
        first_purchase: Vec::with_capacity(n + 1),
        last_purchase: Vec::with_capacity(n + 1),
        purchases: Vec::with_capacity(n + 1),
        revenue: Vec::with_capacity(n + 1),
    };
    for d in done {
        keys.extend_from_slice(&d.keys);
        st.first_purchase.extend_from_slice(&d.first);
        st.last_purchase.extend_from_slice(&d.last);
        st.purchases.extend_from_slice(&d.purchases);
        st.revenue.extend_from_slice(&d.revenue);
    }
    if !with_revenue {
        // Zeroed memory straight from the allocator: its pages are not
        // written (nor faulted in) unless something reads them.
        st.revenue = vec![0; n + 1];
        st.revenue.truncate(n);
    }
    // This pass does not know when buyers were first or last seen.
    st.first_seen = vec![SEEN_BEFORE; n];
    st.first_seen.reserve_exact(1);
    st.last_seen = vec![NEVER; n];
    st.last_seen.reserve_exact(1);
    (keys, st)
}

/// A range of buyers' facts, column by column.
#[derive(Debug, Default)]
struct BuyerColumns {
    keys: Vec<u32>,
    first: Vec<i64>,
    last: Vec<i64>,
    purchases: Vec<u32>,
    revenue: Vec<i128>,
}

/// Purchase rows (key, time, revenue) per task, read from the stored files.
async fn purchases_direct(
    events: &Events,
    files: &[Part],
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Vec<PurchaseRows>> {
    let scan = Arc::new(PurchaseScan {
        event: purchase.event.clone(),
        revenue,
        users: events.users(),
        range: (
            events.options.from.unwrap_or(i64::MIN),
            events.options.to.unwrap_or(i64::MAX),
        ),
    });
    let mut columns = vec!["user_key", "event", "ts"];
    if revenue {
        columns.push("revenue");
    }
    stored::scan_files(
        events,
        files,
        &columns,
        move || PurchaseRows::new(revenue),
        move |rows, origin, batch| {
            if rows.file != Some(origin.file) {
                rows.file = Some(origin.file);
                rows.start_run();
            }
            scan.take(origin, batch, rows)
        },
    )
    .await
}

/// Purchase rows (key, time, revenue) per partition, through a DataFusion plan
/// over `events` (which may be a view).
async fn purchases_planned(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Vec<PurchaseRows>> {
    let users = events.users();
    let streams = purchase_columns(events, purchase, true, revenue)
        .await?
        .execute_stream_partitioned()
        .await?;
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut rows = PurchaseRows::new(revenue);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let keys = batch.column(0).as_primitive::<UInt32Type>().values();
                let ts = batch
                    .column(1)
                    .as_primitive::<TimestampMicrosecondType>()
                    .values();
                let purchase = batch.column(2).as_boolean();
                let revenue = batch.column(3).as_primitive::<Decimal128Type>();
                for i in 0..batch.num_rows() {
                    if keys[i] as usize >= users {
                        return Err(beyond_dictionary());
                    }
                    if purchase.is_valid(i) && purchase.value(i) {
                        let r = if revenue.is_valid(i) {
                            revenue.value(i)
                        } else {
                            0
                        };
                        rows.push(keys[i], ts[i], r);
                    }
                }
            }
            Ok::<_, EngineError>(rows)
        }));
    }
    join(tasks).await
}

/// What the purchases-only pass keeps of a stored file.
struct PurchaseScan {
    event: String,
    revenue: bool,
    users: usize,
    /// Kept times: `range.0 <= ts < range.1`.
    range: (i64, i64),
}

impl PurchaseScan {
    /// Appends the (key, time, revenue) of the purchases in one batch.
    fn take(&self, origin: Origin<'_>, batch: &RecordBatch, rows: &mut PurchaseRows) -> Result<()> {
        let (k, t) = origin.keys_and_times(batch)?;
        let revenue = match self.revenue {
            true => Some(
                origin
                    .column(batch, "revenue")?
                    .as_primitive_opt::<Decimal128Type>()
                    .ok_or_else(|| origin.wrong("revenue"))?,
            ),
            false => None,
        };
        // Rows naming the purchase event (each distinct name compared once).
        let event = origin.column(batch, "event")?;
        let mut hit = Vec::new();
        if !stored::select_text(event, |name| name == self.event, &mut hit) {
            return Err(origin.wrong("event"));
        }
        for i in hit {
            let i = i as usize;
            if k[i] as usize >= self.users {
                return Err(beyond_dictionary());
            }
            if t[i] < self.range.0 || t[i] >= self.range.1 {
                continue;
            }
            let r = match revenue {
                Some(r) if r.is_valid(i) => r.value(i),
                _ => 0,
            };
            rows.push(k[i], t[i], r);
        }
        Ok(())
    }
}

/// Cents as an exact decimal string (`-12.05`).
pub fn cents(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift).
    fn rng(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |m| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        }
    }

    fn naive(parts: &[PurchaseRows]) -> BTreeMap<u32, (i64, i64, u32, i128)> {
        let mut m = BTreeMap::new();
        for p in parts {
            for (i, (&k, &t)) in p.keys.iter().zip(&p.ts).enumerate() {
                let r = p.revenue.get(i).copied().unwrap_or(0);
                let e = m.entry(k).or_insert((i64::MAX, i64::MIN, 0, 0));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t);
                e.2 += 1;
                e.3 += r;
            }
        }
        m
    }

    fn check(parts: &[PurchaseRows], users: usize, threads: usize) {
        let (keys, st) = fold_buyers(parts, users, threads);
        let got: BTreeMap<u32, (i64, i64, u32, i128)> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let f = (st.first_purchase[i], st.last_purchase[i]);
                (k, (f.0, f.1, st.purchases[i], st.revenue[i]))
            })
            .collect();
        assert_eq!(
            (st.first_seen.len(), st.last_seen.len(), st.revenue.len()),
            (keys.len(), keys.len(), keys.len())
        );
        assert!(st.first_seen.iter().all(|&t| t == SEEN_BEFORE));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys ascending");
        assert_eq!(got, naive(parts));
    }

    #[test]
    fn buyers_fold_matches_a_naive_fold_over_blocks_ranges_and_runs() {
        let users = 5 * BUYER_BLOCK + 123;
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        // Three tasks, each with several sorted runs (files) of purchases.
        let mut parts = Vec::new();
        for task in 0..3 {
            let mut p = PurchaseRows::new(task != 1);
            for _ in 0..7 {
                p.start_run();
                let mut keys: Vec<u32> = (0..2_000).map(|_| next(users as u64) as u32).collect();
                keys.sort_unstable();
                for k in keys {
                    p.push(k, next(1_000_000) as i64 - 500_000, next(10_000) as i128);
                }
            }
            parts.push(p);
        }
        for threads in [1, 2, 3] {
            check(&parts, users, threads);
            check(&parts[1..2], users, threads);
        }
        // Unsorted input: every row after a larger key starts a run, beyond
        // the most runs walked block by block.
        for with_revenue in [true, false] {
            let mut p = PurchaseRows::new(with_revenue);
            for _ in 0..3 * MAX_PURCHASE_RUNS {
                p.push(
                    next(users as u64) as u32,
                    next(1_000) as i64,
                    1 + next(5) as i128,
                );
            }
            assert!(p.starts.len() > MAX_PURCHASE_RUNS);
            check(&[p], users, 2);
        }
        // No purchases at all, and no users.
        check(&[PurchaseRows::default()], users, 2);
        check(&[], 0, 2);
    }
}
