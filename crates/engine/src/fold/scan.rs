//! [`KeyScanExec`]: the leaf of every fold plan. Its partitions are ranges of
//! user keys; each reads the committed files directly (the Parquet reader of
//! `stored.rs`, no listing, no coalescing), pruned to the row groups and pages
//! whose `user_key` statistics overlap its range, then keeps only the rows of
//! its range and of the requested time range, and evaluates the fold's
//! conditions into boolean columns.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimestampMicrosecondType, UInt32Type,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, exec_datafusion_err, exec_err, plan_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ParquetMetaData;

use super::FoldInput;
use crate::stored::StoreFile;
use crate::table::{Events, Part};

/// Rows per decoded batch (as in `stored.rs`).
const BATCH_ROWS: usize = 8 * 1024;

/// Users per block of an ordered reading: a block's rows (of every file) are
/// merged and sorted together, so they should stay in cache.
const BLOCK_USERS: u32 = 16 * 1024;

type FileStream = parquet::arrow::async_reader::ParquetRecordBatchStream<StoreFile>;

use crate::table::Footers;

/// One file of an ordered reading.
struct Cursor {
    part: Part,
    /// The batches' schema, with the file's earliest time.
    schema: SchemaRef,
    /// `None` at the end of the file.
    stream: Option<FileStream>,
    /// Rows read and not yet taken.
    batch: Option<RecordBatch>,
}

fn in_file(part: &Part, e: &dyn fmt::Display) -> DataFusionError {
    exec_datafusion_err!("cannot read {}: {e}", part.path)
}

/// `batch` sorted by `(user_key, ts)` (columns 0 and 1), stable.
fn sort_rows(batch: &RecordBatch, bounds: Option<(u32, u32)>) -> DfResult<RecordBatch> {
    sort_pieces(
        std::slice::from_ref(batch),
        bounds,
        None,
        &mut SortScratch::default(),
    )
}

/// Buffers of the block sort, kept from block to block.
#[derive(Default)]
struct SortScratch {
    at: Vec<u32>,
    order: Vec<u32>,
}

/// The rows of `pieces` in one batch sorted by `(user_key, ts)`; ties keep
/// the pieces' order. With the keys' bounds known (`lo..hi`, a block), by
/// counting, then per user (rows come piece by piece, earliest file first:
/// usually in time order already). The batch's file time
/// ([`super::FILE_MIN_TS`]) is the earliest of the pieces'. With `any_flag` (the index of the
/// first flag column), rows where no flag is true are left out.
fn sort_pieces(
    pieces: &[RecordBatch],
    bounds: Option<(u32, u32)>,
    any_flag: Option<(usize, bool)>,
    scratch: &mut SortScratch,
) -> DfResult<RecordBatch> {
    let min_ts = pieces
        .iter()
        .map(super::file_min_ts_of)
        .min()
        .unwrap_or(i64::MIN);
    let schema = with_file_min_ts(&pieces[0].schema(), min_ts);
    let width = schema.fields().len();
    let mut columns = Vec::with_capacity(width);
    for c in 0..width {
        columns.push(match pieces.len() {
            1 => pieces[0].column(c).clone(),
            _ => {
                let parts: Vec<&dyn Array> = pieces.iter().map(|b| b.column(c).as_ref()).collect();
                datafusion::arrow::compute::concat(&parts)?
            }
        });
    }
    let keys = columns[0].as_primitive::<UInt32Type>().values();
    let ts = columns[1]
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let rows = keys.len();
    // The rows kept: all, or those with a flag.
    let kept = any_flag.and_then(|(at, packed)| {
        let any = self::any_flag(&columns[at..], rows, packed);
        (any.count_set_bits() < rows).then_some(any)
    });
    let keep = |i: usize| kept.as_ref().is_none_or(|k| k.value(i));
    let n = kept.as_ref().map_or(rows, |k| k.count_set_bits());
    let order = &mut scratch.order;
    order.clear();
    // Each user's rows in time order (stable: equal times keep file order).
    let by_time = |user: &mut [u32]| {
        if user.len() > 1 && !user.is_sorted_by_key(|&i| ts[i as usize]) {
            user.sort_by_key(|&i| ts[i as usize]);
        }
    };
    match bounds {
        Some((lo, hi)) if (hi - lo) as usize <= 4 * n + 1024 => {
            let width = (hi - lo) as usize;
            let at = &mut scratch.at;
            at.clear();
            at.resize(width + 1, 0);
            for (i, &k) in keys.iter().enumerate() {
                if keep(i) {
                    at[(k - lo) as usize + 1] += 1;
                }
            }
            for u in 0..width {
                at[u + 1] += at[u];
            }
            order.resize(n, 0);
            for (i, &k) in keys.iter().enumerate() {
                if keep(i) {
                    let slot = &mut at[(k - lo) as usize];
                    order[*slot as usize] = i as u32;
                    *slot += 1;
                }
            }
            // Now `at[u]` is where user `u`'s rows end.
            let mut start = 0;
            for &end in &at[..width] {
                by_time(&mut order[start..end as usize]);
                start = end as usize;
            }
        }
        _ => {
            order.extend((0..rows as u32).filter(|&i| keep(i as usize)));
            order.sort_by_key(|&i| keys[i as usize]);
            let mut start = 0;
            while start < n {
                let k = keys[order[start] as usize];
                let mut end = start + 1;
                while end < n && keys[order[end] as usize] == k {
                    end += 1;
                }
                by_time(&mut order[start..end]);
                start = end;
            }
        }
    }
    if n < rows || !order.iter().enumerate().all(|(i, &j)| i as u32 == j) {
        let idx = datafusion::arrow::array::UInt32Array::from(order.clone());
        for c in columns.iter_mut() {
            *c = datafusion::arrow::compute::take(c, &idx, None)?;
        }
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `schema` with the earliest event time of the rows' file in its metadata.
fn with_file_min_ts(schema: &SchemaRef, min_ts: i64) -> SchemaRef {
    let mut meta = schema.metadata().clone();
    meta.insert(super::FILE_MIN_TS.to_string(), min_ts.to_string());
    Arc::new(Schema::new_with_metadata(schema.fields().clone(), meta))
}

/// Whether every row group declares the sort `(user_key, ts)` ascending and
/// the row groups' key ranges follow each other (the file is sorted whole).
fn sorted_by_key(
    meta: &ParquetMetaData,
    arrow: &SchemaRef,
    parquet: &parquet::schema::types::SchemaDescriptor,
) -> bool {
    let column = |name: &str| parquet.columns().iter().position(|c| c.name() == name);
    let (Some(k), Some(t)) = (column("user_key"), column("ts")) else {
        return false;
    };
    let declared = meta.row_groups().iter().all(|g| {
        g.sorting_columns().is_some_and(|s| {
            s.len() >= 2
                && s[0].column_idx as usize == k
                && !s[0].descending
                && s[1].column_idx as usize == t
                && !s[1].descending
        })
    });
    if !declared {
        return false;
    }
    if meta.row_groups().len() < 2 {
        return true;
    }
    let Ok(conv) = StatisticsConverter::try_new("user_key", arrow, parquet) else {
        return false;
    };
    let (Ok(mins), Ok(maxs)) = (
        conv.row_group_mins(meta.row_groups().iter()),
        conv.row_group_maxes(meta.row_groups().iter()),
    ) else {
        return false;
    };
    let (Some(mins), Some(maxs)) = (
        mins.as_primitive_opt::<UInt32Type>(),
        maxs.as_primitive_opt::<UInt32Type>(),
    ) else {
        return false;
    };
    if mins.null_count() > 0 || maxs.null_count() > 0 {
        return false;
    }
    (1..mins.len()).all(|g| maxs.value(g - 1) <= mins.value(g))
}

/// Reads the rows of ranges of user keys; see the module docs.
#[derive(Debug, Clone)]
pub struct KeyScanExec {
    store: Arc<dyn ObjectStore>,
    /// Committed files in range, earliest first.
    parts: Arc<Vec<Part>>,
    /// Each file's footer and page index, read by the first range that opens
    /// the file and shared with the others.
    footers: Footers,
    /// `user_key`, `ts`, the requested columns, the conditions' columns.
    read: SchemaRef,
    flag_exprs: Vec<Expr>,
    flags: Vec<Arc<dyn PhysicalExpr>>,
    /// Computed columns, passed on after the kept ones.
    values: Vec<Arc<dyn PhysicalExpr>>,
    /// Flags of the form `text_column = 'literal'`: (column in `read`,
    /// literal), tested once per dictionary value instead of per row.
    eq_flags: Vec<Option<EqFlag>>,
    /// The first `kept` columns of `read` are passed on (the key columns and
    /// the fold's columns), then the flags.
    kept: usize,
    ranges: Vec<(u32, u32)>,
    /// Ranges read at once (the threads).
    concurrency: usize,
    /// Rows kept: `time.0 <= ts < time.1`.
    time: (i64, i64),
    /// Per user key, the earliest time kept (an A/B readout's exposure).
    since: Option<Arc<Vec<i64>>>,
    /// Per user key, the end of the times kept (CUPED's pre-exposure window).
    before: Option<Arc<Vec<i64>>>,
    /// The store's directory when it is on local disk (files are read
    /// from it directly); not part of the encoding.
    local_dir: Option<std::path::PathBuf>,
    /// Each user's rows together, in time order (see [`FoldInput::ordered`]).
    ordered: bool,
    /// Blocks sent file by file, unsorted (see [`FoldInput::grouped`]).
    grouped: bool,
    /// Only rows where a flag is true.
    any_flag: bool,
    /// Flags as one column of bits.
    packed: bool,
    /// Merged persons read under virtual keys: their rows are taken out of
    /// the ranges they are read in and delivered by the last partitions
    /// (see [`crate::identity`]).
    identity: Option<Arc<crate::identity::Identity>>,
    /// With [`FoldInput::any_key`]: per diverted key (ascending), the key its
    /// rows are read under ([`crate::identity::Identity::targets`]); without,
    /// every one goes under its virtual key.
    targets: Option<Arc<Vec<u32>>>,
    side: Arc<Side>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    /// What it is made of (its encoding).
    spec: Arc<ScanSpec>,
    /// Bytes read, files opened and rows sent per partition (`EXPLAIN
    /// ANALYZE`; on a cluster, per task).
    metrics: ExecutionPlanMetricsSet,
}

/// Per-user time bounds (indexed by user key), if any.
type Bounds = Option<Arc<Vec<i64>>>;

/// What a [`KeyScanExec`] is made of: the object store URL its files are
/// registered under, the files (path, size, earliest time), the declared
/// properties (the table's schema), the fold's input, the key ranges, the
/// ranges read at once, the time range kept and whether per-user lower
/// bounds (exposure times) apply; the bounds themselves travel as raw bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanSpec {
    store: String,
    /// Path, size, earliest time and distinct event names of each file.
    parts: Vec<(String, u64, i64, Option<u32>)>,
    properties: Vec<tenure_schema::DeclaredProperty>,
    input: FoldInput,
    ranges: Vec<(u32, u32)>,
    concurrency: usize,
    time: (i64, i64),
    since: bool,
    /// Per-user upper bounds apply (after the lower bounds in the tail).
    #[serde(default)]
    before: bool,
    /// How many of the last ranges are merged persons' (virtual keys; 1
    /// when plans said nothing).
    #[serde(default)]
    persons_ranges: usize,
    /// Merged persons read under virtual keys (the last `persons_ranges` ranges are theirs).
    #[serde(default)]
    identity: Option<Arc<crate::identity::Identity>>,
}

/// The rows of merged persons, gathered from every range's reading for the
/// last partitions. One per run of the plan: [`KeyScanExec::with_fresh_side`]
/// (`fold_all` takes one before it runs the ranges).
#[derive(Debug, Default)]
struct Side {
    /// Pieces, each tagged with its range's first key and its place in the
    /// range's reading, so that their order does not depend on threads.
    rows: std::sync::Mutex<Vec<((u32, u64), RecordBatch)>>,
    /// Ranges whose reading is over.
    done: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

/// Counts a range's reading as over when dropped (also on an error or a
/// panic), waking the merged persons' partitions.
struct Done(Arc<Side>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0
            .done
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

/// Most users in one key range (about): a fold's per-user state is at most
/// tens of bytes a user (user facts: 52), so the `concurrency` ranges in
/// flight hold a few hundred MB at most, at 30M users as at 3M; more users
/// make more ranges than threads, folded `concurrency` at a time.
const RANGE_USERS: u32 = 1 << 22;

/// Columns a fold may not ask for: the scan always provides them.
const KEY_COLUMNS: [&str; 2] = ["user_key", "ts"];

impl KeyScanExec {
    /// The scan of `events` for a fold's `input`, one key range per thread.
    pub fn try_new(events: &Events, input: &FoldInput) -> crate::Result<Self> {
        let Some(parts) = &events.parts else {
            return Err(crate::EngineError::Internal(
                "a fold reads the stored files; this events table is a view".into(),
            ));
        };
        let mut chosen: Vec<usize> = (0..parts.len())
            .filter(|&i| input.until.is_none_or(|u| parts[i].min_ts < u))
            .collect();
        chosen.sort_by_key(|&i| parts[i].min_ts);
        let footers: Vec<Option<_>> = chosen
            .iter()
            .map(|&i| events.footers.get(i).and_then(|f| f.get().cloned()))
            .collect();
        let parts: Vec<Part> = chosen.iter().map(|&i| parts[i].clone()).collect();
        let users = u32::try_from(events.snapshot.users.count)
            .map_err(|_| crate::EngineError::Unreadable("more than 4 billion users".into()))?;
        let threads = crate::table::thread_count(events.options.threads) as u32;
        // One range per thread, of about equal rows: more ranges balance
        // threads better but cost more than they gain (each range decodes
        // the pages at its edges and merges its own blocks; measured with 2
        // to 8 per thread).
        // And ranges of at most RANGE_USERS users (about, as ranges are
        // balanced by rows), so that the per-user state of the ranges in
        // flight stays bounded however many users there are.
        // As many ranges per thread: with 3 ranges on 2 threads the last
        // ran alone, one thread idle for a third of the reading (10M users:
        // retention 0.78 s of wall time for 1.19 s of CPU).
        let per_thread = users.div_ceil(RANGE_USERS).div_ceil(threads.max(1)).max(1);
        let n = (threads * per_thread).clamp(1, users.max(1));
        let ranges = balanced_ranges(&footers, users, n).unwrap_or_else(|| {
            let per = users.div_ceil(n).max(1);
            (0..n)
                .map(|i| ((i * per).min(users), ((i + 1) * per).min(users)))
                .collect()
        });
        // Balanced by rows, a range of users with few rows can be wide:
        // cut it, so that none holds more than RANGE_USERS users' state.
        let mut ranges = cap_users(ranges, RANGE_USERS);
        let identity = events.identity.clone().filter(|i| i.diverts());
        // Merged persons' rows are folded once the other ranges are read:
        // in as many ranges as threads (by person), not on one thread.
        // (Two per thread, to balance rows, measured slower: 0.204 against
        // 0.187 s for weekly retention on 10 % merged of 9.6M events.)
        let real = ranges.len();
        if let Some(id) = &identity {
            let persons = id.key_space() - id.base;
            let n = threads.max(persons.div_ceil(RANGE_USERS)).clamp(1, persons);
            let per = persons.div_ceil(n);
            ranges.extend(
                (0..n)
                    .map(|i| (i * per, ((i + 1) * per).min(persons)))
                    .filter(|(lo, hi)| lo < hi)
                    .map(|(lo, hi)| (id.base + lo, id.base + hi)),
            );
        }
        let persons_ranges = ranges.len() - real;
        let spec = ScanSpec {
            store: crate::table::store_url(&events.store.url),
            parts: parts
                .iter()
                .map(|p| (p.path.to_string(), p.size, p.min_ts, p.event_names))
                .collect(),
            properties: events.snapshot.properties.clone(),
            input: input.clone(),
            ranges,
            concurrency: threads as usize,
            time: (
                events.options.from.unwrap_or(i64::MIN),
                events
                    .options
                    .to
                    .unwrap_or(i64::MAX)
                    .min(input.until.unwrap_or(i64::MAX)),
            ),
            since: events.since.is_some(),
            before: events.before.is_some(),
            persons_ranges,
            identity,
        };
        let mut scan = Self::build(
            spec,
            (events.since.clone(), events.before.clone()),
            events.store.inner.clone(),
            &events.ctx.state(),
            footers,
        )?;
        scan.local_dir = events.store.local_dir.clone();
        Ok(scan)
    }

    /// The scan `spec` describes, reading from `store`, its conditions
    /// planned in `state`.
    fn build(
        spec: ScanSpec,
        (since, before): (Bounds, Bounds),
        store: Arc<dyn ObjectStore>,
        state: &datafusion::execution::SessionState,
        footers: Vec<Option<parquet::arrow::arrow_reader::ArrowReaderMetadata>>,
    ) -> DfResult<Self> {
        let input = &spec.input;
        let parts: Vec<Part> = spec
            .parts
            .iter()
            .map(|(path, size, min_ts, event_names)| {
                Ok(Part {
                    path: object_store::path::Path::parse(path)
                        .map_err(|e| DataFusionError::Plan(format!("file path `{path}`: {e}")))?,
                    size: *size,
                    min_ts: *min_ts,
                    event_names: *event_names,
                })
            })
            .collect::<DfResult<_>>()?;
        let table = tenure_schema::stored_schema(&spec.properties);
        let mut names: Vec<String> = KEY_COLUMNS.iter().map(|c| c.to_string()).collect();
        let mut add = |name: &str| -> DfResult<()> {
            if table.index_of(name).is_err() {
                return plan_err!(
                    "`{name}` is not a column of the events table (try variant, event or a declared property)"
                );
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            Ok(())
        };
        for c in &input.columns {
            if KEY_COLUMNS.contains(&c.as_str()) {
                return datafusion::common::internal_err!(
                    "a fold asked for `{c}`, which every fold reads"
                );
            }
            add(c)?;
        }
        for e in input.flags.iter().chain(&input.values) {
            for c in e.column_refs() {
                add(&c.name)?;
            }
        }
        let used: Vec<String> = input
            .flags
            .iter()
            .chain(&input.values)
            .flat_map(|e| e.column_refs().into_iter().map(|c| c.name.clone()))
            .collect();
        let fields: Vec<Field> = names
            .iter()
            .map(|n| {
                let f = table.field_with_name(n).expect("checked").clone();
                match f.data_type() {
                    DataType::Decimal128(p, s)
                        if input.narrow
                            && *p <= 18
                            && input.columns.contains(n)
                            && !used.contains(n) =>
                    {
                        let t = DataType::Decimal64(*p, *s);
                        f.with_data_type(t)
                    }
                    _ => f,
                }
            })
            .collect();
        let read = Arc::new(Schema::new(fields));
        let df_schema = DFSchema::try_from_qualified_schema("events", read.as_ref())?;
        let flags = input
            .flags
            .iter()
            .map(|e| state.create_physical_expr(e.clone().is_true(), &df_schema))
            .collect::<DfResult<Vec<_>>>()?;
        let values = input
            .values
            .iter()
            .map(|e| state.create_physical_expr(e.clone(), &df_schema))
            .collect::<DfResult<Vec<_>>>()?;
        let eq_flags = input
            .flags
            .iter()
            .map(|e| {
                let e = strip_is_true(e);
                if let Some(eq) = text_eq(e, &read) {
                    return Ok(Some((eq.0, eq.1, None)));
                }
                // `column = 'literal' AND rest`: the rest is evaluated only on
                // batches where the literal matches.
                if let Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr {
                    left,
                    op: datafusion::logical_expr::Operator::And,
                    right,
                }) = e
                    && let Some((c, v)) = text_eq(strip_is_true(left), &read)
                {
                    let rest =
                        state.create_physical_expr(right.as_ref().clone().is_true(), &df_schema)?;
                    return Ok(Some((c, v, Some(rest))));
                }
                Ok(None)
            })
            .collect::<DfResult<Vec<_>>>()?;
        // Columns only the conditions read are not passed on.
        let mut kept = KEY_COLUMNS.len();
        for (i, c) in input.columns.iter().enumerate() {
            kept += usize::from(!input.columns[..i].contains(c));
        }
        let mut out: Vec<Field> = read.fields()[..kept]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (j, v) in values.iter().enumerate() {
            out.push(Field::new(format!("__value{j}"), v.data_type(&read)?, true));
        }
        if input.packed {
            if flags.len() > 32 {
                return datafusion::common::internal_err!(
                    "{} packed flags; at most 32",
                    flags.len()
                );
            }
            out.push(Field::new("__flags", DataType::UInt32, false));
        } else {
            for j in 0..flags.len() {
                out.push(Field::new(format!("__flag{j}"), DataType::Boolean, false));
            }
        }
        let schema = Arc::new(Schema::new(out));
        if spec.since != since.is_some() || spec.before != before.is_some() {
            return datafusion::common::internal_err!("a scan's exposure times are missing");
        }
        // Persons whose keys all fall in one key range are read there, under
        // their own key, by folds that allow it: per-user bounds are looked
        // up by key, so not with those.
        let targets = spec
            .identity
            .as_ref()
            .filter(|_| input.any_key && !input.ordered && !spec.since && !spec.before)
            .map(|id| {
                let real = spec.ranges.len() - spec.persons_ranges.min(spec.ranges.len());
                Arc::new(id.targets(&spec.ranges[..real]))
            });
        // The stream is a channel's receiver, which takes from tokio's
        // task budget: no cooperative wrapper is needed around it.
        let props = Arc::new(
            PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                Partitioning::UnknownPartitioning(spec.ranges.len()),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )
            .with_scheduling_type(
                datafusion::physical_plan::execution_plan::SchedulingType::Cooperative,
            ),
        );
        Ok(Self {
            store,
            footers: Arc::new(
                (0..parts.len())
                    .map(|i| tokio::sync::OnceCell::new_with(footers.get(i).cloned().flatten()))
                    .collect(),
            ),
            parts: Arc::new(parts),
            read,
            flag_exprs: input.flags.clone(),
            flags,
            values,
            eq_flags,
            kept,
            ranges: spec.ranges.clone(),
            concurrency: spec.concurrency,
            time: spec.time,
            since,
            before,
            ordered: input.ordered,
            grouped: input.ordered && input.grouped,
            any_flag: input.any_flag && !input.flags.is_empty(),
            packed: input.packed,
            identity: spec.identity.clone(),
            targets,
            side: Default::default(),
            schema,
            props,
            spec: Arc::new(spec),
            local_dir: None,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// What the scan is made of, and the per-user lower bounds as raw bytes
    /// (see `crate::codec`).
    pub(crate) fn encode(&self) -> (ScanSpec, Vec<u8>) {
        let tail = [&self.since, &self.before]
            .into_iter()
            .flatten()
            .flat_map(|v| v.iter().flat_map(|t| t.to_le_bytes()))
            .collect();
        (self.spec.as_ref().clone(), tail)
    }

    /// The scan of an encoding, reading from the object store the session of
    /// `ctx` has registered under the spec's URL.
    pub(crate) fn decode(spec: ScanSpec, tail: &[u8], ctx: &TaskContext) -> DfResult<Self> {
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(&spec.store)?;
        let store = ctx.runtime_env().object_store(&url).map_err(|e| {
            DataFusionError::Plan(format!(
                "the plan reads the store registered as {}, which this session does not have (open the store with Events::open): {e}",
                spec.store
            ))
        })?;
        if !tail.len().is_multiple_of(8) {
            return plan_err!("a scan's exposure times are truncated");
        }
        let times: Vec<i64> = tail
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        // Lower bounds first, then upper bounds, one per user each.
        let (since, before) = match (spec.since, spec.before) {
            (false, false) => (None, None),
            (true, false) => (Some(Arc::new(times)), None),
            (false, true) => (None, Some(Arc::new(times))),
            (true, true) => {
                if !times.len().is_multiple_of(2) {
                    return plan_err!("a scan's exposure windows are truncated");
                }
                let half = times.len() / 2;
                (
                    Some(Arc::new(times[..half].to_vec())),
                    Some(Arc::new(times[half..].to_vec())),
                )
            }
        };
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .with_scalar_functions(ctx.scalar_functions().values().cloned().collect())
            .with_aggregate_functions(ctx.aggregate_functions().values().cloned().collect())
            .with_window_functions(ctx.window_functions().values().cloned().collect())
            .build();
        Self::build(spec, (since, before), store, &state, Vec::new())
    }

    /// The size of each file it reads.
    pub fn file_sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.parts.iter().map(|p| p.size)
    }

    /// The key range of each partition.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// How many of the last partitions are merged persons' (read after the
    /// others).
    pub fn deferred(&self) -> usize {
        match self.identity {
            Some(_) => self.spec.persons_ranges.max(1),
            None => 0,
        }
    }

    /// The same scan with an empty buffer of merged persons' rows: one run.
    pub fn with_fresh_side(&self) -> Self {
        Self {
            side: Default::default(),
            ..self.clone()
        }
    }

    /// How many ranges to read at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Index of the first condition column.
    pub fn flags_at(&self) -> usize {
        self.kept + self.values.len()
    }
}

impl DisplayAs for KeyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let cols: Vec<&str> = self
            .read
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KeyScanExec: files={}, key_ranges={}, columns=[{}]",
            self.parts.len(),
            self.ranges.len(),
            cols.join(", ")
        )?;
        if !self.flag_exprs.is_empty() {
            let flags: Vec<String> = self.flag_exprs.iter().map(|e| e.to_string()).collect();
            write!(f, ", flags=[{}]", flags.join(", "))?;
        }
        if self.time != (i64::MIN, i64::MAX) {
            write!(f, ", ts=[{}, {})", self.time.0, self.time.1)?;
        }
        if self.since.is_some() {
            write!(f, ", since_exposure")?;
        }
        if self.before.is_some() {
            write!(f, ", before_exposure")?;
        }
        if self.any_flag {
            write!(f, ", any_flag")?;
        }
        if self.grouped {
            write!(f, ", grouped")?;
        } else if self.ordered {
            write!(f, ", ordered")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for KeyScanExec {
    fn name(&self) -> &str {
        "KeyScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for e in &self.flags {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(&range) = self.ranges.get(partition) else {
            return exec_err!("KeyScanExec has no partition {partition}");
        };
        let real = self.ranges.len() - self.deferred();
        if partition >= real {
            return Ok(self.merged_persons(range, real));
        }
        let last = partition + 1 == real;
        // A grouped reading sends a block as many small batches.
        let depth = if self.grouped { 64 } else { 2 };
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(depth);
        let job = Job {
            store: self.store.clone(),
            parts: self.parts.clone(),
            footers: self.footers.clone(),
            read: self.read.clone(),
            schema: self.schema.clone(),
            flags: self.flags.clone(),
            values: self.values.clone(),
            eq_flags: self.eq_flags.clone(),
            kept: self.kept,
            range,
            last,
            time: self.time,
            since: self.since.clone(),
            before: self.before.clone(),
            local_dir: self.local_dir.clone(),
            any_flag: self.any_flag,
            ordered: self.ordered,
            grouped: self.grouped,
            packed: self.packed,
            moves: self.identity.as_ref().map(|id| {
                let targets = self.targets.as_ref().map(|t| t.as_slice());
                (id.base, id.moves(range, targets))
            }),
            side: self.side.clone(),
            pieces: Default::default(),
            read_bytes: MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition),
            files: MetricBuilder::new(&self.metrics).counter("files_opened", partition),
        };
        let sent = MetricBuilder::new(&self.metrics).output_rows(partition);
        let ordered = self.ordered;
        let over = Done(self.side.clone());
        tokio::spawn(async move {
            let _over = over;
            let done = match ordered {
                true => job.run_ordered(&tx).await,
                false => job.run(&tx).await,
            };
            tracing::debug!(
                "key scan: range {}..{} read {} bytes of {} files",
                range.0,
                range.1,
                job.read_bytes.value(),
                job.files.value()
            );
            if let Err(e) = done {
                let _ = tx.send(Err(e)).await;
            }
        });
        let stream = futures::stream::unfold((rx, sent), |(mut rx, sent)| async move {
            let b = rx.recv().await?;
            if let Ok(b) = &b {
                sent.add(b.num_rows());
            }
            Some((b, (rx, sent)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

impl KeyScanExec {
    /// A merged persons' partition's stream: once the `real` ranges have
    /// been read, the rows they set aside of the persons in `range` (virtual
    /// keys), in the order of the ranges and their reading. For an ordered
    /// reading they are sorted by (virtual key, ts), in batches of complete
    /// persons; otherwise they go as set aside, each piece in virtual key
    /// order.
    fn merged_persons(&self, range: (u32, u32), real: usize) -> SendableRecordBatchStream {
        let side = self.side.clone();
        let schema = with_file_min_ts(&self.schema, i64::MIN);
        let any = self
            .any_flag
            .then_some((self.kept + self.values.len(), self.packed));
        let out = schema.clone();
        let ordered = self.ordered;
        let rows = async move {
            use std::sync::atomic::Ordering;
            loop {
                let wait = side.notify.notified();
                if side.done.load(Ordering::SeqCst) >= real {
                    break;
                }
                wait.await;
            }
            // Each persons' range takes its part of every piece (a piece is
            // ordered by virtual key).
            let mut tagged = side.rows.lock().expect("side rows").clone();
            tagged.sort_by_key(|(tag, _)| *tag);
            let pieces: Vec<RecordBatch> = tagged
                .into_iter()
                .filter_map(|(_, b)| {
                    let keys = b.column(0).as_primitive::<UInt32Type>().values();
                    let a = keys.partition_point(|&k| k < range.0);
                    let z = keys.partition_point(|&k| k < range.1);
                    (a < z).then(|| b.slice(a, z - a).with_schema(schema.clone()))
                })
                .collect::<Result<_, _>>()?;
            tracing::debug!(
                "merged persons: {} rows in {} pieces",
                pieces.iter().map(RecordBatch::num_rows).sum::<usize>(),
                pieces.len()
            );
            if pieces.is_empty() || !ordered {
                // A fold that does not ask for order takes the pieces as
                // they are: each holds its rows by virtual key already.
                return Ok(pieces);
            }
            let all = sort_pieces(&pieces, Some(range), any, &mut SortScratch::default())?;
            // Batches of complete persons.
            let keys = all.column(0).as_primitive::<UInt32Type>().values().to_vec();
            let mut out = Vec::new();
            let mut start = 0;
            while start < keys.len() {
                let mut end = (start + BATCH_ROWS).min(keys.len());
                while end < keys.len() && keys[end] == keys[end - 1] {
                    end += 1;
                }
                out.push(all.slice(start, end - start));
                start = end;
            }
            Ok::<_, DataFusionError>(out)
        };
        let stream = futures::stream::once(rows).flat_map(|r| {
            futures::stream::iter(match r {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Box::pin(RecordBatchStreamAdapter::new(out, stream))
    }
}

/// One partition's reading.
struct Job {
    store: Arc<dyn ObjectStore>,
    parts: Arc<Vec<Part>>,
    footers: Footers,
    read: SchemaRef,
    schema: SchemaRef,
    flags: Vec<Arc<dyn PhysicalExpr>>,
    values: Vec<Arc<dyn PhysicalExpr>>,
    eq_flags: Vec<Option<EqFlag>>,
    kept: usize,
    range: (u32, u32),
    /// The last range also checks that no key is beyond the dictionary.
    last: bool,
    time: (i64, i64),
    since: Option<Arc<Vec<i64>>>,
    before: Option<Arc<Vec<i64>>>,
    /// The store's directory when it is on local disk.
    local_dir: Option<std::path::PathBuf>,
    any_flag: bool,
    ordered: bool,
    grouped: bool,
    packed: bool,
    /// With merged persons: the dictionary's size (virtual keys start
    /// there), and the range's keys read under another key, with that key
    /// ([`crate::identity::Identity::moves`]; made per reading, one bit per
    /// key up to the range's end).
    moves: Option<(u32, crate::identity::Moves)>,
    side: Arc<Side>,
    /// Pieces of merged persons' rows set aside so far.
    pieces: std::sync::atomic::AtomicU64,
    /// Bytes read from the store, and files opened.
    read_bytes: Count,
    files: Count,
}

type Sender = tokio::sync::mpsc::Sender<DfResult<RecordBatch>>;

impl Job {
    async fn run(&self, tx: &Sender) -> DfResult<()> {
        for i in 0..self.parts.len() {
            if !self.file(i, tx).await? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one file; false when the receiver is gone.
    async fn file(&self, i: usize, tx: &Sender) -> DfResult<bool> {
        let part = &self.parts[i];
        let Some((mut stream, _)) = self.open(i).await? else {
            return Ok(true);
        };
        let schema = with_file_min_ts(&self.schema, part.min_ts);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| in_file(part, &e))?;
            let Some(out) = self.shape(&batch, &schema).map_err(|e| in_file(part, &e))? else {
                continue;
            };
            if tx.send(Ok(out)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A reader of the file's pages that may hold keys of the range, and
    /// whether the file is sorted by `(user_key, ts)` as a whole (its row
    /// groups say so and do not overlap); `None` when no page can.
    async fn open(&self, i: usize) -> DfResult<Option<(FileStream, bool)>> {
        let part = &self.parts[i];
        let local = self.local_dir.as_deref();
        let reader = StoreFile::new(&self.store, part, local).counting(self.read_bytes.clone());
        let footer = self.footers[i]
            .get_or_try_init(|| crate::stored::read_footer(&self.store, part, local))
            .await
            .map_err(|e| in_file(part, &e))?
            .clone();
        // `event` read only for flags and computed values (not passed on to
        // the fold, which expects four-byte keys) takes one-byte keys when
        // the file has few enough names: a quarter of the keys' bytes to
        // unpack, check and compare.
        let small: &[&str] = match part.small_events()
            && self.read.fields()[self.kept..]
                .iter()
                .any(|f| f.name() == tenure_schema::columns::EVENT)
        {
            true => &[tenure_schema::columns::EVENT],
            false => &[],
        };
        let footer = narrowed(footer, &self.read, small).map_err(|e| in_file(part, &e))?;
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
        let (lo, hi) = self.range;
        let Some((groups, selection)) = select(
            builder.metadata(),
            builder.schema(),
            builder.parquet_schema(),
            lo,
            if self.last { u32::MAX } else { hi },
        )
        .map_err(|e| in_file(part, &e))?
        else {
            return Ok(None);
        };
        self.files.add(1);
        let sorted = sorted_by_key(
            builder.metadata(),
            builder.schema(),
            builder.parquet_schema(),
        );
        let present: Vec<&str> = self
            .read
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| builder.schema().index_of(n).is_ok())
            .collect();
        let mask = ProjectionMask::columns(builder.parquet_schema(), present.iter().copied());
        let stream = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| in_file(part, &e))?;
        Ok(Some((stream, sorted)))
    }

    /// The ordered reading: one cursor per file, and block of users by block
    /// of users, each cursor's rows of the block are taken, merged and sorted
    /// by `(user_key, ts)`, so every batch sent holds complete users.
    async fn run_ordered(&self, tx: &Sender) -> DfResult<()> {
        let mut cursors = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            let Some((stream, sorted)) = self.open(i).await? else {
                continue;
            };
            let mut cursor = Cursor {
                schema: with_file_min_ts(&self.schema, part.min_ts),
                part: part.clone(),
                stream: Some(stream),
                batch: None,
            };
            if !sorted {
                // A file not known to be sorted by user (not one Tenure
                // wrote): its rows of the range are read and sorted at once.
                let mut all = Vec::new();
                while let Some(b) = self.next_rows(&mut cursor).await? {
                    all.push(b);
                }
                cursor.stream = None;
                if all.is_empty() {
                    continue;
                }
                let all = datafusion::arrow::compute::concat_batches(&cursor.schema, &all)?;
                cursor.batch = Some(sort_rows(&all, None)?);
            }
            cursors.push(cursor);
        }
        let (lo, hi) = self.range;
        let mut first = lo;
        let mut scratch = SortScratch::default();
        while !cursors.is_empty() {
            // The last range may meet keys beyond `hi` (then `shape` fails).
            let end = first.saturating_add(BLOCK_USERS);
            let mut pieces = Vec::new();
            for c in cursors.iter_mut() {
                loop {
                    if c.batch.is_none() {
                        c.batch = self.next_rows(c).await?;
                    }
                    let Some(b) = c.batch.take() else { break };
                    let keys = b.column(0).as_primitive::<UInt32Type>().values();
                    let cut = keys.partition_point(|&k| k < end);
                    if cut > 0 {
                        pieces.push(b.slice(0, cut));
                    }
                    if cut < b.num_rows() {
                        c.batch = Some(b.slice(cut, b.num_rows() - cut));
                        break;
                    }
                }
            }
            cursors.retain(|c| c.batch.is_some() || c.stream.is_some());
            if self.grouped {
                let meta = first.to_string();
                for p in pieces {
                    let mut m = p.schema().metadata().clone();
                    m.insert(super::BLOCK.to_string(), meta.clone());
                    let schema =
                        Arc::new(Schema::new_with_metadata(p.schema().fields().clone(), m));
                    let p = p.with_schema(schema)?;
                    if tx.send(Ok(p)).await.is_err() {
                        return Ok(());
                    }
                }
            } else if !pieces.is_empty() {
                let any = self
                    .any_flag
                    .then_some((self.kept + self.values.len(), self.packed));
                let block = sort_pieces(&pieces, Some((first, end)), any, &mut scratch)?;
                if block.num_rows() > 0 && tx.send(Ok(block)).await.is_err() {
                    return Ok(());
                }
            }
            if end >= hi && !self.last {
                break;
            }
            first = end;
        }
        Ok(())
    }

    /// The cursor's next batch of rows in range (sorted by key), or `None`
    /// at the end of its file.
    async fn next_rows(&self, c: &mut Cursor) -> DfResult<Option<RecordBatch>> {
        let Some(stream) = c.stream.as_mut() else {
            return Ok(None);
        };
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| in_file(&c.part, &e))?;
            if let Some(out) = self
                .shape(&batch, &c.schema)
                .map_err(|e| in_file(&c.part, &e))?
            {
                let keys = out.column(0).as_primitive::<UInt32Type>().values();
                if !keys.is_sorted() {
                    return exec_err!(
                        "cannot read {}: rows are not sorted by user_key though the file says so",
                        c.part.path
                    );
                }
                return Ok(Some(out));
            }
        }
        c.stream = None;
        Ok(None)
    }

    /// The batch's rows of this range and time range, as [`Self::schema`].
    fn shape(&self, batch: &RecordBatch, schema: &SchemaRef) -> DfResult<Option<RecordBatch>> {
        let (lo, hi) = self.range;
        let keys = batch
            .column_by_name("user_key")
            .and_then(|c| c.as_primitive_opt::<UInt32Type>())
            .ok_or_else(|| exec_datafusion_err!("no user_key column of type UInt32"))?;
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| exec_datafusion_err!("no ts column of type timestamp(µs)"))?;
        if keys.null_count() > 0 || ts.null_count() > 0 {
            return exec_err!("null user_key or ts");
        }
        let k = keys.values();
        if self.last && k.iter().any(|&x| x >= hi) {
            return exec_err!(
                "user_key beyond the users dictionary ({hi} users): the store is inconsistent"
            );
        }
        // Rows of the range: a slice when the keys are sorted (they are in
        // every file Tenure writes), else a filter.
        let mut batch = if k.is_sorted() {
            let a = k.partition_point(|&x| x < lo);
            let b = k.partition_point(|&x| x < hi);
            if a == b {
                return Ok(None);
            }
            batch.slice(a, b - a)
        } else {
            let keep: BooleanArray = k.iter().map(|&x| Some(x >= lo && x < hi)).collect();
            filter_record_batch(batch, &keep)?
        };
        if let Some((base, moves)) = &self.moves
            && let Some((rest, merged)) = split_merged(&batch, *base, moves)?
        {
            // Merged persons' rows read elsewhere go to the last
            // partitions, shaped here under their virtual keys.
            if let Some(merged) = merged
                && let Some(m) = self.shape_rows(merged, &self.schema)?
            {
                let seq = self
                    .pieces
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.side
                    .rows
                    .lock()
                    .expect("side rows")
                    .push(((self.range.0, seq), m));
            }
            batch = rest;
            if batch.num_rows() == 0 {
                return Ok(None);
            }
        }
        self.shape_rows(batch, schema)
    }

    /// Rows of the range: the time range and per-user bounds kept, the
    /// columns read, values and flags computed.
    fn shape_rows(
        &self,
        mut batch: RecordBatch,
        schema: &SchemaRef,
    ) -> DfResult<Option<RecordBatch>> {
        let (from, to) = self.time;
        if from != i64::MIN || to != i64::MAX || self.since.is_some() || self.before.is_some() {
            let t = batch
                .column_by_name("ts")
                .expect("checked")
                .as_primitive::<TimestampMicrosecondType>()
                .values();
            let k = batch
                .column_by_name("user_key")
                .expect("checked")
                .as_primitive::<UInt32Type>()
                .values();
            let since = self.since.as_deref();
            let before = self.before.as_deref();
            let keep = |i: usize| {
                let x = t[i];
                x >= from
                    && x < to
                    && since.is_none_or(|s| s.get(k[i] as usize).is_some_and(|&e| x >= e))
                    && before.is_none_or(|s| s.get(k[i] as usize).is_some_and(|&e| x < e))
            };
            if (0..t.len()).any(|i| !keep(i)) {
                let keep: BooleanArray = (0..t.len()).map(|i| Some(keep(i))).collect();
                batch = filter_record_batch(&batch, &keep)?;
            }
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut narrow = false;
        for (i, f) in self.read.fields().iter().enumerate() {
            columns.push(match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => c.clone(),
                // A text column only flags and values read, with one-byte
                // dictionary keys (see `narrowed`): taken as it is.
                Some(c)
                    if i >= self.kept
                        && matches!(c.data_type(), DataType::Dictionary(k, _) if **k == DataType::UInt8) =>
                {
                    narrow = true;
                    c.clone()
                }
                Some(c) => cast(c, f.data_type())?,
                // A file written before the column was declared.
                None => new_null_array(f.data_type(), n),
            });
        }
        let read_schema = if narrow {
            let fields: Vec<Field> = self
                .read
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                .collect();
            Arc::new(Schema::new(fields))
        } else {
            self.read.clone()
        };
        let read = RecordBatch::try_new(read_schema, columns)?;
        let mut columns: Vec<ArrayRef> = read.columns()[..self.kept].to_vec();
        for (j, v) in self.values.iter().enumerate() {
            let value = v.evaluate(&read)?.into_array(n)?;
            // A value of a column read with one-byte keys (`--by event`)
            // has them too; passed on as declared.
            let want = schema.field(self.kept + j).data_type();
            columns.push(match value.data_type() == want {
                true => value,
                false => cast(&value, want)?,
            });
        }
        if self.packed {
            columns.push(Arc::new(datafusion::arrow::array::UInt32Array::from(
                self.flag_bits(&read)?,
            )));
        } else {
            for j in 0..self.flags.len() {
                columns.push(Arc::new(self.flag(&read, j)?));
            }
        }
        let out = RecordBatch::try_new(schema.clone(), columns)?;
        if !self.any_flag || (self.ordered && !self.grouped) {
            // An ordered reading drops the rows while sorting its blocks.
            return Ok(Some(out));
        }
        let any = any_flag(
            &out.columns()[self.kept + self.values.len()..],
            n,
            self.packed,
        );
        match any.count_set_bits() {
            0 => Ok(None),
            c if c == n => Ok(Some(out)),
            _ => Ok(Some(filter_record_batch(
                &out,
                &BooleanArray::new(any, None),
            )?)),
        }
    }

    /// Flag `j` on the rows read.
    fn flag(&self, read: &RecordBatch, j: usize) -> DfResult<BooleanArray> {
        let n = read.num_rows();
        if let Some((c, value, rest)) = &self.eq_flags[j]
            && let Some(hit) = text_flag(read.column(*c).as_ref(), value)
        {
            return Ok(match rest {
                Some(rest) if hit.true_count() > 0 => {
                    let r = rest.evaluate(read)?.into_array(n)?;
                    datafusion::arrow::compute::and(&hit, r.as_boolean())?
                }
                _ => hit,
            });
        }
        let v = self.flags[j].evaluate(read)?.into_array(n)?;
        Ok(v.as_boolean().clone())
    }

    /// Every flag on the rows read, as bits. Flags `text_column = 'literal'`
    /// on the same column are tested together, once per dictionary value.
    fn flag_bits(&self, read: &RecordBatch) -> DfResult<Vec<u32>> {
        let n = read.num_rows();
        let mut bits = vec![0u32; n];
        let mut done = vec![false; self.flags.len()];
        for j in 0..self.flags.len() {
            let Some((c, _, None)) = &self.eq_flags[j] else {
                continue;
            };
            use datafusion::arrow::datatypes::{Int32Type, UInt8Type};
            let column = read.column(*c);
            let Some(names) = (match column.data_type() {
                DataType::Dictionary(k, _) if **k == DataType::UInt8 => {
                    column.as_dictionary_opt::<UInt8Type>().map(|d| d.values())
                }
                _ => column.as_dictionary_opt::<Int32Type>().map(|d| d.values()),
            })
            .and_then(|v| v.as_string_opt::<i32>()) else {
                continue;
            };
            if done[j] {
                continue;
            }
            // Every plain flag on this column, as bits per dictionary value.
            let mut per = vec![0u32; names.len()];
            for (k, eq) in self.eq_flags.iter().enumerate() {
                if let Some((c2, value, None)) = eq
                    && c2 == c
                {
                    done[k] = true;
                    for (v, p) in per.iter_mut().enumerate() {
                        if names.is_valid(v) && names.value(v) == value {
                            *p |= 1 << k;
                        }
                    }
                }
            }
            match column.data_type() {
                DataType::Dictionary(k, _) if **k == DataType::UInt8 => {
                    or_per_key(column.as_dictionary::<UInt8Type>(), &per, &mut bits)
                }
                _ => or_per_key(column.as_dictionary::<Int32Type>(), &per, &mut bits),
            }
        }
        for j in (0..self.flags.len()).filter(|&j| !done[j]) {
            let f = self.flag(read, j)?;
            for i in f.values().set_indices() {
                bits[i] |= 1 << j;
            }
        }
        Ok(bits)
    }
}

/// Ors into each row's bits those of its dictionary key (`per`, by key);
/// null keys add none.
fn or_per_key<K: datafusion::arrow::datatypes::ArrowDictionaryKeyType>(
    d: &datafusion::arrow::array::DictionaryArray<K>,
    per: &[u32],
    bits: &mut [u32],
) {
    use datafusion::arrow::datatypes::ArrowNativeType;
    let keys = d.keys();
    let valid = keys.nulls();
    for (i, (&key, b)) in keys.values().iter().zip(bits.iter_mut()).enumerate() {
        if valid.is_none_or(|v| v.is_valid(i)) {
            *b |= per.get(key.as_usize()).copied().unwrap_or(0);
        }
    }
}

/// `footer` reading as `Decimal64` the decimal columns `read` wants so
/// ([`FoldInput::narrow`]): a file's 64-bit decimals are then taken as they
/// are instead of widened row by row. The text dictionaries of `small_keys`
/// get one-byte keys (`Dictionary(UInt8, Utf8)`; the caller knows they hold
/// at most 255 values), taken as they are by [`Job::shape_rows`].
fn narrowed(
    footer: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    read: &Schema,
    small_keys: &[&str],
) -> parquet::errors::Result<parquet::arrow::arrow_reader::ArrowReaderMetadata> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    let file = footer.schema();
    let mut changed = false;
    let fields: Vec<Field> = file
        .fields()
        .iter()
        .map(|f| {
            let want = read.field_with_name(f.name()).map(|w| w.data_type());
            match (f.data_type(), want) {
                (DataType::Decimal128(p, s), Ok(DataType::Decimal64(..))) if *p <= 18 => {
                    changed = true;
                    f.as_ref()
                        .clone()
                        .with_data_type(DataType::Decimal64(*p, *s))
                }
                (DataType::Dictionary(k, v), Ok(_))
                    if **k == DataType::Int32
                        && **v == DataType::Utf8
                        && small_keys.contains(&f.name().as_str()) =>
                {
                    changed = true;
                    f.as_ref().clone().with_data_type(DataType::Dictionary(
                        Box::new(DataType::UInt8),
                        Box::new(DataType::Utf8),
                    ))
                }
                _ => f.as_ref().clone(),
            }
        })
        .collect();
    if !changed {
        return Ok(footer);
    }
    let hint = Arc::new(Schema::new_with_metadata(fields, file.metadata().clone()));
    ArrowReaderMetadata::try_new(
        footer.metadata().clone(),
        ArrowReaderOptions::new().with_schema(hint),
    )
}

/// `batch` with the rows of the keys `moves` moves read under the key it
/// gives ([`crate::identity::Identity::moves`]): those below the
/// dictionary's size `base` (a person read here under its own key) keep
/// their place; the others (virtual keys) are returned apart, ordered by key
/// (a person's rows keep their order). `None` when no row moves.
fn split_merged(
    batch: &RecordBatch,
    base: u32,
    moves: &crate::identity::Moves,
) -> DfResult<Option<(RecordBatch, Option<RecordBatch>)>> {
    use datafusion::arrow::array::UInt32Array;
    let at = batch.schema().index_of("user_key")?;
    let keys = batch.column(at).as_primitive::<UInt32Type>().values();
    // A bit per row, tested from a bit per key (in cache: a few hundred KB
    // per million keys); most rows of merged persons are their own key's,
    // which does not move when the person is read in place.
    let (moved, count) = moves.bits.mask(keys);
    if count == 0 {
        return Ok(None);
    }
    // The rows set apart as (virtual key, row) words: sorted, each person's
    // rows together and, within a person, in the batch's order.
    let mut order: Vec<u64> = Vec::new();
    // The keys, with those of persons read here replaced.
    let mut here: Option<Vec<u32>> = None;
    let (mut last, mut to) = (u32::MAX, 0u32);
    for i in moved.set_indices() {
        let k = keys[i];
        if k != last {
            let Some(r) = moves.bits.rank(k) else {
                return datafusion::common::internal_err!("moved key {k} has no rank");
            };
            (last, to) = (k, moves.to[r]);
        }
        if to < base {
            here.get_or_insert_with(|| keys.to_vec())[i] = to;
        } else {
            order.push((u64::from(to) << 32) | i as u64);
        }
    }
    let batch = match here {
        Some(keys) => {
            let mut columns = batch.columns().to_vec();
            columns[at] = Arc::new(UInt32Array::from(keys));
            RecordBatch::try_new(batch.schema(), columns)?
        }
        None => batch.clone(),
    };
    if order.is_empty() {
        return Ok(Some((batch, None)));
    }
    order.sort_unstable();
    let mut apart = vec![0u64; batch.num_rows().div_ceil(64)];
    for &w in &order {
        let i = w as u32 as usize;
        apart[i / 64] |= 1 << (i % 64);
    }
    let apart = datafusion::arrow::buffer::BooleanBuffer::new(
        datafusion::arrow::buffer::Buffer::from_vec(apart),
        0,
        batch.num_rows(),
    );
    let rest = filter_record_batch(&batch, &BooleanArray::new(!&apart, None))?;
    let rows: UInt32Array = order.iter().map(|&w| w as u32).collect();
    let virt: UInt32Array = order.iter().map(|&w| (w >> 32) as u32).collect();
    let merged = datafusion::arrow::compute::take_record_batch(&batch, &rows)?;
    let mut columns = merged.columns().to_vec();
    columns[at] = Arc::new(virt);
    Ok(Some((
        rest,
        Some(RecordBatch::try_new(merged.schema(), columns)?),
    )))
}

/// Rows where some flag is true, from the flag columns (or the one column of
/// bits).
fn any_flag(
    flags: &[ArrayRef],
    n: usize,
    packed: bool,
) -> datafusion::arrow::buffer::BooleanBuffer {
    if packed {
        let bits = flags[0].as_primitive::<UInt32Type>().values();
        return super::bits::pack_bits(&bits[..n], |b| b != 0);
    }
    let mut any = flags[0].as_boolean().values().clone();
    for f in &flags[1..] {
        any = &any | f.as_boolean().values();
    }
    any
}

/// `ranges` with every range wider than `most` users cut into equal parts
/// of at most `most`.
fn cap_users(ranges: Vec<(u32, u32)>, most: u32) -> Vec<(u32, u32)> {
    let most = most.max(1);
    let mut out = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        let parts = (hi - lo).div_ceil(most).max(1);
        let per = (hi - lo).div_ceil(parts);
        let mut at = lo;
        for _ in 0..parts {
            let end = (at + per).min(hi);
            out.push((at, end));
            at = end;
        }
    }
    out
}

/// Splits the keys `0..users` into `n` ranges holding about as many rows
/// each, from the files' `user_key` statistics (per page where the page
/// index has them, else per row group; a page's rows are taken as spread
/// evenly over its keys). Users are numbered as they first appear, so the
/// first keys hold the most rows (half the keys held 59 % of the rows on the
/// generated 9.6M events): equal key ranges leave a thread idle for the last
/// third of the run. `None` when a file has no usable statistics.
fn balanced_ranges(
    footers: &[Option<parquet::arrow::arrow_reader::ArrowReaderMetadata>],
    users: u32,
    n: u32,
) -> Option<Vec<(u32, u32)>> {
    if n <= 1 || users < n * 64 || footers.is_empty() {
        return None;
    }
    let buckets = users.min(4096) as usize;
    let width = users.div_ceil(buckets as u32) as u64;
    let mut rows = vec![0f64; buckets];
    for f in footers {
        let f = f.as_ref()?;
        let (meta, arrow, parquet) = (f.metadata(), f.schema(), f.parquet_schema());
        let conv = StatisticsConverter::try_new("user_key", arrow, parquet).ok()?;
        let groups = meta.row_groups();
        let mut add = |mins: &dyn Array, maxs: &dyn Array, counts: &[u64]| -> Option<()> {
            let (mins, maxs) = (
                mins.as_primitive_opt::<UInt32Type>()?,
                maxs.as_primitive_opt::<UInt32Type>()?,
            );
            for (i, &c) in counts.iter().enumerate() {
                if mins.is_null(i) || maxs.is_null(i) {
                    return None;
                }
                let a = (mins.value(i) as u64 / width) as usize;
                let b = ((maxs.value(i) as u64 / width) as usize).min(buckets - 1);
                let a = a.min(b);
                let share = c as f64 / (b - a + 1) as f64;
                rows[a..=b].iter_mut().for_each(|r| *r += share);
            }
            Some(())
        };
        for g in 0..groups.len() {
            let one = [g];
            let pages = match (meta.column_index(), meta.offset_index()) {
                (Some(index), Some(offsets)) => {
                    let mins = conv.data_page_mins(index, offsets, one.iter()).ok()?;
                    let maxs = conv.data_page_maxes(index, offsets, one.iter()).ok()?;
                    conv.data_page_row_counts(offsets, groups, one.iter())
                        .ok()
                        .flatten()
                        .filter(|c| c.len() == mins.len())
                        .map(|c| (mins, maxs, c.values().to_vec()))
                }
                _ => None,
            };
            match pages {
                Some((mins, maxs, counts)) => add(&mins, &maxs, &counts)?,
                None => {
                    let mins = conv.row_group_mins(groups[g..=g].iter()).ok()?;
                    let maxs = conv.row_group_maxes(groups[g..=g].iter()).ok()?;
                    add(&mins, &maxs, &[groups[g].num_rows() as u64])?;
                }
            }
        }
    }
    let total: f64 = rows.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut bounds = vec![0u32];
    let mut sum = 0.0;
    for (b, r) in rows.iter().enumerate() {
        sum += r;
        let cut = bounds.len() as f64 * total / n as f64;
        if sum >= cut && (bounds.len() as u32) < n {
            let key = ((b as u64 + 1) * width).min(users as u64) as u32;
            bounds.push(key.max(*bounds.last().expect("non-empty")));
        }
    }
    while (bounds.len() as u32) < n {
        bounds.push(users);
    }
    bounds.push(users);
    Some(bounds.windows(2).map(|w| (w[0], w[1])).collect())
}

/// The row groups and rows of a file that may hold keys in `lo..hi`, from
/// the `user_key` statistics (row groups, then pages when the page index is
/// there); `None` when nothing can.
fn select(
    meta: &ParquetMetaData,
    arrow: &SchemaRef,
    parquet: &parquet::schema::types::SchemaDescriptor,
    lo: u32,
    hi: u32,
) -> Result<Option<(Vec<usize>, RowSelection)>, DataFusionError> {
    let groups = meta.row_groups();
    let all: Vec<usize> = (0..groups.len()).collect();
    let whole = |gs: &[usize]| {
        let rows: usize = gs.iter().map(|&g| groups[g].num_rows() as usize).sum();
        RowSelection::from(vec![RowSelector::select(rows)])
    };
    let Ok(conv) = StatisticsConverter::try_new("user_key", arrow, parquet) else {
        return Ok(Some((all.clone(), whole(&all))));
    };
    let overlaps = |min: &dyn Array, max: &dyn Array, i: usize| -> bool {
        let (Some(min), Some(max)) = (
            min.as_primitive_opt::<UInt32Type>(),
            max.as_primitive_opt::<UInt32Type>(),
        ) else {
            return true;
        };
        if min.is_null(i) || max.is_null(i) {
            return true;
        }
        max.value(i) >= lo && min.value(i) < hi
    };
    let mins = conv.row_group_mins(groups.iter())?;
    let maxs = conv.row_group_maxes(groups.iter())?;
    let chosen: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&g| overlaps(&mins, &maxs, g))
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    let (Some(index), Some(offsets)) = (meta.column_index(), meta.offset_index()) else {
        return Ok(Some((chosen.clone(), whole(&chosen))));
    };
    let mut selectors = Vec::new();
    for &g in &chosen {
        let one = [g];
        let pmins = conv.data_page_mins(index, offsets, one.iter())?;
        let pmaxs = conv.data_page_maxes(index, offsets, one.iter())?;
        let counts = conv.data_page_row_counts(offsets, groups, one.iter())?;
        let Some(counts) = counts.filter(|c| c.len() == pmins.len()) else {
            selectors.push(RowSelector::select(groups[g].num_rows() as usize));
            continue;
        };
        for p in 0..counts.len() {
            let rows = counts.value(p) as usize;
            selectors.push(match overlaps(&pmins, &pmaxs, p) {
                true => RowSelector::select(rows),
                false => RowSelector::skip(rows),
            });
        }
    }
    let selection = RowSelection::from(selectors);
    if !selection.selects_any() {
        return Ok(None);
    }
    Ok(Some((chosen, selection)))
}

/// `column = value` per row (null is false) for a text column, the value
/// compared once per dictionary entry; `None` when the column is not text.
fn text_flag(column: &dyn Array, value: &str) -> Option<BooleanArray> {
    use datafusion::arrow::buffer::BooleanBuffer;
    use datafusion::arrow::datatypes::{Int32Type, UInt8Type};
    let bits = match column.data_type() {
        DataType::Dictionary(k, _) if **k == DataType::UInt8 => {
            dict_flag(column.as_dictionary_opt::<UInt8Type>()?, value)?
        }
        DataType::Dictionary(..) => dict_flag(column.as_dictionary_opt::<Int32Type>()?, value)?,
        _ => {
            let s = column.as_string_opt::<i32>()?;
            BooleanBuffer::collect_bool(s.len(), |i| s.is_valid(i) && s.value(i) == value)
        }
    };
    Some(BooleanArray::new(bits, None))
}

/// [`text_flag`] of a dictionary of text; `None` when its values are not
/// text.
fn dict_flag<K: datafusion::arrow::datatypes::ArrowDictionaryKeyType>(
    d: &datafusion::arrow::array::DictionaryArray<K>,
    value: &str,
) -> Option<datafusion::arrow::buffer::BooleanBuffer> {
    use datafusion::arrow::buffer::BooleanBuffer;
    use datafusion::arrow::datatypes::ArrowNativeType;
    let names = d.values().as_string_opt::<i32>()?;
    let hit: Vec<bool> = (0..names.len())
        .map(|j| names.is_valid(j) && names.value(j) == value)
        .collect();
    let keys = d.keys().values();
    let mut matching = hit.iter().enumerate().filter(|(_, h)| **h).map(|(j, _)| j);
    let mut bits = match (matching.next(), matching.next()) {
        // No value matches, or one: a comparison of keys (vectorised).
        (None, _) => BooleanBuffer::new_unset(keys.len()),
        (Some(j), None) => {
            let j = K::Native::from_usize(j)?;
            super::bits::pack_bits(keys, |k| k == j)
        }
        _ => super::bits::pack_bits(keys, |k| hit.get(k.as_usize()).copied().unwrap_or(false)),
    };
    if let Some(valid) = d.keys().nulls() {
        bits = &bits & valid.inner();
    }
    Some(bits)
}

/// A flag `column = 'literal'` (column index in `read`, literal), tested once
/// per dictionary value, and the condition it is `AND`ed with, if any.
type EqFlag = (usize, String, Option<Arc<dyn PhysicalExpr>>);

/// `e` without `IS TRUE` around it.
fn strip_is_true(e: &Expr) -> &Expr {
    match e {
        Expr::IsTrue(inner) => strip_is_true(inner),
        e => e,
    }
}

/// `(column index in read, literal)` when `e` is `column = 'literal'` (either
/// way round) over a text column: such a flag is one test per distinct value.
fn text_eq(e: &Expr, read: &Schema) -> Option<(usize, String)> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    let (c, v) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let (ScalarValue::Utf8(Some(v))
    | ScalarValue::Utf8View(Some(v))
    | ScalarValue::LargeUtf8(Some(v))) = v
    else {
        return None;
    };
    let i = read.index_of(&c.name).ok()?;
    let text = match read.field(i).data_type() {
        DataType::Utf8 => true,
        DataType::Dictionary(k, v) => **k == DataType::Int32 && **v == DataType::Utf8,
        _ => false,
    };
    text.then(|| (i, v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{TimestampMicrosecondArray, UInt32Array};

    #[test]
    fn merged_users_rows_are_set_aside_in_virtual_key_order() {
        use datafusion::arrow::array::Int64Array;
        use tenure_schema::identity::{Merge, MergeKind};
        let m = |from, to| Merge {
            ts: 0,
            kind: MergeKind::Identify,
            from,
            to,
        };
        // Ten users; 7 joins 2 and 3 joins 8: persons 2 and 8, read under
        // the virtual keys 10 and 11 (in order of the person's key).
        let id = crate::identity::Identity::of_log(10, &[vec![m(7, 2), m(3, 8)]], 0).unwrap();
        let batch = |keys: Vec<u32>| {
            let rows: Vec<i64> = (0..keys.len() as i64).collect();
            RecordBatch::try_from_iter([
                ("user_key", Arc::new(UInt32Array::from(keys)) as ArrayRef),
                ("row", Arc::new(Int64Array::from(rows)) as ArrayRef),
            ])
            .unwrap()
        };
        let columns = |b: &RecordBatch| {
            let k = b.column(0).as_primitive::<UInt32Type>().values().to_vec();
            let r = b
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            (k, r.values().to_vec())
        };
        // Sorted keys (every file Tenure writes).
        let split = |keys: Vec<u32>, targets: Option<&[u32]>| {
            split_merged(&batch(keys), 10, &id.moves((0, 10), targets))
                .unwrap()
                .map(|(rest, merged)| (columns(&rest), merged.map(|m| columns(&m))))
        };
        let (rest, merged) = split(vec![1, 2, 2, 3, 4, 7, 7, 8, 9], None).unwrap();
        assert_eq!(rest, (vec![1, 4, 9], vec![0, 4, 8]));
        // Person 2's rows (keys 2 and 7) before person 8's (3 and 8), each
        // in the batch's order.
        assert_eq!(
            merged,
            Some((vec![10, 10, 10, 10, 11, 11], vec![1, 2, 5, 6, 3, 7]))
        );
        // Unsorted keys (a file from elsewhere): the same rows.
        let (rest, merged) = split(vec![9, 7, 7, 1, 3, 2, 8], None).unwrap();
        assert_eq!(rest, (vec![9, 1], vec![0, 3]));
        assert_eq!(
            merged,
            Some((vec![10, 10, 10, 11, 11], vec![1, 2, 5, 4, 6]))
        );
        // No merged user in the batch, or in its key span.
        assert!(split(vec![0, 1, 1], None).is_none());
        assert!(split(vec![1, 4, 5, 6, 9], None).is_none());
        // Ranges 0..5 and 5..10: both persons span them and are set apart;
        // with one range 0..10 both are read in place, under keys 2 and 8.
        let two = id.targets(&[(0, 5), (5, 10)]);
        assert_eq!(two, vec![10, 11, 10, 11]);
        let one = id.targets(&[(0, 10)]);
        let (rest, merged) = split(vec![1, 2, 2, 3, 4, 7, 7, 8, 9], Some(&one)).unwrap();
        assert_eq!(
            rest,
            (vec![1, 2, 2, 8, 4, 2, 2, 8, 9], (0..9).collect::<Vec<_>>())
        );
        assert_eq!(merged, None);
        // Person 2 in place and person 8 apart (a table of targets made up
        // for the test): the rest keeps its order, person 2 under key 2.
        let mixed = [2, 11, 2, 11];
        let (rest, merged) = split(vec![1, 2, 2, 3, 4, 7, 7, 8, 9], Some(&mixed)).unwrap();
        assert_eq!(rest, (vec![1, 2, 2, 4, 2, 2, 9], vec![0, 1, 2, 4, 5, 6, 8]));
        assert_eq!(merged, Some((vec![11, 11], vec![3, 7])));
    }

    #[test]
    fn wide_ranges_are_cut_to_the_most_users() {
        // Balanced by rows: most rows in the first keys, one wide range.
        let ranges = vec![(0, 100), (100, 250), (250, 3000)];
        let cut = cap_users(ranges, 1000);
        assert_eq!(
            cut,
            vec![
                (0, 100),
                (100, 250),
                (250, 1167),
                (1167, 2084),
                (2084, 3000)
            ]
        );
        assert!(cut.iter().all(|(lo, hi)| hi - lo <= 1000));
        assert!(cut.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(cap_users(vec![(5, 5)], 10), vec![(5, 5)]);
    }

    fn batch(keys: &[u32], ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_key", DataType::UInt32, false),
            Field::new(
                "ts",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("row", DataType::UInt32, false),
        ]));
        let rows: Vec<u32> = (0..keys.len() as u32).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt32Array::from(keys.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(ts.to_vec())),
                Arc::new(UInt32Array::from(rows)),
            ],
        )
        .unwrap()
    }

    fn rows_of(b: &RecordBatch) -> Vec<(u32, i64, u32)> {
        let k = b.column(0).as_primitive::<UInt32Type>().values();
        let t = b
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let r = b.column(2).as_primitive::<UInt32Type>().values();
        (0..b.num_rows()).map(|i| (k[i], t[i], r[i])).collect()
    }

    #[test]
    fn a_block_is_sorted_by_user_then_time_keeping_ties_in_file_order() {
        // Two files' pieces of the block 10..14, concatenated: each sorted,
        // together not.
        let keys = [10, 11, 11, 13, 10, 11, 12, 13, 13];
        let ts = [5, 1, 9, 4, 2, 9, 7, 4, 3];
        let b = batch(&keys, &ts);
        let mut want = rows_of(&b);
        want.sort_by_key(|&(k, t, r)| (k, t, r));
        for bounds in [Some((10, 14)), None] {
            assert_eq!(rows_of(&sort_rows(&b, bounds).unwrap()), want);
            let pieces = [b.slice(0, 4), b.slice(4, 5)];
            let mut scratch = SortScratch::default();
            let sorted = sort_pieces(&pieces, bounds, None, &mut scratch).unwrap();
            assert_eq!(rows_of(&sorted), want);
        }
        // Sorted input comes back as it is.
        let sorted = batch(&[1, 1, 2], &[3, 4, 1]);
        assert_eq!(
            rows_of(&sort_rows(&sorted, Some((0, 4096))).unwrap()),
            rows_of(&sorted)
        );
    }

    #[test]
    fn text_flags_compare_each_dictionary_value_once_and_nulls_are_false() {
        use datafusion::arrow::array::{DictionaryArray, Int32Array, StringArray};
        let names = Arc::new(StringArray::from(vec![
            Some("view"),
            Some("purchase"),
            None,
            Some("purchase"),
        ]));
        let flag = |c: &dyn Array| -> Vec<bool> {
            text_flag(c, "purchase")
                .unwrap()
                .iter()
                .map(|v| v.unwrap())
                .collect()
        };
        let dict = DictionaryArray::new(Int32Array::from(vec![0, 1, 1, 2, 3]), names.clone());
        assert_eq!(flag(&dict), [false, true, true, false, true]);
        let dict = DictionaryArray::new(
            Int32Array::from(vec![Some(1), None, Some(0), Some(3)]),
            names.clone(),
        );
        assert_eq!(flag(&dict), [true, false, false, true]);
        // One matching value (keys compared with it), a null key whose slot
        // holds that value's index, and no matching value.
        let one = Arc::new(StringArray::from(vec![Some("view"), Some("purchase")]));
        let dict = DictionaryArray::new(
            Int32Array::new(
                vec![1, 0, 1, 1].into(),
                Some(vec![true, true, false, true].into()),
            ),
            one,
        );
        assert_eq!(flag(&dict), [true, false, false, true]);
        let none = Arc::new(StringArray::from(vec![Some("view"), Some("signup")]));
        let dict = DictionaryArray::new(Int32Array::from(vec![0, 1, 0]), none);
        assert_eq!(flag(&dict), [false, false, false]);
        let plain = StringArray::from(vec![None, Some("purchase"), Some("view")]);
        assert_eq!(flag(&plain), [false, true, false]);
        assert!(text_flag(&UInt32Array::from(vec![1]), "purchase").is_none());
    }

    /// A file sorted by key where key `k` of `users` has `users - k` rows
    /// (early users hold the most), in small pages.
    fn skewed_file(users: u32) -> parquet::arrow::arrow_reader::ArrowReaderMetadata {
        let keys: Vec<u32> = (0..users)
            .flat_map(|k| std::iter::repeat_n(k, (users - k) as usize))
            .collect();
        let ts: Vec<i64> = (0..keys.len() as i64).collect();
        let b = batch(&keys, &ts);
        let props = parquet::file::properties::WriterProperties::builder()
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Page)
            .build();
        let mut out = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut out, b.schema(), Some(props)).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
        parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&bytes::Bytes::from(out), options)
            .unwrap()
    }

    #[test]
    fn ranges_hold_about_equal_rows_when_early_users_hold_more() {
        let users = 1000u32;
        let rows_in = |(lo, hi): (u32, u32)| (lo..hi).map(|k| (users - k) as u64).sum::<u64>();
        let meta = skewed_file(users);
        assert!(
            meta.metadata().offset_index().is_some(),
            "the test needs a page index"
        );
        for n in [2u32, 3, 4] {
            let ranges = balanced_ranges(&[Some(meta.clone())], users, n).unwrap();
            assert_eq!(ranges.len(), n as usize);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[n as usize - 1].1, users);
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
            let rows: Vec<u64> = ranges.iter().map(|&r| rows_in(r)).collect();
            let (min, max) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
            // Equal key ranges would hold 375K and 125K rows for n = 2.
            assert!(
                max as f64 <= min as f64 * 1.1,
                "n={n}: {ranges:?} hold {rows:?}"
            );
        }
        // Without statistics, no split is made up.
        assert!(balanced_ranges(&[None], users, 2).is_none());
    }

    #[test]
    fn every_user_of_a_batch_is_one_run() {
        let b = batch(&[3, 3, 4, 7, 7, 7], &[0; 6]);
        let rows = crate::fold::Rows::new(&b, 3);
        let users: Vec<(u32, std::ops::Range<usize>)> = rows.users().collect();
        assert_eq!(users, vec![(3, 0..2), (4, 2..3), (7, 3..6)]);
    }
}
