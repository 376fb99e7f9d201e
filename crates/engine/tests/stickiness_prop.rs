//! Property test: stickiness (a fold on the per-user fold operator) equals a
//! naive count from its definition on random events, with and without a
//! condition, for weeks and months, on one and on several key ranges.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use datafusion::logical_expr::{col, lit};
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_engine::stickiness::{StickinessSpec, rows_of_batch, stickiness};
use tenure_engine::{Events, OpenOptions};

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn stickiness_matches_naive(
        evs in events(),
        month in any::<bool>(),
        only_purchases in any::<bool>(),
        threads in 1usize..4,
    ) {
        let period = if month { Period::Month } else { Period::Week };
        let url = fresh_store(&evs, "stickiness-prop");
        let spec = StickinessSpec {
            period,
            tz: chrono_tz::Tz::UTC,
            condition: only_purchases.then(|| col("event").eq(lit("purchase"))),
            as_of: None,
        };
        let rows = block(async {
            let events = Events::open(&url, OpenOptions { threads, ..Default::default() }).await.unwrap();
            stickiness(&events, &spec).await.unwrap()
        });
        let got: BTreeMap<(String, u32), (u64, u64, bool)> = rows
            .iter()
            .flat_map(rows_of_batch)
            .map(|r| ((r.period, r.days), (r.users, r.active_users, r.complete)))
            .collect();

        // The naive count: distinct (user, day) pairs per period.
        let min = evs.iter().map(|e| e.ts).min().unwrap();
        let max = evs.iter().map(|e| e.ts).max().unwrap();
        let first = start(period, date(min));
        let n = index(period, first, date(max)) + 1;
        let as_of = micros(date(max)) + DAY;
        let mut days: BTreeMap<(i64, u8), BTreeSet<chrono::NaiveDate>> = BTreeMap::new();
        for e in evs.iter().filter(|e| !only_purchases || e.name == "purchase") {
            days.entry((index(period, first, date(e.ts)), e.user)).or_default().insert(date(e.ts));
        }
        let mut want = BTreeMap::new();
        for p in 0..n {
            let s = nth_start(period, first, p);
            let len = (nth_start(period, first, p + 1) - s).num_days() as u32;
            let per_user: Vec<u32> = days.iter().filter(|((q, _), _)| *q == p).map(|(_, d)| d.len() as u32).collect();
            let active = per_user.len() as u64;
            let complete = micros(nth_start(period, first, p + 1)) <= as_of;
            for k in 1..=len {
                let users = per_user.iter().filter(|&&d| d == k).count() as u64;
                want.insert((s.to_string(), k), (users, active, complete));
            }
        }
        prop_assert_eq!(got, want);
    }
}
