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
        };
        let got: BTreeMap<(String, u32), (u64, Option<u64>)> = engine(&url, &spec)
            .into_iter()
            .filter(|r| r.kind == "cohort")
            .map(|r| ((r.cohort.unwrap(), r.period), (r.cohort_size, r.users)))
            .collect();
        let want = naive(&evs, period, &mode, start_ev, ret_ev);
        prop_assert_eq!(got, want);
    }
}
