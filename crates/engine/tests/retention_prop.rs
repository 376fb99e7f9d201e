//! Property test: the engine's retention equals a naive reference computed
//! straight from the definition (DESIGN.md) on random events, for every period
//! and mode.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_engine::retention::{Mode, RetentionRow, RetentionSpec, retention};
use tenure_engine::{Events, OpenOptions};
use tenure_ingest::decode::{Location, RawEvent, Scalar};
use tenure_ingest::{Ingest, IngestOptions, Store};

const DAY: i64 = 86_400_000_000;
const BASE: i64 = 20_513 * DAY; // 2026-03-01, a Sunday

#[derive(Debug, Clone)]
struct Ev {
    user: u8,
    name: &'static str,
    ts: i64,
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            0u8..12,
            prop::sample::select(vec!["a", "b"]),
            0i64..70 * DAY,
        ),
        1..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(user, name, off)| Ev {
                user,
                name,
                // Snap some events to midnight, the edge of every period.
                ts: BASE + if off % 3 == 0 { off / DAY * DAY } else { off },
            })
            .collect()
    })
}

fn date(ts: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(ts)
        .unwrap()
        .date_naive()
}

/// Period start of a date, written independently of the engine's calendar.
fn start(period: Period, d: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => d,
        Period::Week => d - chrono::Days::new(d.weekday().num_days_from_monday() as u64),
        Period::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap(),
    }
}

fn index(period: Period, first: NaiveDate, d: NaiveDate) -> i64 {
    let s = start(period, d);
    match period {
        Period::Day => (s - first).num_days(),
        Period::Week => (s - first).num_days() / 7,
        Period::Month => {
            (s.year() as i64 * 12 + s.month0() as i64)
                - (first.year() as i64 * 12 + first.month0() as i64)
        }
    }
}

fn nth_start(period: Period, first: NaiveDate, k: i64) -> NaiveDate {
    match period {
        Period::Day => first + chrono::Days::new(k as u64),
        Period::Week => first + chrono::Days::new(7 * k as u64),
        Period::Month => first + chrono::Months::new(k as u32),
    }
}

fn micros(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros()
}

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

fn store_of(evs: &[Ev], name: &str) -> String {
    let url = format!("memory://{name}");
    let mut ing = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    for (i, e) in evs.iter().enumerate() {
        let user = format!("user{}", e.user);
        let raw = RawEvent {
            user_id: Some(Scalar::Str(user.as_str().into())),
            event: Some(Scalar::Str(e.name.into())),
            ts: Some(Scalar::Micros(e.ts)),
            ..Default::default()
        };
        ing.push(
            &raw,
            Location {
                input: "prop",
                line: i as u64 + 1,
            },
        );
    }
    ing.add_synthetic_source(name.to_string(), name.to_string(), evs.len() as u64);
    ing.commit().unwrap();
    url
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

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
        let name = format!("retention-prop-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let url = store_of(&evs, &name);
        let spec = RetentionSpec {
            period,
            tz: chrono_tz::Tz::UTC,
            start: start_ev.map(|s| datafusion::prelude::col("event").eq(datafusion::prelude::lit(s))),
            ret: ret_ev.map(|s| datafusion::prelude::col("event").eq(datafusion::prelude::lit(s))),
            mode: mode.clone(),
            as_of: None,
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
