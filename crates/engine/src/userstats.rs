//! Per-user facts in one scan, indexed by dense `user_key`: first and last seen,
//! purchases, revenue and last purchase. Lifecycle stages, RFM and segment
//! features are functions of these.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{col, lit};

use crate::Result;
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;

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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UserStats {
    /// First event time.
    #[serde(with = "crate::fold::compact")]
    pub first_seen: Vec<i64>,
    /// Last event time.
    #[serde(with = "crate::fold::compact")]
    pub last_seen: Vec<i64>,
    /// First purchase time.
    #[serde(with = "crate::fold::compact")]
    pub first_purchase: Vec<i64>,
    /// Last purchase time.
    #[serde(with = "crate::fold::compact")]
    pub last_purchase: Vec<i64>,
    /// Number of purchase events.
    #[serde(with = "crate::fold::compact")]
    pub purchases: Vec<u32>,
    /// Sum of purchase revenue, in cents; empty when revenue was not read
    /// (see [`scan_with`]).
    #[serde(with = "crate::fold::compact")]
    pub revenue: Vec<i128>,
}

impl UserStats {
    fn new(users: usize, revenue: bool) -> Self {
        Self {
            first_seen: vec![NEVER; users],
            last_seen: vec![NEVER; users],
            first_purchase: vec![NEVER; users],
            last_purchase: vec![NEVER; users],
            purchases: vec![0; users],
            revenue: if revenue { vec![0; users] } else { Vec::new() },
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
        if self.revenue.len() == self.first_seen.len() {
            self.revenue.push(0);
        }
        self.first_seen.push(NEVER);
        self.last_seen.push(NEVER);
        self.first_purchase.push(NEVER);
        self.last_purchase.push(NEVER);
        self.purchases.push(0);
    }

    /// Appends entry `u` of `o` (with its revenue, if `o` has it).
    pub(crate) fn push_from(&mut self, o: &UserStats, u: usize) {
        self.first_seen.push(o.first_seen[u]);
        self.last_seen.push(o.last_seen[u]);
        self.first_purchase.push(o.first_purchase[u]);
        self.last_purchase.push(o.last_purchase[u]);
        self.purchases.push(o.purchases[u]);
        if let Some(&r) = o.revenue.get(u) {
            self.revenue.push(r);
        }
    }

    /// Appends `o` (the facts of the next users).
    pub(crate) fn append(&mut self, o: UserStats) {
        crate::fold::append_exact(&mut self.first_seen, o.first_seen);
        crate::fold::append_exact(&mut self.last_seen, o.last_seen);
        crate::fold::append_exact(&mut self.first_purchase, o.first_purchase);
        crate::fold::append_exact(&mut self.last_purchase, o.last_purchase);
        crate::fold::append_exact(&mut self.purchases, o.purchases);
        crate::fold::append_exact(&mut self.revenue, o.revenue);
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
    let fold = StatsFold {
        event: purchase.event.clone(),
        revenue,
    };
    crate::fold::partial(events, fold).await
}

/// The schema of per-user facts (one row per user key).
fn facts_schema() -> SchemaRef {
    let t = || {
        DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("user_key", DataType::UInt32, false),
        Field::new("first_seen", t(), true),
        Field::new("last_seen", t(), true),
        Field::new("first_purchase", t(), true),
        Field::new("last_purchase", t(), true),
        Field::new("purchases", DataType::UInt32, false),
        Field::new(
            "revenue",
            DataType::Decimal128(
                tenure_schema::REVENUE_PRECISION,
                tenure_schema::REVENUE_SCALE,
            ),
            false,
        ),
    ]))
}

/// Facts of `keys` as a batch of [`facts_schema`] (`NEVER`/`SEEN_BEFORE` as null).
fn facts_batch(keys: impl Iterator<Item = u32>, st: &UserStats) -> DfResult<RecordBatch> {
    let time = |v: &[i64]| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                v.iter()
                    .map(|&t| (t != NEVER && t != SEEN_BEFORE).then_some(t)),
            )
            .with_timezone("UTC"),
        )
    };
    // Revenue not read is 0 for everyone.
    let zeros = (st.revenue.len() != st.len()).then(|| vec![0; st.len()]);
    let revenue =
        Decimal128Array::from_iter_values(zeros.as_ref().unwrap_or(&st.revenue).iter().copied())
            .with_precision_and_scale(
                tenure_schema::REVENUE_PRECISION,
                tenure_schema::REVENUE_SCALE,
            )?;
    Ok(RecordBatch::try_new(
        facts_schema(),
        vec![
            Arc::new(UInt32Array::from_iter_values(keys)),
            time(&st.first_seen),
            time(&st.last_seen),
            time(&st.first_purchase),
            time(&st.last_purchase),
            Arc::new(UInt32Array::from(st.purchases.clone())),
            Arc::new(revenue),
        ],
    )?)
}

/// Every user's facts, as a fold over all events: state is the range's
/// users' facts (dense), ranges are appended in key order.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StatsFold {
    pub(crate) event: String,
    pub(crate) revenue: bool,
}

fn purchase_input(event: &str, revenue: bool, only: bool) -> FoldInput {
    FoldInput {
        columns: if revenue {
            vec!["revenue".into()]
        } else {
            Vec::new()
        },
        flags: vec![col("event").eq(lit(event.to_string()))],
        any_flag: only,
        ..Default::default()
    }
}

/// The revenue column (cents), when read.
fn revenue_of<'a>(rows: &Rows<'a>, read: bool) -> Option<&'a Decimal128Array> {
    read.then(|| rows.column(0).as_primitive::<Decimal128Type>())
}

impl UserFold for StatsFold {
    type State = (u32, UserStats);
    type Partial = UserStats;

    fn name(&self) -> &'static str {
        "user_facts"
    }

    fn input(&self) -> FoldInput {
        purchase_input(&self.event, self.revenue, false)
    }

    fn schema(&self) -> SchemaRef {
        facts_schema()
    }

    fn start(&self, keys: Range<u32>) -> Self::State {
        (
            keys.start,
            UserStats::new((keys.end - keys.start) as usize, self.revenue),
        )
    }

    fn update(&self, (lo, st): &mut Self::State, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        let purchase = rows.flag(0);
        let revenue = revenue_of(rows, self.revenue);
        for i in 0..rows.len() {
            let u = (keys[i] - *lo) as usize;
            let t = ts[i];
            if st.first_seen[u] == NEVER || t < st.first_seen[u] {
                st.first_seen[u] = t;
            }
            st.last_seen[u] = st.last_seen[u].max(t);
            if purchase.value(i) {
                if st.first_purchase[u] == NEVER || t < st.first_purchase[u] {
                    st.first_purchase[u] = t;
                }
                st.last_purchase[u] = st.last_purchase[u].max(t);
                st.purchases[u] += 1;
                if let Some(r) = revenue
                    && r.is_valid(i)
                {
                    st.revenue[u] += r.value(i);
                }
            }
        }
        Ok(())
    }

    fn finish(&self, (_, st): Self::State) -> DfResult<UserStats> {
        Ok(st)
    }

    fn merge(&self, into: &mut UserStats, other: UserStats) -> DfResult<()> {
        into.append(other);
        Ok(())
    }

    fn emit(&self, st: UserStats) -> DfResult<RecordBatch> {
        facts_batch(0..st.len() as u32, &st)
    }
}

/// The users who bought, with their purchase facts: `stats` entry `i` is the
/// user with key `keys[i]` (ascending).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Buyers {
    /// Keys of the users with at least one purchase in range, ascending.
    pub keys: Vec<u32>,
    /// Their facts. This pass does not know when users were seen:
    /// `first_seen` is [`SEEN_BEFORE`] and `last_seen` [`NEVER`] for all.
    pub stats: UserStats,
    /// With [`scan_buyers_and_seen`]: how many users have an event in range
    /// (buyers included), else 0.
    pub seen: u64,
    /// With [`scan_buyers_and_seen`]: the smallest key of a user with an
    /// event in range and no purchase, if any.
    pub unbought: Option<u32>,
}

/// Reads purchase events only (a small fraction of the rows) and returns the
/// buyers' facts, sized by the number of buyers rather than of users. Without
/// `revenue` the revenue column is not read and `revenue` stays 0.
///
/// A fold over the purchase rows only (the scan drops the others, comparing
/// the event name once per dictionary value); per key range, dense arrays
/// indexed by key (zeroed by the allocator, so pages of users without a
/// purchase are not touched), compacted to the buyers when the range ends.
pub async fn scan_buyers(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Buyers> {
    buyers_pass(events, purchase, revenue, false, false).await
}

/// [`scan_buyers`] that also counts the users with any event in range (it
/// reads every row, not only purchases, but keeps a bit per user instead of
/// first and last times): the population of a segment count as of a past
/// date, without a row per user.
pub async fn scan_buyers_and_seen(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
) -> Result<Buyers> {
    buyers_pass(events, purchase, revenue, true, false).await
}

/// The buyers' pass of [`scan_buyers`] and [`scan_buyers_and_seen`]. With
/// `any_key`, a merged person may come under one of its own keys
/// rather than its virtual one (see [`crate::fold::FoldInput::any_key`]):
/// for callers that count buyers, not name them.
pub(crate) async fn buyers_pass(
    events: &Events,
    purchase: &PurchaseSpec,
    revenue: bool,
    seen: bool,
    any_key: bool,
) -> Result<Buyers> {
    let fold = BuyersFold {
        event: purchase.event.clone(),
        revenue,
        seen,
        any_key,
    };
    let mut buyers = crate::fold::partial(events, fold).await?;
    let n = buyers.keys.len();
    let st = &mut buyers.stats;
    if !revenue {
        // Zeroed memory straight from the allocator: its pages are not
        // written (nor faulted in) unless something reads them.
        st.revenue = vec![0; n + 1];
        st.revenue.truncate(n);
    }
    // This pass does not know when buyers were first or last seen; room is
    // left for one more entry (see [`UserStats::push_blank`]).
    st.first_seen = vec![SEEN_BEFORE; n];
    st.first_seen.reserve_exact(1);
    st.last_seen = vec![NEVER; n];
    st.last_seen.reserve_exact(1);
    Ok(buyers)
}

/// The buyers' facts as a fold over purchase events, user by user.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct BuyersFold {
    pub(crate) event: String,
    pub(crate) revenue: bool,
    /// Read every row and keep a bit per user seen.
    #[serde(default)]
    pub(crate) seen: bool,
    /// See [`buyers_pass`].
    #[serde(default)]
    pub(crate) any_key: bool,
}

/// A user's purchases so far: one cache line touched per purchase row.
/// (Allocated by writing the zeros: a zeroed allocation left to fault in
/// page by page under random access was measured 1.6x slower at 96M.)
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Purchases {
    first: i64,
    last: i64,
    count: u32,
}

/// One key range's purchase facts, indexed by `key - lo`.
pub(crate) struct BuyersState {
    lo: u32,
    facts: Vec<Purchases>,
    /// Empty when revenue is not read.
    revenue: Vec<i128>,
    /// Users seen, a bit each (empty unless counted).
    seen: Vec<u64>,
}

impl UserFold for BuyersFold {
    type State = BuyersState;
    type Partial = Buyers;

    fn name(&self) -> &'static str {
        "buyers"
    }

    fn input(&self) -> FoldInput {
        // Order does not matter to minima, maxima and sums.
        FoldInput {
            any_key: self.any_key,
            ..purchase_input(&self.event, self.revenue, !self.seen)
        }
    }

    fn schema(&self) -> SchemaRef {
        facts_schema()
    }

    fn start(&self, keys: Range<u32>) -> BuyersState {
        let n = (keys.end - keys.start) as usize;
        BuyersState {
            lo: keys.start,
            facts: crate::par::huge_vec(n, Purchases::default()),
            revenue: if self.revenue { vec![0; n] } else { Vec::new() },
            seen: if self.seen {
                vec![0; n.div_ceil(64)]
            } else {
                Vec::new()
            },
        }
    }

    fn update(&self, b: &mut BuyersState, rows: &Rows<'_>) -> DfResult<()> {
        let (keys, ts) = (rows.keys(), rows.ts());
        // Every row is a purchase (the scan keeps only those), unless users
        // are counted: then every row marks its user, and the flag tells
        // purchases.
        let purchase = self.seen.then(|| rows.flag(0));
        for i in 0..rows.len() {
            let u = (keys[i] - b.lo) as usize;
            if let Some(p) = purchase {
                b.seen[u / 64] |= 1 << (u % 64);
                if !p.value(i) {
                    continue;
                }
            }
            let t = ts[i];
            let f = &mut b.facts[u];
            if f.count == 0 {
                (f.first, f.last) = (t, t);
            } else {
                (f.first, f.last) = (f.first.min(t), f.last.max(t));
            }
            f.count += 1;
        }
        if let Some(rev) = revenue_of(rows, self.revenue) {
            for (i, &k) in keys.iter().enumerate() {
                if rev.is_valid(i) && purchase.is_none_or(|p| p.value(i)) {
                    b.revenue[(k - b.lo) as usize] += rev.value(i);
                }
            }
        }
        Ok(())
    }

    fn finish(&self, b: BuyersState) -> DfResult<Buyers> {
        let n = b.facts.iter().filter(|f| f.count > 0).count();
        let seen = b.seen.iter().map(|w| w.count_ones() as u64).sum();
        let unbought = (0..b.facts.len())
            .find(|&u| {
                b.seen.get(u / 64).is_some_and(|w| w >> (u % 64) & 1 == 1) && b.facts[u].count == 0
            })
            .map(|u| b.lo + u as u32);
        let mut out = Buyers {
            seen,
            unbought,
            keys: Vec::with_capacity(n),
            stats: UserStats {
                first_seen: Vec::new(),
                last_seen: Vec::new(),
                first_purchase: Vec::with_capacity(n + 1),
                last_purchase: Vec::with_capacity(n + 1),
                purchases: Vec::with_capacity(n + 1),
                revenue: Vec::with_capacity(if self.revenue { n + 1 } else { 0 }),
            },
        };
        let st = &mut out.stats;
        for (u, f) in b.facts.iter().enumerate() {
            if f.count > 0 {
                out.keys.push(b.lo + u as u32);
                st.first_purchase.push(f.first);
                st.last_purchase.push(f.last);
                st.purchases.push(f.count);
                if self.revenue {
                    st.revenue.push(b.revenue[u]);
                }
            }
        }
        Ok(out)
    }

    fn merge(&self, into: &mut Buyers, other: Buyers) -> DfResult<()> {
        into.seen += other.seen;
        into.unbought = into.unbought.or(other.unbought);
        crate::fold::append_exact(&mut into.keys, other.keys);
        into.stats.append(other.stats);
        Ok(())
    }

    fn emit(&self, b: Buyers) -> DfResult<RecordBatch> {
        let mut st = b.stats;
        let n = b.keys.len();
        st.first_seen = vec![SEEN_BEFORE; n];
        st.last_seen = vec![NEVER; n];
        if st.revenue.len() != n {
            st.revenue = vec![0; n];
        }
        facts_batch(b.keys.into_iter(), &st)
    }
}

/// Cents as an exact decimal string (`-12.05`).
pub fn cents(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}
