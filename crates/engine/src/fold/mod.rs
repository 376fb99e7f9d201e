//! The per-user fold: one abstraction for every analysis that reads each
//! user's events, as two DataFusion operators.
//!
//! ```text
//!  tenure retention / SELECT * FROM retention('week')
//!        │  a typed request (RetentionSpec, ...)
//!        ▼
//!  FoldExec<RetentionFold>        1 output partition: merges the partial
//!        │                        results of every key range, emits batches
//!        ▼                        with the analysis's declared schema
//!  KeyScanExec                    N partitions = N ranges of user keys; reads
//!                                 the committed Parquet files directly (only
//!                                 the pages whose user_key statistics overlap
//!                                 the range), keeps the requested time range,
//!                                 evaluates the fold's conditions as boolean
//!                                 columns
//! ```
//!
//! A fold ([`UserFold`]) keeps state for one range of user keys at a time
//! (dense arrays indexed by `key - range.start`, never `partitions x users`),
//! updates it batch by batch, finishes it into a partial result, merges the
//! partial results of all ranges and emits an Arrow `RecordBatch`. Memory is
//! the state of the users of the ranges in flight plus the scan's buffers: it
//! does not grow with the number of events.
//!
//! Files are sorted by `(user_key, ts)` within a date partition, so a range's
//! rows come file after file (each file's rows in key order), files earliest
//! first ([`Rows::file_min_ts`]); a fold that is not order-insensitive must
//! not assume more, unless it asks for [`FoldInput::ordered`]: then the scan
//! merges the range's files block of users by block of users (a k-way merge
//! over one open reader per file, so memory stays one block plus a page per
//! file) and every batch holds complete users, each user's rows in time
//! order, as funnels need.

pub(crate) mod bits;
pub(crate) mod compact;
pub(crate) mod exec;
mod scan;
pub(crate) mod totals;

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt32Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;

pub use exec::FoldExec;
pub(crate) use exec::{Layout, Stage};
pub use scan::{KeyScanExec, ScanSpec};

use crate::table::Events;

/// Schema metadata of the scan's batches: the earliest event time (UTC µs)
/// of the file the rows come from (of the earliest file, for a block of an
/// ordered reading).
pub(crate) const FILE_MIN_TS: &str = "tenure.file_min_ts";

/// Schema metadata of a grouped reading's batches: the first key of their
/// block of users (see [`FoldInput::grouped`]).
pub(crate) const BLOCK: &str = "tenure.block";

/// A batch's [`FILE_MIN_TS`] (`i64::MIN` when absent).
pub(crate) fn file_min_ts_of(batch: &RecordBatch) -> i64 {
    batch
        .schema_ref()
        .metadata()
        .get(FILE_MIN_TS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::MIN)
}

/// What a fold reads: columns besides `user_key` and `ts`, and conditions
/// evaluated per row (SQL expressions over the events table; null is false).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FoldInput {
    /// Columns of the events table to read, in this order after `user_key`, `ts`.
    pub columns: Vec<String>,
    /// Computed columns (SQL expressions over the events table, e.g. a
    /// breakdown on a key of `properties`), after `columns`: the fold reads
    /// value `j` as column `columns.len() + j` (`columns` must be distinct;
    /// a repeated column is read once).
    #[serde(default, with = "crate::codec::vec_expr")]
    pub values: Vec<Expr>,
    /// Conditions; row `i` of flag `j` is `flags[j]` evaluated on the row.
    #[serde(with = "crate::codec::vec_expr")]
    pub flags: Vec<Expr>,
    /// Only events before this instant (UTC µs), within the table's range:
    /// an analysis "as of" a time reads nothing after it.
    pub until: Option<i64>,
    /// Deliver each user's rows together and in time order: every batch
    /// holds complete users, in key order, each user's rows sorted by `ts`
    /// (see [`Rows::users`]). Costs a merge of the range's files block by
    /// block; folds whose result does not depend on order leave it off.
    pub ordered: bool,
    /// With `ordered`: deliver a block's rows file by file instead of
    /// merged and sorted. Every user's rows are still within one block of
    /// users ([`Rows::block`]), but spread over several batches, in no
    /// particular order: for folds that gather a user's rows themselves
    /// (the funnel sorts its own entries), this saves the merge.
    #[serde(default)]
    pub grouped: bool,
    /// Keep only rows where at least one flag is true (with flags).
    pub any_flag: bool,
    /// Flags as one column of bits (bit `j` is flag `j`, at most 32), read
    /// with [`Rows::flag_bits`] instead of [`Rows::flag`]: one column to
    /// carry instead of one per flag, and flags on the same text column
    /// (`event = 'a'`, `event = 'b'`, ...) computed in one pass.
    pub packed: bool,
    /// Read the decimal columns of [`Self::columns`] that no flag or value
    /// uses at their stored width, `Decimal64` (revenue is stored as 64-bit
    /// cents), instead of widening every row to `Decimal128`: for folds
    /// that read the values themselves.
    #[serde(default)]
    pub narrow: bool,
    /// The result does not depend on which key a user's rows come under,
    /// only on all of them coming under one key: nothing per user leaves
    /// the fold but counts and sums (no listing of keys), and it reads no
    /// per-user input by key. The scan may then read a merged person (see
    /// [`crate::identity`]) under one of its own keys, where the person's
    /// keys all fall in one key range, instead of setting the person's rows
    /// aside for a range of virtual keys read after the others. Ignored
    /// with `ordered` (a person's rows would not be together) and with
    /// per-user time bounds (looked up by key).
    #[serde(default)]
    pub any_key: bool,
}

/// A batch of one key range's rows as a fold sees it.
pub struct Rows<'a> {
    batch: &'a RecordBatch,
    /// Index of the first flag column.
    flags_at: usize,
}

impl<'a> Rows<'a> {
    pub(crate) fn new(batch: &'a RecordBatch, flags_at: usize) -> Self {
        Self { batch, flags_at }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// User keys (absolute, within the fold's range, ascending within a file).
    pub fn keys(&self) -> &'a [u32] {
        self.batch.column(0).as_primitive::<UInt32Type>().values()
    }

    /// Event times (UTC µs).
    pub fn ts(&self) -> &'a [i64] {
        self.batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
    }

    /// The `i`-th of [`FoldInput::columns`].
    pub fn column(&self, i: usize) -> &'a ArrayRef {
        self.batch.column(2 + i)
    }

    /// The `j`-th of [`FoldInput::flags`] (no nulls).
    pub fn flag(&self, j: usize) -> &'a BooleanArray {
        self.batch.column(self.flags_at + j).as_boolean()
    }

    /// Every flag of a row as bits (with [`FoldInput::packed`]).
    pub fn flag_bits(&self) -> &'a [u32] {
        self.batch
            .column(self.flags_at)
            .as_primitive::<UInt32Type>()
            .values()
    }

    /// The earliest event time (UTC µs) of the file these rows come from. A
    /// range's files are read earliest first, so every row still to come is
    /// at least this late: a fold may settle what no later row can change.
    pub fn file_min_ts(&self) -> i64 {
        file_min_ts_of(self.batch)
    }

    /// With [`FoldInput::grouped`], the first key of the block of users
    /// these rows belong to: every row of those users comes in batches of
    /// the same block, one block after the other (`None` otherwise).
    pub fn block(&self) -> Option<u32> {
        self.batch
            .schema_ref()
            .metadata()
            .get(BLOCK)
            .and_then(|v| v.parse().ok())
    }

    /// Each user's rows: `(key, rows)` for every run of equal keys, in
    /// order. With [`FoldInput::ordered`] a run is all of the user's rows in
    /// range, sorted by time.
    pub fn users(&self) -> impl Iterator<Item = (u32, Range<usize>)> + 'a {
        let keys = self.keys();
        let mut at = 0;
        std::iter::from_fn(move || {
            let k = *keys.get(at)?;
            let start = at;
            at += keys[at..].iter().take_while(|&&x| x == k).count();
            Some((k, start..at))
        })
    }

    /// Every column as read (for debugging and generic folds).
    pub fn batch(&self) -> &'a RecordBatch {
        self.batch
    }
}

/// The per-user logic of one analysis.
///
/// State lives per range of user keys: [`UserFold::start`] makes it for a
/// range, [`UserFold::update`] folds a batch of the range's rows into it,
/// [`UserFold::finish`] turns it into a partial result (per-user state is
/// finished user by user here), [`UserFold::merge`] combines the partial
/// results of two ranges, and [`UserFold::emit`] writes the final result as a
/// batch of [`UserFold::schema`]. A range is folded by one task; ranges are
/// folded concurrently.
pub trait UserFold:
    Debug + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static
{
    /// State of one key range.
    type State: Send + 'static;
    /// Partial result of one or more ranges (serialisable: on a cluster,
    /// ranges are folded by tasks apart and merged by another).
    type Partial: Send + serde::Serialize + serde::de::DeserializeOwned + 'static;

    /// Name shown in plans (`EXPLAIN`).
    fn name(&self) -> &str;
    /// What to read.
    fn input(&self) -> FoldInput;
    /// The output schema.
    fn schema(&self) -> SchemaRef;
    /// Empty state for the users `keys`.
    fn start(&self, keys: Range<u32>) -> Self::State;
    /// Folds rows of the range (every key is in it).
    fn update(&self, state: &mut Self::State, rows: &Rows<'_>) -> DfResult<()>;
    /// Finishes every user of the range.
    fn finish(&self, state: Self::State) -> DfResult<Self::Partial>;
    /// Adds `other` into `into`.
    fn merge(&self, into: &mut Self::Partial, other: Self::Partial) -> DfResult<()>;
    /// The result.
    fn emit(&self, result: Self::Partial) -> DfResult<RecordBatch>;
}

/// The physical plan of `fold` over `events`: a [`FoldExec`] over a
/// [`KeyScanExec`] with one key range per thread; for a cluster, the fold's
/// two stages ([`FoldExec::distributed`]).
pub fn plan<F: UserFold>(
    events: &Events,
    fold: F,
) -> crate::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let scan = Arc::new(KeyScanExec::try_new(events, &fold.input())?);
    Ok(match events.options.remote.is_some() {
        true => Arc::new(FoldExec::distributed(Arc::new(fold), scan)),
        false => Arc::new(FoldExec::new(Arc::new(fold), scan)),
    })
}

/// Runs `fold` over `events` and returns its merged partial result (for
/// callers that need more than the emitted batch, such as per-user funnel
/// levels for an A/B readout).
pub async fn partial<F: UserFold>(events: &Events, fold: F) -> crate::Result<F::Partial> {
    let scan = Arc::new(KeyScanExec::try_new(events, &fold.input())?);
    if events.options.remote.is_some() {
        // Elsewhere, each key range's partial result comes back as bytes
        // and they are merged here.
        let fold = Arc::new(fold);
        let (plan, ranges) = FoldExec::parts(fold.clone(), scan);
        let table = crate::sql::FoldTable::new(plan);
        let batches = events.ctx.read_table(Arc::new(table))?.collect().await?;
        let parts = exec::assemble_parts(fold.name(), &batches, ranges)?;
        drop(batches);
        return Ok(exec::merge_decoded(fold.as_ref(), parts)?);
    }
    let ctx = events.ctx.task_ctx();
    let (ranges, flags_at) = (scan.ranges().to_vec(), scan.flags_at());
    let (concurrency, deferred) = (scan.concurrency(), scan.deferred());
    Ok(exec::fold_all(
        Arc::new(fold),
        scan,
        (ranges, deferred),
        flags_at,
        concurrency,
        ctx,
    )
    .await?)
}

/// Runs `fold` over `events` and returns its result batches.
pub async fn run<F: UserFold>(events: &Events, fold: F) -> crate::Result<Vec<RecordBatch>> {
    let plan = plan(events, fold)?;
    if events.options.remote.is_some() {
        // Elsewhere: as a table function's result is, a table of the plan
        // in a logical plan, which the session's planner sends away.
        let table = crate::sql::FoldTable::new(plan);
        return Ok(events.ctx.read_table(Arc::new(table))?.collect().await?);
    }
    let ctx = events.ctx.task_ctx();
    Ok(datafusion::physical_plan::collect(plan, ctx).await?)
}

/// Appends a key range's per-user values to those of the ranges before it,
/// growing `into` to exactly its new length: appending with `extend` would
/// double the capacity, and merged per-user vectors are the largest thing a
/// merge holds (up to twice their size, with 30M users, in slack).
pub(crate) fn append_exact<T>(into: &mut Vec<T>, other: Vec<T>) {
    if into.is_empty() {
        *into = other;
        return;
    }
    into.reserve_exact(other.len());
    into.extend(other);
}

/// Numbers distinct text values (null included) in the order met, for folds
/// that keep a value per user.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Interner {
    ids: std::collections::HashMap<String, u32>,
    null: Option<u32>,
    values: Vec<Option<String>>,
}

impl Interner {
    /// The id of `v`, numbering it if new.
    pub fn id(&mut self, v: Option<&str>) -> u32 {
        match v {
            None => *self.null.get_or_insert_with(|| {
                self.values.push(None);
                self.values.len() as u32 - 1
            }),
            Some(v) => match self.ids.get(v) {
                Some(&id) => id,
                None => {
                    let id = self.values.len() as u32;
                    self.values.push(Some(v.to_string()));
                    self.ids.insert(v.to_string(), id);
                    id
                }
            },
        }
    }

    /// The value numbered `id`.
    pub fn get(&self, id: u32) -> Option<&str> {
        self.values.get(id as usize).and_then(|v| v.as_deref())
    }

    /// Every value, by id.
    pub fn values(&self) -> &[Option<String>] {
        &self.values
    }

    /// Numbers every value of `other` here: entry `i` is the id here of
    /// `other`'s value `i` (merging the partial results of two key ranges).
    pub fn absorb(&mut self, other: &Interner) -> Vec<u32> {
        other.values.iter().map(|v| self.id(v.as_deref())).collect()
    }
}
