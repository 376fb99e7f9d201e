//! From syntax to meaning: looks up every name (metric, property, event, stage,
//! segment), checks types and units (`R < 30d` is fine, `F < 30d` is not), and
//! produces a [`ResolvedExpr`] over [`Feature`]s that compile.rs and eval.rs
//! consume. All "did you mean" suggestions come from here.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::ast::{self, CmpOp, Duration, ExprKind, Span, Spanned, Term, TermKind};
use crate::error::{DslError, NameKind};
use crate::features::{EventFilter, Feature, LIFECYCLE_STAGES, LifecycleAxis, Literal, Metric};
use crate::library::{MAX_EXPANDED_NODES, SegmentLibrary};
use crate::{parser, suggest, timestamp};

/// What the project knows about its data, to catch misspelt names.
///
/// `None` means "not declared": any property (or event) name is accepted, and
/// only names close to a built-in metric are flagged. `Some(set)` closes the
/// world and unknown names get suggestions from the set.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Declared user property names.
    pub properties: Option<BTreeSet<String>>,
    /// Known event names.
    pub events: Option<BTreeSet<String>>,
}

/// A typed constant in a resolved expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Days, counts, scores (Int64 columns).
    Int(i64),
    /// Money in hundredths (a `Decimal128(18, 2)` value).
    Money(i128),
    /// UTC microseconds.
    Time(i64),
    /// Text (properties, lifecycle stages).
    Text(String),
    /// A number as written (predictions: Float64 columns).
    Number(crate::ast::Number),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Money(cents) => {
                let sign = if *cents < 0 { "-" } else { "" };
                let abs = cents.unsigned_abs();
                write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
            }
            Value::Time(micros) => f.write_str(&timestamp::format_utc(*micros)),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A constant.
    Value(Value),
    /// Another feature of a compatible type, e.g. `mean(R)`.
    Feature(Feature),
}

/// A segment expression with every name resolved and every type checked.
///
/// Features are always on the left of comparisons (`30 > R` becomes `R < 30`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedExpr {
    /// All must hold.
    And(Vec<ResolvedExpr>),
    /// One must hold.
    Or(Vec<ResolvedExpr>),
    /// Negation (SQL three-valued: `not NULL` is NULL).
    Not(Box<ResolvedExpr>),
    /// `feature op rhs`. For lifecycle stages, `=` and `!=` treat a missing
    /// stage as a value ("not silent" includes users without a stage), so they
    /// never yield NULL.
    Compare {
        /// The tested feature.
        feature: Feature,
        /// The operator.
        op: CmpOp,
        /// What it is compared with.
        rhs: Operand,
        /// Source text of the condition.
        span: Span,
    },
    /// `feature [not] in (values)`; NULL-safe for lifecycle stages as above.
    InList {
        /// The tested feature.
        feature: Feature,
        /// The list, at least one value.
        values: Vec<Value>,
        /// `not in`.
        negated: bool,
        /// Source text of the condition.
        span: Span,
    },
    /// `feature [not] between low and high`, bounds inclusive.
    Between {
        /// The tested feature.
        feature: Feature,
        /// Lower bound.
        low: Value,
        /// Upper bound.
        high: Value,
        /// `not between`.
        negated: bool,
        /// Source text of the condition.
        span: Span,
    },
    /// `feature within window`: `as_of - window <= feature <= as_of`, for a
    /// timestamp feature.
    Within {
        /// `FirstSeen` or `LastSeen`.
        feature: Feature,
        /// The window.
        window: Duration,
        /// Source text of the condition.
        span: Span,
    },
    /// `@name`, with the named segment's definition inlined.
    Segment {
        /// The segment's name.
        name: String,
        /// Its resolved definition, shared with the library.
        body: Arc<ResolvedExpr>,
        /// The `@name` reference.
        span: Span,
    },
}

/// Resolves `@name` references to the shared definition and the number of
/// nodes it stands for once expanded. The library implements it for finished
/// segments; the library builder implements it to resolve definitions in
/// dependency order and catch cycles.
pub(crate) trait SegmentLookup {
    fn lookup(&mut self, name: &Spanned<String>) -> Result<(Arc<ResolvedExpr>, u64), DslError>;
}

/// No named segments available.
struct NoSegments;

impl SegmentLookup for NoSegments {
    fn lookup(&mut self, name: &Spanned<String>) -> Result<(Arc<ResolvedExpr>, u64), DslError> {
        Err(unknown_segment(name, &[]))
    }
}

pub(crate) fn unknown_segment(name: &Spanned<String>, known: &[&str]) -> DslError {
    DslError::UnknownName {
        span: name.span,
        kind: NameKind::Segment,
        name: name.node.clone(),
        expected: if known.is_empty() {
            "a segment from a loaded segment file (none are loaded)".into()
        } else {
            "a segment defined in a loaded segment file".into()
        },
        suggestions: suggest::similar(&name.node, known.iter().copied()),
        hint: None,
    }
}

/// Resolves expressions against a [`Catalog`] and, optionally, a
/// [`SegmentLibrary`] for `@name` references.
#[derive(Debug, Clone, Copy)]
pub struct Resolver<'a> {
    catalog: &'a Catalog,
    library: Option<&'a SegmentLibrary>,
}

impl<'a> Resolver<'a> {
    /// A resolver for `catalog`, without named segments.
    pub fn new(catalog: &'a Catalog) -> Self {
        Resolver {
            catalog,
            library: None,
        }
    }

    /// The same resolver, with `@name` resolving through `library`.
    pub fn with_library(self, library: &'a SegmentLibrary) -> Self {
        Resolver {
            library: Some(library),
            ..self
        }
    }

    /// Resolves a parsed expression.
    pub fn resolve(&self, expr: &ast::Expr) -> Result<ResolvedExpr, DslError> {
        match self.library {
            Some(library) => resolve_with(expr, self.catalog, &mut LibraryLookup(library)),
            None => resolve_with(expr, self.catalog, &mut NoSegments),
        }
        .map(|(resolved, _)| resolved)
    }

    /// Parses and resolves `src` in one step.
    pub fn parse(&self, src: &str) -> Result<ResolvedExpr, DslError> {
        self.resolve(&parser::parse(src)?)
    }
}

struct LibraryLookup<'a>(&'a SegmentLibrary);

impl SegmentLookup for LibraryLookup<'_> {
    fn lookup(&mut self, name: &Spanned<String>) -> Result<(Arc<ResolvedExpr>, u64), DslError> {
        self.0.get_sized(&name.node).ok_or_else(|| {
            let names: Vec<&str> = self.0.names().collect();
            unknown_segment(name, &names)
        })
    }
}

/// Resolves `expr`; also returns the number of nodes it stands for with every
/// `@name` expanded (at most [`MAX_EXPANDED_NODES`] where it has references).
pub(crate) fn resolve_with(
    expr: &ast::Expr,
    catalog: &Catalog,
    segments: &mut dyn SegmentLookup,
) -> Result<(ResolvedExpr, u64), DslError> {
    let mut ctx = Ctx {
        catalog,
        segments,
        expanded: 0,
    };
    let resolved = ctx.expr(expr)?;
    Ok((resolved, ctx.expanded))
}

/// The value domains the type checker distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Days,
    Count,
    Money,
    Score,
    Time,
    Stage,
    Text,
    Prediction,
    /// A property's sum or mean over events.
    Total,
}

impl Ty {
    fn of(feature: &Feature) -> Ty {
        match feature {
            Feature::Recency | Feature::Mean(Metric::Recency) => Ty::Days,
            Feature::Frequency | Feature::Mean(Metric::Frequency) | Feature::EventCount { .. } => {
                Ty::Count
            }
            Feature::Monetary | Feature::Mean(Metric::Monetary) => Ty::Money,
            Feature::RScore | Feature::FScore | Feature::MScore => Ty::Score,
            Feature::FirstSeen | Feature::LastSeen => Ty::Time,
            Feature::Lifecycle(_) => Ty::Stage,
            Feature::Property(_) => Ty::Text,
            Feature::PAlive | Feature::Clv | Feature::ExpectedPurchases(_) => Ty::Prediction,
            Feature::Total { .. } => Ty::Total,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Ty::Days => "a number of days (`30` or `30d`)",
            Ty::Count => "a whole number",
            Ty::Money => "an amount with at most 2 decimals (`500` or `19.99`)",
            Ty::Score => "a score from 1 to 5",
            Ty::Time => "a date such as \"2024-01-31\"",
            Ty::Stage => {
                "a lifecycle stage (new, growing, mature, veteran, active, cooling, silent, churned)"
            }
            Ty::Text => "a \"string\"",
            Ty::Prediction | Ty::Total => "a number (`0.3`, `200`)",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Ty::Days => "a number of days",
            Ty::Count => "a count",
            Ty::Money => "an amount of money",
            Ty::Score => "a score",
            Ty::Time => "a point in time",
            Ty::Stage => "a lifecycle stage",
            Ty::Text => "text",
            Ty::Prediction => "a prediction",
            Ty::Total => "a sum or mean of a property",
        }
    }
}

/// What a comparison is about, before the other side says which lifecycle axis.
#[derive(Debug, Clone)]
enum Subject {
    Feature(Feature),
    Lifecycle,
}

impl Subject {
    fn ty(&self) -> Ty {
        match self {
            Subject::Feature(f) => Ty::of(f),
            Subject::Lifecycle => Ty::Stage,
        }
    }
}

/// Names of built-in features, in suggestion order.
const BUILTIN_NAMES: &[&str] = &[
    "R",
    "F",
    "M",
    "recency",
    "frequency",
    "monetary",
    "first_seen",
    "last_seen",
    "lifecycle",
    "r_score",
    "f_score",
    "m_score",
    "p_alive",
    "clv",
];

/// Suggestions for a misspelt metric, with the one-letter alias first where
/// there is one (`Freq` -> `F` or `frequency`).
fn metric_suggestions<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in suggest::similar(name, candidates) {
        let alias = match s.as_str() {
            "recency" => Some("R"),
            "frequency" => Some("F"),
            "monetary" => Some("M"),
            _ => None,
        };
        for candidate in alias.into_iter().chain([s.as_str()]) {
            if !out.iter().any(|o| o == candidate) {
                out.push(candidate.to_owned());
            }
        }
    }
    out
}

fn builtin(name: &str) -> Option<Subject> {
    let feature = match name.to_ascii_lowercase().as_str() {
        "r" | "recency" => Feature::Recency,
        "f" | "frequency" => Feature::Frequency,
        "m" | "monetary" => Feature::Monetary,
        "first_seen" => Feature::FirstSeen,
        "last_seen" => Feature::LastSeen,
        "r_score" => Feature::RScore,
        "f_score" => Feature::FScore,
        "m_score" => Feature::MScore,
        "p_alive" => Feature::PAlive,
        "clv" => Feature::Clv,
        "lifecycle" => return Some(Subject::Lifecycle),
        _ => return None,
    };
    Some(Subject::Feature(feature))
}

fn is_literal(term: &Term) -> bool {
    matches!(
        term.kind,
        TermKind::Number(_) | TermKind::Duration(_) | TermKind::String(_)
    )
}

fn type_error(span: Span, message: String, expected: &str, hint: Option<String>) -> DslError {
    DslError::Type {
        span,
        message,
        expected: expected.to_owned(),
        hint,
    }
}

struct Ctx<'a, 's> {
    catalog: &'a Catalog,
    segments: &'s mut dyn SegmentLookup,
    /// Nodes resolved so far, each `@name` counting as its whole expansion.
    expanded: u64,
}

impl Ctx<'_, '_> {
    fn expr(&mut self, expr: &ast::Expr) -> Result<ResolvedExpr, DslError> {
        let span = expr.span;
        if !matches!(expr.kind, ExprKind::SegmentRef(_)) {
            self.expanded = self.expanded.saturating_add(1);
        }
        match &expr.kind {
            ExprKind::And(items) => Ok(ResolvedExpr::And(self.all(items)?)),
            ExprKind::Or(items) => Ok(ResolvedExpr::Or(self.all(items)?)),
            ExprKind::Not(inner) => Ok(ResolvedExpr::Not(Box::new(self.expr(inner)?))),
            ExprKind::Compare { left, op, right } => self.compare(left, *op, right, span),
            ExprKind::InList {
                term,
                negated,
                items,
            } => self.in_list(term, *negated, items, span),
            ExprKind::Between {
                term,
                negated,
                low,
                high,
            } => self.between(term, *negated, low, high, span),
            ExprKind::Within { term, window } => self.within(term, window, span),
            ExprKind::Did {
                event,
                filter,
                count,
                within,
            } => self.did(
                event,
                filter.as_deref(),
                count.as_ref(),
                within.as_ref(),
                span,
            ),
            ExprKind::SegmentRef(name) => {
                let (body, size) = self.segments.lookup(name)?;
                self.expanded = self.expanded.saturating_add(size);
                if self.expanded > MAX_EXPANDED_NODES {
                    return Err(expansion_limit(name, size, span));
                }
                Ok(ResolvedExpr::Segment {
                    name: name.node.clone(),
                    body,
                    span,
                })
            }
            ExprKind::Bare(term) => Err(self.bare(term)),
        }
    }

    fn all(&mut self, items: &[ast::Expr]) -> Result<Vec<ResolvedExpr>, DslError> {
        items.iter().map(|e| self.expr(e)).collect()
    }

    /// The feature a name or `mean(...)` term denotes.
    fn subject(&self, term: &Term) -> Result<Subject, DslError> {
        match &term.kind {
            TermKind::Ident(name) => {
                if let Some(subject) = builtin(name) {
                    return Ok(subject);
                }
                self.property(name, term.span, false)
            }
            TermKind::Prop(name) => self.property(name, term.span, true),
            TermKind::ExpectedPurchases(d) => Ok(Subject::Feature(Feature::ExpectedPurchases(*d))),
            TermKind::Total {
                aggregate,
                property,
                within,
            } => {
                if builtin(&property.node).is_some() {
                    return Err(type_error(
                        property.span,
                        format!("`{}` is a metric, not an event property", property.node),
                        "an event property such as `revenue`",
                        Some("`mean(R)` without a window is the mean over all users".into()),
                    ));
                }
                Ok(Subject::Feature(Feature::Total {
                    aggregate: *aggregate,
                    property: property.node.clone(),
                    within: within.as_deref().map(duration).transpose()?,
                }))
            }
            TermKind::Mean(metric) => {
                let candidates = ["R", "F", "M", "recency", "frequency", "monetary"];
                let feature = match builtin(&metric.node) {
                    Some(Subject::Feature(Feature::Recency)) => Metric::Recency,
                    Some(Subject::Feature(Feature::Frequency)) => Metric::Frequency,
                    Some(Subject::Feature(Feature::Monetary)) => Metric::Monetary,
                    // `avg(revenue)`: a property's mean over the user's events.
                    None if metric_suggestions(&metric.node, candidates).is_empty() => {
                        return Ok(Subject::Feature(Feature::Total {
                            aggregate: crate::features::Aggregate::Avg,
                            property: metric.node.clone(),
                            within: None,
                        }));
                    }
                    _ => {
                        return Err(DslError::UnknownName {
                            span: metric.span,
                            kind: NameKind::Metric,
                            name: metric.node.clone(),
                            expected: "`R`, `F` or `M`: means exist for the RFM metrics".into(),
                            suggestions: metric_suggestions(&metric.node, candidates),
                            hint: Some(format!(
                                "or `avg(prop.{})` for a property's mean over each user's events",
                                metric.node
                            )),
                        });
                    }
                };
                Ok(Subject::Feature(Feature::Mean(feature)))
            }
            _ => Err(type_error(
                term.span,
                format!("`{term}` is a value, not something to test"),
                "a metric (R, F, M, ...) or a property",
                None,
            )),
        }
    }

    /// A user property, checked against the catalog. A bare name close to a
    /// built-in metric is taken as a typo unless it is a declared property;
    /// `prop.name` always means the property.
    fn property(&self, name: &str, span: Span, explicit: bool) -> Result<Subject, DslError> {
        let declared = self.catalog.properties.as_ref();
        if declared.is_some_and(|p| p.contains(name)) {
            return Ok(Subject::Feature(Feature::Property(name.to_owned())));
        }
        if !explicit && LIFECYCLE_STAGES.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(type_error(
                span,
                format!("`{name}` is a lifecycle stage, not a metric"),
                "a metric (R, F, M, ...) or a property",
                Some(format!("write `lifecycle = {}`", name.to_ascii_lowercase())),
            ));
        }
        let near_builtin = if explicit {
            Vec::new()
        } else {
            metric_suggestions(name, BUILTIN_NAMES.iter().copied())
        };
        match declared {
            None if near_builtin.is_empty() => {
                Ok(Subject::Feature(Feature::Property(name.to_owned())))
            }
            None => Err(DslError::UnknownName {
                span,
                kind: NameKind::Metric,
                name: name.to_owned(),
                expected: "a metric (R, F, M, recency, first_seen, lifecycle, ...) or a property"
                    .into(),
                suggestions: near_builtin,
                hint: Some(format!(
                    "if `{name}` is a user property, write `prop.{name}`"
                )),
            }),
            Some(props) => {
                let candidates = BUILTIN_NAMES
                    .iter()
                    .copied()
                    .filter(|_| !explicit)
                    .chain(props.iter().map(String::as_str));
                Err(DslError::UnknownName {
                    span,
                    kind: if explicit {
                        NameKind::Property
                    } else {
                        NameKind::Metric
                    },
                    name: name.to_owned(),
                    expected: if explicit {
                        "a declared user property".into()
                    } else {
                        "a metric (R, F, M, recency, first_seen, lifecycle, ...) or a declared property".into()
                    },
                    suggestions: metric_suggestions(name, candidates),
                    hint: None,
                })
            }
        }
    }

    fn compare(
        &mut self,
        left: &Term,
        op: Spanned<CmpOp>,
        right: &Term,
        span: Span,
    ) -> Result<ResolvedExpr, DslError> {
        let (subject_term, op_node, other) = match (is_literal(left), is_literal(right)) {
            (true, true) => {
                return Err(type_error(
                    left.span.to(right.span),
                    "this compares two constants".into(),
                    "a metric or property on one side",
                    None,
                ));
            }
            (true, false) => (right, op.node.flipped(), left),
            _ => (left, op.node, right),
        };
        let subject = self.subject(subject_term)?;
        let ty = subject.ty();
        if ty == Ty::Stage && !op_node.is_equality() {
            return Err(type_error(
                op.span,
                format!(
                    "lifecycle stages have no order; `{}` does not apply",
                    op.node
                ),
                "`=`, `!=` or `in (...)`",
                None,
            ));
        }
        if is_literal(other) || (ty == Ty::Stage && matches!(other.kind, TermKind::Ident(_))) {
            let value = self.value(ty, subject_term, other, op_node)?;
            return Ok(match subject {
                Subject::Feature(feature) => ResolvedExpr::Compare {
                    feature,
                    op: op_node,
                    rhs: Operand::Value(value),
                    span,
                },
                Subject::Lifecycle => ResolvedExpr::Compare {
                    feature: Feature::Lifecycle(stage_axis(&value)),
                    op: op_node,
                    rhs: Operand::Value(value),
                    span,
                },
            });
        }
        if ty == Ty::Text && matches!(other.kind, TermKind::Ident(_)) {
            return Err(type_error(
                other.span,
                format!("`{other}` is compared as a name, not as text"),
                Ty::Text.describe(),
                Some(format!("quote the value: \"{other}\"")),
            ));
        }
        let Subject::Feature(feature) = subject else {
            return Err(type_error(
                other.span,
                format!("`{other}` is not a lifecycle stage"),
                Ty::Stage.describe(),
                None,
            ));
        };
        let Subject::Feature(rhs) = self.subject(other)? else {
            return Err(type_error(
                other.span,
                "`lifecycle` can only be compared with a stage name".into(),
                ty.describe(),
                None,
            ));
        };
        if Ty::of(&rhs) != ty {
            return Err(type_error(
                other.span,
                format!(
                    "`{subject_term}` is {} but `{other}` is {}",
                    ty.noun(),
                    Ty::of(&rhs).noun()
                ),
                ty.describe(),
                None,
            ));
        }
        Ok(ResolvedExpr::Compare {
            feature,
            op: op_node,
            rhs: Operand::Feature(rhs),
            span,
        })
    }

    /// A constant of type `ty`, for comparison with `subject` using `op`.
    fn value(&self, ty: Ty, subject: &Term, term: &Term, op: CmpOp) -> Result<Value, DslError> {
        let mismatch = |hint: Option<String>| {
            type_error(
                term.span,
                format!("`{subject}` is {}; `{term}` is not", ty.noun()),
                ty.describe(),
                hint,
            )
        };
        match (ty, &term.kind) {
            (Ty::Days, TermKind::Number(n)) => n
                .as_i64()
                .map(Value::Int)
                .ok_or_else(|| mismatch(Some("recency is counted in whole days".into()))),
            (Ty::Days, TermKind::Duration(d)) => d.whole_days().map(Value::Int).ok_or_else(|| {
                type_error(
                    term.span,
                    format!("`{term}` is not a whole number of days"),
                    ty.describe(),
                    Some("recency is counted in whole days".into()),
                )
            }),
            (Ty::Count, TermKind::Number(n)) => {
                n.as_i64().map(Value::Int).ok_or_else(|| mismatch(None))
            }
            (Ty::Prediction | Ty::Total, TermKind::Number(n)) => Ok(Value::Number(*n)),
            (
                Ty::Count | Ty::Money | Ty::Score | Ty::Prediction | Ty::Total,
                TermKind::Duration(_),
            ) => Err(type_error(
                term.span,
                format!("`{subject}` is {}, not a duration", ty.noun()),
                ty.describe(),
                Some("durations apply to `R` (recency) and after `within`".into()),
            )),
            (Ty::Money, TermKind::Number(n)) => n
                .as_hundredths()
                .filter(|c| c.unsigned_abs() < 10u128.pow(18))
                .map(Value::Money)
                .ok_or_else(|| mismatch(Some("money is exact to the cent".into()))),
            (Ty::Score, TermKind::Number(n)) => n
                .as_i64()
                .filter(|s| (1..=5).contains(s))
                .map(Value::Int)
                .ok_or_else(|| {
                    mismatch(Some(
                        "scores are quintiles, 1 (lowest) to 5 (highest)".into(),
                    ))
                }),
            (Ty::Time, TermKind::String(s)) => {
                timestamp::parse_utc(s).map(Value::Time).ok_or_else(|| {
                    mismatch(Some(
                        "dates are UTC: \"2024-01-31\" or \"2024-01-31T12:00:00Z\"".into(),
                    ))
                })
            }
            (Ty::Time, TermKind::Duration(d)) => Err(type_error(
                term.span,
                format!("`{subject}` is a point in time, not a duration"),
                ty.describe(),
                Some(format!("for relative time write `{subject} within {d}`")),
            )),
            (Ty::Stage, TermKind::Ident(s) | TermKind::String(s)) => {
                let lower = s.to_ascii_lowercase();
                if LIFECYCLE_STAGES.contains(&lower.as_str()) {
                    Ok(Value::Text(lower))
                } else {
                    Err(DslError::UnknownName {
                        span: term.span,
                        kind: NameKind::Stage,
                        name: s.clone(),
                        expected: Ty::Stage.describe().into(),
                        suggestions: suggest::similar(&lower, LIFECYCLE_STAGES),
                        hint: None,
                    })
                }
            }
            (Ty::Text, TermKind::String(s)) => Ok(Value::Text(s.clone())),
            (Ty::Text, TermKind::Number(n)) if op.is_equality() => Ok(Value::Text(n.to_string())),
            (Ty::Text, TermKind::Number(n)) => Err(type_error(
                term.span,
                format!("`{subject}` is a text property; `{op}` would compare it as text"),
                Ty::Text.describe(),
                Some(format!("to compare as text, quote the number: \"{n}\"")),
            )),
            _ => Err(mismatch(None)),
        }
    }

    fn in_list(
        &mut self,
        term: &Term,
        negated: bool,
        items: &[Term],
        span: Span,
    ) -> Result<ResolvedExpr, DslError> {
        let subject = self.subject(term)?;
        let ty = subject.ty();
        let values = items
            .iter()
            .map(|item| {
                if is_literal(item) || (ty == Ty::Stage && matches!(item.kind, TermKind::Ident(_)))
                {
                    self.value(ty, term, item, CmpOp::Eq)
                } else {
                    Err(type_error(
                        item.span,
                        format!("`{item}` is not a constant"),
                        ty.describe(),
                        (ty == Ty::Text).then(|| format!("quote the value: \"{item}\"")),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Subject::Feature(feature) = subject {
            return Ok(ResolvedExpr::InList {
                feature,
                values,
                negated,
                span,
            });
        }
        // One list per axis; `in` holds if any axis matches, `not in` if none does.
        let mut parts = Vec::new();
        for axis in [LifecycleAxis::Tenure, LifecycleAxis::Activity] {
            let on_axis: Vec<Value> = values
                .iter()
                .filter(|v| stage_axis(v) == axis)
                .cloned()
                .collect();
            if !on_axis.is_empty() {
                parts.push(ResolvedExpr::InList {
                    feature: Feature::Lifecycle(axis),
                    values: on_axis,
                    negated,
                    span,
                });
            }
        }
        Ok(match (parts.len(), negated) {
            (1, _) => parts.remove(0),
            (_, false) => ResolvedExpr::Or(parts),
            (_, true) => ResolvedExpr::And(parts),
        })
    }

    fn between(
        &mut self,
        term: &Term,
        negated: bool,
        low: &Term,
        high: &Term,
        span: Span,
    ) -> Result<ResolvedExpr, DslError> {
        let subject = self.subject(term)?;
        let Subject::Feature(feature) = subject else {
            return Err(type_error(
                term.span,
                "lifecycle stages have no order; `between` does not apply".into(),
                "`lifecycle in (...)`",
                None,
            ));
        };
        let ty = Ty::of(&feature);
        let bound = |t: &Term| {
            if is_literal(t) {
                self.value(ty, term, t, CmpOp::Le)
            } else {
                Err(type_error(
                    t.span,
                    format!("`{t}` is not a constant"),
                    ty.describe(),
                    None,
                ))
            }
        };
        Ok(ResolvedExpr::Between {
            low: bound(low)?,
            high: bound(high)?,
            feature,
            negated,
            span,
        })
    }

    fn within(&mut self, term: &Term, window: &Term, span: Span) -> Result<ResolvedExpr, DslError> {
        let subject = self.subject(term)?;
        let feature = match subject {
            Subject::Feature(f @ (Feature::FirstSeen | Feature::LastSeen)) => f,
            Subject::Feature(Feature::Recency) => {
                return Err(type_error(
                    term.span,
                    "`within` applies to first_seen and last_seen".into(),
                    "`first_seen` or `last_seen`",
                    Some(format!("for recency write `{term} <= {window}`")),
                ));
            }
            _ => {
                return Err(type_error(
                    term.span,
                    format!("`within` applies to first_seen and last_seen, not `{term}`"),
                    "`first_seen` or `last_seen`",
                    None,
                ));
            }
        };
        Ok(ResolvedExpr::Within {
            feature,
            window: duration(window)?,
            span,
        })
    }

    fn did(
        &mut self,
        event: &Spanned<String>,
        filter: Option<&ast::Expr>,
        count: Option<&(Spanned<CmpOp>, Term)>,
        within: Option<&Term>,
        span: Span,
    ) -> Result<ResolvedExpr, DslError> {
        // A name close to a known one is a typo (`did purchse`); a name
        // unlike every known one may be an event that has not happened yet
        // (a trigger written before launch) and counts 0.
        if let Some(events) = &self.catalog.events
            && !events.contains(&event.node)
        {
            let suggestions = suggest::similar(&event.node, events.iter().map(String::as_str));
            if !suggestions.is_empty() {
                return Err(DslError::UnknownName {
                    span: event.span,
                    kind: NameKind::Event,
                    name: event.node.clone(),
                    expected: "an event name seen in the data".into(),
                    suggestions,
                    hint: None,
                });
            }
        }
        let (op, n) = match count {
            None => (CmpOp::Ge, 1),
            Some((op, term)) => {
                let n = match &term.kind {
                    TermKind::Number(n) => n.as_i64().filter(|n| *n >= 0),
                    TermKind::Duration(_) => {
                        return Err(type_error(
                            term.span,
                            "the number of times is a count, not a duration".into(),
                            "a whole number of times",
                            Some(format!(
                                "put the window after `within`: `did {} >= 1 times within {term}`",
                                event.node
                            )),
                        ));
                    }
                    _ => None,
                };
                let n = n.ok_or_else(|| {
                    type_error(
                        term.span,
                        format!("`{term}` is not a number of times"),
                        "a whole number of times (0 or more)",
                        None,
                    )
                })?;
                (op.node, n)
            }
        };
        Ok(ResolvedExpr::Compare {
            feature: Feature::EventCount {
                event: event.node.clone(),
                within: within.map(duration).transpose()?,
                filter: filter.map(event_filter).transpose()?,
            },
            op,
            rhs: Operand::Value(Value::Int(n)),
            span,
        })
    }

    /// Why a term alone is not a condition, as helpfully as possible.
    fn bare(&self, term: &Term) -> DslError {
        if let TermKind::Ident(name) = &term.kind {
            let lower = name.to_ascii_lowercase();
            if LIFECYCLE_STAGES.contains(&lower.as_str()) {
                return type_error(
                    term.span,
                    format!("`{name}` on its own is not a condition"),
                    "a condition",
                    Some(format!("write `lifecycle = {lower}`")),
                );
            }
            if suggest::edit_distance(&lower, "did") == 1 {
                return type_error(
                    term.span,
                    format!("`{name}` on its own is not a condition"),
                    "a condition",
                    Some("did you mean `did`?".into()),
                );
            }
        }
        match self.subject(term) {
            Err(e) => e,
            Ok(_) => type_error(
                term.span,
                format!("`{term}` on its own is not a condition"),
                "a condition such as `R < 30d`, `country = \"CN\"` or `did purchase`",
                Some(format!("compare it, e.g. `{term} = ...`")),
            ),
        }
    }
}

/// The error for a reference that takes its expression past
/// [`MAX_EXPANDED_NODES`]: references multiply (a segment that ORs 8 copies of
/// one that ORs 8 copies ... stands for 8^n conditions), and every later stage
/// works on the expansion.
fn expansion_limit(name: &Spanned<String>, size: u64, reference: Span) -> DslError {
    DslError::Limit {
        span: reference,
        message: format!(
            "with `@{}` this expression stands for more than {MAX_EXPANDED_NODES} conditions (`@{}` alone is {size})",
            name.node, name.node
        ),
        hint: Some(
            "each `@name` is a full copy of its definition, so references multiply; \
             refer to a segment once (`@a or @a` is `@a`) or write the condition out"
                .into(),
        ),
    }
}

/// The lifecycle axis of a (validated, lower-case) stage value.
fn stage_axis(value: &Value) -> LifecycleAxis {
    match value {
        Value::Text(s) => LifecycleAxis::of_stage(s).unwrap_or(LifecycleAxis::Tenure),
        _ => LifecycleAxis::Tenure,
    }
}

/// A `where` condition on an event's properties: comparisons, `in` lists and
/// `between` of a property name with constants, joined by `and`, `or`, `not`.
fn event_filter(expr: &ast::Expr) -> Result<EventFilter, DslError> {
    let name = |term: &Term| match &term.kind {
        TermKind::Ident(n) | TermKind::Prop(n) => Ok(n.clone()),
        _ => Err(type_error(
            term.span,
            format!("`{term}` is not an event property"),
            "an event property such as `revenue` or `country`",
            None,
        )),
    };
    let literal = |term: &Term| match &term.kind {
        TermKind::Number(n) => Ok(Literal::Number(*n)),
        TermKind::String(s) => Ok(Literal::Text(s.clone())),
        TermKind::Duration(d) => Err(type_error(
            term.span,
            format!("`{d}` is a duration; event properties compare with numbers or text"),
            "a number or a \"string\"",
            None,
        )),
        _ => Err(type_error(
            term.span,
            format!("`{term}` is not a constant"),
            "a number or a \"string\"",
            Some("inside `where`, a property is compared with a constant".into()),
        )),
    };
    let all = |items: &[ast::Expr]| {
        items
            .iter()
            .map(event_filter)
            .collect::<Result<Vec<_>, _>>()
    };
    match &expr.kind {
        ExprKind::And(items) => Ok(EventFilter::And(all(items)?)),
        ExprKind::Or(items) => Ok(EventFilter::Or(all(items)?)),
        ExprKind::Not(inner) => Ok(EventFilter::Not(Box::new(event_filter(inner)?))),
        ExprKind::Compare { left, op, right } => {
            // A constant on the left is turned around: `100 < revenue`.
            let (property, op, value) = match name(left) {
                Ok(p) => (p, op.node, literal(right)?),
                Err(e) => match name(right) {
                    Ok(p) => (p, op.node.flipped(), literal(left)?),
                    Err(_) => return Err(e),
                },
            };
            Ok(EventFilter::Compare {
                property,
                op,
                value,
            })
        }
        ExprKind::InList {
            term,
            negated,
            items,
        } => Ok(EventFilter::In {
            property: name(term)?,
            values: items.iter().map(literal).collect::<Result<_, _>>()?,
            negated: *negated,
        }),
        ExprKind::Between {
            term,
            negated,
            low,
            high,
        } => {
            let property = name(term)?;
            let range = EventFilter::And(vec![
                EventFilter::Compare {
                    property: property.clone(),
                    op: CmpOp::Ge,
                    value: literal(low)?,
                },
                EventFilter::Compare {
                    property,
                    op: CmpOp::Le,
                    value: literal(high)?,
                },
            ]);
            Ok(if *negated {
                EventFilter::Not(Box::new(range))
            } else {
                range
            })
        }
        _ => Err(type_error(
            expr.span,
            "inside `where`, a condition compares an event property with a constant".into(),
            "a condition such as `revenue > 100` or `country in (\"JP\", \"CN\")`",
            None,
        )),
    }
}

fn duration(term: &Term) -> Result<Duration, DslError> {
    match &term.kind {
        TermKind::Duration(d) => Ok(*d),
        TermKind::Number(n) => Err(type_error(
            term.span,
            format!("`{n}` has no unit"),
            "a duration such as `30d`",
            Some(format!("add a unit: `{n}d`, `{n}h` or `{n}w`")),
        )),
        _ => Err(type_error(
            term.span,
            format!("`{term}` is not a duration"),
            "a duration such as `30d`",
            None,
        )),
    }
}

/// A readable S-expression over column names, as `tenure segment --explain`
/// shows it: `(and (< recency 30) (>= frequency 3))`.
impl fmt::Display for ResolvedExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, values: &[Value]| -> fmt::Result {
            let items: Vec<String> = values.iter().map(Value::to_string).collect();
            write!(f, "({})", items.join(" "))
        };
        match self {
            ResolvedExpr::And(items) | ResolvedExpr::Or(items) => {
                let head = if matches!(self, ResolvedExpr::And(_)) {
                    "and"
                } else {
                    "or"
                };
                write!(f, "({head}")?;
                for item in items {
                    write!(f, " {item}")?;
                }
                f.write_str(")")
            }
            ResolvedExpr::Not(inner) => write!(f, "(not {inner})"),
            ResolvedExpr::Compare {
                feature, op, rhs, ..
            } => {
                write!(f, "({op} {} ", feature.column_name())?;
                match rhs {
                    Operand::Value(v) => write!(f, "{v})"),
                    Operand::Feature(other) => write!(f, "{})", other.column_name()),
                }
            }
            ResolvedExpr::InList {
                feature,
                values,
                negated,
                ..
            } => {
                let head = if *negated { "not-in" } else { "in" };
                write!(f, "({head} {} ", feature.column_name())?;
                list(f, values)?;
                f.write_str(")")
            }
            ResolvedExpr::Between {
                feature,
                low,
                high,
                negated,
                ..
            } => {
                let head = if *negated { "not-between" } else { "between" };
                write!(f, "({head} {} {low} {high})", feature.column_name())
            }
            ResolvedExpr::Within {
                feature, window, ..
            } => write!(f, "(within {} {window})", feature.column_name()),
            ResolvedExpr::Segment { name, body, .. } => write!(f, "(@{name} {body})"),
        }
    }
}
