//! A naive evaluator over one user's features: the reference the engine's
//! property tests compare compiled expressions against. Written for obvious
//! correctness, not speed; it mirrors DataFusion's semantics (three-valued
//! logic, numeric coercion of Int64 against Float64, exact decimals).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::ast::{CmpOp, Duration};
use crate::compile::{CompileContext, window_start};
use crate::features::{Feature, LifecycleAxis, Metric};
use crate::resolve::{Operand, ResolvedExpr, Value};

/// One user's feature values: one row of the feature table, as plain Rust.
///
/// `None` is SQL NULL. Money is in hundredths (`Decimal128(18, 2)`); the mean
/// of money is in millionths (`Decimal128(22, 6)`), as in the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureRow {
    /// Whole days since the last purchase.
    pub recency: Option<i64>,
    /// Number of purchases.
    pub frequency: Option<i64>,
    /// Purchase revenue in hundredths.
    pub monetary: Option<i128>,
    /// First event, UTC microseconds.
    pub first_seen: Option<i64>,
    /// Last event, UTC microseconds.
    pub last_seen: Option<i64>,
    /// new / growing / mature / veteran.
    pub lifecycle_tenure: Option<String>,
    /// active / cooling / silent / churned.
    pub lifecycle_activity: Option<String>,
    /// R quintile score.
    pub r_score: Option<i64>,
    /// F quintile score.
    pub f_score: Option<i64>,
    /// M quintile score.
    pub m_score: Option<i64>,
    /// Mean recency over all users.
    pub mean_recency: Option<f64>,
    /// Mean frequency over all users.
    pub mean_frequency: Option<f64>,
    /// Mean revenue over all users, in millionths.
    pub mean_monetary: Option<i128>,
    /// Latest property values; absent means NULL.
    pub properties: BTreeMap<String, String>,
    /// Event counts by (event, window); absent means 0, as the engine fills
    /// counts for users without such events with 0.
    pub event_counts: BTreeMap<(String, Option<Duration>), i64>,
    /// Counts of `did e where ...` features; absent means 0.
    pub filtered_counts: BTreeMap<Feature, i64>,
    /// Sums and averages of properties (`sum(revenue) within 30d`); absent
    /// means NULL (a sum over no events is 0 in the engine: put it here).
    pub totals: BTreeMap<Feature, f64>,
    /// BG/NBD's probability of being alive.
    pub p_alive: Option<f64>,
    /// Expected value over 52 weeks.
    pub clv: Option<f64>,
    /// Expected purchases by horizon; absent means NULL.
    pub expected_purchases: BTreeMap<Duration, f64>,
}

/// A cell of the row, typed as its column is.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Int(i64),
    Float(f64),
    /// Mantissa and scale.
    Decimal(i128, u32),
    Time(i64),
    Text(&'a str),
}

impl FeatureRow {
    fn cell(&self, feature: &Feature) -> Option<Cell<'_>> {
        match feature {
            Feature::Recency => self.recency.map(Cell::Int),
            Feature::Frequency => self.frequency.map(Cell::Int),
            Feature::Monetary => self.monetary.map(|m| Cell::Decimal(m, 2)),
            Feature::FirstSeen => self.first_seen.map(Cell::Time),
            Feature::LastSeen => self.last_seen.map(Cell::Time),
            Feature::Lifecycle(LifecycleAxis::Tenure) => {
                self.lifecycle_tenure.as_deref().map(Cell::Text)
            }
            Feature::Lifecycle(LifecycleAxis::Activity) => {
                self.lifecycle_activity.as_deref().map(Cell::Text)
            }
            Feature::RScore => self.r_score.map(Cell::Int),
            Feature::FScore => self.f_score.map(Cell::Int),
            Feature::MScore => self.m_score.map(Cell::Int),
            Feature::Mean(Metric::Recency) => self.mean_recency.map(Cell::Float),
            Feature::Mean(Metric::Frequency) => self.mean_frequency.map(Cell::Float),
            Feature::Mean(Metric::Monetary) => self.mean_monetary.map(|m| Cell::Decimal(m, 6)),
            Feature::Property(name) => self.properties.get(name).map(|s| Cell::Text(s)),
            Feature::EventCount {
                event,
                within,
                filter: None,
            } => Some(Cell::Int(
                self.event_counts
                    .get(&(event.clone(), *within))
                    .copied()
                    .unwrap_or(0),
            )),
            Feature::EventCount { .. } => Some(Cell::Int(
                self.filtered_counts.get(feature).copied().unwrap_or(0),
            )),
            Feature::Total { .. } => self.totals.get(feature).copied().map(Cell::Float),
            Feature::PAlive => self.p_alive.map(Cell::Float),
            Feature::Clv => self.clv.map(Cell::Float),
            Feature::ExpectedPurchases(d) => {
                self.expected_purchases.get(d).copied().map(Cell::Float)
            }
        }
    }
}

fn value_cell(value: &Value) -> Cell<'_> {
    match value {
        Value::Int(n) => Cell::Int(*n),
        Value::Money(c) => Cell::Decimal(*c, 2),
        Value::Time(t) => Cell::Time(*t),
        Value::Text(s) => Cell::Text(s),
        Value::Number(n) => Cell::Float(n.mantissa as f64 / 10f64.powi(n.scale as i32)),
    }
}

/// Compares two cells as DataFusion would after type coercion.
fn compare(a: &Cell<'_>, b: &Cell<'_>) -> Option<Ordering> {
    match (a, b) {
        (Cell::Int(x), Cell::Int(y)) | (Cell::Time(x), Cell::Time(y)) => Some(x.cmp(y)),
        (Cell::Int(x), Cell::Float(y)) => (*x as f64).partial_cmp(y),
        (Cell::Float(x), Cell::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Cell::Float(x), Cell::Float(y)) => x.partial_cmp(y),
        (Cell::Decimal(x, sx), Cell::Decimal(y, sy)) => {
            let scale = (*sx).max(*sy);
            let x = x.checked_mul(10i128.checked_pow(scale - sx)?)?;
            let y = y.checked_mul(10i128.checked_pow(scale - sy)?)?;
            Some(x.cmp(&y))
        }
        (Cell::Text(x), Cell::Text(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn holds(op: CmpOp, ordering: Ordering) -> bool {
    match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    }
}

/// Whether the user is in the segment: what a filter on the compiled
/// expression keeps (the expression is TRUE, not FALSE or NULL).
pub fn eval(expr: &ResolvedExpr, row: &FeatureRow, ctx: &CompileContext) -> bool {
    evaluate(expr, row, ctx) == Some(true)
}

/// The expression's SQL value for the user: `Some(bool)`, or `None` for NULL.
pub fn evaluate(expr: &ResolvedExpr, row: &FeatureRow, ctx: &CompileContext) -> Option<bool> {
    match expr {
        ResolvedExpr::And(items) => {
            let mut result = Some(true);
            for item in items {
                match evaluate(item, row, ctx) {
                    Some(false) => return Some(false),
                    None => result = None,
                    Some(true) => {}
                }
            }
            result
        }
        ResolvedExpr::Or(items) => {
            let mut result = Some(false);
            for item in items {
                match evaluate(item, row, ctx) {
                    Some(true) => return Some(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            result
        }
        ResolvedExpr::Not(inner) => evaluate(inner, row, ctx).map(|b| !b),
        ResolvedExpr::Compare {
            feature, op, rhs, ..
        } => {
            let left = row.cell(feature);
            let right = match rhs {
                Operand::Value(v) => Some(value_cell(v)),
                Operand::Feature(f) => row.cell(f),
            };
            if matches!(feature, Feature::Lifecycle(_)) {
                // NULL-safe: a missing stage is simply not equal to any stage.
                let equal = left == right;
                return Some(if *op == CmpOp::Eq { equal } else { !equal });
            }
            Some(holds(*op, compare(&left?, &right?)?))
        }
        ResolvedExpr::InList {
            feature,
            values,
            negated,
            ..
        } => {
            let left = row.cell(feature);
            if matches!(feature, Feature::Lifecycle(_)) {
                let found = values.iter().any(|v| left.as_ref() == Some(&value_cell(v)));
                return Some(found != *negated);
            }
            let left = left?;
            let found = values
                .iter()
                .any(|v| compare(&left, &value_cell(v)) == Some(Ordering::Equal));
            Some(found != *negated)
        }
        ResolvedExpr::Between {
            feature,
            low,
            high,
            negated,
            ..
        } => {
            let x = row.cell(feature)?;
            let inside = compare(&x, &value_cell(low))? != Ordering::Less
                && compare(&x, &value_cell(high))? != Ordering::Greater;
            Some(inside != *negated)
        }
        ResolvedExpr::Within {
            feature,
            window,
            span,
        } => {
            let Some(Cell::Time(t)) = row.cell(feature) else {
                return None;
            };
            let start = window_start(ctx.as_of, window.micros(), *span).ok()?;
            Some(start <= t && t <= ctx.as_of)
        }
        ResolvedExpr::Segment { body, .. } => evaluate(body, row, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Catalog, Resolver};

    fn check(src: &str, row: &FeatureRow) -> Option<bool> {
        let resolved = Resolver::new(&Catalog::default()).parse(src).unwrap();
        evaluate(&resolved, row, &CompileContext::new(100 * 86_400_000_000))
    }

    #[test]
    fn three_valued_logic() {
        let row = FeatureRow {
            frequency: Some(3),
            ..FeatureRow::default()
        };
        assert_eq!(check("R < 30", &row), None);
        assert_eq!(check("R < 30 and F > 5", &row), Some(false));
        assert_eq!(check("R < 30 or F > 2", &row), Some(true));
        assert_eq!(check("not R < 30", &row), None);
    }

    #[test]
    fn lifecycle_is_null_safe() {
        let row = FeatureRow {
            lifecycle_tenure: Some("veteran".into()),
            ..FeatureRow::default()
        };
        assert_eq!(check("lifecycle != silent", &row), Some(true));
        assert_eq!(check("lifecycle in (silent, veteran)", &row), Some(true));
        assert_eq!(check("lifecycle not in (silent, new)", &row), Some(true));
    }

    #[test]
    fn money_compares_exactly_with_its_mean() {
        let row = FeatureRow {
            monetary: Some(1999),
            mean_monetary: Some(19_990_001),
            ..FeatureRow::default()
        };
        assert_eq!(check("M < mean(M)", &row), Some(true));
        assert_eq!(check("M = 19.99", &row), Some(true));
    }
}
