//! Cohort retention (DESIGN.md, Semantics: Retention).
//!
//! A user's cohort is the period of their first start event; they are retained
//! in period k if they did a return event in the k-th period after it (`n-day`),
//! in period k or any later one (`unbounded`), or in any period of a bracket
//! (`bracket`, e.g. `0,1-3,4-7`). A cohort x period cell that has not fully
//! elapsed at the as-of time is incomplete: reported without numbers, and left
//! out of the size-weighted averages.

use chrono_tz::Tz;
use datafusion::logical_expr::Expr;

use crate::activity::{self, ActivitySpec, bit, first_bit};
use crate::calendar::{Calendar, Period};
use crate::table::Events;
use crate::{EngineError, Result};

/// How a return counts towards period k.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A return in exactly the k-th period after the cohort's.
    NDay,
    /// A return in the k-th period or any later one.
    Unbounded,
    /// Custom ranges of periods, inclusive: `[(0,0), (1,3), (4,7)]`.
    Bracket(Vec<(u32, u32)>),
}

impl Mode {
    /// Parses `n-day`, `unbounded` or `bracket:0,1-3,4-7` (with `brackets` given
    /// separately as `0,1-3,4-7`).
    pub fn parse(mode: &str, brackets: Option<&str>) -> Result<Self> {
        match mode {
            "n-day" | "nday" | "exact" => Ok(Self::NDay),
            "unbounded" => Ok(Self::Unbounded),
            "bracket" => {
                let spec = brackets.ok_or_else(|| {
                    EngineError::BadRequest(
                        "--mode bracket needs --brackets, e.g. 0,1-3,4-7".into(),
                    )
                })?;
                Ok(Self::Bracket(parse_brackets(spec)?))
            }
            other => Err(EngineError::BadRequest(format!(
                "unknown retention mode `{other}`; expected n-day, unbounded or bracket"
            ))),
        }
    }
}

/// Parses `0,1-3,4-7` into ranges; they must be ascending and not overlap.
pub fn parse_brackets(spec: &str) -> Result<Vec<(u32, u32)>> {
    let bad = |m: String| EngineError::BadRequest(format!("bad brackets `{spec}`: {m}"));
    let mut out: Vec<(u32, u32)> = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| bad(format!("`{part}` is not a period or range")))?;
        let b: u32 = b
            .parse()
            .map_err(|_| bad(format!("`{part}` is not a period or range")))?;
        if b < a {
            return Err(bad(format!("`{part}` ends before it starts")));
        }
        if let Some(&(_, prev)) = out.last()
            && a <= prev
        {
            return Err(bad(format!(
                "`{part}` overlaps or precedes the range before it"
            )));
        }
        out.push((a, b));
    }
    Ok(out)
}

/// A retention request.
#[derive(Debug, Clone)]
pub struct RetentionSpec {
    /// Cohort period.
    pub period: Period,
    /// Time zone of the calendar.
    pub tz: Tz,
    /// Start-event condition (`None`: any event).
    pub start: Option<Expr>,
    /// Return-event condition (`None`: any event).
    pub ret: Option<Expr>,
    /// Mode.
    pub mode: Mode,
    /// Cells ending after this instant are incomplete; default: the end of the
    /// day (in `tz`) of the newest event.
    pub as_of: Option<i64>,
    /// Split cohorts by this column's value at each user's first start event.
    pub by: Option<String>,
}

/// One row of the result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionRow {
    /// `cohort` for a cohort's cell, `average` for the size-weighted average.
    pub kind: &'static str,
    /// Breakdown value (with `by`), else `None`.
    pub group: Option<String>,
    /// Cohort period start (ISO date); `None` on average rows.
    pub cohort: Option<String>,
    /// Period index k (or bracket index in bracket mode).
    pub period: u32,
    /// Label of the period (`3` or a bracket like `1-3`).
    pub period_label: String,
    /// Users in the cohort (on average rows: total size of the cohorts averaged).
    pub cohort_size: u64,
    /// Users retained; `None` when the cell is incomplete.
    pub users: Option<u64>,
    /// `users / cohort_size`; `None` when incomplete or the cohort is empty.
    pub rate: Option<f64>,
    /// Has the cell fully elapsed?
    pub complete: bool,
}

/// The whole result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retention {
    /// Period kind.
    pub period: &'static str,
    /// Cohort rows then average rows.
    pub rows: Vec<RetentionRow>,
    /// The as-of instant used (UTC µs).
    pub as_of: i64,
}

/// Computes retention over an opened store.
pub async fn retention(events: &Events, spec: &RetentionSpec) -> Result<Retention> {
    let (min_ts, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let cal = Calendar::new(spec.period, spec.tz, min_ts, max_ts)?;
    let act = activity::scan(
        events,
        &cal,
        &ActivitySpec {
            start: spec.start.clone(),
            ret: spec.ret.clone(),
        },
    )
    .await?;
    let as_of = spec.as_of.unwrap_or_else(|| cal.end_of_day(max_ts));
    let Some(by) = &spec.by else {
        return Ok(from_activity(&act, &cal, &spec.mode, as_of));
    };
    let groups = crate::breakdown::by_first_start(events, by, spec.start.as_ref()).await?;
    let per_group = grouped(&act, &cal, &spec.mode, as_of, groups.labels.len(), |u| {
        groups
            .of_user
            .get(u)
            .filter(|g| **g != u32::MAX)
            .map(|g| *g as usize)
    });
    let mut rows = Vec::new();
    for (label, mut part) in groups.labels.iter().zip(per_group) {
        for r in &mut part {
            r.group = Some(label.clone());
        }
        rows.extend(part);
    }
    Ok(Retention {
        period: period_name(cal.period),
        rows,
        as_of,
    })
}

/// The retention table from per-user bitmaps (public for tests and benches).
pub fn from_activity(
    act: &activity::Activity,
    cal: &Calendar,
    mode: &Mode,
    as_of: i64,
) -> Retention {
    let mut rows = grouped(act, cal, mode, as_of, 1, |_| Some(0));
    Retention {
        period: period_name(cal.period),
        rows: rows.pop().unwrap_or_default(),
        as_of,
    }
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// Rows per group in one pass over the users; `group_of(u)` is the user's
/// group in `0..groups`, or `None` to leave the user out.
pub fn grouped(
    act: &activity::Activity,
    cal: &Calendar,
    mode: &Mode,
    as_of: i64,
    groups: usize,
    group_of: impl Fn(usize) -> Option<usize>,
) -> Vec<Vec<RetentionRow>> {
    let n = cal.periods();
    let columns: Vec<(u32, u32)> = match mode {
        Mode::Bracket(b) => b.clone(),
        _ => (0..n as u32).map(|k| (k, k)).collect(),
    };
    let w = columns.len();
    let mut sizes = vec![0u64; groups * n];
    let mut cells = vec![0u64; groups * n * w];
    let highest = |bits: &[u64]| {
        bits.iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + 63 - w.leading_zeros() as usize)
    };
    for u in 0..act.users {
        let Some(g) = group_of(u) else { continue };
        let Some(c) = first_bit(act.start_of(u)) else {
            continue;
        };
        sizes[g * n + c] += 1;
        let r = act.return_of(u);
        let base = (g * n + c) * w;
        let row = &mut cells[base..base + w];
        match mode {
            Mode::NDay => {
                for (k, cell) in row.iter_mut().enumerate().take(n - c) {
                    *cell += bit(r, c + k) as u64;
                }
            }
            Mode::Unbounded => {
                if let Some(h) = highest(r)
                    && h >= c
                {
                    for cell in row.iter_mut().take(h - c + 1) {
                        *cell += 1;
                    }
                }
            }
            Mode::Bracket(b) => {
                for (j, &(lo, hi)) in b.iter().enumerate() {
                    let lo = c + lo as usize;
                    let hi = (c + hi as usize).min(n - 1);
                    if lo < n && (lo..=hi).any(|p| bit(r, p)) {
                        row[j] += 1;
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(groups);
    for g in 0..groups {
        let mut rows = Vec::new();
        let mut avg_size = vec![0u64; w];
        let mut avg_users = vec![0u64; w];
        for c in 0..n {
            let size = sizes[g * n + c];
            for (j, &(lo, hi)) in columns.iter().enumerate() {
                let last = c + hi as usize;
                if c + lo as usize >= n {
                    break;
                }
                // A cell is complete when its last period has ended by `as_of`.
                let complete = last < n && cal.end_utc(last) <= as_of;
                let users = cells[(g * n + c) * w + j];
                if complete {
                    avg_size[j] += size;
                    avg_users[j] += users;
                }
                rows.push(RetentionRow {
                    kind: "cohort",
                    group: None,
                    cohort: Some(cal.start_date(c).to_string()),
                    period: j as u32,
                    period_label: label(lo, hi),
                    cohort_size: size,
                    users: complete.then_some(users),
                    rate: (complete && size > 0).then(|| users as f64 / size as f64),
                    complete,
                });
            }
        }
        for (j, &(lo, hi)) in columns.iter().enumerate() {
            if j >= n {
                break;
            }
            rows.push(RetentionRow {
                kind: "average",
                group: None,
                cohort: None,
                period: j as u32,
                period_label: label(lo, hi),
                cohort_size: avg_size[j],
                users: (avg_size[j] > 0).then_some(avg_users[j]),
                rate: (avg_size[j] > 0).then(|| avg_users[j] as f64 / avg_size[j] as f64),
                complete: avg_size[j] > 0,
            });
        }
        out.push(rows);
    }
    out
}

fn label(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}
