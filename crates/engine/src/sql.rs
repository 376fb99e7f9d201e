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
            5,
            "retention(period [, start_event [, return_event [, mode [, by]]]])",
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
            by: text_arg(exprs, 4, "by")?,
            read: None,
            revenue: false,
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

    /// Its plan.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
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

/// `kpi(period [, by])`: every KPI of `tenure kpi` (purchases are `purchase` events,
/// first-order conversion over 7 days).
#[derive(Debug)]
struct KpiFunction {
    events: Events,
}

impl TableFunctionImpl for KpiFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 2, "kpi(period [, by])")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "month".into());
        let spec = crate::kpi::KpiSpec {
            period: period.parse().map_err(df_error)?,
            tz: chrono_tz::Tz::UTC,
            purchase: Default::default(),
            conversion_days: 7,
            signup: crate::request::SIGNUP.into(),
        };
        if let Some(by) = text_arg(exprs, 1, "by")? {
            let fold = crate::kpi::KpiByFold::new(&self.events, &spec, &by).map_err(df_error)?;
            return fold_table(&self.events, fold);
        }
        let fold = crate::kpi::KpiFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `ltv(period [, start_event [, by]])`: cumulative revenue per cohort user.
#[derive(Debug)]
struct LtvFunction {
    events: Events,
}

impl TableFunctionImpl for LtvFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 3, "ltv(period [, start_event [, by]])")?;
        let period = text_arg(exprs, 0, "period")?.unwrap_or_else(|| "week".into());
        let spec = RetentionSpec {
            period: period.parse().map_err(df_error)?,
            tz: chrono_tz::Tz::UTC,
            start: text_arg(exprs, 1, "start_event")?.map(|n| col("event").eq(lit(n))),
            ret: None,
            mode: Mode::NDay,
            as_of: None,
            by: text_arg(exprs, 2, "by")?,
            read: None,
            revenue: false,
        };
        let fold = crate::ltv::LtvFold::new(&self.events, &spec).map_err(df_error)?;
        fold_table(&self.events, fold)
    }
}

/// `paths(anchor [, depth [, direction [, session [, top]]]])`: rows as
/// `tenure paths --format json` (direction `after`, the default, or
/// `before`; depth 5, no session, top 20 by default).
#[derive(Debug)]
struct PathsFunction {
    events: Events,
}

impl TableFunctionImpl for PathsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let usage = "paths(anchor [, depth [, direction [, session [, top]]]])";
        at_most(exprs, 5, usage)?;
        let Some(anchor) = text_arg(exprs, 0, "anchor")? else {
            return plan_err!("{usage}: `anchor` is required");
        };
        let number = |i: usize, name: &str, default: usize| -> DfResult<usize> {
            match exprs.get(i) {
                None | Some(Expr::Literal(ScalarValue::Null, _)) => Ok(default),
                Some(Expr::Literal(v, _)) => match v
                    .cast_to(&datafusion::arrow::datatypes::DataType::Int64)
                {
                    Ok(ScalarValue::Int64(Some(n))) if n > 0 => Ok(n as usize),
                    _ => plan_err!("argument `{name}` must be a positive whole number, got {v}"),
                },
                Some(other) => plan_err!("argument `{name}` must be a number literal, got {other}"),
            }
        };
        let options = crate::request::PathsOptions {
            after: None,
            before: None,
            depth: number(1, "depth", 5)?,
            top: number(4, "top", 20)?,
            session: text_arg(exprs, 3, "session")?,
            by: None,
        };
        let options = match text_arg(exprs, 2, "direction")?.as_deref() {
            None | Some("after") => crate::request::PathsOptions {
                after: Some(anchor),
                ..options
            },
            Some("before") => crate::request::PathsOptions {
                before: Some(anchor),
                ..options
            },
            Some(other) => return plan_err!("direction `{other}`: expected after or before"),
        };
        let spec = options.spec().map_err(df_error)?;
        let fold = crate::paths::PathsFold::new(&self.events, &spec).map_err(df_error)?;
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
        fold_table(&self.events, funnel::FunnelTally(fold))
    }
}

/// An `as_of` argument: a date (`2026-03-16`: through the end of that day,
/// UTC) or an RFC 3339 instant; returns the exclusive end of the history.
fn as_of_arg(text: &str) -> DfResult<i64> {
    match crate::calendar::end_of(text, chrono_tz::Tz::UTC) {
        Ok(t) => Ok(t),
        Err(_) => plan_err!("as_of `{text}`: expected a date (2026-03-16) or an RFC 3339 instant"),
    }
}

/// What `segment()`, `rfm()` or `abtest()` computes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum FeatureRequest {
    /// Users matching a segment expression, with the features it uses.
    Segment { source: String },
    /// Customers with their RFM values and scores.
    Rfm,
    /// An A/B readout with the default test (GrowthBook's).
    Abtest(crate::abtest::AbtestRequest),
    /// Every customer's CLV predictions (`tenure clv --users`).
    Clv {
        /// Prediction horizon (`52w`, `90d`).
        horizon: String,
        /// End of the calibration period, if any (a date or an instant).
        calibration_end: Option<String>,
    },
}

/// A `segment()` or `rfm()` plan node as it travels (see `crate::codec`):
/// the request and the store it reads, reopened where the plan runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FeatureRowsSpec {
    store: String,
    options: crate::OpenOptions,
    request: FeatureRequest,
    /// Exclusive end of the history read (`as_of`), if given.
    end: Option<i64>,
    /// Output columns: name, type (as text), nullable.
    columns: Vec<(String, String, bool)>,
    /// The snapshot the plan was made on (its files, users and properties;
    /// not the ingested sources): a decoded plan reads the same files.
    #[serde(default)]
    snapshot: Option<Box<tenure_schema::Snapshot>>,
}

/// Per-user rows of the feature table filtered by a segment (`segment()`)
/// or of the buyers' RFM values (`rfm()`), with each user's id, computed when
/// the plan runs.
pub struct FeatureRowsExec {
    spec: FeatureRowsSpec,
    /// The store as opened at planning (none after decoding: opened when run).
    events: Option<Events>,
    schema: SchemaRef,
    props: Arc<datafusion::physical_plan::PlanProperties>,
}

impl std::fmt::Debug for FeatureRowsExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeatureRowsExec({:?})", self.spec.request)
    }
}

/// What a feature request reads and returns: the features, the filter, and
/// the columns as (feature column, output name).
struct Compiled {
    features: std::collections::BTreeSet<tenure_dsl::Feature>,
    filter: Option<Expr>,
    buyers_only: bool,
    columns: Vec<(String, String)>,
}

impl FeatureRequest {
    fn compile(&self, events: &Events, as_of: i64) -> DfResult<Compiled> {
        use tenure_dsl::Feature;
        match self {
            Self::Segment { source } => {
                let catalog = crate::features::catalog(events);
                let seg = tenure_dsl::Segment::new(
                    source,
                    &tenure_dsl::Resolver::new(&catalog),
                    &tenure_dsl::CompileContext::new(as_of),
                )
                .map_err(|e| df_error(crate::EngineError::from_dsl(e, source)))?;
                let columns = seg
                    .features
                    .iter()
                    .map(|f| (f.column_name(), f.column_name()))
                    .collect();
                Ok(Compiled {
                    features: seg.features,
                    filter: Some(seg.expr),
                    buyers_only: false,
                    columns,
                })
            }
            Self::Abtest(_) => plan_err!("an A/B readout has no feature table"),
            Self::Clv { .. } => plan_err!("CLV predictions have no feature table"),
            Self::Rfm => {
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
                Ok(Compiled {
                    features: features.into_iter().collect(),
                    filter: None,
                    buyers_only: true,
                    columns,
                })
            }
        }
    }
}

impl FeatureRowsExec {
    /// The plan of `request` over `events`, as of the exclusive `end`.
    fn try_new(events: &Events, request: FeatureRequest, end: Option<i64>) -> DfResult<Self> {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let (_, max_ts) = events
            .ts_range
            .ok_or_else(|| df_error(events.empty_error()))?;
        let as_of = end.map_or(max_ts, |t| t - 1);
        let fields: Vec<Field> = match &request {
            FeatureRequest::Abtest(_) => crate::abtest::readout::schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            FeatureRequest::Clv {
                horizon,
                calibration_end,
            } => {
                // Bad arguments fail when planned, not when run.
                clv_options(horizon, calibration_end)
                    .spec(chrono_tz::Tz::UTC, end)
                    .map_err(df_error)?;
                crate::clv::customers_schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect()
            }
            _ => {
                let compiled = request.compile(events, as_of)?;
                let table = tenure_dsl::feature_schema(&compiled.features);
                let mut fields = vec![
                    Field::new("user_id", DataType::Utf8, false),
                    Field::new("user_key", DataType::UInt32, false),
                ];
                for (from, to) in &compiled.columns {
                    let f = table.field_with_name(from)?;
                    fields.push(Field::new(to, f.data_type().clone(), true));
                }
                fields
            }
        };
        let spec = FeatureRowsSpec {
            store: events.store.url.clone(),
            options: events.options.clone(),
            request,
            end,
            columns: fields
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
                .collect(),
            snapshot: Some(Box::new(tenure_schema::Snapshot {
                sources: Vec::new(),
                ..events.snapshot.clone()
            })),
        };
        Ok(Self::with(
            spec,
            Some(events.clone()),
            Arc::new(Schema::new(fields)),
        ))
    }

    fn with(spec: FeatureRowsSpec, events: Option<Events>, schema: SchemaRef) -> Self {
        use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
        let props = Arc::new(datafusion::physical_plan::PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(schema.clone()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            spec,
            events,
            schema,
            props,
        }
    }

    /// What it is made of (its encoding).
    pub(crate) fn spec(&self) -> &FeatureRowsSpec {
        &self.spec
    }

    /// The node of an encoding; the store is opened when it runs.
    pub(crate) fn decode(spec: FeatureRowsSpec) -> DfResult<Self> {
        use datafusion::arrow::datatypes::{Field, Schema};
        let fields = spec
            .columns
            .iter()
            .map(|(name, t, nullable)| {
                let t = t.parse().map_err(|e| {
                    datafusion::error::DataFusionError::Plan(format!("column {name}: {e}"))
                })?;
                Ok(Field::new(name, t, *nullable))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let schema = Arc::new(Schema::new(fields));
        Ok(Self::with(spec, None, schema))
    }

    /// The rows, a batch at a time once the features are computed.
    async fn rows(
        spec: FeatureRowsSpec,
        events: Option<Events>,
        out: SchemaRef,
    ) -> DfResult<futures::stream::BoxStream<'static, DfResult<RecordBatch>>> {
        use futures::StreamExt;
        // Features are as of the end: later events are not read.
        let events = match (events, spec.end) {
            (Some(events), None) => events,
            (events, end) => {
                let options = crate::OpenOptions {
                    to: end.or(spec.options.to),
                    ..spec.options.clone()
                };
                // The snapshot planned on: this process's, or the encoded one.
                let snapshot = events
                    .map(|e| e.snapshot)
                    .or_else(|| spec.snapshot.as_deref().cloned());
                match snapshot {
                    Some(s) => Events::open_snapshot(&spec.store, s, options).await,
                    None => Events::open(&spec.store, options).await,
                }
                .map_err(df_error)?
            }
        };
        let (_, max_ts) = events
            .ts_range
            .ok_or_else(|| df_error(events.empty_error()))?;
        let as_of = spec.end.map_or(max_ts, |t| t - 1);
        if let FeatureRequest::Abtest(request) = &spec.request {
            let (summaries, exposures) = crate::abtest::summaries(&events, request, None)
                .await
                .map_err(df_error)?;
            let readout = crate::analysis::Readout::unchecked(
                summaries,
                Some(exposures),
                &tenure_stats::ReadoutConfig::default(),
            )
            .map_err(df_error)?;
            let batch = readout.table().and_then(|t| t.concat()).map_err(df_error)?;
            let batch = RecordBatch::try_new(out, batch.columns().to_vec())?;
            return Ok(futures::stream::once(async { Ok(batch) }).boxed());
        }
        if let FeatureRequest::Clv {
            horizon,
            calibration_end,
        } = &spec.request
        {
            let request = clv_options(horizon, calibration_end)
                .spec(chrono_tz::Tz::UTC, spec.end)
                .map_err(df_error)?;
            let result = crate::clv::clv(&events, &request).await.map_err(df_error)?;
            let batches = crate::clv::customers_batches(&events, &result)
                .await
                .map_err(df_error)?;
            return Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed());
        }
        let compiled = spec.request.compile(&events, as_of)?;
        let feature_spec = crate::features::FeatureSpec {
            as_of,
            purchase: Default::default(),
            thresholds: Default::default(),
            buyers_only: compiled.buyers_only,
            scoring: Default::default(),
        };
        let users = crate::features::matching_users(
            &events,
            &compiled.features,
            compiled.filter.as_ref(),
            &feature_spec,
        )
        .await
        .map_err(df_error)?;
        // user_id, user_key, then the request's columns by name.
        let from = users.schema();
        let mut picks = vec![from.index_of("user_id")?, from.index_of("user_key")?];
        for (name, _) in &compiled.columns {
            picks.push(from.index_of(name)?);
        }
        Ok(users
            .map(move |batch| {
                let batch = batch?;
                let columns = picks.iter().map(|&i| batch.column(i).clone()).collect();
                Ok(RecordBatch::try_new(out.clone(), columns)?)
            })
            .boxed())
    }
}

impl datafusion::physical_plan::DisplayAs for FeatureRowsExec {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter,
    ) -> std::fmt::Result {
        match &self.spec.request {
            FeatureRequest::Segment { source } => write!(f, "FeatureRowsExec: segment={source:?}"),
            FeatureRequest::Rfm => write!(f, "FeatureRowsExec: rfm"),
            FeatureRequest::Clv {
                horizon,
                calibration_end,
            } => write!(
                f,
                "FeatureRowsExec: clv horizon={horizon}, calibration_end={calibration_end:?}"
            ),
            FeatureRequest::Abtest(r) => {
                let metrics: Vec<&str> = r.metrics.iter().map(|m| m.text.as_str()).collect();
                write!(
                    f,
                    "FeatureRowsExec: abtest by={}, metrics={metrics:?}",
                    r.by
                )
            }
        }?;
        if let Some(end) = self.spec.end {
            write!(f, ", end={end}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for FeatureRowsExec {
    fn name(&self) -> &str {
        "FeatureRowsExec"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
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
        _context: Arc<datafusion::execution::TaskContext>,
    ) -> DfResult<datafusion::execution::SendableRecordBatchStream> {
        if partition != 0 {
            return datafusion::common::exec_err!(
                "FeatureRowsExec has one partition, not {partition}"
            );
        }
        use futures::TryStreamExt;
        let rows = Self::rows(self.spec.clone(), self.events.clone(), self.schema.clone());
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(rows).try_flatten(),
            ),
        ))
    }
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
        let plan = FeatureRowsExec::try_new(&self.events, FeatureRequest::Segment { source }, end)?;
        Ok(Arc::new(FoldTable::new(Arc::new(plan))))
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
        let exprs = args.exprs();
        at_most(exprs, 1, "rfm([as_of])")?;
        let end = text_arg(exprs, 0, "as_of")?
            .map(|t| as_of_arg(&t))
            .transpose()?;
        let plan = FeatureRowsExec::try_new(&self.events, FeatureRequest::Rfm, end)?;
        Ok(Arc::new(FoldTable::new(Arc::new(plan))))
    }
}

/// `abtest(metric [, by])`: the readout of `tenure abtest --metric <metric>
/// --by <by>` (default `variant`) with the default test, one row per arm.
#[derive(Debug)]
struct AbtestFunction {
    events: Events,
}

impl TableFunctionImpl for AbtestFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("abtest(metric [, by]) takes 1 or 2 arguments");
        }
        let Some(metric) = text_arg(exprs, 0, "metric")? else {
            return plan_err!("abtest(): `metric` must not be null");
        };
        let request = crate::abtest::AbtestRequest {
            by: text_arg(exprs, 1, "by")?.unwrap_or_else(|| "variant".into()),
            metrics: vec![crate::abtest::parse_metric(&metric).map_err(df_error)?],
            purchase_event: "purchase".into(),
            cuped_days: None,
            dimension: None,
            population: None,
        };
        let plan = FeatureRowsExec::try_new(&self.events, FeatureRequest::Abtest(request), None)?;
        Ok(Arc::new(FoldTable::new(Arc::new(plan))))
    }
}

/// The options of `clv(horizon [, calibration_end [, as_of]])` (weeks, the
/// purchase event `purchase`, no discount).
fn clv_options(horizon: &str, calibration_end: &Option<String>) -> crate::request::ClvOptions {
    crate::request::ClvOptions {
        horizon: horizon.to_string(),
        calibration_end: calibration_end.clone(),
        ..Default::default()
    }
}

/// `clv([horizon [, calibration_end [, as_of]]])`: every customer's BG/NBD
/// and Gamma-Gamma predictions, as `tenure clv --users` lists them (weeks,
/// UTC days, horizon `52w` by default).
#[derive(Debug)]
struct ClvFunction {
    events: Events,
}

impl TableFunctionImpl for ClvFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        at_most(exprs, 3, "clv([horizon [, calibration_end [, as_of]]])")?;
        let horizon = text_arg(exprs, 0, "horizon")?.unwrap_or_else(|| "52w".into());
        let calibration_end = text_arg(exprs, 1, "calibration_end")?;
        let end = text_arg(exprs, 2, "as_of")?
            .map(|t| as_of_arg(&t))
            .transpose()?;
        let request = FeatureRequest::Clv {
            horizon,
            calibration_end,
        };
        let plan = FeatureRowsExec::try_new(&self.events, request, end)?;
        Ok(Arc::new(FoldTable::new(Arc::new(plan))))
    }
}

/// Registers Tenure's table functions (`retention`, `funnel`, `paths`, `segment`, `rfm`, `ltv`, `lifecycle`, `lifecycle_stages`, `kpi`, `stickiness`, `abtest`, `clv`) in the events' session.
pub fn register_functions(events: &Events) {
    events.ctx.register_udtf(
        "clv",
        Arc::new(ClvFunction {
            events: events.clone(),
        }),
    );
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
        "paths",
        Arc::new(PathsFunction {
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
        "abtest",
        Arc::new(AbtestFunction {
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
