//! `did e where ...` conditions on one event, read as `tenure segment` reads
//! them over the store (see `tenure_engine::features::filter_expr`): a typed
//! numeric column compares exactly with a number; any other value compared
//! with a number is read as one (text that is not a number never matches);
//! text compares as text; a missing property makes the comparison unknown,
//! and an event counts only when the whole condition is true.

use std::cmp::Ordering;

use tenure_dsl::ast::{CmpOp, Number};
use tenure_dsl::{EventFilter, Literal};

use crate::Prop;

/// The condition's SQL value on one event's properties.
pub(crate) fn eval(f: &EventFilter, props: &[(String, Prop)]) -> Option<bool> {
    match f {
        EventFilter::And(items) => {
            let mut out = Some(true);
            for i in items {
                match eval(i, props) {
                    Some(false) => return Some(false),
                    None => out = None,
                    Some(true) => {}
                }
            }
            out
        }
        EventFilter::Or(items) => {
            let mut out = Some(false);
            for i in items {
                match eval(i, props) {
                    Some(true) => return Some(true),
                    None => out = None,
                    Some(false) => {}
                }
            }
            out
        }
        EventFilter::Not(inner) => eval(inner, props).map(|b| !b),
        EventFilter::Compare {
            property,
            op,
            value,
        } => {
            let ord = compare(get(props, property)?, value)?;
            Some(holds(*op, ord))
        }
        EventFilter::In {
            property,
            values,
            negated,
        } => {
            let v = get(props, property)?;
            let mut unknown = false;
            for lit in values {
                match compare(v, lit) {
                    Some(Ordering::Equal) => return Some(!negated),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            // SQL: `x in (a, b)` with an unknown comparison and no match is unknown.
            if unknown { None } else { Some(*negated) }
        }
    }
}

fn get<'a>(props: &'a [(String, Prop)], name: &str) -> Option<&'a Prop> {
    props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn holds(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

fn number_f64(n: &Number) -> f64 {
    n.mantissa as f64 / 10f64.powi(n.scale as i32)
}

/// Compares a property value with a constant; `None` is SQL's unknown.
fn compare(v: &Prop, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Prop::Exact(m, s), Literal::Number(n)) => {
            let scale = (*s).max(n.scale);
            let a = m.checked_mul(10i128.checked_pow(scale - s)?)?;
            let b = n
                .mantissa
                .checked_mul(10i128.checked_pow(scale - n.scale)?)?;
            Some(a.cmp(&b))
        }
        (Prop::Float(x), Literal::Number(n)) => x.partial_cmp(&number_f64(n)),
        (Prop::Bool(b), Literal::Number(n)) => (*b as u8 as f64).partial_cmp(&number_f64(n)),
        (Prop::Text(t) | Prop::Json(t), Literal::Number(n)) => {
            // A text value read as a number (`try_cast`); not one: unknown.
            let x: f64 = t.trim().parse().ok()?;
            x.partial_cmp(&number_f64(n))
        }
        (Prop::Time(_), Literal::Number(_)) => None,
        (Prop::Exact(..) | Prop::Float(_), Literal::Text(_)) => None,
        (v, Literal::Text(t)) => Some(v.text().as_str().cmp(t.as_str())),
    }
}
