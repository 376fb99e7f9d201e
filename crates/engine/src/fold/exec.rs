//! [`FoldExec`]: runs a [`UserFold`] over every key range of its input
//! [`KeyScanExec`] concurrently, merges the ranges' partial results in key
//! order and emits the fold's batch (one output partition).
//!
//! On a cluster the same fold is two stages ([`Stage`]): `Parts`, one task
//! per key range, each reading only its range's pages and sending its partial
//! result as one row of bytes; and `Merge`, one task, which merges those rows
//! in key order and emits. Between them the plan has a
//! `CoalescePartitionsExec`, where Ballista's planner cuts the stages.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, LargeBinaryArray, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use futures::StreamExt;

use super::{KeyScanExec, Rows, UserFold};

/// The layout of a fold's input: its partitions' key ranges, where the
/// condition columns start, and how many ranges are read at once.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Layout {
    pub(crate) ranges: Vec<(u32, u32)>,
    pub(crate) flags_at: usize,
    pub(crate) concurrency: usize,
    /// How many of the last ranges are merged persons', read once the
    /// others are done.
    #[serde(default)]
    pub(crate) deferred: usize,
    /// Which part of the fold the node runs.
    #[serde(default)]
    pub(crate) stage: Stage,
    /// Send the merged partial result as one row of bytes ([`part_schema`])
    /// instead of the fold's batch (`Whole` and `Merge`), for callers that
    /// need the partial result itself ([`super::partial`]).
    #[serde(default)]
    pub(crate) partial_out: bool,
}

impl Layout {
    /// The layout of `scan`'s key ranges for `stage`.
    fn of(scan: &KeyScanExec, stage: Stage) -> Self {
        Self {
            ranges: scan.ranges().to_vec(),
            flags_at: scan.flags_at(),
            concurrency: scan.concurrency(),
            deferred: scan.deferred(),
            stage,
            partial_out: false,
        }
    }
}

/// Which part of a fold a [`FoldExec`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Every key range, merged and emitted: one partition (a local run).
    #[default]
    Whole,
    /// One partition per key range: the range's partial result as one row
    /// `(range, part)` of [`part_schema`].
    Parts,
    /// One partition: the `(range, part)` rows of every partition of its
    /// input, merged in key order (every range exactly once) and emitted.
    Merge,
}

/// The rows of partial results: the key range's index, the chunk's number,
/// how many chunks the range sent, and the chunk's bytes. A partial result
/// ([`encode_part`]) is cut into chunks of at most [`CHUNK`] bytes: a
/// cluster sends a row as one gRPC message, and its limit (16 MiB by
/// default) is far below a per-user partial result of millions of users.
pub(crate) fn part_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("range", DataType::UInt32, false),
                Field::new("chunk", DataType::UInt32, false),
                Field::new("chunks", DataType::UInt32, false),
                Field::new("part", DataType::LargeBinary, false),
            ]))
        })
        .clone()
}

/// The largest chunk of a partial result in one row.
pub(crate) const CHUNK: usize = 1 << 20;

/// The rows of [`part_schema`] of key range `range`'s partial result
/// `bytes`, in chunks of at most `chunk` bytes (one empty chunk for none).
pub(crate) fn part_batch_chunked(
    range: usize,
    bytes: &[u8],
    chunk: usize,
) -> DfResult<RecordBatch> {
    let pieces: Vec<&[u8]> = match bytes.is_empty() {
        true => vec![bytes],
        false => bytes.chunks(chunk.max(1)).collect(),
    };
    let n = pieces.len() as u32;
    Ok(RecordBatch::try_new(
        part_schema(),
        vec![
            Arc::new(UInt32Array::from(vec![range as u32; pieces.len()])),
            Arc::new(UInt32Array::from_iter_values(0..n)),
            Arc::new(UInt32Array::from(vec![n; pieces.len()])),
            Arc::new(LargeBinaryArray::from_vec(pieces)),
        ],
    )?)
}

fn part_batch(range: usize, bytes: &[u8]) -> DfResult<RecordBatch> {
    part_batch_chunked(range, bytes, chunk_size())
}

/// [`CHUNK`], or `TENURE_FOLD_CHUNK` bytes when set (the cluster tests cut
/// partial results small to send many chunks).
fn chunk_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("TENURE_FOLD_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(CHUNK)
    })
}

/// The partial results of `ranges` key ranges put back together from rows of
/// [`part_schema`], in key order. A range or a chunk missing, sent twice (a
/// task lost, or run again) or out of bounds is an error, never a count.
pub(crate) fn assemble_parts(
    name: &str,
    batches: &[RecordBatch],
    ranges: usize,
) -> DfResult<Vec<Vec<u8>>> {
    // Per range: its chunk count and chunks.
    type Chunks<'a> = (u32, Vec<Option<&'a [u8]>>);
    let mut got: Vec<Option<Chunks>> = vec![None; ranges];
    for batch in batches {
        if batch.schema().fields() != part_schema().fields() {
            return internal_err!("fold {name}: a merge got rows that are not partial results");
        }
        let range = batch.column(0).as_primitive::<UInt32Type>();
        let chunk = batch.column(1).as_primitive::<UInt32Type>();
        let chunks = batch.column(2).as_primitive::<UInt32Type>();
        let part = batch.column(3).as_binary::<i64>();
        for i in 0..batch.num_rows() {
            let (r, c, n) = (range.value(i) as usize, chunk.value(i), chunks.value(i));
            let Some(slot) = got.get_mut(r) else {
                return internal_err!(
                    "fold {name}: a partial result of key range {r}, beyond the fold's {ranges} ranges"
                );
            };
            let (count, pieces) = slot.get_or_insert_with(|| (n, vec![None; n as usize]));
            if *count != n {
                return internal_err!(
                    "fold {name}: key range {r} sent its partial result twice ({count} and {n} chunks)"
                );
            }
            match pieces.get_mut(c as usize) {
                Some(p @ None) => *p = Some(part.value(i)),
                Some(Some(_)) => {
                    return internal_err!(
                        "fold {name}: key range {r} sent chunk {c} of its partial result twice"
                    );
                }
                None => {
                    return internal_err!("fold {name}: key range {r} sent chunk {c} of {n}");
                }
            }
        }
    }
    got.into_iter()
        .enumerate()
        .map(|(r, slot)| {
            let Some((_, pieces)) = slot else {
                return internal_err!(
                    "fold {name}: the partial result of key range {r} is missing"
                );
            };
            let mut bytes = Vec::with_capacity(pieces.iter().flatten().map(|p| p.len()).sum());
            for (c, p) in pieces.iter().enumerate() {
                let Some(p) = p else {
                    return internal_err!(
                        "fold {name}: chunk {c} of key range {r}'s partial result is missing"
                    );
                };
                bytes.extend_from_slice(p);
            }
            Ok(bytes)
        })
        .collect()
}

/// A partial result as bytes (bincode: fixed-width little-endian numbers,
/// so the per-user vectors of a partial result are copied rather than
/// encoded number by number, except those that are mostly one value, which
/// are written as their exceptions: see [`super::compact`]).
pub(crate) fn encode_part<T: serde::Serialize>(part: &T) -> DfResult<Vec<u8>> {
    bincode::serialize(part)
        .map_err(|e| DataFusionError::Internal(format!("encoding a fold's partial result: {e}")))
}

/// A partial result from [`encode_part`]'s bytes.
pub(crate) fn decode_part<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> DfResult<T> {
    bincode::deserialize(bytes)
        .map_err(|e| DataFusionError::Execution(format!("decoding a fold's partial result: {e}")))
}

/// Decodes partial results and merges them in order.
pub(crate) fn merge_decoded<F: UserFold>(fold: &F, parts: Vec<Vec<u8>>) -> DfResult<F::Partial> {
    let mut acc: Option<F::Partial> = None;
    for bytes in parts {
        let part = decode_part::<F::Partial>(&bytes)?;
        match acc.as_mut() {
            None => acc = Some(part),
            Some(a) => fold.merge(a, part)?,
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => fold.finish(fold.start(0..0)),
    }
}

/// A fold over the key ranges of a [`KeyScanExec`].
#[derive(Debug)]
pub struct FoldExec<F: UserFold> {
    fold: Arc<F>,
    input: Arc<dyn ExecutionPlan>,
    ranges: Vec<(u32, u32)>,
    flags_at: usize,
    /// Ranges folded at once.
    concurrency: usize,
    /// How many of the last ranges are merged persons'.
    deferred: usize,
    stage: Stage,
    partial_out: bool,
    /// `Parts`: which key ranges it folds, partition `p` holding one row,
    /// the index of the range it folds ([`range_ids`]). A cluster's
    /// scheduler gives each task some partitions of a stage and cuts the
    /// stage's leaves to them; it knows how to cut this in-memory leaf, not
    /// a key scan, so a task's partition `p` finds its range here.
    ids: Option<Arc<dyn ExecutionPlan>>,
    props: Arc<PlanProperties>,
}

/// One partition per key range, partition `i` holding one row `i`: the
/// ranges a `Parts` stage folds.
pub(crate) fn range_ids(ranges: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "range",
        DataType::UInt32,
        false,
    )]));
    let partitions = (0..ranges as u32)
        .map(|i| {
            let ids = Arc::new(UInt32Array::from(vec![i]));
            Ok(vec![RecordBatch::try_new(schema.clone(), vec![ids])?])
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
}

impl<F: UserFold> FoldExec<F> {
    /// `fold` over `scan`.
    pub fn new(fold: Arc<F>, scan: Arc<KeyScanExec>) -> Self {
        let layout = Layout::of(&scan, Stage::Whole);
        Self::with_input(fold, scan, layout)
    }

    /// `fold` over `scan` as two stages a cluster runs apart: a `Merge` over
    /// the `Parts` of every key range ([`Self::parts`]). Merged persons'
    /// range (read after the others, from rows they set aside in this
    /// process) cannot run apart: a scan with one is folded whole.
    pub fn distributed(fold: Arc<F>, scan: Arc<KeyScanExec>) -> Self {
        if scan.deferred() > 0 {
            return Self::new(fold, scan);
        }
        let layout = Layout::of(&scan, Stage::Merge);
        let (one, _) = Self::parts(fold.clone(), scan);
        Self::with_input(fold, one, layout)
    }

    /// The rows ([`part_schema`]) of the partial results of `fold` over
    /// `scan`, and how many ranges they are of: a `CoalescePartitionsExec`
    /// (where Ballista cuts a stage) over the `Parts` of every key range
    /// (each range a task of its own on a cluster), or for a scan with
    /// merged persons the whole fold's partial result as range 0 of 1. A
    /// caller that wants the partial result merges them
    /// ([`assemble_parts`], [`merge_decoded`]) without a merge stage sending
    /// it once more.
    pub fn parts(fold: Arc<F>, scan: Arc<KeyScanExec>) -> (Arc<dyn ExecutionPlan>, usize) {
        let layout = Layout::of(&scan, Stage::Parts);
        if layout.deferred > 0 {
            let whole = Layout {
                stage: Stage::Whole,
                partial_out: true,
                ..layout
            };
            return (Arc::new(Self::with_input(fold, scan, whole)), 1);
        }
        let n = layout.ranges.len();
        let ids = range_ids(n).expect("one row per range");
        let parts = Arc::new(Self::with_children(fold, scan, Some(ids), layout));
        (Arc::new(CoalescePartitionsExec::new(parts)), n)
    }

    /// `fold` over `input`, a key scan (possibly wrapped by the optimizer)
    /// with this layout.
    pub(crate) fn with_input(fold: Arc<F>, input: Arc<dyn ExecutionPlan>, layout: Layout) -> Self {
        Self::with_children(fold, input, None, layout)
    }

    /// `fold` over `input`, and for `Parts` the ranges it folds (`ids`,
    /// every range when `None`).
    pub(crate) fn with_children(
        fold: Arc<F>,
        input: Arc<dyn ExecutionPlan>,
        ids: Option<Arc<dyn ExecutionPlan>>,
        layout: Layout,
    ) -> Self {
        let ids = match layout.stage {
            Stage::Parts => {
                Some(ids.unwrap_or_else(|| range_ids(layout.ranges.len()).expect("ranges")))
            }
            _ => None,
        };
        let schema = match (layout.stage, layout.partial_out) {
            (Stage::Parts, _) | (_, true) => part_schema(),
            _ => fold.schema(),
        };
        let partitions = match &ids {
            Some(ids) => ids.output_partitioning().partition_count(),
            None => 1,
        };
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            ranges: layout.ranges,
            flags_at: layout.flags_at,
            concurrency: layout.concurrency,
            deferred: layout.deferred,
            stage: layout.stage,
            partial_out: layout.partial_out,
            input,
            ids,
            fold,
            props,
        }
    }

    /// Whether the node reads key ranges (its input is a key scan, one
    /// partition per range), rather than partial results.
    pub(crate) fn reads_ranges(&self) -> bool {
        self.stage != Stage::Merge
    }

    /// How its input is laid out.
    pub(crate) fn layout(&self) -> Layout {
        Layout {
            ranges: self.ranges.clone(),
            flags_at: self.flags_at,
            concurrency: self.concurrency,
            deferred: self.deferred,
            stage: self.stage,
            partial_out: self.partial_out,
        }
    }

    /// The fold.
    pub fn fold(&self) -> &Arc<F> {
        &self.fold
    }
}

impl<F: UserFold> DisplayAs for FoldExec<F> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FoldExec: fold={}, key_ranges={}",
            self.fold.name(),
            self.ranges.len()
        )?;
        if self.stage != Stage::Whole {
            let stage = match self.stage {
                Stage::Parts => "parts",
                _ => "merge",
            };
            write!(f, ", stage={stage}")?;
        }
        if self.partial_out {
            write!(f, ", partial_out")?;
        }
        Ok(())
    }
}

impl<F: UserFold> ExecutionPlan for FoldExec<F> {
    fn name(&self) -> &str {
        "FoldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        std::iter::once(&self.input).chain(&self.ids).collect()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // The input's partitions are key ranges: never repartition them.
        vec![false; self.children().len()]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        match self.stage {
            Stage::Merge => vec![Distribution::SinglePartition],
            _ => vec![Distribution::UnspecifiedDistribution; self.children().len()],
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != self.children().len() {
            return internal_err!(
                "FoldExec has {} children, not {}",
                self.children().len(),
                children.len()
            );
        }
        let mut children = children.into_iter();
        let input = children.next().expect("counted");
        if self.reads_ranges() && input.output_partitioning().partition_count() != self.ranges.len()
        {
            return internal_err!("FoldExec's input must keep its key ranges");
        }
        Ok(Arc::new(Self::with_children(
            self.fold.clone(),
            input,
            children.next(),
            self.layout(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let partitions = self.props.output_partitioning().partition_count();
        if partition >= partitions {
            return exec_err!("FoldExec has no partition {partition} (it has {partitions})");
        }
        if self.reads_ranges()
            && self.input.output_partitioning().partition_count() != self.ranges.len()
        {
            return internal_err!("FoldExec's input does not have its key ranges");
        }
        let (input, ranges, flags_at) = (self.input.clone(), self.ranges.clone(), self.flags_at);
        let (fold, concurrency) = (self.fold.clone(), self.concurrency);
        let (deferred, partial_out) = (self.deferred, self.partial_out);
        let schema = self.schema();
        let out = move |all: F::Partial| match partial_out {
            true => part_batch(0, &encode_part(&all)?),
            false => fold.emit(all),
        };
        let fold = self.fold.clone();
        // Nothing starts before the result is polled.
        let result: futures::future::BoxFuture<'static, DfResult<RecordBatch>> = match self.stage {
            Stage::Whole => Box::pin(async move {
                let all = fold_all(
                    fold,
                    input,
                    (ranges, deferred),
                    flags_at,
                    concurrency,
                    context,
                )
                .await?;
                out(all)
            }),
            Stage::Parts => {
                let ids = self.ids.clone().expect("a Parts stage has its ranges");
                Box::pin(async move {
                    let start = std::time::Instant::now();
                    let r = range_of(&ids, partition, ranges.len(), context.clone()).await?;
                    let (part, rows) =
                        fold_range(&fold, &input, r, ranges[r], flags_at, context).await?;
                    let bytes = encode_part(&part)?;
                    tracing::debug!(
                        "fold {}: key range {r} ({}..{}) folded {rows} rows, sends {} bytes after {} ms",
                        fold.name(),
                        ranges[r].0,
                        ranges[r].1,
                        bytes.len(),
                        start.elapsed().as_millis()
                    );
                    part_batch(r, &bytes)
                })
            }
            Stage::Merge => Box::pin(async move {
                let all = merge_parts(&fold, &input, ranges.len(), context).await?;
                out(all)
            }),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(result),
        )))
    }
}

/// The key range partition `p` of a `Parts` stage folds: the one row of
/// partition `p` of its `ids`.
async fn range_of(
    ids: &Arc<dyn ExecutionPlan>,
    p: usize,
    ranges: usize,
    context: Arc<TaskContext>,
) -> DfResult<usize> {
    let mut stream = ids.execute(p, context)?;
    let mut found = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if let Some(c) = batch.column(0).as_primitive_opt::<UInt32Type>() {
            found.extend(c.values().iter().map(|&r| r as usize));
        }
    }
    match found.as_slice() {
        [r] if *r < ranges => Ok(*r),
        _ => internal_err!(
            "partition {p} of a fold's parts names key ranges {found:?}, not one of {ranges}"
        ),
    }
}

/// Folds key range `p` of `input`: its partial result and the rows folded.
async fn fold_range<F: UserFold>(
    fold: &Arc<F>,
    input: &Arc<dyn ExecutionPlan>,
    p: usize,
    (lo, hi): (u32, u32),
    flags_at: usize,
    context: Arc<TaskContext>,
) -> DfResult<(F::Partial, usize)> {
    let mut stream = input.execute(p, context)?;
    let mut state = fold.start(lo..hi);
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        fold.update(&mut state, &Rows::new(&batch, flags_at))?;
    }
    Ok((fold.finish(state)?, rows))
}

/// Merges in key order the partial results of `ranges` key ranges, read as
/// rows of [`part_schema`] from every partition of `input`. A range missing
/// or sent twice (a task lost or run again) is an error, never a count.
async fn merge_parts<F: UserFold>(
    fold: &Arc<F>,
    input: &Arc<dyn ExecutionPlan>,
    ranges: usize,
    context: Arc<TaskContext>,
) -> DfResult<F::Partial> {
    let mut batches = Vec::new();
    for p in 0..input.output_partitioning().partition_count() {
        let mut stream = input.execute(p, context.clone())?;
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
    }
    let parts = assemble_parts(fold.name(), &batches, ranges)?;
    drop(batches);
    merge_decoded(fold.as_ref(), parts)
}

/// `plan` (a key scan, possibly wrapped) with a fresh buffer for merged
/// persons' rows, so that concurrent or repeated runs of one plan do not
/// share one.
fn fresh_side(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.as_ref().downcast_ref::<KeyScanExec>() {
        return Ok(Arc::new(scan.with_fresh_side()));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    match children.as_slice() {
        [child] => {
            let child = fresh_side(child.clone())?;
            // A wrapper of one child (the optimizer's), rebuilt around it.
            #[allow(deprecated)]
            plan.with_new_children(vec![child])
        }
        _ => internal_err!("a fold's input is not a key scan: {}", plan.name()),
    }
}

/// Folds every key range of `input` (one task each) and merges the partial
/// results in key order. The last `deferred` ranges (merged persons',
/// gathered by the others' readings) start after the others, as threads
/// free up, and read once every other range has been read.
pub(super) async fn fold_all<F: UserFold>(
    fold: Arc<F>,
    input: Arc<dyn ExecutionPlan>,
    (ranges, deferred): (Vec<(u32, u32)>, usize),
    flags_at: usize,
    concurrency: usize,
    context: Arc<TaskContext>,
) -> DfResult<F::Partial> {
    // Merged persons' rows are gathered per run.
    let input = if deferred > 0 {
        fresh_side(input)?
    } else {
        input
    };
    // Ranges start as others finish, `concurrency` at a time, so a range
    // with more rows than the others does not leave a thread idle. Permits
    // are taken here, in range order: merged persons' ranges (the last)
    // start as soon as a thread is free, while the others finish their
    // state, and never hold a thread a range they wait for needs.
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(ranges.len());
    for (p, &(lo, hi)) in ranges.iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| DataFusionError::Internal(format!("fold permits: {e}")))?;
        let (fold, input, context) = (fold.clone(), input.clone(), context.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            fold_range(&fold, &input, p, (lo, hi), flags_at, context)
                .await
                .map(|(part, _)| part)
        }));
    }
    let mut acc: Option<F::Partial> = None;
    for t in tasks {
        let part = t
            .await
            .map_err(|e| DataFusionError::Internal(format!("a fold task failed: {e}")))??;
        match acc.as_mut() {
            None => acc = Some(part),
            Some(a) => fold.merge(a, part)?,
        }
    }
    match acc {
        Some(a) => Ok(a),
        // No key range (a store without users): an empty state.
        None => fold.finish(fold.start(0..0)),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::fold::totals::{PerUser, Sums, Value};

    fn count() -> Arc<PerUser> {
        Arc::new(PerUser {
            name: "count".into(),
            input: Default::default(),
            value: Value::Count,
        })
    }

    /// A merge over partial results of `ranges` (range index, counts).
    async fn merge(ranges: usize, parts: &[(usize, Vec<i128>)]) -> DfResult<Vec<i128>> {
        // Chunks of 3 bytes: every partial result is several rows.
        let rows: Vec<RecordBatch> = parts
            .iter()
            .map(|(r, v)| {
                let bytes = encode_part(&Sums::Exact(v.clone())).unwrap();
                part_batch_chunked(*r, &bytes, 3).unwrap()
            })
            .collect();
        // Two partitions, as a shuffle delivers them.
        let (a, b) = rows.split_at(rows.len() / 2);
        let input =
            MemorySourceConfig::try_new_exec(&[a.to_vec(), b.to_vec()], part_schema(), None)?;
        let layout = Layout {
            ranges: (0..ranges as u32).map(|i| (i, i + 1)).collect(),
            flags_at: 0,
            concurrency: 1,
            deferred: 0,
            stage: Stage::Merge,
            partial_out: true,
        };
        let exec = FoldExec::with_input(count(), input, layout);
        let ctx = SessionContext::new().task_ctx();
        let out = datafusion::physical_plan::collect(Arc::new(exec), ctx).await?;
        let bytes = assemble_parts("count", &out, 1)?;
        match decode_part::<Sums>(&bytes[0])? {
            Sums::Exact(v) => Ok(v),
            Sums::Float(_) => unreachable!(),
        }
    }

    #[tokio::test]
    async fn a_merge_takes_every_range_once_in_key_order() {
        let parts = [(2, vec![5]), (0, vec![1, 2]), (1, vec![3])];
        assert_eq!(merge(3, &parts).await.unwrap(), [1, 2, 3, 5]);
        // A range lost (a task's output missing) or sent twice (a task run
        // again whose first output was kept) is an error, not a count.
        let missing = merge(3, &[(0, vec![1]), (2, vec![5])]).await.unwrap_err();
        assert!(
            missing.to_string().contains("range 1 is missing"),
            "{missing}"
        );
        let twice = merge(2, &[(0, vec![1]), (1, vec![2]), (1, vec![2])])
            .await
            .unwrap_err();
        assert!(twice.to_string().contains("range 1 sent"), "{twice}");
        let beyond = merge(1, &[(0, vec![1]), (1, vec![2])]).await.unwrap_err();
        assert!(
            beyond.to_string().contains("beyond the fold's 1"),
            "{beyond}"
        );
    }

    #[test]
    fn chunks_are_put_back_in_order_and_a_lost_chunk_is_an_error() {
        let bytes: Vec<u8> = (0..=255).collect();
        let rows = part_batch_chunked(1, &bytes, 10).unwrap();
        assert_eq!(rows.num_rows(), 26);
        // Chunks in any order, ranges in any order.
        let reversed: Vec<RecordBatch> = (0..rows.num_rows())
            .rev()
            .map(|i| rows.slice(i, 1))
            .chain([part_batch_chunked(0, &[], 10).unwrap()])
            .collect();
        let got = assemble_parts("t", &reversed, 2).unwrap();
        assert_eq!(got, vec![vec![], bytes.clone()]);
        let lost: Vec<RecordBatch> = [rows.slice(0, 5), rows.slice(6, 20)]
            .into_iter()
            .chain([part_batch_chunked(0, &[], 10).unwrap()])
            .collect();
        let err = assemble_parts("t", &lost, 2).unwrap_err().to_string();
        assert!(err.contains("chunk 5 of key range 1"), "{err}");
        // The same range sent again, cut otherwise.
        let again = [rows.clone(), part_batch_chunked(1, &bytes, 100).unwrap()];
        let err = assemble_parts("t", &again, 2).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        // A full-size partial result is cut at CHUNK.
        let big = vec![7u8; CHUNK * 2 + 1];
        assert_eq!(part_batch_chunked(0, &big, CHUNK).unwrap().num_rows(), 3);
    }
}
