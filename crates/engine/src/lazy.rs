//! [`LazyExec`]: an analysis not yet written as a fold, run when its plan runs
//! (so a table function over it reads nothing at planning time). It holds
//! process-local closures: unlike the fold operators it cannot be serialised.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::exec_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::future::BoxFuture;

type Run = Arc<dyn Fn() -> BoxFuture<'static, DfResult<RecordBatch>> + Send + Sync>;

/// One partition whose batch an async closure computes when executed.
pub struct LazyExec {
    name: &'static str,
    schema: SchemaRef,
    run: Run,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for LazyExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyExec({})", self.name)
    }
}

impl LazyExec {
    /// `run` computes the batch (of `schema`) of the analysis `name`.
    pub fn new(
        name: &'static str,
        schema: SchemaRef,
        run: impl Fn() -> BoxFuture<'static, DfResult<RecordBatch>> + Send + Sync + 'static,
    ) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            name,
            schema,
            run: Arc::new(run),
            props,
        }
    }
}

impl DisplayAs for LazyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LazyExec: analysis={}", self.name)
    }
}

impl ExecutionPlan for LazyExec {
    fn name(&self) -> &str {
        "LazyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("LazyExec has one partition, not {partition}");
        }
        let fut = (self.run)();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(fut),
        )))
    }
}
