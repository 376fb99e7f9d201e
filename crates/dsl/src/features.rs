//! The per-user feature table: the contract between this crate and the engine.
//!
//! A compiled segment is an `Expr` over a table with one row per user and one
//! column per [`Feature`]. The engine computes that table in one pass over the
//! events, and only the columns [`features`] says an expression uses, so a
//! segment on `R` and `F` never pays for event counts it does not read.
//!
//! Values, as of the compile context's `as_of` (see DESIGN.md, "RFM" and
//! "Lifecycle"); "NULL" is what the engine must write when there is no value:
//!
//! | feature | column | type | meaning |
//! |---|---|---|---|
//! | `R` | `recency` | Int64 | whole days since the last purchase; NULL if none |
//! | `F` | `frequency` | Int64 | number of purchase events; 0 if none |
//! | `M` | `monetary` | Decimal128(18, 2) | sum of purchase revenue; 0.00 if none |
//! | `first_seen` | `first_seen` | Timestamp(µs, UTC) | first event |
//! | `last_seen` | `last_seen` | Timestamp(µs, UTC) | last event |
//! | `lifecycle` | `lifecycle_tenure` | Utf8 | new / growing / mature / veteran |
//! | `lifecycle` | `lifecycle_activity` | Utf8 | active / cooling / silent / churned; NULL if no purchase |
//! | `r_score` .. | `r_score`, `f_score`, `m_score` | Int64 | quintile score 1-5 (R: recent = 5) |
//! | `mean(R)` .. | `mean_recency`, `mean_frequency` | Float64 | `avg(col) over ()` |
//! | `mean(M)` | `mean_monetary` | Decimal128(22, 6) | `avg(monetary) over ()` |
//! | `country` | `prop:country` | Utf8 | the user's latest value; NULL if never set |
//! | `did e` | `count:e` | Int64 | events named `e`; 0 if none |
//! | `did e within 30d` | `count_30d:e` | Int64 | events named `e` with `as_of - 30d <= ts <= as_of` |
//! | `did e where revenue > 100` | `count[revenue > 100]:e` | Int64 | events named `e` whose properties meet the condition (a missing property fails it); 0 if none |
//! | `sum(revenue) within 30d` | `sum_30d:revenue` | Float64 | the property summed over the user's events (of any name) in the window; 0 if none |
//! | `avg(revenue) within 30d` | `avg_30d:revenue` | Float64 | its mean over the events that have it; NULL if none |
//! | `p_alive` | `p_alive` | Float64 | BG/NBD probability of being alive at `as_of`; NULL if no purchase |
//! | `clv` | `clv` | Float64 | expected value in the next 52 weeks (BG/NBD x Gamma-Gamma); NULL if no purchase or no revenue |
//! | `expected_purchases(90d)` | `expected_purchases_90d` | Float64 | BG/NBD's expected purchase days in the next 90 days; NULL if no purchase |
//!
//! The predictions are those of `tenure clv` as of `as_of` (the models fitted
//! over every buyer up to it, time in weeks, days in UTC).

use std::collections::{BTreeSet, HashSet};

use datafusion_common::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::ast::Duration;
use crate::resolve::{Operand, ResolvedExpr};

/// One of the three RFM metrics, for `mean(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// R: days since the last purchase.
    Recency,
    /// F: number of purchases.
    Frequency,
    /// M: purchase revenue.
    Monetary,
}

impl Metric {
    /// The metric's own feature.
    pub fn feature(self) -> Feature {
        match self {
            Metric::Recency => Feature::Recency,
            Metric::Frequency => Feature::Frequency,
            Metric::Monetary => Feature::Monetary,
        }
    }
}

/// How a property is totalled over a user's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    /// `sum(p)`: the sum of the values (0 over no values).
    Sum,
    /// `avg(p)` / `mean(p)`: their mean (NULL over no values).
    Avg,
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
        })
    }
}

/// A constant in a condition on an event's properties.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Literal {
    /// A number, exact as written.
    Number(crate::ast::Number),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// A condition on one event's properties (`did purchase where revenue >
/// 100`): names are event columns (`revenue`, `variant`, declared
/// properties) or keys of the `properties` JSON. A property the event lacks
/// makes a comparison unknown, so the event does not count (SQL's NULL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventFilter {
    /// All hold.
    And(Vec<EventFilter>),
    /// One holds.
    Or(Vec<EventFilter>),
    /// Negation.
    Not(Box<EventFilter>),
    /// `property op value`.
    Compare {
        /// The property.
        property: String,
        /// The operator.
        op: crate::ast::CmpOp,
        /// The constant.
        value: Literal,
    },
    /// `property [not] in (values)`.
    In {
        /// The property.
        property: String,
        /// The constants.
        values: Vec<Literal>,
        /// `not in`.
        negated: bool,
    },
}

impl std::fmt::Display for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, items: &[EventFilter], sep: &str| {
            f.write_str("(")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(")")
        };
        match self {
            EventFilter::And(items) => list(f, items, "and"),
            EventFilter::Or(items) => list(f, items, "or"),
            EventFilter::Not(inner) => write!(f, "not {inner}"),
            EventFilter::Compare {
                property,
                op,
                value,
            } => write!(f, "{property} {op} {value}"),
            EventFilter::In {
                property,
                values,
                negated,
            } => {
                let not = if *negated { "not " } else { "" };
                write!(f, "{property} {not}in (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// The two independent lifecycle classifications of DESIGN.md.
///
/// They are separate columns because a user is in one stage of each at once
/// (a `veteran` who is `silent`); `lifecycle = silent` picks the axis from the
/// stage name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleAxis {
    /// By days since first seen: new, growing, mature, veteran.
    Tenure,
    /// By days since the last purchase: active, cooling, silent, churned.
    Activity,
}

impl LifecycleAxis {
    /// The stages on this axis, in order.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            LifecycleAxis::Tenure => &["new", "growing", "mature", "veteran"],
            LifecycleAxis::Activity => &["active", "cooling", "silent", "churned"],
        }
    }

    /// The axis a stage belongs to (stage names are lower case).
    pub fn of_stage(stage: &str) -> Option<LifecycleAxis> {
        [LifecycleAxis::Tenure, LifecycleAxis::Activity]
            .into_iter()
            .find(|axis| axis.stages().contains(&stage))
    }
}

/// All lifecycle stage names, tenure stages first.
pub const LIFECYCLE_STAGES: [&str; 8] = [
    "new", "growing", "mature", "veteran", "active", "cooling", "silent", "churned",
];

/// A per-user value a segment can test: one column of the feature table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `R`, `recency`: whole days since the last purchase.
    Recency,
    /// `F`, `frequency`: number of purchase events.
    Frequency,
    /// `M`, `monetary`: purchase revenue, exact to the cent.
    Monetary,
    /// Time of the user's first event.
    FirstSeen,
    /// Time of the user's last event.
    LastSeen,
    /// A lifecycle stage on one axis.
    Lifecycle(LifecycleAxis),
    /// R quintile score, 1-5, 5 = most recent.
    RScore,
    /// F quintile score, 1-5, 5 = most frequent.
    FScore,
    /// M quintile score, 1-5, 5 = highest revenue.
    MScore,
    /// The mean of a metric over all users in the table (`avg(col) over ()`),
    /// used by the classic 8 RFM segments ("above average frequency").
    Mean(Metric),
    /// The user's latest value of a property.
    Property(String),
    /// How many events named `event` the user did, in the last `within` before
    /// `as_of` if given, else in all history up to `as_of`.
    EventCount {
        /// The event name.
        event: String,
        /// The window, if any.
        within: Option<Duration>,
        /// A condition the events must meet, if any.
        filter: Option<EventFilter>,
    },
    /// A property summed or averaged over the user's events (of any name),
    /// in the last `within` before `as_of` if given.
    Total {
        /// Sum or average.
        aggregate: Aggregate,
        /// The property.
        property: String,
        /// The window, if any.
        within: Option<Duration>,
    },
    /// BG/NBD's probability that the customer is alive.
    PAlive,
    /// Expected value over the next 52 weeks.
    Clv,
    /// BG/NBD's expected purchases in the horizon.
    ExpectedPurchases(Duration),
}

impl Feature {
    /// The column name in the feature table. Stable: the engine and saved
    /// outputs rely on it.
    ///
    /// Property and event names are embedded verbatim after a prefix that ends
    /// at the first `:`, so names containing `:` cannot collide.
    pub fn column_name(&self) -> String {
        match self {
            Feature::Recency => "recency".into(),
            Feature::Frequency => "frequency".into(),
            Feature::Monetary => "monetary".into(),
            Feature::FirstSeen => "first_seen".into(),
            Feature::LastSeen => "last_seen".into(),
            Feature::Lifecycle(LifecycleAxis::Tenure) => "lifecycle_tenure".into(),
            Feature::Lifecycle(LifecycleAxis::Activity) => "lifecycle_activity".into(),
            Feature::RScore => "r_score".into(),
            Feature::FScore => "f_score".into(),
            Feature::MScore => "m_score".into(),
            Feature::Mean(Metric::Recency) => "mean_recency".into(),
            Feature::Mean(Metric::Frequency) => "mean_frequency".into(),
            Feature::Mean(Metric::Monetary) => "mean_monetary".into(),
            Feature::Property(name) => format!("prop:{name}"),
            Feature::EventCount {
                event,
                within,
                filter,
            } => {
                let window = within.map(|d| format!("_{d}")).unwrap_or_default();
                let filter = filter
                    .as_ref()
                    .map(|f| format!("[{f}]"))
                    .unwrap_or_default();
                format!("count{window}{filter}:{event}")
            }
            Feature::Total {
                aggregate,
                property,
                within,
            } => {
                let window = within.map(|d| format!("_{d}")).unwrap_or_default();
                format!("{aggregate}{window}:{property}")
            }
            Feature::PAlive => "p_alive".into(),
            Feature::Clv => "clv".into(),
            Feature::ExpectedPurchases(d) => format!("expected_purchases_{d}"),
        }
    }

    /// The column's Arrow type.
    ///
    /// Money is `Decimal128(18, 2)` (DESIGN.md: exact to the cent); its mean is
    /// `Decimal128(22, 6)` because that is what DataFusion's `avg` returns for
    /// it, so the engine can use `avg` unchanged.
    pub fn data_type(&self) -> DataType {
        match self {
            Feature::Recency
            | Feature::Frequency
            | Feature::RScore
            | Feature::FScore
            | Feature::MScore
            | Feature::EventCount { .. } => DataType::Int64,
            Feature::Monetary => DataType::Decimal128(18, 2),
            Feature::Mean(Metric::Monetary) => DataType::Decimal128(22, 6),
            Feature::Mean(_)
            | Feature::PAlive
            | Feature::Clv
            | Feature::ExpectedPurchases(_)
            | Feature::Total { .. } => DataType::Float64,
            Feature::FirstSeen | Feature::LastSeen => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Feature::Lifecycle(_) | Feature::Property(_) => DataType::Utf8,
        }
    }

    /// The column as an Arrow field. Always nullable: which columns may hold
    /// NULL is documented above, but a nullable schema accepts any engine output.
    pub fn field(&self) -> Field {
        Field::new(self.column_name(), self.data_type(), true)
    }

    /// Features the engine needs before it can compute this one: a mean needs
    /// its metric's column.
    pub fn depends_on(&self) -> Option<Feature> {
        match self {
            Feature::Mean(metric) => Some(metric.feature()),
            _ => None,
        }
    }
}

/// The Arrow schema of a feature table holding `features` (plus nothing else;
/// the engine adds its user key).
pub fn feature_schema<'a>(features: impl IntoIterator<Item = &'a Feature>) -> Schema {
    Schema::new(features.into_iter().map(Feature::field).collect::<Vec<_>>())
}

/// The features `expr` reads, including those a mean depends on. Minimal: a
/// segment on `R` and `F` yields exactly `{Recency, Frequency}`.
pub fn features(expr: &ResolvedExpr) -> BTreeSet<Feature> {
    let mut out = BTreeSet::new();
    collect(expr, &mut out, &mut HashSet::new());
    let dependencies: Vec<Feature> = out.iter().filter_map(Feature::depends_on).collect();
    out.extend(dependencies);
    out
}

/// Adds the features of `expr` to `out`, visiting each named segment's shared
/// definition once (`seen`), however often it is referred to.
fn collect(
    expr: &ResolvedExpr,
    out: &mut BTreeSet<Feature>,
    seen: &mut HashSet<*const ResolvedExpr>,
) {
    match expr {
        ResolvedExpr::And(items) | ResolvedExpr::Or(items) => {
            items.iter().for_each(|e| collect(e, out, seen));
        }
        ResolvedExpr::Not(inner) => collect(inner, out, seen),
        ResolvedExpr::Compare { feature, rhs, .. } => {
            out.insert(feature.clone());
            if let Operand::Feature(other) = rhs {
                out.insert(other.clone());
            }
        }
        ResolvedExpr::InList { feature, .. }
        | ResolvedExpr::Between { feature, .. }
        | ResolvedExpr::Within { feature, .. } => {
            out.insert(feature.clone());
        }
        ResolvedExpr::Segment { body, .. } => {
            if seen.insert(std::sync::Arc::as_ptr(body)) {
                collect(body, out, seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_stable() {
        assert_eq!(Feature::Recency.column_name(), "recency");
        let d = Duration::from_hours(30 * 24);
        let count = Feature::EventCount {
            event: "purchase".into(),
            within: d,
            filter: None,
        };
        assert_eq!(count.column_name(), "count_30d:purchase");
        assert_eq!(Feature::Property("a:b".into()).column_name(), "prop:a:b");
    }
}
