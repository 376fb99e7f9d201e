//! The funnel request syntax shared by `tenure funnel`, job files and the
//! `funnel()` table function: windows (`7d`), steps (`view_item, purchase
//! where revenue > 100`) and exclusions (`remove_from_cart:2-3`).

use datafusion::common::DFSchema;

use super::{Exclusion, Step};
use crate::table::Events;
use crate::{EngineError, Result};

fn bad(m: String) -> EngineError {
    EngineError::BadRequest(m)
}

/// Parses `7d`, `36h`, `90m`, `3600s`, `2w` to microseconds.
pub fn parse_window(s: &str) -> Result<i64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        bad(format!(
            "window `{s}` needs a unit: s, m, h, d or w (e.g. 7d)"
        ))
    })?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        bad(format!(
            "window `{s}`: expected a whole number then s, m, h, d or w"
        ))
    })?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => {
            return Err(bad(format!(
                "window `{s}`: unknown unit `{u}`; use s, m, h, d or w"
            )));
        }
    };
    if n <= 0 {
        return Err(bad(format!("window `{s}` must be positive")));
    }
    n.checked_mul(secs * 1_000_000)
        .ok_or_else(|| bad(format!("window `{s}` is too long")))
}

/// Splits funnel steps on commas outside quotes and parentheses.
pub fn split_steps(s: &str) -> Vec<String> {
    split_outside(s, ',')
}

/// Splits on `sep` outside quotes and parentheses (so a step's condition may
/// hold the separator: `purchase where (revenue > 100)`), trimming each part.
pub fn split_outside(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quote) = (0i32, None::<char>);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|p| p.trim().to_string()).collect()
}

/// Checks the step list's shape without data.
pub fn check_steps(steps: &str) -> Result<Vec<String>> {
    let texts = split_steps(steps);
    if texts.iter().any(|t| t.is_empty()) {
        return Err(bad("empty funnel step (two commas in a row?)".into()));
    }
    if texts.len() > super::MAX_STEPS {
        return Err(bad(format!(
            "{} steps: a funnel has at most {}",
            texts.len(),
            super::MAX_STEPS
        )));
    }
    Ok(texts)
}

/// Parses `event [where <SQL>]` into a step, the condition checked against
/// the events table.
pub fn parse_step(events: &Events, text: &str) -> Result<Step> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("empty funnel step (two commas in a row?)".into()));
    }
    let lower = text.to_ascii_lowercase();
    let (name, cond) = match lower.find(" where ") {
        Some(at) => (text[..at].trim(), Some(text[at + 7..].trim())),
        None => (text, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad(format!(
            "funnel step `{text}`: expected `event` or `event where <condition>`"
        )));
    }
    let condition =
        match cond {
            None => None,
            Some(sql) => {
                let table = tenure_schema::stored_schema(&events.snapshot.properties);
                let schema = DFSchema::try_from_qualified_schema("events", table.as_ref())?;
                Some(events.ctx.parse_sql_expr(sql, &schema).map_err(|e| {
                    bad(format!("funnel step `{text}`: bad condition `{sql}`: {e}"))
                })?)
            }
        };
    Ok(Step {
        event: name.to_string(),
        condition,
        label: text.to_string(),
    })
}

/// Parses every step of `steps`.
pub fn parse_steps(events: &Events, steps: &str) -> Result<Vec<Step>> {
    check_steps(steps)?
        .iter()
        .map(|t| parse_step(events, t))
        .collect()
}

/// Parses `event[:FROM-TO]` (steps 1-based; default between the first and the
/// last of `steps` steps).
pub fn parse_exclusion(events: &Events, x: &str, steps: usize) -> Result<Exclusion> {
    let (ev, range) = match x.rsplit_once(':') {
        Some((e, r)) if r.contains('-') => (e, Some(r)),
        _ => (x, None),
    };
    let (from_step, to_step) = match range {
        None => (1, steps),
        Some(r) => {
            let (a, b) = r.split_once('-').expect("checked");
            let p = |v: &str| {
                v.trim().parse::<usize>().map_err(|_| {
                    bad(format!(
                        "--exclude `{x}`: expected EVENT:FROM-TO with step numbers, e.g. remove_from_cart:2-3"
                    ))
                })
            };
            (p(a)?, p(b)?)
        }
    };
    Ok(Exclusion {
        step: parse_step(events, ev)?,
        from_step,
        to_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_steps() {
        assert_eq!(parse_window("7d").unwrap(), 7 * 86_400_000_000);
        assert_eq!(parse_window("90m").unwrap(), 90 * 60_000_000);
        for bad in ["7", "0d", "7y", "x"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert_eq!(
            split_steps("view, purchase where (revenue > 1, 2), 'a,b'"),
            ["view", "purchase where (revenue > 1, 2)", "'a,b'"]
        );
        assert!(check_steps("a,,b").is_err());
    }
}
