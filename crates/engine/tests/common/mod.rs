//! Shared by the engine's property tests: random events, a store made from
//! them through the normal ingest path, and calendar arithmetic written
//! independently of the engine's.

#![allow(dead_code)]

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_ingest::decode::{Location, RawEvent, Scalar};
use tenure_ingest::{Ingest, IngestOptions, Store};

pub const DAY: i64 = 86_400_000_000;
pub const BASE: i64 = 20_513 * DAY; // 2026-03-01, a Sunday

#[derive(Debug, Clone)]
pub struct Ev {
    pub user: u8,
    pub name: &'static str,
    pub ts: i64,
    pub revenue: Option<i64>,
}

pub fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            0u8..12,
            prop::sample::select(vec!["a", "b", "purchase"]),
            0i64..70 * DAY,
            1i64..10_000,
        ),
        1..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(user, name, off, cents)| Ev {
                user,
                name,
                revenue: (name == "purchase").then_some(cents),
                // Snap some events to midnight, the edge of every period.
                ts: BASE + if off % 3 == 0 { off / DAY * DAY } else { off },
            })
            .collect()
    })
}

pub fn date(ts: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(ts)
        .unwrap()
        .date_naive()
}

/// Period start of a date, written independently of the engine's calendar.
pub fn start(period: Period, d: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => d,
        Period::Week => d - chrono::Days::new(d.weekday().num_days_from_monday() as u64),
        Period::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap(),
    }
}

pub fn index(period: Period, first: NaiveDate, d: NaiveDate) -> i64 {
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

pub fn nth_start(period: Period, first: NaiveDate, k: i64) -> NaiveDate {
    match period {
        Period::Day => first + chrono::Days::new(k as u64),
        Period::Week => first + chrono::Days::new(7 * k as u64),
        Period::Month => first + chrono::Months::new(k as u32),
    }
}

pub fn micros(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros()
}

pub fn store_of(evs: &[Ev], name: &str) -> String {
    let url = format!("memory://{name}");
    commit(&url, evs, name);
    url
}

/// Commits `evs` to the store at `url` as one ingest.
fn commit(url: &str, evs: &[Ev], name: &str) {
    let mut ing = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    for (i, e) in evs.iter().enumerate() {
        let user = format!("user{}", e.user);
        let rev = e.revenue.map(|c| format!("{}.{:02}", c / 100, c % 100));
        let raw = RawEvent {
            user_id: Some(Scalar::Str(user.as_str().into())),
            event: Some(Scalar::Str(e.name.into())),
            ts: Some(Scalar::Micros(e.ts)),
            revenue: rev.as_deref().map(|r| Scalar::Num(r.into())),
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
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A fresh in-memory store holding `evs`.
pub fn fresh_store(evs: &[Ev], prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    store_of(evs, &format!("{prefix}-{n}"))
}

/// A fresh in-memory store holding `evs` in two ingests (every other event
/// in the second): a day then has two files whose times interleave, so a
/// fold meets rows earlier than ones it has already folded.
pub fn fresh_store_in_two(evs: &[Ev], prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = format!("memory://{prefix}-{n}");
    let halves = [0, 1].map(|h| {
        evs.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == h)
            .map(|(_, e)| e.clone())
            .collect::<Vec<Ev>>()
    });
    for (h, part) in halves.iter().enumerate() {
        if !part.is_empty() {
            commit(&url, part, &format!("{prefix}-{n}-{h}"));
        }
    }
    url
}

/// Runs an async engine call on a fresh 2-thread runtime.
pub fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A segment compiled as of `as_of` without a catalog (no property or event
/// checks), with the default feature spec for that instant.
pub fn segment_and_spec(
    src: &str,
    as_of: i64,
) -> (tenure_dsl::Segment, tenure_engine::features::FeatureSpec) {
    let catalog = tenure_dsl::Catalog {
        properties: None,
        events: None,
    };
    let ctx = tenure_dsl::CompileContext::new(as_of);
    let seg = tenure_dsl::Segment::new(src, &tenure_dsl::Resolver::new(&catalog), &ctx).unwrap();
    let spec = tenure_engine::features::FeatureSpec {
        as_of,
        purchase: tenure_engine::userstats::PurchaseSpec::default(),
        thresholds: tenure_engine::lifecycle::Thresholds::default(),
        buyers_only: false,
        scoring: Default::default(),
    };
    (seg, spec)
}
