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
    EngineError::BadRequest("user_key beyond the users dictionary".into())
}

/// The users who bought, with their purchase facts: `stats` entry `i` is the
/// user with key `keys[i]` (ascending).
#[derive(Debug, Clone)]
pub struct Buyers {
    /// Keys of the users with at least one purchase in range, ascending.
    pub keys: Vec<u32>,
    /// Their facts; `first_seen`/`last_seen` describe purchases only, so
    /// callers must not use them as "seen".
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
        Some(files) => purchases_direct(events, files, purchase, revenue).await?,
        None => purchases_planned(events, purchase, revenue).await?,
    };
    let threads = crate::table::thread_count(events.options.threads);
    let (keys, stats) = tokio::task::spawn_blocking(move || fold_buyers(&parts, users, threads))
        .await
        .map_err(|e| EngineError::BadRequest(format!("purchase fold failed: {e}")))?;
    Ok(Buyers { keys, stats })
}

/// A purchase row: user key, time, revenue (cents).
type Purchase = (u32, i64, i128);

/// A scan task's purchase rows, as runs sorted by user key (a stored file's
/// purchases, or a stretch of a scan partition).
#[derive(Debug, Default)]
struct PurchaseRows {
    rows: Vec<Purchase>,
    /// Where each run starts in `rows`.
    starts: Vec<usize>,
    /// The stored file the last run came from (direct reads).
    file: Option<usize>,
}

impl PurchaseRows {
    fn start_run(&mut self) {
        self.starts.push(self.rows.len());
    }

    /// Appends a row; a key below the previous one starts a new run.
    fn push(&mut self, row: Purchase) {
        if self.starts.is_empty() || self.rows.last().is_some_and(|last| row.0 < last.0) {
            self.start_run();
        }
        self.rows.push(row);
    }

    fn runs(&self) -> impl Iterator<Item = &[Purchase]> {
        self.starts.iter().enumerate().map(|(i, &s)| {
            let e = self.starts.get(i + 1).copied().unwrap_or(self.rows.len());
            &self.rows[s..e]
        })
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
    let mut runs: Vec<&[Purchase]> = parts
        .iter()
        .flat_map(|p| p.runs())
        .filter(|r| !r.is_empty())
        .collect();
    let sorted: Vec<Purchase>;
    if runs.len() > MAX_PURCHASE_RUNS {
        let mut all: Vec<Purchase> = runs.concat();
        all.sort_unstable_by_key(|r| r.0);
        sorted = all;
        runs = vec![&sorted];
    }
    let blocks = users.div_ceil(BUYER_BLOCK).max(1);
    let ranges = (threads.max(1) * 4).min(blocks);
    let per = blocks.div_ceil(ranges) * BUYER_BLOCK;
    let fold = |lo: usize, hi: usize, block: &mut Vec<Facts>| {
        let (mut keys, mut facts) = (Vec::new(), Vec::new());
        let mut cur: Vec<usize> = runs
            .iter()
            .map(|run| run.partition_point(|p| (p.0 as usize) < lo))
            .collect();
        for first in (lo..hi).step_by(BUYER_BLOCK) {
            let end = (first + BUYER_BLOCK).min(hi);
            for (run, at) in runs.iter().zip(cur.iter_mut()) {
                while let Some(&(k, t, rev)) = run.get(*at) {
                    if k as usize >= end {
                        break;
                    }
                    let f = &mut block[k as usize - first];
                    f.first = f.first.min(t);
                    f.last = f.last.max(t);
                    f.purchases += 1;
                    f.revenue += rev;
                    *at += 1;
                }
            }
            for (u, f) in block[..end - first].iter_mut().enumerate() {
                if f.purchases > 0 {
                    keys.push((first + u) as u32);
                    facts.push(*f);
                    *f = NO_FACTS;
                }
            }
        }
        (keys, facts)
    };
    let done = crate::par::fold_ranges(users, per, threads, || vec![NO_FACTS; BUYER_BLOCK], fold);
    // Each buyer-sized array allocated once, at its final size.
    let n = done.iter().map(|d| d.0.len()).sum::<usize>() + 1;
    let mut keys = Vec::with_capacity(n);
    let mut st = UserStats {
        first_seen: Vec::with_capacity(n),
        last_seen: Vec::with_capacity(n),
        first_purchase: Vec::with_capacity(n),
        last_purchase: Vec::with_capacity(n),
        purchases: Vec::with_capacity(n),
        revenue: Vec::with_capacity(n),
    };
    for (k, facts) in done {
        keys.extend_from_slice(&k);
        st.first_purchase.extend(facts.iter().map(|f| f.first));
        st.last_purchase.extend(facts.iter().map(|f| f.last));
        st.purchases.extend(facts.iter().map(|f| f.purchases));
        st.revenue.extend(facts.iter().map(|f| f.revenue));
    }
    st.first_seen.extend_from_slice(&st.first_purchase);
    st.last_seen.extend_from_slice(&st.last_purchase);
    (keys, st)
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
        PurchaseRows::default,
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
            let mut rows = PurchaseRows::default();
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
                        rows.push((keys[i], ts[i], r));
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
        let mut hit = Vec::new();
        let event = origin.column(batch, "event")?;
        if !stored::map_text(event, |name| name == self.event, &mut hit) {
            return Err(origin.wrong("event"));
        }
        for i in (0..batch.num_rows()).filter(|&i| hit[i]) {
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
            rows.push((k[i], t[i], r));
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
        for &(k, t, r) in parts.iter().flat_map(|p| &p.rows) {
            let e = m.entry(k).or_insert((i64::MAX, i64::MIN, 0, 0));
            e.0 = e.0.min(t);
            e.1 = e.1.max(t);
            e.2 += 1;
            e.3 += r;
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
            (st.first_seen.len(), st.last_seen.len()),
            (keys.len(), keys.len())
        );
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys ascending");
        assert_eq!(got, naive(parts));
    }

    #[test]
    fn buyers_fold_matches_a_naive_fold_over_blocks_ranges_and_runs() {
        let users = 5 * BUYER_BLOCK + 123;
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        // Three tasks, each with several sorted runs (files) of purchases.
        let mut parts = Vec::new();
        for _ in 0..3 {
            let mut p = PurchaseRows::default();
            for _ in 0..7 {
                p.start_run();
                let mut keys: Vec<u32> = (0..2_000).map(|_| next(users as u64) as u32).collect();
                keys.sort_unstable();
                for k in keys {
                    p.push((k, next(1_000_000) as i64 - 500_000, next(10_000) as i128));
                }
            }
            parts.push(p);
        }
        for threads in [1, 2, 3] {
            check(&parts, users, threads);
        }
        // Unsorted input: every row after a larger key starts a run, beyond
        // the most runs walked block by block.
        let mut p = PurchaseRows::default();
        for _ in 0..3 * MAX_PURCHASE_RUNS {
            p.push((next(users as u64) as u32, next(1_000) as i64, 1));
        }
        assert!(p.starts.len() > MAX_PURCHASE_RUNS);
        check(&[p], users, 2);
        // No purchases at all, and no users.
        check(&[PurchaseRows::default()], users, 2);
        check(&[], 0, 2);
    }
}
