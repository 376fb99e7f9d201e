//! An A/B readout from events as a typed request: arms from a column, each
//! metric's per-arm statistics over the events since each user's exposure,
//! and the readout rows as an Arrow batch with a declared schema (what
//! `tenure abtest --format json` prints and `abtest()` returns in SQL).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tenure_dsl::{CompileContext, Resolver, Segment, SegmentLibrary};
use tenure_stats::{ArmData, ArmSummary, MetricReadout, MetricSummary};

use super::{ColumnSums, Exposures, Metric, MetricSpec};
use crate::features::FeatureSpec;
use crate::funnel::{FunnelSpec, Modes};
use crate::lifecycle::Thresholds;
use crate::table::Events;
use crate::userstats::PurchaseSpec;
use crate::{EngineError, OpenOptions, Result};

/// What to read out: the arm column, the metrics, and the purchase event
/// (R, F and M of segment metrics).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AbtestRequest {
    /// Column whose value names a user's arm.
    pub by: String,
    /// The metrics, in readout order.
    pub metrics: Vec<Metric>,
    /// The purchase event.
    pub purchase_event: String,
    /// CUPED: adjust `count:` and `sum:` metrics by the same metric over
    /// this many days before each user's exposure.
    #[serde(default)]
    pub cuped_days: Option<u32>,
    /// Only users matching this segment expression as of their exposure
    /// (on their events before it) are in the test.
    #[serde(default)]
    pub population: Option<String>,
    /// Read every metric once per value of this column (the value on a
    /// user's events since exposure; see [`Exposures::by_dimension`]).
    #[serde(default)]
    pub dimension: Option<String>,
}

/// Assigns arms over `events` (its range), then computes every metric's
/// per-arm statistics. `@name` references of segment metrics resolve in
/// `library`.
pub async fn summaries(
    events: &Events,
    request: &AbtestRequest,
    library: Option<&SegmentLibrary>,
) -> Result<(Vec<MetricSummary>, Exposures)> {
    let (metrics, exposures, _) = summaries_by(events, request, library).await?;
    Ok((metrics, exposures))
}

/// A metric's per-user values, indexed by user key, before they are summed
/// per arm (once per dimension value with `--by-dimension`).
enum PerUser {
    /// Exact values in units of 10^-scale.
    Exact(Vec<i128>, u32),
    /// Floating-point values.
    Float(Vec<f64>),
    /// Conversions.
    Flags(Vec<bool>),
    /// Numerators and denominators.
    Ratio(Vec<f64>, Vec<f64>),
    /// A metric with its pre-exposure covariate (CUPED).
    Adjusted(Box<PerUser>, Vec<f64>, Vec<f64>),
}

impl PerUser {
    /// The values as floats (a count's or a sum's).
    fn floats(&self) -> Result<Vec<f64>> {
        match self {
            PerUser::Exact(v, scale) => Ok(v
                .iter()
                .map(|&x| super::decimal_to_f64(x, *scale))
                .collect()),
            PerUser::Float(v) => Ok(v.clone()),
            _ => Err(EngineError::Internal(
                "only counts and sums have per-user floats".into(),
            )),
        }
    }

    fn arms(&self, x: &Exposures) -> Result<Vec<ArmSummary>> {
        Ok(match self {
            PerUser::Exact(v, scale) => x.exact_mean(v, *scale)?,
            PerUser::Float(v) => x.float_mean(v),
            PerUser::Flags(v) => x.proportion(v),
            PerUser::Ratio(n, d) => x.ratio(n, d),
            PerUser::Adjusted(base, post, pre) => x.adjusted(base.arms(x)?, post, pre),
        })
    }
}

/// Like [`summaries`], and with `request.dimension` one summary per metric
/// and dimension value (metric-major), with the value of each.
pub async fn summaries_by(
    events: &Events,
    request: &AbtestRequest,
    library: Option<&SegmentLibrary>,
) -> Result<(Vec<MetricSummary>, Exposures, Vec<Option<String>>)> {
    let (_, as_of) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let by = &request.by;
    // Segment expressions are checked before the scans start.
    let catalog = crate::features::catalog(events);
    let mut resolver = Resolver::new(&catalog);
    if let Some(lib) = library {
        resolver = resolver.with_library(lib);
    }
    let mut segments = Vec::new();
    for m in &request.metrics {
        if let MetricSpec::Segment { expr } = &m.spec {
            segments.push(
                Segment::new(expr, &resolver, &CompileContext::new(as_of))
                    .map_err(|e| EngineError::from_dsl(e, expr))?,
            );
        }
    }
    let mut exposures = super::exposures(events, by).await?;
    let feature_spec = FeatureSpec {
        as_of,
        purchase: PurchaseSpec {
            event: request.purchase_event.clone(),
        },
        thresholds: Thresholds::default(),
        buyers_only: false,
        scoring: Default::default(),
    };
    if let Some(expr) = &request.population {
        let segment = Segment::new(expr, &resolver, &CompileContext::new(as_of))
            .map_err(|e| EngineError::from_dsl(e, expr))?;
        let history = pre_exposure(events, &exposures, None).await?;
        let keys: Vec<u32> = (0..exposures.arm_of.len() as u32)
            .filter(|&k| (exposures.arm_of[k as usize] as usize) < exposures.arms.len())
            .collect();
        let matches = crate::features::matches_as_of_each(
            &history,
            &segment,
            &exposures.exposed_at,
            &keys,
            &feature_spec,
        )
        .await
        .map_err(|e| match e {
            EngineError::BadRequest(m) => {
                EngineError::BadRequest(format!("--population `{expr}`: {m}"))
            }
            other => other,
        })?;
        exposures = exposures.population(&matches);
    }
    if exposures.arms.len() < 2 {
        return Err(EngineError::BadRequest(match exposures.arms.as_slice() {
            [] => format!(
                "no event in range has a `{by}` value, so no user is in an arm; \
                 check --by and --from/--to"
            ),
            [one] => format!(
                "every user with a `{by}` value is in arm `{one}`; an A/B test needs at \
                 least two arms"
            ),
            _ => unreachable!("fewer than two arms"),
        }));
    }
    let restricted = exposures.restrict(events).await?;
    let (from, to) = (events.options.from, events.options.to);
    // CUPED's covariate: each user's events in the days before exposure
    // (also before --from: the range limits exposures, not the history).
    let before = match request.cuped_days {
        None => None,
        Some(days) => Some(pre_exposure(events, &exposures, Some(days)).await?),
    };
    let views: Vec<(Option<String>, Exposures)> = match &request.dimension {
        None => vec![(None, exposures.clone())],
        Some(column) => exposures.by_dimension(&restricted, column).await?,
    };
    let mut segments = segments.into_iter();
    let mut out = Vec::new();
    let mut dimensions = Vec::new();
    for m in &request.metrics {
        let values: PerUser = match &m.spec {
            MetricSpec::Count { .. } | MetricSpec::Sum { .. } => {
                let base = count_or_sum(events, &restricted, &m.spec, true).await?;
                match &before {
                    None => base,
                    Some(pre) => {
                        // The event was checked on the post values: a
                        // covariate of zeros is no typo.
                        let covariate = count_or_sum(events, pre, &m.spec, false).await?;
                        let post = base.floats()?;
                        PerUser::Adjusted(Box::new(base), post, covariate.floats()?)
                    }
                }
            }
            MetricSpec::Ratio { num, den } => {
                let num = count_or_sum(events, &restricted, num, true).await?;
                let den = count_or_sum(events, &restricted, den, true).await?;
                PerUser::Ratio(num.floats()?, den.floats()?)
            }
            MetricSpec::Segment { .. } => {
                let segment = segments.next().expect("one compiled segment per metric");
                let matches = super::segment_matches(&restricted, &segment, &feature_spec).await?;
                PerUser::Flags(matches)
            }
            MetricSpec::Funnel {
                steps,
                window_micros,
            } => {
                // Users enter in range; later steps count until entry + window,
                // even past --to, as in `tenure funnel`.
                let later = match to {
                    None => restricted.clone(),
                    Some(t) => {
                        let wider = Events::open(
                            &events.store.url,
                            OpenOptions {
                                to: Some(t.saturating_add(*window_micros).saturating_add(1)),
                                ..events.options.clone()
                            },
                        )
                        .await?;
                        exposures.restrict(&wider).await?
                    }
                };
                let parsed = steps
                    .iter()
                    .map(|s| crate::funnel::syntax::parse_step(&later, s))
                    .collect::<Result<Vec<_>>>()?;
                let spec = FunnelSpec {
                    steps: parsed,
                    window_us: *window_micros,
                    modes: Modes::default(),
                    exclusions: Vec::new(),
                    by: None,
                    user_groups: None,
                    hold: None,
                    entry_from: from,
                    entry_to: to,
                };
                PerUser::Flags(crate::funnel::converted(&later, &spec).await?)
            }
        };
        for (dimension, view) in &views {
            out.push(MetricSummary {
                name: m.text.clone(),
                arms: values.arms(view)?,
            });
            dimensions.push(dimension.clone());
        }
    }
    Ok((out, exposures, dimensions))
}

/// An event name that never occurs in range is most likely a typo: say so,
/// with the nearest names, rather than read out a metric that is 0 everywhere.
async fn check_event_exists(events: &Events, event: &str) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::logical_expr::{cast, col};
    let batches = events
        .in_range()
        .await?
        .select(vec![cast(col("event"), DataType::Utf8).alias("event")])?
        .distinct()?
        .collect()
        .await?;
    let mut names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_string::<i32>();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if names.iter().any(|n| n == event) {
        return Ok(());
    }
    names.sort();
    let hint = names
        .iter()
        .map(|n| (strsim::levenshtein(n, event), n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    Err(EngineError::BadRequest(format!(
        "count:{event}: no `{event}` events in range; {hint}(events: {})",
        names.join(", ")
    )))
}

/// The store limited to each exposed user's events before their exposure:
/// the `days` before it, or all of them.
async fn pre_exposure(events: &Events, exposures: &Exposures, days: Option<u32>) -> Result<Events> {
    let wide = match events.options.from {
        None => events.clone(),
        Some(_) => {
            Events::open_snapshot(
                &events.store.url,
                events.snapshot.clone(),
                OpenOptions {
                    from: None,
                    ..events.options.clone()
                },
            )
            .await?
        }
    };
    let span = days.map_or(i64::MAX, |d| i64::from(d) * 86_400_000_000);
    let end: Vec<i64> = exposures
        .exposed_at
        .iter()
        .map(|&t| {
            if t == crate::userstats::NEVER {
                i64::MIN
            } else {
                t
            }
        })
        .collect();
    let start: Vec<i64> = end
        .iter()
        .map(|&t| {
            if t == i64::MIN {
                i64::MAX
            } else {
                t.saturating_sub(span)
            }
        })
        .collect();
    Ok(Events {
        since: Some(Arc::new(start)),
        before: Some(Arc::new(end)),
        ..wide
    })
}

/// Per-user values of a count or sum metric (also the parts of a ratio and
/// CUPED's covariate); with `check`, a count that is zero for everyone makes
/// sure the event exists at all (a typo is said, not read out as zeros).
async fn count_or_sum(
    events: &Events,
    restricted: &Events,
    spec: &MetricSpec,
    check: bool,
) -> Result<PerUser> {
    Ok(match spec {
        MetricSpec::Count { event } => {
            let counts = super::event_counts(restricted, event).await?;
            if check && counts.iter().all(|&c| c == 0) {
                check_event_exists(events, event).await?;
            }
            PerUser::Exact(counts, 0)
        }
        MetricSpec::Sum { column } => match super::column_sums(restricted, column).await? {
            ColumnSums::Exact { values, scale } => PerUser::Exact(values, scale),
            ColumnSums::Float(values) => PerUser::Float(values),
        },
        _ => {
            return Err(EngineError::Internal(
                "a ratio's part or a CUPED metric is a count or a sum".into(),
            ));
        }
    })
}

/// An arm's raw numbers: conversions, or sum and sum of squares (of the
/// numerator, for a ratio; after exposure, for CUPED).
pub type Raw = (Option<u64>, Option<f64>, Option<f64>);

/// An arm's [`Raw`] numbers.
pub fn raw_numbers(data: &ArmData) -> Raw {
    match *data {
        ArmData::Proportion { conversions, .. } => (Some(conversions), None, None),
        ArmData::Mean {
            sum, sum_squares, ..
        } => (None, Some(sum), Some(sum_squares)),
        ArmData::Ratio {
            num_sum,
            num_sum_squares,
            ..
        } => (None, Some(num_sum), Some(num_sum_squares)),
        ArmData::Adjusted { ref post, .. } => raw_numbers(post),
    }
}

/// The readout's columns, one row per metric and arm (documented in
/// `tenure abtest --help` and the README).
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        use DataType::{Boolean, Float64, UInt64, Utf8};
        let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
        Arc::new(Schema::new(vec![
            f("metric", Utf8, false),
            f("kind", Utf8, false),
            f("arm", Utf8, false),
            f("is_control", Boolean, false),
            f("users", UInt64, false),
            f("conversions", UInt64, true),
            f("sum", Float64, true),
            f("sum_squares", Float64, true),
            f("value", Float64, true),
            f("difference", Utf8, false),
            f("lift", Float64, true),
            f("std_error", Float64, true),
            f("ci_lower", Float64, true),
            f("ci_upper", Float64, true),
            f("p_value", Float64, true),
            f("p_value_adjusted", Float64, true),
            f("significant", Boolean, true),
            f("chance_to_win", Float64, true),
            f("risk_control", Float64, true),
            f("risk_treatment", Float64, true),
            f("no_result", Utf8, true),
            f("verdict", Utf8, false),
            f("srm_status", Utf8, false),
            f("srm_p_value", Float64, false),
            f("srm_verdict", Utf8, false),
            f("alpha", Float64, false),
            f("sided", Utf8, false),
            f("sequential", Float64, true),
            f("correction", Utf8, false),
            f("multi_arm_users", UInt64, true),
            f("dimension", Utf8, true),
        ]))
    });
    SCHEMA.clone()
}

/// The readout as rows of [`schema`]: per metric, its arms, control first.
/// `exposures` is absent for a readout of given per-arm numbers.
pub fn batch(
    readouts: &[MetricReadout],
    summaries: &[MetricSummary],
    exposures: Option<&Exposures>,
    dimensions: &[Option<String>],
) -> Result<RecordBatch> {
    let dimension_of: Vec<Option<&str>> = readouts
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            let d = dimensions.get(i).and_then(|d| d.as_deref());
            m.arms.iter().map(move |_| d)
        })
        .collect();
    let rows: Vec<(&MetricReadout, &tenure_stats::ArmReadout, Raw)> = readouts
        .iter()
        .zip(summaries)
        .flat_map(|(m, summary)| {
            m.arms.iter().map(move |r| {
                let raw = summary
                    .arms
                    .iter()
                    .find(|a| a.arm == r.arm)
                    .map(|a| raw_numbers(&a.data))
                    .unwrap_or((None, None, None));
                (m, r, raw)
            })
        })
        .collect();
    let text = |f: &dyn Fn(&MetricReadout, &tenure_stats::ArmReadout) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(m, r, _)| f(m, r)),
        ))
    };
    let float = |f: &dyn Fn(&MetricReadout, &tenure_stats::ArmReadout) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|(m, r, _)| f(m, r)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|m, _| m.metric.clone()),
        text(&|m, _| m.kind.as_str().into()),
        text(&|_, r| r.arm.clone()),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, r, _)| Some(r.is_control)),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, r, _)| r.users),
        )),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|(_, _, raw)| raw.0))),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|(_, _, raw)| raw.1),
        )),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|(_, _, raw)| raw.2),
        )),
        float(&|_, r| r.value),
        text(&|m, _| m.difference.as_str().into()),
        float(&|_, r| r.lift),
        float(&|_, r| r.std_error),
        float(&|_, r| r.ci_lower),
        float(&|_, r| r.ci_upper),
        float(&|_, r| r.p_value),
        float(&|_, r| r.p_value_adjusted),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, r, _)| r.significant),
        )),
        float(&|_, r| r.chance_to_win),
        float(&|_, r| r.risk_control),
        float(&|_, r| r.risk_treatment),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, r, _)| r.no_result.map(|n| n.code())),
        )),
        text(&|_, r| r.verdict.clone()),
        text(&|m, _| m.srm.status.as_str().into()),
        float(&|m, _| Some(m.srm.p_value)),
        text(&|m, _| m.srm_verdict.clone()),
        float(&|m, _| Some(m.alpha)),
        text(&|m, _| m.sided.as_str().into()),
        float(&|m, _| m.sequential),
        text(&|m, _| m.correction.as_str().into()),
        Arc::new(UInt64Array::from_iter(
            rows.iter().map(|_| exposures.map(|e| e.multiple)),
        )),
        Arc::new(StringArray::from_iter(dimension_of)),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
