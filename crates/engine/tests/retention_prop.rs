//! Property test: the engine's retention equals a naive reference computed
//! straight from the definition (DESIGN.md) on random events, for every period
//! and mode.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_engine::retention::{Mode, RetentionRow, RetentionSpec, retention};
use tenure_engine::{Events, OpenOptions};

/// `(cohort, k) -> (cohort_size, users or None when incomplete)`.
fn naive(
    evs: &[Ev],
    period: Period,
    mode: &Mode,
    start_ev: Option<&str>,
    ret_ev: Option<&str>,
) -> BTreeMap<(String, u32), (u64, Option<u64>)> {
    let min = evs.iter().map(|e| e.ts).min().unwrap();
    let max = evs.iter().map(|e| e.ts).max().unwrap();
    let first = start(period, date(min));
    let n = index(period, first, date(max)) + 1;
    let as_of = micros(date(max)) + DAY;
    let mut cohort_of = BTreeMap::new();
    for e in evs.iter().filter(|e| start_ev.is_none_or(|s| s == e.name)) {
        let c = index(period, first, date(e.ts));
        let entry = cohort_of.entry(e.user).or_insert(c);
        *entry = (*entry).min(c);
    }
    let cols: Vec<(i64, i64)> = match mode {
        Mode::Bracket(b) => b.iter().map(|&(a, z)| (a as i64, z as i64)).collect(),
        _ => (0..n).map(|k| (k, k)).collect(),
    };
    let mut out = BTreeMap::new();
    for c in 0..n {
        let members: Vec<u8> = cohort_of
            .iter()
            .filter(|(_, cc)| **cc == c)
            .map(|(u, _)| *u)
            .collect();
        for (j, &(lo, hi)) in cols.iter().enumerate() {
            if c + lo >= n {
                break;
            }
            let complete = c + hi < n && micros(nth_start(period, first, c + hi + 1)) <= as_of;
            let retained = members
                .iter()
                .filter(|u| {
                    evs.iter().any(|e| {
                        e.user == **u && ret_ev.is_none_or(|r| r == e.name) && {
                            let p = index(period, first, date(e.ts)) - c;
                            match mode {
                                Mode::NDay => p == lo,
                                Mode::Unbounded => p >= lo,
                                Mode::Bracket(_) => p >= lo && p <= hi,
                            }
                        }
                    })
                })
                .count() as u64;
            let key = (nth_start(period, first, c).to_string(), j as u32);
            out.insert(key, (members.len() as u64, complete.then_some(retained)));
        }
    }
    out
}

/// `(cohort, k) -> revenue in cents` of complete cells (`--value revenue`):
/// the members' return events with revenue in the cell's period(s).
fn naive_revenue(
    evs: &[Ev],
    period: Period,
    mode: &Mode,
    start_ev: Option<&str>,
    ret_ev: Option<&str>,
) -> BTreeMap<(String, u32), i128> {
    let cells = naive(evs, period, mode, start_ev, ret_ev);
    let min = evs.iter().map(|e| e.ts).min().unwrap();
    let first = start(period, date(min));
    let mut cohort_of = BTreeMap::new();
    for e in evs.iter().filter(|e| start_ev.is_none_or(|s| s == e.name)) {
        let c = index(period, first, date(e.ts));
        let entry = cohort_of.entry(e.user).or_insert(c);
        *entry = (*entry).min(c);
    }
    let mut out = BTreeMap::new();
    for ((cohort, j), (_, users)) in &cells {
        if users.is_none() {
            continue;
        }
        let (lo, hi) = match mode {
            Mode::Bracket(b) => (b[*j as usize].0 as i64, b[*j as usize].1 as i64),
            _ => (*j as i64, *j as i64),
        };
        let sum: i128 = evs
            .iter()
            .filter(|e| ret_ev.is_none_or(|r| r == e.name))
            .filter_map(|e| {
                let c = *cohort_of.get(&e.user)?;
                let k = index(period, first, date(e.ts)) - c;
                (nth_start(period, first, c).to_string() == *cohort && k >= lo && k <= hi)
                    .then_some(e.revenue? as i128)
            })
            .sum();
        out.insert((cohort.clone(), *j), sum);
    }
    out
}

/// With `--read day`: cohorts by `period`, columns by days from each
/// user's own first start day; a cell is complete once the cohort's last
/// day (within the data) plus the column has ended.
fn naive_read_day(
    evs: &[Ev],
    period: Period,
    mode: &Mode,
    start_ev: Option<&str>,
    ret_ev: Option<&str>,
) -> BTreeMap<(String, u32), (u64, Option<u64>)> {
    let min = evs.iter().map(|e| e.ts).min().unwrap();
    let max = evs.iter().map(|e| e.ts).max().unwrap();
    let first_day = date(min);
    let days = (date(max) - first_day).num_days() + 1;
    let day_of = |ts: i64| (date(ts) - first_day).num_days();
    let first = start(period, first_day);
    let n = index(period, first, date(max)) + 1;
    let as_of = micros(date(max)) + DAY;
    let mut start_day = BTreeMap::new();
    for e in evs.iter().filter(|e| start_ev.is_none_or(|s| s == e.name)) {
        let d = start_day.entry(e.user).or_insert(day_of(e.ts));
        *d = (*d).min(day_of(e.ts));
    }
    let cohort = |d: i64| index(period, first, first_day + chrono::Days::new(d as u64));
    let cols: Vec<(i64, i64)> = match mode {
        Mode::Bracket(b) => b.iter().map(|&(a, z)| (a as i64, z as i64)).collect(),
        _ => (0..days).map(|k| (k, k)).collect(),
    };
    let mut out = BTreeMap::new();
    for c in 0..n {
        let in_cohort: Vec<i64> = (0..days).filter(|&d| cohort(d) == c).collect();
        let (Some(&lo_day), Some(&hi_day)) = (in_cohort.first(), in_cohort.last()) else {
            continue;
        };
        let members: Vec<(u8, i64)> = start_day
            .iter()
            .filter(|(_, d)| cohort(**d) == c)
            .map(|(u, d)| (*u, *d))
            .collect();
        for (j, &(lo, hi)) in cols.iter().enumerate() {
            if lo_day + lo >= days {
                break;
            }
            let last = hi_day + hi;
            let complete =
                last < days && micros(first_day + chrono::Days::new(last as u64 + 1)) <= as_of;
            let retained = members
                .iter()
                .filter(|(u, d0)| {
                    evs.iter().any(|e| {
                        e.user == *u && ret_ev.is_none_or(|r| r == e.name) && {
                            let k = day_of(e.ts) - d0;
                            match mode {
                                Mode::NDay => k == lo,
                                Mode::Unbounded => k >= lo,
                                Mode::Bracket(_) => k >= lo && k <= hi,
                            }
                        }
                    })
                })
                .count() as u64;
            let key = (nth_start(period, first, c).to_string(), j as u32);
            out.insert(key, (members.len() as u64, complete.then_some(retained)));
        }
    }
    out
}

fn engine(url: &str, spec: &RetentionSpec) -> Vec<RetentionRow> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let events = Events::open(
            url,
            OpenOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        retention(&events, spec).await.unwrap().rows
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_naive_reference(
        evs in events(),
        period in prop::sample::select(vec![Period::Day, Period::Week, Period::Month]),
        mode_pick in 0..3usize,
        start_ev in prop::option::of(prop::sample::select(vec!["a", "b"])),
        ret_ev in prop::option::of(prop::sample::select(vec!["a", "b"])),
    ) {
        let mode = match mode_pick {
            0 => Mode::NDay,
            1 => Mode::Unbounded,
            _ => Mode::Bracket(vec![(0, 0), (1, 2), (3, 6)]),
        };
        let url = fresh_store(&evs, "retention-prop");
        let spec = RetentionSpec {
            period,
            tz: chrono_tz::Tz::UTC,
            start: start_ev.map(|s| datafusion::prelude::col("event").eq(datafusion::prelude::lit(s))),
            ret: ret_ev.map(|s| datafusion::prelude::col("event").eq(datafusion::prelude::lit(s))),
            mode: mode.clone(),
            as_of: None,
            by: None,
            read: None,
            revenue: mode != Mode::Unbounded,
        };
        let rows = engine(&url, &spec);
        let got: BTreeMap<(String, u32), (u64, Option<u64>)> = rows
            .iter()
            .filter(|r| r.kind == "cohort")
            .map(|r| ((r.cohort.clone().unwrap(), r.period), (r.cohort_size, r.users)))
            .collect();
        let want = naive(&evs, period, &mode, start_ev, ret_ev);
        prop_assert_eq!(got, want);
        if spec.revenue {
            let got: BTreeMap<(String, u32), i128> = rows
                .iter()
                .filter(|r| r.kind == "cohort" && r.complete)
                .map(|r| ((r.cohort.clone().unwrap(), r.period), r.revenue_cents.unwrap()))
                .collect();
            prop_assert_eq!(got, naive_revenue(&evs, period, &mode, start_ev, ret_ev));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn read_by_day_matches_naive_reference(
        evs in events(),
        month in any::<bool>(),
        mode_pick in 0..3usize,
        start_ev in prop::option::of(prop::sample::select(vec!["a", "b"])),
        ret_ev in prop::option::of(prop::sample::select(vec!["a", "b"])),
    ) {
        let period = if month { Period::Month } else { Period::Week };
        let mode = match mode_pick {
            0 => Mode::NDay,
            1 => Mode::Unbounded,
            _ => Mode::Bracket(vec![(0, 0), (1, 2), (3, 13)]),
        };
        let url = fresh_store(&evs, "retention-read-prop");
        let on = |s: &str| datafusion::prelude::col("event").eq(datafusion::prelude::lit(s.to_string()));
        let spec = RetentionSpec {
            period,
            tz: chrono_tz::Tz::UTC,
            start: start_ev.map(on),
            ret: ret_ev.map(on),
            mode: mode.clone(),
            as_of: None,
            by: None,
            read: Some(Period::Day),
            revenue: false,
        };
        let got: BTreeMap<(String, u32), (u64, Option<u64>)> = engine(&url, &spec)
            .into_iter()
            .filter(|r| r.kind == "cohort")
            .map(|r| ((r.cohort.unwrap(), r.period), (r.cohort_size, r.users)))
            .collect();
        let want = naive_read_day(&evs, period, &mode, start_ev, ret_ev);
        prop_assert_eq!(got, want);
    }
}
