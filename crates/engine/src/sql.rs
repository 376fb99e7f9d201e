//! SQL access: the events table plus table functions for the per-user
//! analyses, so `SELECT * FROM retention('week') WHERE period <= 4` works in any
//! DataFusion session Tenure opens (see `tenure sql`).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_plan::ExecutionPlan;

use crate::retention::{Mode, RetentionFold, RetentionSpec};
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
            plan_err!("argument `{name}` must be a string literal, got {other}")
        }
    }
}

impl TableFunctionImpl for RetentionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(
            exprs,
            4,
            "retention(period [, start_event [, return_event [, mode]]])",
        )?;
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
        let fold = RetentionFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// A table function's result: a fold plan, built when the function is
/// called (no data is read then), run when the query runs, with DataFusion's
/// filters, projections, joins and aggregates on top.
#[derive(Debug)]
pub struct FoldTable {
    plan: Arc<dyn ExecutionPlan>,
}

impl FoldTable {
    /// The table of `plan`.
    pub fn new(plan: Arc<dyn ExecutionPlan>) -> Self {
        Self { plan }
    }
}

#[async_trait::async_trait]
impl TableProvider for FoldTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(projection) = projection else {
            return Ok(self.plan.clone());
        };
        let schema = self.plan.schema();
        let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                let c: Arc<dyn datafusion::physical_expr::PhysicalExpr> = Arc::new(
                    datafusion::physical_expr::expressions::Column::new(&name, i),
                );
                (c, name)
            })
            .collect();
        Ok(Arc::new(
            datafusion::physical_plan::projection::ProjectionExec::try_new(
                exprs,
                self.plan.clone(),
            )?,
        ))
    }
}

/// The table of a fold's plan over `events`.
fn fold_table<F: crate::fold::UserFold>(
    events: &Events,
    fold: F,
) -> DfResult<Arc<dyn TableProvider>> {
    let plan = crate::fold::plan(events, fold).map_err(df_error)?;
    Ok(Arc::new(FoldTable::new(plan)))
}

/// A planning error unless a function got at most `n` arguments.
fn at_most(args: &[Expr], n: usize, signature: &str) -> DfResult<()> {
    if args.len() > n {
        let s = if n == 1 { "" } else { "s" };
        return plan_err!("{signature} takes at most {n} argument{s}");
    }
    Ok(())
}

/// An engine error as DataFusion's: a bad request is a planning error.
pub(crate) fn df_error(e: crate::EngineError) -> datafusion::error::DataFusionError {
    use datafusion::error::DataFusionError;
    match e {
        crate::EngineError::DataFusion(e) => e,
        e if e.is_bad_request() => DataFusionError::Plan(e.to_string()),
        e => DataFusionError::Execution(e.to_string()),
    }
}

/// `stickiness(period [, event])`.
#[derive(Debug)]
struct StickinessFunction {
    events: Events,
}

impl TableFunctionImpl for StickinessFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 2, "stickiness(period [, event])")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "week".into());
        let spec = crate::stickiness::StickinessSpec {
            period: period.parse().map_err(df_error)?,
            tz: chrono_tz::Tz::UTC,
            condition: text_arg(exprs, 1, "event")?.map(|n| col("event").eq(lit(n))),
            as_of: None,
        };
        let fold = crate::stickiness::StickinessFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `lifecycle(period)`: new, returning, resurrecting and dormant users per period.
#[derive(Debug)]
struct LifecycleFunction {
    events: Events,
}

impl TableFunctionImpl for LifecycleFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 1, "lifecycle(period)")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "week".into());
        let fold = crate::lifecycle::LifecycleFold::new(
            &self.events,
            period.parse().map_err(df_error)?,
            chrono_tz::Tz::UTC,
            None,
        )
        .map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `lifecycle_stages([as_of])`: users per tenure and activity stage.
#[derive(Debug)]
struct StagesFunction {
    events: Events,
}

impl TableFunctionImpl for StagesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 1, "lifecycle_stages([as_of])")?;
        let end = text_arg(exprs, 0, "as_of")?
            .map(|t| as_of_arg(&t))
            .transpose()?;
        let (_, max_ts) = self
            .events
            .ts_range
            .ok_or_else(|| df_error(self.events.empty_error()))?;
        let fold = crate::lifecycle::StagesFold {
            as_of: end.map_or(max_ts, |t| t - 1),
            thresholds: Default::default(),
            purchase: "purchase".into(),
        };
        fold_table(&self.events, fold)
    }
}

/// `kpi(period)`: every KPI of `tenure kpi` (purchases are `purchase` events,
/// first-order conversion over 7 days).
#[derive(Debug)]
struct KpiFunction {
    events: Events,
}

impl TableFunctionImpl for KpiFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 1, "kpi(period)")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "month".into());
        let spec = crate::kpi::KpiSpec {
            period: period.parse().map_err(df_error)?,
            tz: chrono_tz::Tz::UTC,
            purchase: Default::default(),
            conversion_days: 7,
        };
        let fold = crate::kpi::KpiFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `ltv(period [, start_event])`: cumulative revenue per cohort user.
#[derive(Debug)]
struct LtvFunction {
    events: Events,
}

impl TableFunctionImpl for LtvFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 2, "ltv(period [, start_event])")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "week".into());
        let spec = RetentionSpec {
            period: period.parse().map_err(df_error)?,
            tz: chrono_tz::Tz::UTC,
            start: text_arg(exprs, 1, "start_event")?.map(|n| col("event").eq(lit(n))),
            ret: None,
            mode: Mode::NDay,
            as_of: None,
            by: None,
        };
        let fold = crate::ltv::LtvFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `funnel(steps, window [, by [, mode]])`: rows as `tenure funnel --format json`.
#[derive(Debug)]
struct FunnelFunction {
    events: Events,
}

impl TableFunctionImpl for FunnelFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        use crate::funnel::{self, FunnelSpec, Modes, syntax};
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 4 {
            return plan_err!("funnel(steps, window [, by [, mode]]) takes 1 to 4 arguments");
        }
        let Some(steps) = text_arg(exprs, 0, "steps")? else {
            return plan_err!("funnel(): `steps` must not be null");
        };
        let window = text_arg(exprs, 1, "window")?.unwrap_or_else(|| "7d".into());
        let mode = text_arg(exprs, 3, "mode")?.unwrap_or_else(|| "default".into());
        let spec = FunnelSpec {
            steps: syntax::parse_steps(&self.events, &steps).map_err(df_error)?,
            window_us: syntax::parse_window(&window).map_err(df_error)?,
            modes: Modes::parse(&mode).map_err(df_error)?,
            exclusions: Vec::new(),
            by: text_arg(exprs, 2, "by")?,
            user_groups: None,
            hold: None,
            entry_from: None,
            entry_to: None,
        };
        let fold = funnel::FunnelFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// An `as_of` argument: a date (`2026-03-16`: through the end of that day,
/// UTC) or an RFC 3339 instant; returns the exclusive end of the history.
fn as_of_arg(text: &str) -> DfResult<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let next = d.succ_opt().expect("a representable date");
        return Ok(next
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros());
    }
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => Ok(t.timestamp_micros()),
        Err(_) => plan_err!("as_of `{text}`: expected a date (2026-03-16) or an RFC 3339 instant"),
    }
}

/// Per-user rows of a feature table filtered by a compiled expression, with
/// each user's id: the work of `segment()` and `rfm()`, run when the query runs.
fn feature_rows(
    events: &Events,
    name: &'static str,
    as_of_end: Option<i64>,
    features: std::collections::BTreeSet<tenure_dsl::Feature>,
    filter: Option<Expr>,
    buyers_only: bool,
    columns: Vec<(String, String)>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let (_, max_ts) = events
        .ts_range
        .ok_or_else(|| df_error(events.empty_error()))?;
    let as_of = as_of_end.map_or(max_ts, |t| t - 1);
    let table = tenure_dsl::feature_schema(&features);
    let mut fields = vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("user_key", DataType::UInt32, false),
    ];
    for (from, to) in &columns {
        let f = table.field_with_name(from)?;
        fields.push(Field::new(to, f.data_type().clone(), true));
    }
    let schema = Arc::new(Schema::new(fields));
    let (events, out) = (events.clone(), schema.clone());
    let spec = crate::features::FeatureSpec {
        as_of,
        purchase: Default::default(),
        thresholds: Default::default(),
        buyers_only,
    };
    let run = move || {
        let (events, out, spec, features, filter, columns) = (
            events.clone(),
            out.clone(),
            spec.clone(),
            features.clone(),
            filter.clone(),
            columns.clone(),
        );
        let fut = async move {
            // Features are as of `as_of`: later events are not read.
            let events = match as_of_end {
                Some(to) => Events::open(
                    &events.store.url,
                    crate::OpenOptions {
                        to: Some(to),
                        ..events.options.clone()
                    },
                )
                .await
                .map_err(df_error)?,
                None => events,
            };
            let batch = crate::features::feature_table(&events, &features, &spec)
                .await
                .map_err(df_error)?;
            let mut df = events.ctx.read_batch(batch)?;
            if let Some(f) = filter {
                df = df.filter(f)?;
            }
            let users = crate::features::users_table(&events)
                .await
                .map_err(df_error)?
                .select(vec![
                    col("user_key").alias("__key"),
                    datafusion::logical_expr::cast(col("user_id"), DataType::Utf8).alias("user_id"),
                ])?;
            let mut select = vec![col("user_id"), col("user_key")];
            for (from, to) in &columns {
                select.push(datafusion::logical_expr::ident(from).alias(to));
            }
            let df = df
                .join(
                    users,
                    datafusion::common::JoinType::Inner,
                    &["user_key"],
                    &["__key"],
                    None,
                )?
                .select(select)?
                .sort(vec![col("user_key").sort(true, false)])?;
            let batches = df.collect().await?;
            let batches: Vec<RecordBatch> = batches
                .into_iter()
                .map(|b| RecordBatch::try_new(out.clone(), b.columns().to_vec()))
                .collect::<Result<_, _>>()?;
            Ok(datafusion::arrow::compute::concat_batches(&out, &batches)?)
        };
        Box::pin(fut) as futures::future::BoxFuture<'static, DfResult<RecordBatch>>
    };
    Ok(Arc::new(crate::lazy::LazyExec::new(name, schema, run)))
}

/// `segment(expr [, as_of])`: one row per user matching a segment expression,
/// with `user_id`, `user_key` and the features the expression uses.
#[derive(Debug)]
struct SegmentFunction {
    events: Events,
}

impl TableFunctionImpl for SegmentFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("segment(expr [, as_of]) takes 1 or 2 arguments");
        }
        let Some(source) = text_arg(exprs, 0, "expr")? else {
            return plan_err!("segment(): `expr` must not be null");
        };
        let end = text_arg(exprs, 1, "as_of")?
            .map(|t| as_of_arg(&t))
            .transpose()?;
        let (_, max_ts) = self
            .events
            .ts_range
            .ok_or_else(|| df_error(self.events.empty_error()))?;
        let as_of = end.map_or(max_ts, |t| t - 1);
        let catalog = crate::features::catalog(&self.events);
        let seg = tenure_dsl::Segment::new(
            &source,
            &tenure_dsl::Resolver::new(&catalog),
            &tenure_dsl::CompileContext::new(as_of),
        )
        .map_err(|e| {
            let text = e.render(&source);
            datafusion::error::DataFusionError::Plan(
                text.strip_prefix("error: ")
                    .unwrap_or(&text)
                    .trim_end()
                    .to_string(),
            )
        })?;
        let columns = seg
            .features
            .iter()
            .map(|f| (f.column_name(), f.column_name()))
            .collect();
        let plan = feature_rows(
            &self.events,
            "segment",
            end,
            seg.features.clone(),
            Some(seg.expr.clone()),
            false,
            columns,
        )?;
        Ok(Arc::new(FoldTable::new(plan)))
    }
}

/// `rfm([as_of])`: per customer (a user with a purchase), recency in days,
/// frequency, monetary and their quintile scores, as `tenure rfm` scores them.
#[derive(Debug)]
struct RfmFunction {
    events: Events,
}

impl TableFunctionImpl for RfmFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        use tenure_dsl::Feature;
        let exprs = args.exprs();
        at_most(exprs, 1, "rfm([as_of])")?;
        let end = text_arg(exprs, 0, "as_of")?
            .map(|t| as_of_arg(&t))
            .transpose()?;
        let features = [
            Feature::Recency,
            Feature::Frequency,
            Feature::Monetary,
            Feature::RScore,
            Feature::FScore,
            Feature::MScore,
        ];
        let columns = features
            .iter()
            .map(|f| {
                let name = f.column_name();
                let out = if name == "recency" {
                    "recency_days".into()
                } else {
                    name.clone()
                };
                (name, out)
            })
            .collect();
        let plan = feature_rows(
            &self.events,
            "rfm",
            end,
            features.into_iter().collect(),
            None,
            true,
            columns,
        )?;
        Ok(Arc::new(FoldTable::new(plan)))
    }
}

/// Registers Tenure's table functions (`retention`, `funnel`, `segment`, `rfm`, `ltv`, `lifecycle`, `lifecycle_stages`, `kpi`, `stickiness`) in the events' session.
pub fn register_functions(events: &Events) {
    events.ctx.register_udtf(
        "retention",
        Arc::new(RetentionFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "lifecycle",
        Arc::new(LifecycleFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "funnel",
        Arc::new(FunnelFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "segment",
        Arc::new(SegmentFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "rfm",
        Arc::new(RfmFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "ltv",
        Arc::new(LtvFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "lifecycle_stages",
        Arc::new(StagesFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "kpi",
        Arc::new(KpiFunction {
            events: events.clone(),
        }),
    );
    events.ctx.register_udtf(
        "stickiness",
        Arc::new(StickinessFunction {
            events: events.clone(),
        }),
    );
}
