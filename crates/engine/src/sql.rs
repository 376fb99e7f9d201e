//! SQL access: the events table plus table functions for the per-user
//! analyses, so `SELECT * FROM retention('week') WHERE period <= 4` works in any
//! DataFusion session Tenure opens (see `tenure sql`).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_plan::ExecutionPlan;

use crate::retention::{Mode, RetentionSpec, retention};
use crate::table::Events;

/// `retention(period [, start_event [, return_event [, mode]]])`.
#[derive(Debug)]
struct RetentionFunction {
    events: Events,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("store", &self.store.url)
            .finish()
    }
}

fn text_arg(args: &[Expr], i: usize, name: &str) -> DfResult<Option<String>> {
    match args.get(i) {
        None => Ok(None),
        Some(Expr::Literal(
            ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s),
            _,
        )) => Ok(s.clone()),
        Some(Expr::Literal(ScalarValue::Null, _)) => Ok(None),
        Some(other) => {
            plan_err!("retention(): argument `{name}` must be a string literal, got {other}")
        }
    }
}

impl TableFunctionImpl for RetentionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() > 4 {
            return plan_err!(
                "retention(period [, start_event [, return_event [, mode]]]) takes at most 4 arguments"
            );
        }
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "week".into());
        let event = |name: Option<String>| name.map(|n| col("event").eq(lit(n)));
        let mode = text_arg(exprs, 3, "mode")?.unwrap_or_else(|| "n-day".into());
        let spec = RetentionSpec {
            period: period.parse().map_err(|e: crate::EngineError| {
                datafusion::error::DataFusionError::Plan(e.to_string())
            })?,
            tz: chrono_tz::Tz::UTC,
            start: event(text_arg(exprs, 1, "start_event")?),
            ret: event(text_arg(exprs, 2, "return_event")?),
            mode: Mode::parse(&mode, None)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?,
            as_of: None,
            by: None,
        };
        Ok(Arc::new(RetentionTable {
            events: self.events.clone(),
            spec,
        }))
    }
}

#[derive(Debug)]
struct RetentionTable {
    events: Events,
    spec: RetentionSpec,
}

fn retention_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("cohort", DataType::Utf8, true),
        Field::new("period", DataType::UInt32, false),
        Field::new("period_label", DataType::Utf8, false),
        Field::new("cohort_size", DataType::UInt64, false),
        Field::new("users", DataType::UInt64, true),
        Field::new("rate", DataType::Float64, true),
        Field::new("complete", DataType::Boolean, false),
    ]))
}

#[async_trait::async_trait]
impl TableProvider for RetentionTable {
    fn schema(&self) -> SchemaRef {
        retention_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let r = retention(&self.events, &self.spec)
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let rows = &r.rows;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.cohort.clone()),
            )),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.period))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.period_label.clone()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.cohort_size),
            )),
            Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.users))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.rate))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.complete)),
            )),
        ];
        let batch = RecordBatch::try_new(retention_schema(), cols)?;
        MemTable::try_new(retention_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// Registers Tenure's table functions (`retention`) in the events' session.
pub fn register_functions(events: &Events) {
    events.ctx.register_udtf(
        "retention",
        Arc::new(RetentionFunction {
            events: events.clone(),
        }),
    );
}
