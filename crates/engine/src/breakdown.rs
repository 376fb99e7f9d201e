//! Breakdowns: each user's value of a column at their first start event, so a
//! cohort can be split by, for example, `country` or `variant` as it was when
//! the user arrived.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType, UInt32Type};
use datafusion::logical_expr::{Expr, cast, col, ident};
use futures::StreamExt;

use crate::table::Events;
use crate::{EngineError, Result};

/// Label of users whose value is null.
pub const NONE_LABEL: &str = "(none)";

/// Each user's group (index into `labels`), `u32::MAX` for users without a start event.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Group of each user key.
    pub of_user: Vec<u32>,
    /// Group labels, sorted.
    pub labels: Vec<String>,
}

/// Finds each user's value of `column` at their first start event.
pub async fn by_first_start(events: &Events, column: &str, start: Option<&Expr>) -> Result<Groups> {
    if !events.has_column(column) || ["user_key", "ts", "ingested_at"].contains(&column) {
        return Err(EngineError::BadRequest(format!(
            "cannot break down by `{column}`: not a column of the events table (try variant, event or a declared property)"
        )));
    }
    let users = events.users();
    let mut df = events.in_range().await?;
    if let Some(s) = start {
        df = df.filter(s.clone())?;
    }
    let df = df.select(vec![
        col("user_key"),
        col("ts"),
        cast(ident(column), DataType::Utf8).alias("grp"),
    ])?;
    let mut first_ts = vec![i64::MAX; users];
    let mut value: Vec<Option<String>> = vec![None; users];
    let mut stream = df.execute_stream().await?;
    let mut seen = vec![false; users];
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let g = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let u = keys[i] as usize;
            if u >= users {
                return Err(EngineError::BadRequest(
                    "user_key beyond the users dictionary".into(),
                ));
            }
            let v = g.is_valid(i).then(|| g.value(i));
            // Earliest event wins; ties go to the smallest value, so the result
            // does not depend on scan order.
            let better = !seen[u]
                || ts[i] < first_ts[u]
                || (ts[i] == first_ts[u] && v < value[u].as_deref());
            if better {
                seen[u] = true;
                first_ts[u] = ts[i];
                value[u] = v.map(str::to_string);
            }
        }
    }
    let mut labels: Vec<String> = value
        .iter()
        .zip(&seen)
        .filter(|(_, s)| **s)
        .map(|(v, _)| v.clone().unwrap_or_else(|| NONE_LABEL.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    labels.sort();
    let index: HashMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let of_user = value
        .iter()
        .zip(&seen)
        .map(|(v, s)| {
            if *s {
                index[v.as_deref().unwrap_or(NONE_LABEL)]
            } else {
                u32::MAX
            }
        })
        .collect();
    Ok(Groups { of_user, labels })
}
