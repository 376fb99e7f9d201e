//! Property test: A/B assignment (arms, users seeing several arms, users
//! without an arm) and the per-arm metrics over the events from each user's
//! exposure on (event counts, exact revenue sums) equal a naive reference
//! computed from the definitions in the `abtest` module docs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use tenure_engine::abtest::{self, ColumnSums};
use tenure_engine::{Events, OpenOptions};
use tenure_ingest::decode::{Location, RawEvent, Scalar};
use tenure_ingest::{Ingest, IngestOptions, Store};

/// (user, event, time, revenue in cents, variant)
type Row = (u8, &'static str, i64, i64, Option<&'static str>);

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            0u8..10,
            prop::sample::select(vec!["view", "purchase"]),
            0i64..20 * DAY,
            1i64..10_000,
            prop::sample::select(vec![None, Some("A"), Some("B"), Some("A")]),
        ),
        1..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(u, e, off, c, var)| (u, e, BASE + off, c, var))
            .collect()
    })
}

fn store(rows: &[Row]) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = format!("memory://abtest-prop-{n}");
    let mut ing = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    for (i, (u, e, ts, cents, var)) in rows.iter().enumerate() {
        let user = format!("user{u}");
        let rev = format!("{}.{:02}", cents / 100, cents % 100);
        let raw = RawEvent {
            user_id: Some(Scalar::Str(user.as_str().into())),
            event: Some(Scalar::Str((*e).into())),
            ts: Some(Scalar::Micros(*ts)),
            revenue: (*e == "purchase").then(|| Scalar::Num(rev.as_str().into())),
            variant: var.map(|v| Scalar::Str(v.into())),
            ..Default::default()
        };
        let at = Location {
            input: "prop",
            line: i as u64 + 1,
        };
        ing.push(&raw, at);
    }
    ing.add_synthetic_source(url.clone(), url.clone(), rows.len() as u64);
    ing.commit().unwrap();
    url
}

/// Per arm: (users, purchases from exposure on, revenue cents from exposure
/// on); and the users with several arms, and those with none.
type Readout = (BTreeMap<String, (u64, i128, i128)>, u64, u64);

fn naive(rows: &[Row]) -> Readout {
    let users: BTreeSet<u8> = rows.iter().map(|r| r.0).collect();
    let (mut arms, mut multiple, mut unassigned) = (BTreeMap::new(), 0, 0);
    for u in users {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.0 == u).collect();
        let values: BTreeSet<&str> = mine.iter().filter_map(|r| r.4).collect();
        match values.len() {
            0 => unassigned += 1,
            1 => {
                let arm = *values.first().unwrap();
                let exposed = mine
                    .iter()
                    .filter(|r| r.4.is_some())
                    .map(|r| r.2)
                    .min()
                    .unwrap();
                let after = mine.iter().filter(|r| r.2 >= exposed && r.1 == "purchase");
                let e = arms.entry(arm.to_string()).or_insert((0, 0, 0));
                e.0 += 1;
                for r in after {
                    e.1 += 1;
                    e.2 += i128::from(r.3);
                }
            }
            _ => multiple += 1,
        }
    }
    (arms, multiple, unassigned)
}

fn engine(url: &str, threads: usize) -> Readout {
    block(async {
        let options = OpenOptions {
            threads,
            ..Default::default()
        };
        let events = Events::open(url, options).await.unwrap();
        let x = abtest::exposures(&events, "variant").await.unwrap();
        let restricted = x.restrict(&events).await.unwrap();
        let counts = abtest::event_counts(&restricted, "purchase").await.unwrap();
        let ColumnSums::Exact { values, scale } =
            abtest::column_sums(&restricted, "revenue").await.unwrap()
        else {
            panic!("revenue sums are exact")
        };
        assert_eq!(scale, 2);
        let mut arms: BTreeMap<String, (u64, i128, i128)> = BTreeMap::new();
        for (u, &a) in x.arm_of.iter().enumerate() {
            if let Some(name) = x.arms.get(a as usize) {
                let e = arms.entry(name.clone()).or_default();
                e.0 += 1;
                e.1 += counts[u];
                e.2 += values[u];
            } else {
                assert_eq!(counts[u], 0, "a user outside the arms has no metric events");
            }
        }
        for (name, users) in x.arms.iter().zip(&x.users) {
            assert_eq!(arms[name].0, *users, "users of arm {name}");
        }
        (arms, x.multiple, x.unassigned)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn assignment_and_metrics_match_naive(rows in rows(), threads in 1usize..4) {
        let url = store(&rows);
        prop_assert_eq!(engine(&url, threads), naive(&rows));
    }
}
