//! Property tests: LTV, lifecycle counts and stages equal naive references
//! computed straight from their definitions on random events.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_engine::lifecycle::{self, Thresholds};
use tenure_engine::retention::{Mode, RetentionSpec};
use tenure_engine::userstats::{self, PurchaseSpec};
use tenure_engine::{Events, OpenOptions};

fn open(url: &str) -> Events {
    block(Events::open(
        url,
        OpenOptions {
            threads: 2,
            ..Default::default()
        },
    ))
    .unwrap()
}

fn periods() -> impl Strategy<Value = Period> {
    prop::sample::select(vec![Period::Day, Period::Week, Period::Month])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn ltv_matches_naive(evs in events(), period in periods(), on_a in any::<bool>(), threads in 1usize..4) {
        let url = fresh_store(&evs, "ltv-prop");
        // With a start condition, revenue may come before the cohort is known.
        let on = on_a.then(|| datafusion::logical_expr::col("event").eq(datafusion::logical_expr::lit("a")));
        let spec = RetentionSpec { period, tz: chrono_tz::Tz::UTC, start: on, ret: None, mode: Mode::NDay, as_of: None, by: None, read: None, revenue: false };
        let got: BTreeMap<(String, u32), (u64, Option<String>)> = block(async {
            let events = Events::open(&url, OpenOptions { threads, ..Default::default() }).await.unwrap();
            tenure_engine::ltv::ltv(&events, &spec).await.unwrap()
        })
        .into_iter()
        .filter(|r| r.kind == "cohort")
        .map(|r| ((r.cohort.unwrap(), r.period), (r.cohort_size, r.revenue)))
        .collect();

        let min = evs.iter().map(|e| e.ts).min().unwrap();
        let max = evs.iter().map(|e| e.ts).max().unwrap();
        let first = start(period, date(min));
        let n = index(period, first, date(max)) + 1;
        let as_of = micros(date(max)) + DAY;
        let mut cohort: BTreeMap<u8, i64> = BTreeMap::new();
        for e in evs.iter().filter(|e| !on_a || e.name == "a") {
            let c = index(period, first, date(e.ts));
            let x = cohort.entry(e.user).or_insert(c);
            *x = (*x).min(c);
        }
        let mut want = BTreeMap::new();
        for c in 0..n {
            let members: BTreeSet<u8> = cohort.iter().filter(|(_, v)| **v == c).map(|(u, _)| *u).collect();
            for k in 0..n - c {
                let complete = micros(nth_start(period, first, c + k + 1)) <= as_of;
                let cents: i64 = evs
                    .iter()
                    // From the cohort period on: revenue before it does not count.
                    .filter(|e| members.contains(&e.user) && (0..=k).contains(&(index(period, first, date(e.ts)) - c)))
                    .filter_map(|e| e.revenue)
                    .sum();
                let text = format!("{}.{:02}", cents / 100, cents % 100);
                want.insert((nth_start(period, first, c).to_string(), k as u32), (members.len() as u64, complete.then_some(text)));
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn lifecycle_counts_match_naive(evs in events(), period in periods()) {
        let url = fresh_store(&evs, "lifecycle-prop");
        let events = open(&url);
        let rows = block(lifecycle::periods(&events, period, chrono_tz::Tz::UTC, None)).unwrap();
        let got: BTreeMap<(String, &str), u64> = rows.iter().map(|r| ((r.period.clone(), r.status), r.users)).collect();

        let min = evs.iter().map(|e| e.ts).min().unwrap();
        let max = evs.iter().map(|e| e.ts).max().unwrap();
        let first = start(period, date(min));
        let n = index(period, first, date(max)) + 1;
        let mut active: BTreeMap<u8, BTreeSet<i64>> = BTreeMap::new();
        for e in &evs {
            active.entry(e.user).or_default().insert(index(period, first, date(e.ts)));
        }
        let mut want = BTreeMap::new();
        for p in 0..n {
            let label = nth_start(period, first, p).to_string();
            let (mut new, mut ret, mut res, mut dor) = (0, 0, 0, 0);
            for set in active.values() {
                let f = *set.iter().next().unwrap();
                let (now, prev) = (set.contains(&p), set.contains(&(p - 1)));
                if now && p == f { new += 1 } else if now && prev { ret += 1 } else if now && p > f { res += 1 } else if !now && prev { dor += 1 }
            }
            for (s, v) in [("new", new), ("returning", ret), ("resurrecting", res), ("dormant", dor)] {
                want.insert((label.clone(), s), v);
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn stages_match_naive(evs in events()) {
        let url = fresh_store(&evs, "stages-prop");
        let events = open(&url);
        let stats = block(userstats::scan(&events, &PurchaseSpec::default())).unwrap();
        let as_of = evs.iter().map(|e| e.ts).max().unwrap();
        let t = Thresholds::default();
        let got: BTreeMap<(&str, &str), u64> =
            lifecycle::stage_counts(&stats, as_of, &t).into_iter().map(|r| ((r.axis, r.stage), r.users)).collect();

        let mut want: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (axis, names) in [("tenure", &lifecycle::TENURE[..]), ("activity", &lifecycle::ACTIVITY[..])] {
            for s in names {
                want.insert((axis, s), 0);
            }
        }
        let users: BTreeSet<u8> = evs.iter().map(|e| e.user).collect();
        let stage = |days: i64, bounds: [i64; 3]| if days <= bounds[0] { 0 } else if days <= bounds[1] { 1 } else if days <= bounds[2] { 2 } else { 3 };
        for u in users {
            let first_seen = evs.iter().filter(|e| e.user == u).map(|e| e.ts).min().unwrap();
            *want.get_mut(&("tenure", lifecycle::TENURE[stage((as_of - first_seen) / DAY, t.tenure)])).unwrap() += 1;
            let last_buy = evs.iter().filter(|e| e.user == u && e.name == "purchase").map(|e| e.ts).max();
            let s = match last_buy {
                Some(l) => lifecycle::ACTIVITY[stage((as_of - l) / DAY, t.activity)],
                None => "none",
            };
            *want.get_mut(&("activity", s)).unwrap() += 1;
        }
        prop_assert_eq!(&got, &want);
        // The stages fold (what `tenure lifecycle --stages` and
        // lifecycle_stages() run) gives the same counts.
        let folded: BTreeMap<(&str, &str), u64> = block(lifecycle::stages(&events, as_of, &t, &PurchaseSpec::default()))
            .unwrap()
            .into_iter()
            .map(|r| ((r.axis, r.stage), r.users))
            .collect();
        prop_assert_eq!(folded, want);
    }
}
