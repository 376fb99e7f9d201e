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
    // Slot of each buyer by ascending key: mark, then number the marks.
    // (`vec![0; n]` is zeroed lazily by the OS: only pages touched cost.)
    let mut slot = vec![0u32; users];
    for &(k, _, _) in parts.iter().flatten() {
        slot[k as usize] = 1;
    }
    let mut keys = Vec::new();
    for (k, s) in slot.iter_mut().enumerate() {
        if *s != 0 {
            keys.push(k as u32);
            *s = keys.len() as u32;
        }
    }
    // One record per buyer, so a row costs one cache miss rather than one per
    // fact array.
    #[derive(Clone, Copy)]
    struct Facts {
        first: i64,
        last: i64,
        revenue: i128,
        purchases: u32,
    }
    let mut facts = vec![
        Facts {
            first: i64::MAX,
            last: i64::MIN,
            revenue: 0,
            purchases: 0,
        };
        keys.len()
    ];
    for &(k, t, r) in parts.iter().flatten() {
        let f = &mut facts[slot[k as usize] as usize - 1];
        f.first = f.first.min(t);
        f.last = f.last.max(t);
        f.purchases += 1;
        f.revenue += r;
    }
    let mut st = UserStats::new(0);
    st.first_purchase = facts.iter().map(|f| f.first).collect();
    st.last_purchase = facts.iter().map(|f| f.last).collect();
    st.purchases = facts.iter().map(|f| f.purchases).collect();
    st.revenue = facts.iter().map(|f| f.revenue).collect();
    st.first_seen.clone_from(&st.first_purchase);
    st.last_seen.clone_from(&st.last_purchase);
    Ok(Buyers { keys, stats: st })
}

/// Purchase rows (key, time, revenue) per task, read from the stored files.
async fn purchases_direct(
    events: &Events,
    files: &[Part],
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Vec<Vec<(u32, i64, i128)>>> {
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
        Vec::new(),
        move |rows, origin, batch| scan.take(origin, batch, rows),
    )
    .await
}

/// Purchase rows (key, time, revenue) per partition, through a DataFusion plan
/// over `events` (which may be a view).
async fn purchases_planned(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Vec<Vec<(u32, i64, i128)>>> {
    let users = events.users();
    let streams = purchase_columns(events, purchase, true, revenue)
        .await?
        .execute_stream_partitioned()
        .await?;
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut rows = Vec::new();
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
    fn take(
        &self,
        origin: Origin<'_>,
        batch: &RecordBatch,
        rows: &mut Vec<(u32, i64, i128)>,
    ) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| origin.error(&format!("no column `{name}`")))
        };
        let wrong = |name: &str| origin.error(&format!("column `{name}` has an unexpected type"));
        let keys = column("user_key")?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| wrong("user_key"))?;
        let ts = column("ts")?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| wrong("ts"))?;
        let revenue = match self.revenue {
            true => Some(
                column("revenue")?
                    .as_primitive_opt::<Decimal128Type>()
                    .ok_or_else(|| wrong("revenue"))?,
            ),
            false => None,
        };
        // Rows naming the purchase event (each distinct name compared once).
        let mut hit = Vec::new();
        if !stored::map_text(column("event")?, |name| name == self.event, &mut hit) {
            return Err(wrong("event"));
        }
        let (k, t) = (keys.values(), ts.values());
        for i in (0..batch.num_rows()).filter(|&i| hit[i]) {
            if k[i] as usize >= self.users || keys.is_null(i) {
                return Err(beyond_dictionary());
            }
            if ts.is_null(i) || t[i] < self.range.0 || t[i] >= self.range.1 {
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
