//! Breakdowns: each user's value of one or several properties at their
//! first start event (retention) or step-1 event (funnels), so a cohort can
//! be split by, for example, `country` or `variant` as it was when the user
//! arrived (see `retention::RetentionFold`, which finds it in the same pass
//! as the cohorts).
//!
//! A property is a typed column of the events table (`variant`, `event`,
//! declared properties) or, when the store has no such column, a key of the
//! `properties` JSON ([`crate::json`]): `--by country` works on a store where
//! `country` was never declared. Several (`--by country,variant`) give nested
//! groups, one per combination, labelled `JP / treatment`.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Expr, Operator, binary_expr, cast, col, lit, when};

use crate::table::Events;
use crate::{EngineError, Result};

/// Label of users whose value is null.
pub const NONE_LABEL: &str = "(none)";

/// Separator of the parts of a several-property label.
pub const SEPARATOR: &str = " / ";

/// Columns that are not properties of an event.
const NOT_PROPERTIES: &[&str] = &["user_key", "ts", "ingested_at", "properties", "event_id"];

/// The breakdown `spec` (`country` or `country,variant`) as one value per
/// event: a property's value (a typed column as stored, a JSON key as text;
/// NULL when the event lacks it), or
/// for several the parts joined by [`SEPARATOR`], a missing part written
/// [`NONE_LABEL`].
pub fn by_expr(events: &Events, spec: &str) -> Result<Expr> {
    let names: Vec<&str> = spec.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(EngineError::BadRequest(format!(
            "--by `{spec}`: expected property names separated by commas (country,variant)"
        )));
    }
    let mut parts = Vec::with_capacity(names.len());
    for name in &names {
        if NOT_PROPERTIES.contains(name) {
            return Err(EngineError::BadRequest(format!(
                "cannot break down by `{name}`: not a property of an event (try variant, event, \
                 a declared property or a key of properties)"
            )));
        }
        parts.push(if events.has_column(name) {
            cast(col(*name), DataType::Utf8)
        } else {
            crate::json::prop(name)
        });
    }
    if let [one] = names.as_slice()
        && events.has_column(one)
    {
        // Read as stored (a dictionary for `variant` and `event`): folds
        // intern the values themselves.
        return Ok(col(*one));
    }
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    let labelled = parts.into_iter().map(|p| {
        when(p.clone().is_null(), lit(NONE_LABEL))
            .otherwise(p)
            .expect("a CASE with one branch")
    });
    Ok(labelled
        .reduce(|a, b| {
            binary_expr(
                binary_expr(a, Operator::StringConcat, lit(SEPARATOR)),
                Operator::StringConcat,
                b,
            )
        })
        .expect("two parts or more"))
}

/// An error when a breakdown found no value at all: every group is
/// [`NONE_LABEL`] (a misspelt property reads as missing everywhere).
pub fn check_found(spec: &str, groups: impl IntoIterator<Item = Option<String>>) -> Result<()> {
    let mut any = false;
    for g in groups {
        any = true;
        if g.as_deref()
            .is_some_and(|g| g.split(SEPARATOR).any(|p| p != NONE_LABEL))
        {
            return Ok(());
        }
    }
    if !any {
        return Ok(());
    }
    Err(EngineError::BadRequest(format!(
        "--by `{spec}`: no event in range has a value for it (not a column of the events \
         table, and no event's properties carry it)"
    )))
}
