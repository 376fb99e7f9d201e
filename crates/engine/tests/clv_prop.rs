//! Property test: the CLV fold's per-buyer facts (repeat purchase days, the
//! days from the first purchase to the last one and to the calibration's end,
//! the repeat days' revenue, the holdout purchase days) equal a naive
//! computation from their definitions on random events, stores written in one
//! or two ingests (a user's rows then come from interleaved files), with and
//! without an as-of.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use datafusion::arrow::array::{AsArray, UInt32Array};
use datafusion::arrow::datatypes::{Float64Type, UInt32Type};
use proptest::prelude::*;
use tenure_engine::clv::{ClvFold, ClvSpec};
use tenure_engine::{Events, OpenOptions};

type Facts = (u32, u32, u32, i64, u32);

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn clv_facts_match_naive(
        evs in events(),
        cal_day in 1i64..70,
        extra_days in prop::option::of(0i64..20),
        two in any::<bool>(),
        threads in 1usize..4,
    ) {
        let url = if two { fresh_store_in_two(&evs, "clv-prop") } else { fresh_store(&evs, "clv-prop") };
        let cal_end = BASE + cal_day * DAY;
        let max = evs.iter().map(|e| e.ts).max().unwrap();
        let as_of = extra_days.map(|d| (cal_end + d * DAY).max(cal_end));
        let until = as_of.unwrap_or(max / DAY * DAY + DAY);
        let spec = ClvSpec {
            purchase_event: "purchase".into(),
            tz: chrono_tz::Tz::UTC,
            unit_days: 7,
            calibration_end: Some(cal_end),
            as_of,
            horizon: 52.0,
            discount: 0.0,
        };
        let min = evs.iter().map(|e| e.ts).min().unwrap();
        if cal_end <= min || cal_end > until {
            // Refused: nothing before the calibration's end, or a
            // calibration period ending after the data.
            return Ok(());
        }
        let got: BTreeMap<String, Facts> = block(async {
            let events = Events::open(&url, OpenOptions { threads, to: as_of, ..Default::default() }).await.unwrap();
            let fold = ClvFold::new(&events, &spec).unwrap();
            let batches = tenure_engine::fold::run(&events, fold).await.unwrap();
            let mut ids = tenure_engine::user_ids::UserIds::open(&events).await.unwrap();
            let mut out = BTreeMap::new();
            for b in batches {
                let keys: &UInt32Array = b.column(0).as_primitive::<UInt32Type>();
                let names = ids.of(keys).await.unwrap();
                let col = |i: usize| b.column(i).as_primitive::<UInt32Type>().clone();
                let (x, tx, t, hold) = (col(1), col(2), col(3), col(5));
                let rev = b.column(4).as_primitive::<Float64Type>();
                for i in 0..b.num_rows() {
                    out.insert(
                        names.value(i).to_string(),
                        (x.value(i), tx.value(i), t.value(i), (rev.value(i) * 100.0).round() as i64, hold.value(i)),
                    );
                }
            }
            out
        });

        // Naive: each buyer's purchase dates in and after the calibration period.
        let end_day = (cal_end - 1) / DAY;
        let mut want: BTreeMap<String, Facts> = BTreeMap::new();
        let mut users: BTreeSet<u8> = BTreeSet::new();
        for e in &evs { users.insert(e.user); }
        for u in users {
            let mine: Vec<&Ev> = evs.iter().filter(|e| e.user == u && e.name == "purchase" && e.ts < until).collect();
            let cal: Vec<&Ev> = mine.iter().copied().filter(|e| e.ts < cal_end).collect();
            let Some(first) = cal.iter().map(|e| e.ts / DAY).min() else { continue };
            let days: BTreeSet<i64> = cal.iter().map(|e| e.ts / DAY).collect();
            let last = *days.iter().max().unwrap();
            let repeat: i64 = cal.iter().filter(|e| e.ts / DAY != first).map(|e| e.revenue.unwrap_or(0)).sum();
            let holdout: BTreeSet<i64> = mine.iter().filter(|e| e.ts >= cal_end).map(|e| e.ts / DAY).collect();
            want.insert(format!("user{u}"), (
                days.len() as u32 - 1,
                (last - first) as u32,
                (end_day - first) as u32,
                repeat,
                holdout.len() as u32,
            ));
        }
        prop_assert_eq!(got, want);
    }
}
