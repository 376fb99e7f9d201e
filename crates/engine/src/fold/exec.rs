//! [`FoldExec`]: runs a [`UserFold`] over every key range of its input
//! [`KeyScanExec`] concurrently, merges the ranges' partial results in key
//! order and emits the fold's batch (one output partition).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
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
    /// The last range is merged persons', read once the others are done.
    #[serde(default)]
    pub(crate) deferred: bool,
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
    deferred: bool,
    props: Arc<PlanProperties>,
}

impl<F: UserFold> FoldExec<F> {
    /// `fold` over `scan`.
    pub fn new(fold: Arc<F>, scan: Arc<KeyScanExec>) -> Self {
        let layout = Layout {
            ranges: scan.ranges().to_vec(),
            flags_at: scan.flags_at(),
            concurrency: scan.concurrency(),
            deferred: scan.deferred(),
        };
        Self::with_input(fold, scan, layout)
    }

    /// `fold` over `input`, a key scan (possibly wrapped by the optimizer)
    /// with this layout.
    pub(crate) fn with_input(fold: Arc<F>, input: Arc<dyn ExecutionPlan>, layout: Layout) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(fold.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            ranges: layout.ranges,
            flags_at: layout.flags_at,
            concurrency: layout.concurrency,
            deferred: layout.deferred,
            input,
            fold,
            props,
        }
    }

    /// How its input is laid out.
    pub(crate) fn layout(&self) -> Layout {
        Layout {
            ranges: self.ranges.clone(),
            flags_at: self.flags_at,
            concurrency: self.concurrency,
            deferred: self.deferred,
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
        )
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
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // The input's partitions are key ranges: never repartition them.
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("FoldExec needs its input");
        };
        if input.output_partitioning().partition_count() != self.ranges.len() {
            return internal_err!("FoldExec's input must keep its key ranges");
        }
        Ok(Arc::new(Self {
            fold: self.fold.clone(),
            input,
            ranges: self.ranges.clone(),
            flags_at: self.flags_at,
            concurrency: self.concurrency,
            deferred: self.deferred,
            props: self.props.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("FoldExec has one partition, not {partition}");
        }
        if self.input.output_partitioning().partition_count() != self.ranges.len() {
            return internal_err!("FoldExec's input does not have its key ranges");
        }
        let (input, ranges, flags_at) = (self.input.clone(), self.ranges.clone(), self.flags_at);
        let (fold, concurrency) = (self.fold.clone(), self.concurrency);
        let deferred = self.deferred;
        // Nothing starts before the result is polled.
        let result = async move {
            let all = fold_all(
                fold.clone(),
                input,
                (ranges, deferred),
                flags_at,
                concurrency,
                context,
            )
            .await?;
            fold.emit(all)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.fold.schema(),
            futures::stream::once(result),
        )))
    }
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
/// results in key order. With `deferred`, the last range (merged persons',
/// gathered by the others' readings) starts once the others are done.
pub(super) async fn fold_all<F: UserFold>(
    fold: Arc<F>,
    input: Arc<dyn ExecutionPlan>,
    (ranges, deferred): (Vec<(u32, u32)>, bool),
    flags_at: usize,
    concurrency: usize,
    context: Arc<TaskContext>,
) -> DfResult<F::Partial> {
    // Merged persons' rows are gathered per run.
    let input = if deferred { fresh_side(input)? } else { input };
    // Ranges start as others finish, `concurrency` at a time, so a range
    // with more rows than the others does not leave a thread idle.
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let spawn = |p: usize, (lo, hi): (u32, u32)| {
        let (fold, input, context) = (fold.clone(), input.clone(), context.clone());
        let permits = permits.clone();
        tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| DataFusionError::Internal(format!("fold permits: {e}")))?;
            let mut stream = input.execute(p, context)?;
            let mut state = fold.start(lo..hi);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                fold.update(&mut state, &Rows::new(&batch, flags_at))?;
            }
            fold.finish(state)
        })
    };
    let now = ranges.len() - usize::from(deferred && !ranges.is_empty());
    let tasks: Vec<_> = (0..now).map(|p| spawn(p, ranges[p])).collect();
    let mut acc: Option<F::Partial> = None;
    let mut add = |part: F::Partial| -> DfResult<()> {
        match acc.as_mut() {
            None => acc = Some(part),
            Some(a) => fold.merge(a, part)?,
        }
        Ok(())
    };
    for t in tasks {
        add(t
            .await
            .map_err(|e| DataFusionError::Internal(format!("a fold task failed: {e}")))??)?;
    }
    if now < ranges.len() {
        add(spawn(now, ranges[now])
            .await
            .map_err(|e| DataFusionError::Internal(format!("a fold task failed: {e}")))??)?;
    }
    match acc {
        Some(a) => Ok(a),
        // No key range (a store without users): an empty state.
        None => fold.finish(fold.start(0..0)),
    }
}
