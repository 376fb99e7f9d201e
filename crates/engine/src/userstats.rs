//! Per-user facts in one scan, indexed by dense `user_key`: first and last seen,
//! purchases, revenue and last purchase. Lifecycle stages, RFM and segment
//! features are functions of these.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType, UInt32Type};
use datafusion::logical_expr::{Expr, col, lit};
use futures::StreamExt;

use crate::table::Events;
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
    scan_with(events, purchase, false, true).await
}

/// Like [`scan`]; with `purchases_only`, reads purchase events only (a small
/// fraction of the rows) and leaves `first_seen`/`last_seen` describing
/// purchases, so callers must not use them. Without `revenue` the revenue
/// column is not read and `revenue` stays 0.
pub async fn scan_with(
    events: &Events,
    purchase: &PurchaseSpec,
    purchases_only: bool,
    revenue: bool,
) -> Result<UserStats> {
    let users = events.users();
    let mut df = events.in_range().await?;
    let is_purchase: Expr = col("event").eq(lit(purchase.event.clone()));
    if purchases_only {
        df = df.filter(is_purchase.clone())?;
    }
    let df = df.select(vec![
        col("user_key"),
        col("ts"),
        is_purchase.alias("is_purchase"),
        if revenue {
            col("revenue")
        } else {
            // A null literal costs nothing to decode.
            datafusion::logical_expr::lit(datafusion::scalar::ScalarValue::Decimal128(
                None,
                tenure_schema::REVENUE_PRECISION,
                tenure_schema::REVENUE_SCALE,
            ))
            .alias("revenue")
        },
    ])?;
    let streams = df.execute_stream_partitioned().await?;
    if purchases_only {
        return fold_purchases(streams, users).await;
    }
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
                        return Err(EngineError::BadRequest(
                            "user_key beyond the users dictionary".into(),
                        ));
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
    let mut acc: Option<UserStats> = None;
    for t in tasks {
        let part = t
            .await
            .map_err(|e| EngineError::BadRequest(format!("scan task failed: {e}")))??;
        match acc.as_mut() {
            None => acc = Some(part),
            Some(a) => a.merge(part),
        }
    }
    Ok(acc.unwrap_or_else(|| UserStats::new(users)))
}

/// The purchases-only pass: purchase rows are a small fraction, so each
/// partition keeps its rows (key, time, revenue) and one dense fold follows,
/// instead of a dense array set per partition and a merge over every user.
async fn fold_purchases(
    streams: Vec<datafusion::physical_plan::SendableRecordBatchStream>,
    users: usize,
) -> Result<UserStats> {
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut rows: Vec<(u32, i64, i128)> = Vec::new();
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
                        return Err(EngineError::BadRequest(
                            "user_key beyond the users dictionary".into(),
                        ));
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
    let mut st = UserStats::new(users);
    for t in tasks {
        let rows = t
            .await
            .map_err(|e| EngineError::BadRequest(format!("scan task failed: {e}")))??;
        for (k, t, r) in rows {
            let u = k as usize;
            if st.first_purchase[u] == NEVER || t < st.first_purchase[u] {
                st.first_purchase[u] = t;
            }
            st.last_purchase[u] = st.last_purchase[u].max(t);
            st.purchases[u] += 1;
            st.revenue[u] += r;
        }
    }
    // Callers of the purchases-only pass must not use first/last seen; keep
    // them describing purchases, as documented.
    st.first_seen.clone_from(&st.first_purchase);
    st.last_seen.clone_from(&st.last_purchase);
    Ok(st)
}

/// Cents as an exact decimal string (`-12.05`).
pub fn cents(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}
