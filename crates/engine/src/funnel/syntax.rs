//! The funnel request syntax shared by `tenure funnel`, job files and the
//! `funnel()` table function: windows (`7d`), steps (`view_item, purchase
//! where revenue > 100`) and exclusions (`remove_from_cart:2-3`).
//!
//! A step is `event`, `event where <SQL condition>` or an any-order group
//! `{event, event where ..., ...}`, then optionally (in any order, at the
//! end) `after <duration>` (least time since the previous step) and
//! `within <duration>` (most time since the previous step), and `?` for an
//! optional step, written right after the event name or group
//! (`add_to_wishlist?`) or at the very end:
//! `view_item, add_to_wishlist?, {add_to_cart, checkout} within 1h, purchase
//! after 1m within 30m`.

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

/// Splits on `sep` outside quotes, parentheses and braces (so a step's
/// condition may hold the separator, `purchase where (revenue > 100)`, and so
/// may a group, `{a, b}`), trimming each part.
pub fn split_outside(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quote) = (0i32, None::<char>);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '{') => depth += 1,
            (None, ')' | '}') => depth -= 1,
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

/// Parses a step: `event [where <SQL>]` or `{member, member, ...}`, then
/// `after D`, `within D` and `?` (see the module docs); conditions are
/// checked against the events table.
pub fn parse_step(events: &Events, text: &str) -> Result<Step> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("empty funnel step (two commas in a row?)".into()));
    }
    let (core, mods) = split_modifiers(text)?;
    // `?` right after the event name or the group: `wish?`, `wish? where
    // ...`, `{a, b}?`; or at the very end (taken by `split_modifiers`).
    let (core, marked) = take_mark(core);
    if marked && mods.optional {
        return Err(bad(format!("funnel step `{text}`: `?` is given twice")));
    }
    let optional = marked || mods.optional;
    let core = core.as_str();
    let mut step = if let Some(inner) = core.strip_prefix('{') {
        let Some(inner) = inner.strip_suffix('}') else {
            return Err(bad(format!(
                "funnel step `{text}`: an any-order group is `{{event, event, ...}}` (a closing brace is missing, or something follows it)"
            )));
        };
        let members = split_outside(inner, ',')
            .iter()
            .map(|m| {
                if m.starts_with('{') {
                    return Err(bad(format!(
                        "funnel step `{text}`: groups do not nest; list the events of `{m}` in the outer group"
                    )));
                }
                let (_, inner_mods) = split_modifiers(m)?;
                if inner_mods.any() || take_mark(m).1 {
                    return Err(bad(format!(
                        "funnel step `{text}`: `{m}`: `after`, `within` and `?` apply to the whole group; write them after the closing brace"
                    )));
                }
                parse_plain(events, m, text)
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(m) = members
            .iter()
            .enumerate()
            .find(|(i, m)| members[..*i].iter().any(|o| o.label == m.label))
            .map(|(_, m)| m)
        {
            return Err(bad(format!(
                "funnel step `{text}`: `{}` is listed twice in the group",
                m.label
            )));
        }
        // A group of one, like `after` longer than `within`, is refused by
        // `FunnelSpec::validate`, which every funnel goes through.
        Step {
            any_of: members,
            ..Step::named("")
        }
    } else {
        parse_plain(events, core, text)?
    };
    step.label = text.to_string();
    step.optional = optional;
    step.after_us = mods.after.unwrap_or(0);
    step.within_us = mods.within;
    Ok(step)
}

/// Removes the `?` that follows a step's event name or group.
fn take_mark(core: &str) -> (String, bool) {
    if core.starts_with('{') {
        return match core.strip_suffix('?') {
            Some(c) => (c.trim_end().to_string(), true),
            None => (core.to_string(), false),
        };
    }
    let (name, rest) = core.split_at(core.find(char::is_whitespace).unwrap_or(core.len()));
    match name.strip_suffix('?') {
        Some(n) => (format!("{n}{rest}"), true),
        None => (core.to_string(), false),
    }
}

/// Whether byte `at` of `s` is outside quotes, parentheses and braces.
fn top_level(s: &str, at: usize) -> bool {
    let (mut depth, mut quote) = (0i32, None::<char>);
    for (i, c) in s.char_indices() {
        if i >= at {
            break;
        }
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '{') => depth += 1,
            (None, ')' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth == 0 && quote.is_none()
}

/// `event [where <SQL>]`, the condition checked against the events table.
fn parse_plain(events: &Events, text: &str, whole: &str) -> Result<Step> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let (name, cond) = match lower.find(" where ") {
        Some(at) => (text[..at].trim(), Some(text[at + 7..].trim())),
        None => (text, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains(['{', '}', '?']) {
        return Err(bad(format!(
            "funnel step `{whole}`: expected `event`, `event where <condition>` or `{{event, event}}`, optionally followed by `after 1m`, `within 1h` or `?`"
        )));
    }
    let condition =
        match cond {
            None => None,
            Some(sql) => {
                let table = tenure_schema::stored_schema(&events.snapshot.properties);
                let schema = DFSchema::try_from_qualified_schema("events", table.as_ref())?;
                Some(events.ctx.parse_sql_expr(sql, &schema).map_err(|e| {
                    bad(format!("funnel step `{whole}`: bad condition `{sql}`: {e}"))
                })?)
            }
        };
    Ok(Step {
        event: name.to_string(),
        condition,
        label: text.to_string(),
        ..Step::named(name)
    })
}

/// A step's trailing modifiers.
#[derive(Debug, Default, PartialEq)]
struct Modifiers {
    after: Option<i64>,
    within: Option<i64>,
    /// A `?` at the very end.
    optional: bool,
}

impl Modifiers {
    fn any(&self) -> bool {
        self.after.is_some() || self.within.is_some() || self.optional
    }
}

/// Splits `core [after D] [within D] [?]` (the two in either order) into the
/// core and its modifiers. A trailing `after`/`within` (outside quotes,
/// parentheses and braces) whose duration does not parse is an error, not
/// part of the condition.
fn split_modifiers(text: &str) -> Result<(&str, Modifiers)> {
    let mut m = Modifiers::default();
    let mut rest = text.trim_end();
    if let Some(r) = rest.strip_suffix('?') {
        m.optional = true;
        rest = r.trim_end();
    }
    while let Some((head, last)) = rest.rsplit_once(char::is_whitespace) {
        let head = head.trim_end();
        let (core, word) = match head.rsplit_once(char::is_whitespace) {
            Some((c, w)) => (c.trim_end(), w),
            None => ("", head),
        };
        // Inside a quoted string, parentheses or a group it belongs to them.
        if !top_level(text, word.as_ptr() as usize - text.as_ptr() as usize) {
            break;
        }
        let slot = match word.to_ascii_lowercase().as_str() {
            "after" => &mut m.after,
            "within" => &mut m.within,
            _ => break,
        };
        if slot.is_some() {
            return Err(bad(format!(
                "funnel step `{text}`: `{word}` is given twice"
            )));
        }
        let d = parse_window(last)
            .map_err(|e| bad(format!("funnel step `{text}`: `{word} {last}`: {e}")))?;
        *slot = Some(d);
        if core.is_empty() {
            return Err(bad(format!(
                "funnel step `{text}`: `{word}` needs an event before it"
            )));
        }
        rest = core;
    }
    Ok((rest, m))
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
    let (_, mods) = split_modifiers(ev)?;
    if mods.any() || ev.trim_start().starts_with('{') || ev.trim_end().ends_with('?') {
        return Err(bad(format!(
            "--exclude `{x}`: an exclusion is one event, optionally with a condition (no groups, `after`, `within` or `?`)"
        )));
    }
    Ok(Exclusion {
        step: parse_plain(events, ev, ev)?,
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

#[cfg(test)]
mod modifier_tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn modifiers_come_off_the_end_in_either_order() {
        let m = |a: Option<i64>, w: Option<i64>, o: bool| Modifiers {
            after: a.map(|x| x * MIN),
            within: w.map(|x| x * MIN),
            optional: o,
        };
        let cases = [
            ("view_item", "view_item", m(None, None, false)),
            (
                "add_to_cart within 1h",
                "add_to_cart",
                m(None, Some(60), false),
            ),
            (
                "checkout after 1m within 30m",
                "checkout",
                m(Some(1), Some(30), false),
            ),
            (
                "checkout within 30m after 1m",
                "checkout",
                m(Some(1), Some(30), false),
            ),
            ("wish? within 2h", "wish?", m(None, Some(120), false)),
            ("wish within 2h?", "wish", m(None, Some(120), true)),
            (
                "purchase where revenue > 100 after 5m",
                "purchase where revenue > 100",
                m(Some(5), None, false),
            ),
            ("{a, b} within 1h", "{a, b}", m(None, Some(60), false)),
            // Inside a group or a quoted string: not a modifier.
            ("{a, b within 1h}", "{a, b within 1h}", m(None, None, false)),
            (
                "purchase where note = 'ships within 2d'",
                "purchase where note = 'ships within 2d'",
                m(None, None, false),
            ),
            // Not a duration keyword: stays in the condition.
            (
                "purchase where note = 'within 1h'",
                "purchase where note = 'within 1h'",
                m(None, None, false),
            ),
        ];
        for (text, core, mods) in cases {
            let (c, got) = split_modifiers(text).unwrap();
            assert_eq!((c, got), (core, mods), "{text}");
        }
        for (text, err) in [
            ("checkout within 1y", "unknown unit"),
            ("checkout within 1h within 2h", "given twice"),
            ("within 1h", "needs an event"),
        ] {
            let e = split_modifiers(text).unwrap_err().to_string();
            assert!(e.contains(err), "{text}: {e}");
        }
        for (core, want, marked) in [
            ("wish?", "wish", true),
            ("wish? where x > 1", "wish where x > 1", true),
            ("{a, b}?", "{a, b}", true),
            ("wish where x = 'a?'", "wish where x = 'a?'", false),
        ] {
            assert_eq!(take_mark(core), (want.to_string(), marked), "{core}");
        }
        assert_eq!(
            split_steps("view, {cart, wish} within 1h, purchase"),
            ["view", "{cart, wish} within 1h", "purchase"]
        );
    }
}
