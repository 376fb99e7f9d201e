//! Typed analyses: every request of [`crate::request`] computed over a
//! [`Scope`] and answered as Arrow record batches with a declared schema.
//!
//! The CLI subcommands, `tenure run`'s job files and the report all call the
//! same `compute` method of a request: the CLI parses flags into the request
//! and the scope, then prints or writes the [`Answer`]'s batches. Adding an
//! analysis means one [`crate::fold::UserFold`] and one request type with a
//! `compute` like these.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tenure_dsl::SegmentLibraryBuilder;
use tenure_dsl::{Catalog, CompileContext, Resolver, Segment, SegmentLibrary};
use tenure_stats::{Correction, Difference, MetricReadout, MetricSummary, ReadoutConfig, Sided};

use crate::abtest::{AbtestRequest, Exposures};
use crate::features::FeatureSpec;
use crate::lifecycle::Thresholds;
use crate::request::{
    AbtestOptions, ClvOptions, FunnelOptions, KpiOptions, LifecycleOptions, LtvOptions,
    RetentionOptions, RfmOptions, SegmentOptions, StickinessOptions,
};
use crate::userstats::PurchaseSpec;
use crate::{EngineError, Events, OpenOptions, Result};

/// What an analysis reads: the store, the event range, the calendar's zone
/// and the "as of" instant. The subcommands and `tenure run` both build one
/// and call the same `compute` of each request with it.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Store URL.
    pub data: String,
    /// Worker threads (0: the default).
    pub threads: usize,
    /// Only events at or after this instant (UTC µs).
    pub from: Option<i64>,
    /// Only events before this instant (UTC µs).
    pub to: Option<i64>,
    /// Time zone of days, weeks and months.
    pub tz: chrono_tz::Tz,
    /// The end of "now" for the analysis (exclusive, UTC µs): cells ending
    /// after it are incomplete, R and stages are measured at it. `None`: the
    /// end of the data.
    pub as_of: Option<i64>,
    /// Run the plans elsewhere (a cluster; see [`crate::remote`]).
    pub remote: Option<crate::remote::Remote>,
}

impl Scope {
    /// Opens the store over the range.
    pub async fn open(&self) -> Result<Events> {
        self.open_range(self.from, self.to).await
    }

    /// Opens the store over another range (some analyses need the history
    /// before `from`, or nothing after `as_of`).
    pub async fn open_range(&self, from: Option<i64>, to: Option<i64>) -> Result<Events> {
        Events::open(
            &self.data,
            OpenOptions {
                threads: self.threads,
                from,
                to,
                remote: self.remote.clone(),
            },
        )
        .await
    }

    /// Opens the store up to the as-of (the range's start is not used:
    /// features look at each user's whole history), and the as-of instant
    /// itself (inclusive; the newest event when not given).
    pub async fn open_as_of(&self) -> Result<(Events, i64)> {
        let events = self.open_range(None, self.as_of).await?;
        let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        Ok((events, self.as_of.map_or(max_ts, |t| t - 1)))
    }
}

/// Record batches of one declared schema.
#[derive(Debug, Clone)]
pub struct Table {
    /// The columns and their types.
    pub schema: SchemaRef,
    /// The rows (possibly several batches, possibly none).
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// A table of `batches`, all of `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches }
    }

    /// A table of one batch.
    pub fn of(batch: RecordBatch) -> Self {
        Self {
            schema: batch.schema(),
            batches: vec![batch],
        }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The rows as one batch.
    pub fn concat(&self) -> Result<RecordBatch> {
        Ok(datafusion::arrow::compute::concat_batches(
            &self.schema,
            &self.batches,
        )?)
    }
}

/// What an analysis answers: its table and, for some, a second one drawn
/// beside it (RFM's R x F score grid).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The analysis's rows.
    pub table: Table,
    /// A second table (`None` for most analyses).
    pub extra: Option<Table>,
}

impl From<Table> for Answer {
    fn from(table: Table) -> Self {
        Self { table, extra: None }
    }
}

impl RetentionOptions {
    /// Retention over `scope`: rows of [`crate::retention::schema_of`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let events = scope.open().await?;
        let spec = self.spec(&events, scope.tz, scope.as_of).await?;
        let events = match &self.segment {
            Some(expr) => self.members_only(scope, events, &spec, expr).await?,
            None => events,
        };
        let fold = crate::retention::RetentionFold::new(&events, &spec)?;
        let batches = crate::fold::run(&events, fold).await?;
        if let Some(by) = &self.by {
            let mut groups = Vec::new();
            for b in &batches {
                groups.extend(
                    crate::retention::rows_of_batch(b)?
                        .into_iter()
                        .map(|r| r.group),
                );
            }
            crate::breakdown::check_found(by, groups)?;
        }
        Ok(Table::new(crate::retention::schema_of(spec.revenue), batches).into())
    }
}

impl LtvOptions {
    /// Cumulative revenue per cohort over `scope`: rows of
    /// [`crate::ltv::schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let events = scope.open().await?;
        let spec = self.spec(&events, scope.tz, scope.as_of).await?;
        let fold = crate::ltv::LtvFold::new(&events, &spec)?;
        let batches = crate::fold::run(&events, fold).await?;
        if let Some(by) = &self.by {
            let groups = batches
                .iter()
                .flat_map(crate::ltv::rows_of_batch)
                .map(|r| r.group);
            crate::breakdown::check_found(by, groups)?;
        }
        Ok(Table::new(crate::ltv::schema_of(self.by.is_some()), batches).into())
    }
}

impl ClvOptions {
    /// Fits the models over `scope` (each customer's whole history up to the
    /// as-of; the range's start is not used) and predicts per customer.
    pub async fn fit(&self, scope: &Scope) -> Result<(Events, crate::clv::ClvResult)> {
        let spec = self.spec(scope.tz, scope.as_of)?;
        let events = scope.open_range(None, scope.as_of).await?;
        let result = crate::clv::clv(&events, &spec).await?;
        Ok((events, result))
    }

    /// The fitted models as rows of [`crate::clv::model_schema`], and as the
    /// extra table the report's summary ([`crate::clv::summary_schema`]:
    /// the p_alive distribution, CLV deciles and the holdout check).
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let (_, r) = self.fit(scope).await?;
        Self::answer(&r)
    }

    /// The answer of [`Self::compute`] for a fit already made.
    pub fn answer(r: &crate::clv::ClvResult) -> Result<Answer> {
        let table = Table::new(
            crate::clv::model_schema(),
            vec![crate::clv::model_batch(r)?],
        );
        let extra = Table::new(
            crate::clv::summary_schema(),
            vec![crate::clv::summary_batch(r)?],
        );
        Ok(Answer {
            table,
            extra: Some(extra),
        })
    }
}

impl StickinessOptions {
    /// Users by number of active days per period over `scope`: rows of
    /// [`crate::stickiness::schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let events = scope.open().await?;
        let spec = self.spec(&events, scope.tz, scope.as_of).await?;
        let batches = crate::stickiness::stickiness(&events, &spec).await?;
        Ok(Table::new(crate::stickiness::schema(), batches).into())
    }
}

impl KpiOptions {
    /// The KPIs over `scope` in one pass: rows of [`crate::kpi::schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let events = scope.open().await?;
        let spec = self.spec(scope.tz)?;
        let Some(by) = &self.by else {
            let fold = crate::kpi::KpiFold::new(&events, &spec)?;
            let batches = crate::fold::run(&events, fold).await?;
            return Ok(Table::new(crate::kpi::schema(), batches).into());
        };
        let fold = crate::kpi::KpiByFold::new(&events, &spec, by)?;
        let batches = crate::fold::run(&events, fold).await?;
        let mut groups = Vec::new();
        for b in &batches {
            let g = b.column(0).as_string::<i32>();
            groups.extend(g.iter().map(|v| v.map(str::to_string)));
        }
        crate::breakdown::check_found(by, groups)?;
        Ok(Table::new(crate::kpi::schema_of(true), batches).into())
    }
}

impl LifecycleOptions {
    /// Per-period lifecycle counts over `scope` (rows of
    /// [`crate::lifecycle::periods_schema`]; the history before `from` tells
    /// new from resurrecting), or with `stages` users per stage as of the
    /// scope's as-of (rows of [`crate::lifecycle::stages_schema`]).
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        use crate::lifecycle::{LifecycleFold, StagesFold, periods_schema, stages_schema};
        if self.stages {
            let thresholds = self.thresholds()?;
            // "As of T" ignores what happened after T.
            let to = match (scope.to, scope.as_of) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let events = scope.open_range(scope.from, to).await?;
            let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
            let fold = StagesFold {
                as_of: scope.as_of.map_or(max_ts, |t| t - 1),
                thresholds,
                purchase: self.purchase_event.clone(),
            };
            let batches = crate::fold::run(&events, fold).await?;
            Ok(Table::new(stages_schema(), batches).into())
        } else {
            let events = scope.open_range(None, scope.to).await?;
            let fold = LifecycleFold::new(&events, self.period.parse()?, scope.tz, scope.from)?;
            let batches = crate::fold::run(&events, fold).await?;
            Ok(Table::new(periods_schema(), batches).into())
        }
    }
}

impl FunnelOptions {
    /// The funnel over `scope` (users entering in its range; steps may follow
    /// up to the window past its end): rows of [`crate::funnel::schema`], or
    /// with `histogram` of [`crate::funnel::histogram_schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let window_us = crate::funnel::syntax::parse_window(&self.window)?;
        let events = scope
            .open_range(
                scope.from,
                scope
                    .to
                    .map(|t| t.saturating_add(window_us).saturating_add(1)),
            )
            .await?;
        let mut spec = self.spec(&events, scope.from, scope.to)?;
        // Checked before a segment breakdown is worked out for it.
        spec.validate(&events)?;
        if let Some(expr) = &self.by_segment {
            spec.user_groups = Some(self.segment_groups(scope, expr, &spec).await?);
        }
        let (rows, hist) = crate::funnel::funnel(&events, &spec).await?;
        if let Some(by) = &self.by {
            crate::breakdown::check_found(by, rows.iter().map(|r| Some(r.group.clone())))?;
        }
        Ok(if self.histogram {
            Table::of(crate::funnel::histogram_batch(&hist)?)
        } else {
            Table::of(crate::funnel::batch_of_rows(&rows)?)
        }
        .into())
    }

    /// Each user's group for `--by-segment`: 0 in the segment, 1 not, as of
    /// the user's entry (their first step-1 event in the entry range), over
    /// their events before it: a purchase at or after entry cannot put a
    /// user in `@champions`. Users who never enter are in no group.
    async fn segment_groups(
        &self,
        scope: &Scope,
        expr: &str,
        spec: &crate::funnel::FunnelSpec,
    ) -> Result<(Vec<u32>, Vec<String>)> {
        let segment = SegmentOptions {
            expr: expr.to_string(),
            segments: self.segments.clone(),
            purchase_event: PurchaseSpec::default().event,
        };
        let each =
            segment_as_of_each(scope, &segment, entry_condition(spec), spec.entry_to, |t| t).await;
        let (entry, matches) = match each {
            Ok(v) => v,
            // Scores, means and predictions rank the whole population at one
            // instant: read them as of the start of the entry range, before
            // every entry (never looking ahead).
            Err(EngineError::BadRequest(m)) if m.contains("own instant") => {
                let Some(from) = spec.entry_from else {
                    return Err(EngineError::BadRequest(format!(
                        "--by-segment `{expr}`: {m}; or give --from DATE, and the segment \
                         is read as of it, before any entry"
                    )));
                };
                let at = Scope {
                    as_of: Some(from),
                    ..scope.clone()
                };
                let (events, as_of) = at.open_as_of().await?;
                let (seg, fspec) = segment.compile(&events, as_of)?;
                let matches = crate::abtest::segment_matches(&events, &seg, &fspec).await?;
                (vec![0; matches.len()], matches)
            }
            Err(e) => return Err(e),
        };
        let groups = entry
            .iter()
            .zip(&matches)
            .map(|(&t, &m)| {
                if t == crate::userstats::NEVER {
                    u32::MAX
                } else {
                    u32::from(!m)
                }
            })
            .collect();
        Ok((
            groups,
            vec![format!("in: {expr}"), format!("not in: {expr}")],
        ))
    }
}

/// The condition of a funnel's step-1 events (in the entry range).
fn entry_condition(spec: &crate::funnel::FunnelSpec) -> datafusion::logical_expr::Expr {
    use datafusion::logical_expr::{col, lit};
    let step = &spec.steps[0];
    let mut c = col("event").eq(lit(step.event.clone()));
    if let Some(extra) = &step.condition {
        c = c.and(extra.clone());
    }
    let at = |t: i64| {
        lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))
    };
    if let Some(from) = spec.entry_from {
        c = c.and(col("ts").gt_eq(at(from)));
    }
    if let Some(to) = spec.entry_to {
        c = c.and(col("ts").lt(at(to)));
    }
    c
}

/// Each user's first event meeting `start` (before `until`; NEVER for none),
/// and whether the user matches `segment` as of `instant(first)`, over their
/// events before it (the whole history, also before the scope's range; the
/// match is false for users without such an event). Indexed by user key.
pub(crate) async fn segment_as_of_each(
    scope: &Scope,
    segment: &SegmentOptions,
    start: datafusion::logical_expr::Expr,
    until: Option<i64>,
    instant: impl Fn(i64) -> i64,
) -> Result<(Vec<i64>, Vec<bool>)> {
    use crate::userstats::NEVER;
    let events = scope.open_range(None, until).await?;
    let first = crate::fold::totals::first_times(&events, start, None).await?;
    let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let (seg, spec) = segment.compile(&events, max_ts)?;
    let before: Vec<i64> = first
        .iter()
        .map(|&t| if t == NEVER { i64::MIN } else { instant(t) })
        .collect();
    let history = Events {
        before: Some(std::sync::Arc::new(before.clone())),
        ..events.clone()
    };
    let keys: Vec<u32> = (0..first.len() as u32)
        .filter(|&k| first[k as usize] != NEVER)
        .collect();
    let matches =
        crate::features::matches_as_of_each(&history, &seg, &before, &keys, &spec).await?;
    Ok((first, matches))
}

impl crate::request::PathsOptions {
    /// The paths over `scope` (anchors in range): rows of
    /// [`crate::paths::schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let spec = self.spec()?;
        let events = scope.open().await?;
        let batches = crate::paths::paths(&events, &spec).await?;
        if let Some(by) = &spec.by {
            let mut groups = Vec::new();
            for b in &batches {
                let g = b.column(0).as_string::<i32>();
                groups.extend(g.iter().map(|v| v.map(str::to_string)));
            }
            crate::breakdown::check_found(by, groups)?;
        }
        Ok(Table::new(crate::paths::schema(), batches).into())
    }
}

impl RetentionOptions {
    /// `events` with only the users who match `expr` as of their cohort's
    /// start (the start of the period of their first start event in range)
    /// over their events before it; the others' rows are dropped by the scan
    /// (a per-user bound before every event).
    async fn members_only(
        &self,
        scope: &Scope,
        events: Events,
        spec: &crate::retention::RetentionSpec,
        expr: &str,
    ) -> Result<Events> {
        use datafusion::logical_expr::{col, lit};
        let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let cal = crate::calendar::Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
        let at = |t: i64| {
            lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
                Some(t),
                Some("UTC".into()),
            ))
        };
        let mut start = spec.start.clone().unwrap_or(lit(true));
        if let Some(from) = scope.from {
            start = start.and(col("ts").gt_eq(at(from)));
        }
        let segment = SegmentOptions {
            expr: expr.to_string(),
            segments: self.segment_files.clone(),
            purchase_event: PurchaseSpec::default().event,
        };
        let cohort_start = |t: i64| {
            cal.period_of(t)
                .map_or(t, |p| cal.day_start_of_period(p as usize))
        };
        let (first, matches) =
            segment_as_of_each(scope, &segment, start, scope.to, cohort_start).await?;
        let bounds: Vec<i64> = first
            .iter()
            .zip(&matches)
            .map(|(_, &m)| if m { i64::MAX } else { i64::MIN })
            .collect();
        Ok(Events {
            before: Some(Arc::new(bounds)),
            ..events
        })
    }
}

/// The segment files `files` (`@name = expr` definitions), parsed and
/// checked against `catalog`. Errors carry the file's text and a caret.
pub fn library(files: &[String], catalog: &Catalog) -> Result<SegmentLibrary> {
    let mut b = SegmentLibraryBuilder::default();
    for f in files {
        let text = read_segment_file(f)?;
        b.add_source(f, &text)
            .map_err(|e| EngineError::from_dsl(e, &text))?;
    }
    // Errors from segment files carry their file's text: rendered with the
    // caret under the offending reference, and the hint.
    b.build(catalog).map_err(|e| EngineError::from_dsl(e, ""))
}

/// The columns and event names segments are checked against: the store's,
/// or none (checks without data).
pub fn catalog_of(events: Option<&Events>) -> Catalog {
    match events {
        Some(e) => crate::features::catalog(e),
        None => Catalog {
            properties: None,
            events: None,
        },
    }
}

impl SegmentOptions {
    /// The segment compiled against the store as of `as_of`, with the
    /// feature options it is evaluated under.
    pub fn compile(&self, events: &Events, as_of: i64) -> Result<(Segment, FeatureSpec)> {
        let catalog = catalog_of(Some(events));
        let lib = library(&self.segments, &catalog)?;
        let seg = Segment::new(
            &self.expr,
            &Resolver::new(&catalog).with_library(&lib),
            &CompileContext::new(as_of),
        )
        .map_err(|e| EngineError::from_dsl(e, &self.expr))?;
        let spec = FeatureSpec {
            as_of,
            purchase: PurchaseSpec {
                event: self.purchase_event.clone(),
            },
            thresholds: Thresholds::default(),
            buyers_only: false,
            scoring: Default::default(),
        };
        Ok((seg, spec))
    }

    /// Counts the users in the segment as of the scope's as-of (the range is
    /// not used: features look at each user's whole history up to as-of).
    /// One row of [`segment_count_schema`].
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let (events, as_of) = scope.open_as_of().await?;
        let (seg, spec) = self.compile(&events, as_of)?;
        let (n, total) =
            crate::features::count_matching(&events, &seg.features, &seg.expr, &spec).await?;
        let share = if total > 0 {
            n as f64 / total as f64
        } else {
            0.0
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.expr.clone()])),
            Arc::new(UInt64Array::from(vec![n])),
            Arc::new(UInt64Array::from(vec![total])),
            Arc::new(Float64Array::from(vec![share])),
        ];
        Ok(Table::of(RecordBatch::try_new(segment_count_schema(), cols)?).into())
    }
}

/// `segment, users, total_users, share`: a segment count.
pub fn segment_count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("total_users", DataType::UInt64, false),
        Field::new("share", DataType::Float64, false),
    ]))
}

impl RfmOptions {
    /// The segment set files of this request: those given, else the
    /// shipped English set (`queries/rfm_segments.seg`).
    pub fn files(&self) -> Result<Vec<String>> {
        if self.segments.is_empty() {
            Ok(vec![shipped_segment_file("rfm_segments.seg")?])
        } else {
            Ok(self.segments.clone())
        }
    }

    /// Loads and parses the segment files (without data).
    pub fn check(&self) -> Result<()> {
        self.scoring()?;
        library(&self.files()?, &catalog_of(None)).map(|_| ())
    }

    /// The RFM segment distribution as of the scope's as-of (rows of
    /// [`crate::rfm::segments_schema`], the last one all customers), and the
    /// R x F score grid beside it (`r_score, f_score, users`).
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        let files = self.files()?;
        let scoring = self.scoring()?;
        let lookback = self.lookback_us()?;
        if lookback.is_some() && scope.from.is_some() {
            return Err(EngineError::BadRequest(
                "--lookback and --from both set the window's start; give one".into(),
            ));
        }
        let (events, as_of) = scope.open_as_of().await?;
        // The window: purchases from its start up to the as-of (inclusive).
        let start = scope.from.or(lookback.map(|l| as_of + 1 - l));
        let events = match start {
            Some(from) => scope.open_range(Some(from), Some(as_of + 1)).await?,
            None => events,
        };
        let lib = library(&files, &catalog_of(Some(&events)))?;
        let request = crate::rfm::RfmRequest {
            as_of,
            purchase_event: self.purchase_event.clone(),
            scoring,
        };
        let result = crate::rfm::rfm(&events, &request, &lib).await?;
        Ok(Answer {
            table: Table::of(result.segments),
            extra: Some(Table::of(result.grid)),
        })
    }
}

/// The segment files shipped in `queries/`, built into the binary: a `tenure`
/// installed elsewhere (or built under another path) still has its default.
const SHIPPED: &[(&str, &str)] = &[(
    "rfm_segments.seg",
    include_str!("../../../queries/rfm_segments.seg"),
)];

/// Finds a shipped segment file: in `queries/` of the current directory, or
/// of the repository the binary was built from; else `queries/<name>`, which
/// [`library`] reads from the copy built into the binary.
fn shipped_segment_file(name: &str) -> Result<String> {
    let candidates = [
        std::path::PathBuf::from("queries").join(name),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../queries")
            .join(name),
    ];
    if let Some(p) = candidates.iter().find(|p| p.exists()) {
        return Ok(p.display().to_string());
    }
    if SHIPPED.iter().any(|(n, _)| *n == name) {
        return Ok(format!("queries/{name}"));
    }
    Err(EngineError::BadRequest(format!(
        "cannot find queries/{name}; pass --segments FILE"
    )))
}

/// A segment file's text; a shipped one missing on disk from the binary.
fn read_segment_file(f: &str) -> Result<String> {
    std::fs::read_to_string(f).or_else(|e| {
        let shipped = f
            .strip_prefix("queries/")
            .and_then(|n| SHIPPED.iter().find(|(s, _)| *s == n));
        match shipped {
            Some((_, text)) if e.kind() == std::io::ErrorKind::NotFound => Ok(text.to_string()),
            _ => Err(EngineError::BadRequest(format!(
                "cannot read segment file {f}: {e}"
            ))),
        }
    })
}

/// An A/B readout: per metric the arms' numbers and the statistics, and who
/// was assigned (absent for a readout of given per-arm numbers).
#[derive(Debug, Clone)]
pub struct Readout {
    /// Per metric, the arms' numbers.
    pub summaries: Vec<MetricSummary>,
    /// Per metric, the statistics.
    pub readouts: Vec<MetricReadout>,
    /// Arms and their users, from events.
    pub exposures: Option<Exposures>,
    /// Per metric summary, the dimension value it is limited to
    /// (`--by-dimension`; `None` without).
    pub dimensions: Vec<Option<String>>,
}

impl Readout {
    /// Reads out `summaries` (per-arm numbers, from events or given) with
    /// the test settings of `config`.
    pub fn of(
        summaries: Vec<MetricSummary>,
        exposures: Option<Exposures>,
        config: &ReadoutConfig,
    ) -> Result<Self> {
        check_arms(&summaries, config)?;
        Self::unchecked(summaries, exposures, config)
    }

    /// [`Readout::of`] without the arm checks said in terms of the flags:
    /// an empty arm gets a row with its reason (`abtest()` in SQL).
    pub fn unchecked(
        summaries: Vec<MetricSummary>,
        exposures: Option<Exposures>,
        config: &ReadoutConfig,
    ) -> Result<Self> {
        let readouts = tenure_stats::readout(&summaries, config)?;
        Ok(Self {
            dimensions: vec![None; summaries.len()],
            summaries,
            readouts,
            exposures,
        })
    }

    /// The readout rows (of [`crate::abtest::readout::schema`]).
    pub fn table(&self) -> Result<Table> {
        Ok(Table::of(crate::abtest::readout::batch(
            &self.readouts,
            &self.summaries,
            self.exposures.as_ref(),
            &self.dimensions,
        )?))
    }
}

impl AbtestOptions {
    /// The test settings, checked before any data is read.
    pub fn readout_config(&self) -> Result<ReadoutConfig> {
        if self.cuped == Some(0) {
            return Err(EngineError::BadRequest(
                "--cuped 0: the pre-exposure window needs at least one day".into(),
            ));
        }
        Ok(ReadoutConfig {
            alpha: tenure_stats::Alpha::new(self.alpha)?,
            difference: self.difference.parse::<Difference>()?,
            sided: self.sided.parse::<Sided>()?,
            sequential: self
                .sequential
                .map(tenure_stats::TuningParameter::new)
                .transpose()?,
            bayesian: self.bayesian || self.prior_mean.is_some(),
            prior: self.prior()?,
            correction: self.correction.parse::<Correction>()?,
            control: self.control.clone(),
            split: self
                .split
                .as_deref()
                .map(tenure_stats::parse_split)
                .transpose()?,
        })
    }

    /// The informative prior of --prior-mean and --prior-stddev, if given.
    pub fn prior(&self) -> Result<Option<tenure_stats::GaussianPrior>> {
        match (self.prior_mean, self.prior_stddev) {
            (None, None) => Ok(None),
            (Some(mean), Some(sd)) if mean.is_finite() && sd.is_finite() && sd > 0.0 => {
                Ok(Some(tenure_stats::GaussianPrior {
                    mean,
                    variance: sd * sd,
                }))
            }
            (Some(_), Some(sd)) if !(sd.is_finite() && sd > 0.0) => Err(EngineError::BadRequest(
                format!("--prior-stddev {sd}: expected a positive number"),
            )),
            (Some(m), Some(_)) => Err(EngineError::BadRequest(format!(
                "--prior-mean {m}: expected a finite number"
            ))),
            _ => Err(EngineError::BadRequest(
                "--prior-mean and --prior-stddev go together".into(),
            )),
        }
    }

    /// Assigns arms over the scope's range, computes every metric's per-arm
    /// statistics and reads them out.
    pub async fn readout(&self, scope: &Scope) -> Result<Readout> {
        let config = self.readout_config()?;
        let metrics = self
            .metrics
            .iter()
            .map(|m| crate::abtest::parse_metric(m))
            .collect::<Result<Vec<_>>>()?;
        let events = scope.open().await?;
        let lib = library(&self.segments, &catalog_of(Some(&events)))?;
        let request = AbtestRequest {
            by: self.by.clone(),
            metrics,
            purchase_event: self.purchase_event.clone(),
            cuped_days: self.cuped,
            dimension: self.by_dimension.clone(),
            population: self.population.clone(),
        };
        let (summaries, exposures, dimensions) =
            crate::abtest::readout::summaries_by(&events, &request, Some(&lib)).await?;
        if request.dimension.is_none() {
            return Readout::of(summaries, Some(exposures), &config);
        }
        // A dimension value may lack an arm: its rows say so (no_result)
        // instead of failing the readout.
        if let Some(c) = &config.control
            && !exposures.arms.contains(c)
        {
            return Err(EngineError::BadRequest(format!(
                "--control `{c}` is not an arm; the arms are {}",
                exposures.arms.join(", ")
            )));
        }
        let mut readout = Readout::unchecked(summaries, Some(exposures), &config)?;
        readout.dimensions = dimensions;
        Ok(readout)
    }

    /// The readout rows over `scope` (of [`crate::abtest::readout::schema`]).
    pub async fn compute(&self, scope: &Scope) -> Result<Answer> {
        Ok(self.readout(scope).await?.table()?.into())
    }
}

/// Problems the readout would also find, said in terms of the flags.
fn check_arms(summaries: &[MetricSummary], config: &ReadoutConfig) -> Result<()> {
    for m in summaries {
        let names: Vec<&str> = m.arms.iter().map(|a| a.arm.as_str()).collect();
        if let Some(empty) = m.arms.iter().find(|a| a.data.users() == 0) {
            return Err(EngineError::BadRequest(format!(
                "{}: arm `{}` has no users, so there is nothing to compare; \
                 check the arm name and the numbers",
                m.name, empty.arm
            )));
        }
        if let Some(c) = &config.control
            && !names.contains(&c.as_str())
        {
            return Err(EngineError::BadRequest(format!(
                "--control `{c}` is not an arm of {}; its arms are {}",
                m.name,
                names.join(", ")
            )));
        }
        if let Some(w) = &config.split
            && w.len() != names.len()
        {
            return Err(EngineError::BadRequest(format!(
                "--split has {} weights but {} has {} arms ({}); give one weight per arm, \
                 in that order",
                w.len(),
                m.name,
                names.len(),
                names.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Every request answers batches of its declared schema, and the answer
    //! is the one its SQL table function gives over the same store.

    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    /// A memory store holding a fixture's events.
    fn store(name: &str, fixture: &str) -> String {
        crate::test_store::store(&format!("analysis-{name}"), fixture)
    }

    fn scope(data: &str) -> Scope {
        Scope {
            data: data.into(),
            threads: 2,
            from: None,
            to: None,
            tz: chrono_tz::Tz::UTC,
            as_of: None,
            remote: None,
        }
    }

    fn text(t: &Table) -> String {
        for b in &t.batches {
            assert_eq!(b.schema(), t.schema, "a batch of another schema");
        }
        pretty_format_batches(&t.batches).unwrap().to_string()
    }

    async fn sql(data: &str, query: &str) -> String {
        let events = Events::open(data, OpenOptions::default()).await.unwrap();
        crate::sql::register_functions(&events);
        let batches = events
            .ctx
            .sql(query)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    fn opts<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_have_their_schema_and_match_the_table_functions() {
        use serde_json::json;
        let data = store("all", "retention/events.ndjson");
        let s = scope(&data);
        let week: RetentionOptions = opts(json!({"period": "week"}));
        let cases: Vec<(Answer, &str)> = vec![
            (
                week.compute(&s).await.unwrap(),
                "SELECT * FROM retention('week')",
            ),
            (
                opts::<LtvOptions>(json!({"period": "week"}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM ltv('week')",
            ),
            (
                opts::<KpiOptions>(json!({"period": "week"}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM kpi('week')",
            ),
            (
                opts::<LifecycleOptions>(json!({"period": "week"}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM lifecycle('week')",
            ),
            (
                opts::<LifecycleOptions>(json!({"stages": true}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM lifecycle_stages()",
            ),
            (
                opts::<StickinessOptions>(json!({"period": "week"}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM stickiness('week')",
            ),
            (
                opts::<FunnelOptions>(json!({"steps": "signup, purchase", "window": "30d"}))
                    .compute(&s)
                    .await
                    .unwrap(),
                "SELECT * FROM funnel('signup, purchase', '30d')",
            ),
        ];
        for (answer, query) in cases {
            assert!(answer.table.num_rows() > 0, "{query}: no rows");
            assert_eq!(text(&answer.table), sql(&data, query).await, "{query}");
        }
        // A segment count: one row, and the users the segment() function lists.
        let count = opts::<SegmentOptions>(json!({"expr": "F >= 1"}))
            .compute(&s)
            .await
            .unwrap();
        let listed = sql(&data, "SELECT count(*) AS n FROM segment('F >= 1')").await;
        let b = count.table.concat().unwrap();
        assert_eq!(b.schema(), segment_count_schema());
        let users = b
            .column(1)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .value(0);
        assert!(users > 0);
        assert!(listed.contains(&format!("| {users} ")), "{listed}");
        // RFM: the segments, then the grid beside them.
        let rfm = RfmOptions::default().compute(&s).await.unwrap();
        assert_eq!(rfm.table.schema, crate::rfm::segments_schema());
        text(&rfm.table);
        assert!(rfm.extra.is_some_and(|g| g.num_rows() > 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_readout_answers_its_table_function() {
        let data = store("abtest", "abtest/events.ndjson");
        let o: AbtestOptions =
            opts(serde_json::json!({"metrics": ["count:purchase"], "by": "variant"}));
        let answer = o.compute(&scope(&data)).await.unwrap();
        assert_eq!(answer.table.schema, crate::abtest::readout::schema());
        assert_eq!(
            text(&answer.table),
            sql(&data, "SELECT * FROM abtest('count:purchase', 'variant')").await
        );
        // A control that is no arm is the request's fault.
        let bad: AbtestOptions = opts(
            serde_json::json!({"metrics": ["count:purchase"], "by": "variant", "control": "Z"}),
        );
        let err = bad.compute(&scope(&data)).await.unwrap_err();
        assert!(err.is_bad_request(), "{err}");
        assert!(
            err.to_string().contains("--control `Z` is not an arm"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_rfm_set_is_built_in() {
        // Tests run in crates/engine: no `queries/` here, so the built-in
        // copy answers, and it is the repository's file.
        assert!(!std::path::Path::new("queries/rfm_segments.seg").exists());
        let on_disk = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../queries/rfm_segments.seg"),
        )
        .unwrap();
        assert_eq!(
            read_segment_file("queries/rfm_segments.seg").unwrap(),
            on_disk
        );
        assert!(read_segment_file("queries/nope.seg").is_err());
        assert!(read_segment_file("elsewhere/rfm_segments.seg").is_err());
    }
}
