//! What the live state must keep: the named segments, the features they use,
//! and how each property an event carries is typed in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tenure_dsl::{
    Aggregate, Catalog, EventFilter, Feature, LifecycleAxis, Literal, ResolvedExpr, SegmentLibrary,
    SegmentLibraryBuilder,
};

/// At most this many named segments are kept live (one bit each per user).
pub const MAX_SEGMENTS: usize = 64;

/// How a property is stored, which decides how a condition reads it (as
/// `tenure segment` does over the store's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropKind {
    /// A text column (`variant`, declared strings).
    Text,
    /// An exact number with this many decimal places (`revenue`: 2; declared
    /// integers: 0; declared decimals: 2).
    Exact(u32),
    /// A float column.
    Float,
    /// A boolean column.
    Bool,
    /// A timestamp column.
    Time,
}

impl PropKind {
    fn numeric(self) -> bool {
        matches!(self, PropKind::Exact(_) | PropKind::Float)
    }
}

/// The store's side of the evaluation: purchase event, lifecycle thresholds,
/// typed columns. `Default` is the store default (`purchase`, the DESIGN.md
/// thresholds, `revenue` and `variant` only).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The purchase event (R, F, M, activity stage).
    pub purchase_event: String,
    /// Tenure stage bounds in days (new, growing, mature; veteran beyond).
    pub tenure_days: [i64; 3],
    /// Activity stage bounds in days (active, cooling, silent; churned beyond).
    pub activity_days: [i64; 3],
    /// Typed columns by name: `revenue`, `variant` and declared properties.
    /// Any other name in a condition is a key of the `properties` JSON.
    pub typed: BTreeMap<String, PropKind>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        let typed = [
            ("revenue".to_string(), PropKind::Exact(2)),
            ("variant".to_string(), PropKind::Text),
        ]
        .into_iter()
        .collect();
        Self {
            purchase_event: "purchase".into(),
            tenure_days: [7, 30, 90],
            activity_days: [30, 90, 180],
            typed,
        }
    }
}

/// One named segment kept live.
#[derive(Debug, Clone)]
pub struct LiveSegment {
    /// Its name.
    pub name: String,
    /// Its definition.
    pub expr: Arc<ResolvedExpr>,
    /// The features it reads (reported with its transitions).
    pub features: Vec<Feature>,
}

/// A `did e [within w] [where ...]` count kept per user.
#[derive(Debug, Clone)]
pub(crate) struct CountSpec {
    pub feature: Feature,
    /// The feature row's key of an unfiltered count.
    pub key: (String, Option<tenure_dsl::ast::Duration>),
    pub event: String,
    pub within: Option<i64>,
    pub filter: Option<EventFilter>,
}

/// A `sum(p)` / `avg(p)` kept per user.
#[derive(Debug, Clone)]
pub(crate) struct TotalSpec {
    pub feature: Feature,
    pub property: String,
    pub within: Option<i64>,
    /// Decimal places of an exact column; `None` for a float column.
    pub scale: Option<u32>,
}

/// The segments and everything their evaluation needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) config: LiveConfig,
    pub(crate) segments: Vec<LiveSegment>,
    pub(crate) counts: Vec<CountSpec>,
    pub(crate) totals: Vec<TotalSpec>,
    /// Latest-value properties.
    pub(crate) props: Vec<String>,
    /// R, F, M or the activity stage is read.
    pub(crate) purchases: bool,
    /// R itself is read (it changes every day after a purchase).
    pub(crate) recency: bool,
    /// The activity stage is read.
    pub(crate) activity: bool,
    /// The tenure stage is read.
    pub(crate) tenure: bool,
    /// The first event's time is read (`first_seen`, the tenure stage).
    pub(crate) reads_first: bool,
    /// The last event's time is read (`last_seen`).
    pub(crate) reads_last: bool,
    /// `first_seen within w` windows (microseconds).
    pub(crate) first_within: Vec<i64>,
    /// `last_seen within w` windows.
    pub(crate) last_within: Vec<i64>,
    /// Property names events must carry (conditions, totals, latest values).
    pub(crate) wanted: BTreeSet<String>,
}

impl Plan {
    /// Parses segment files (`(name, text)` pairs) and checks that every
    /// segment can be kept live. Errors are the DSL's (rendered with the
    /// file's text) or a sentence naming the segment and the feature.
    pub fn new(files: &[(String, String)], config: LiveConfig) -> Result<Plan, String> {
        let catalog = Catalog {
            properties: Some(config.typed.keys().cloned().collect()),
            events: None,
        };
        let mut builder = SegmentLibraryBuilder::default();
        for (file, text) in files {
            builder.add_source(file, text).map_err(|e| e.render(text))?;
        }
        let library: SegmentLibrary = builder.build(&catalog).map_err(|e| e.render(""))?;
        Plan::of(&library, config)
    }

    /// The plan of resolved segments.
    pub fn of(library: &SegmentLibrary, config: LiveConfig) -> Result<Plan, String> {
        let named = library.segments();
        if named.is_empty() {
            return Err("the segment file defines no segment (`segment name = expr`)".into());
        }
        if named.len() > MAX_SEGMENTS {
            return Err(format!(
                "{} segments defined; at most {MAX_SEGMENTS} are kept live per server",
                named.len()
            ));
        }
        let mut plan = Plan {
            config,
            segments: Vec::new(),
            counts: Vec::new(),
            totals: Vec::new(),
            props: Vec::new(),
            purchases: false,
            recency: false,
            activity: false,
            tenure: false,
            reads_first: false,
            reads_last: false,
            first_within: Vec::new(),
            last_within: Vec::new(),
            wanted: BTreeSet::new(),
        };
        let mut all = BTreeSet::new();
        for s in named {
            let features: Vec<Feature> = tenure_dsl::features(&s.expr).into_iter().collect();
            for f in &features {
                check_feature(&s.name, f, &plan.config)?;
            }
            all.extend(features.iter().cloned());
            windows(&s.expr, &mut plan.first_within, &mut plan.last_within);
            plan.segments.push(LiveSegment {
                name: s.name.clone(),
                expr: Arc::clone(&s.expr),
                features,
            });
        }
        plan.first_within.sort_unstable();
        plan.first_within.dedup();
        plan.last_within.sort_unstable();
        plan.last_within.dedup();
        for f in all {
            match &f {
                Feature::Recency => {
                    plan.purchases = true;
                    plan.recency = true;
                }
                Feature::Frequency | Feature::Monetary => plan.purchases = true,
                Feature::Lifecycle(LifecycleAxis::Activity) => {
                    plan.purchases = true;
                    plan.activity = true;
                }
                Feature::Lifecycle(LifecycleAxis::Tenure) => {
                    plan.tenure = true;
                    plan.reads_first = true;
                }
                Feature::FirstSeen => plan.reads_first = true,
                Feature::LastSeen => plan.reads_last = true,
                Feature::Property(name) => {
                    plan.wanted.insert(name.clone());
                    plan.props.push(name.clone());
                }
                Feature::EventCount {
                    event,
                    within,
                    filter,
                } => {
                    if let Some(f) = filter {
                        filter_names(f, &mut plan.wanted);
                    }
                    plan.counts.push(CountSpec {
                        key: (event.clone(), *within),
                        feature: f.clone(),
                        event: event.clone(),
                        within: within.map(|d| d.micros()),
                        filter: filter.clone(),
                    });
                }
                Feature::Total {
                    property, within, ..
                } => {
                    let scale = match plan.config.typed.get(property) {
                        Some(PropKind::Exact(s)) => Some(*s),
                        _ => None,
                    };
                    plan.wanted.insert(property.clone());
                    plan.totals.push(TotalSpec {
                        feature: f.clone(),
                        property: property.clone(),
                        within: within.map(|d| d.micros()),
                        scale,
                    });
                }
                _ => {}
            }
        }
        if plan.purchases {
            plan.wanted.insert("revenue".into());
        }
        Ok(plan)
    }

    /// The segments, in definition order.
    pub fn segments(&self) -> &[LiveSegment] {
        &self.segments
    }

    /// Property names the evaluation reads from events: give each
    /// [`crate::LiveEvent`] these (those it has), no others are looked at.
    pub fn wanted_properties(&self) -> impl Iterator<Item = &str> {
        self.wanted.iter().map(String::as_str)
    }

    /// How a property is typed (`None`: a key of the `properties` JSON).
    pub fn kind_of(&self, property: &str) -> Option<PropKind> {
        self.config.typed.get(property).copied()
    }

    /// The store-side configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }
}

/// Refuses what cannot be kept per user: population-relative features and
/// conditions `tenure segment` refuses over this store.
fn check_feature(segment: &str, f: &Feature, config: &LiveConfig) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "segment `{segment}`: `{}` cannot be kept live: {why}",
            f.column_name()
        ))
    };
    match f {
        Feature::RScore | Feature::FScore | Feature::MScore | Feature::Mean(_) => refuse(
            "it ranks or averages over all users, so one user's event moves everyone's \
             value; compare R, F and M with fixed thresholds instead (`R <= 30d and F >= 5`)",
        ),
        Feature::PAlive | Feature::Clv | Feature::ExpectedPurchases(_) => refuse(
            "predictions are fitted over all buyers; use `tenure segment` or `tenure clv` for them",
        ),
        Feature::Property(name) if !config.typed.contains_key(name) => refuse(&format!(
            "`{name}` is not a typed column of this store (declare it in the ingest config)"
        )),
        Feature::Total { property, .. } => match config.typed.get(property) {
            Some(k) if k.numeric() => Ok(()),
            _ => refuse(&format!(
                "sums and averages read revenue and numeric declared properties, and `{property}` is not one"
            )),
        },
        Feature::EventCount {
            filter: Some(filter),
            ..
        } => check_filter(segment, filter, config),
        _ => Ok(()),
    }
}

fn check_filter(segment: &str, f: &EventFilter, config: &LiveConfig) -> Result<(), String> {
    match f {
        EventFilter::And(items) | EventFilter::Or(items) => items
            .iter()
            .try_for_each(|i| check_filter(segment, i, config)),
        EventFilter::Not(inner) => check_filter(segment, inner, config),
        EventFilter::Compare {
            property, value, ..
        } => check_literal(segment, property, value, config),
        EventFilter::In {
            property, values, ..
        } => {
            if values.is_empty() {
                return Err(format!(
                    "segment `{segment}`: `{property} in ()` needs a value"
                ));
            }
            let numbers = values
                .iter()
                .filter(|v| matches!(v, Literal::Number(_)))
                .count();
            if numbers != 0 && numbers != values.len() {
                return Err(format!(
                    "segment `{segment}`: `{property} in (...)`: mix of numbers and text; use one kind"
                ));
            }
            values
                .iter()
                .try_for_each(|v| check_literal(segment, property, v, config))
        }
    }
}

fn check_literal(
    segment: &str,
    property: &str,
    value: &Literal,
    config: &LiveConfig,
) -> Result<(), String> {
    let numeric = config.typed.get(property).is_some_and(|k| k.numeric());
    if numeric && matches!(value, Literal::Text(_)) {
        return Err(format!(
            "segment `{segment}`: `{property}` is a number in this store; compare it with a number"
        ));
    }
    Ok(())
}

fn filter_names(f: &EventFilter, out: &mut BTreeSet<String>) {
    match f {
        EventFilter::And(items) | EventFilter::Or(items) => {
            items.iter().for_each(|i| filter_names(i, out));
        }
        EventFilter::Not(inner) => filter_names(inner, out),
        EventFilter::Compare { property, .. } | EventFilter::In { property, .. } => {
            out.insert(property.clone());
        }
    }
}

/// Windows of `first_seen within w` / `last_seen within w`.
fn windows(expr: &ResolvedExpr, first: &mut Vec<i64>, last: &mut Vec<i64>) {
    match expr {
        ResolvedExpr::And(items) | ResolvedExpr::Or(items) => {
            items.iter().for_each(|e| windows(e, first, last));
        }
        ResolvedExpr::Not(inner) => windows(inner, first, last),
        ResolvedExpr::Within {
            feature, window, ..
        } => match feature {
            Feature::FirstSeen => first.push(window.micros()),
            Feature::LastSeen => last.push(window.micros()),
            _ => {}
        },
        ResolvedExpr::Segment { body, .. } => windows(body, first, last),
        _ => {}
    }
}

/// Is `aggregate` a mean (NULL over no values)?
pub(crate) fn is_avg(f: &Feature) -> bool {
    matches!(
        f,
        Feature::Total {
            aggregate: Aggregate::Avg,
            ..
        }
    )
}
