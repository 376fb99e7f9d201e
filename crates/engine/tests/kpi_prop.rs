//! Property test: every KPI (one fold over the events) equals a naive count
//! from its definition (crates/engine/src/kpi.rs, DESIGN.md) on random events,
//! for weeks and months, on one and on several key ranges.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use tenure_engine::calendar::Period;
use tenure_engine::kpi::{KpiSpec, kpis};
use tenure_engine::{Events, OpenOptions};

type Table = BTreeMap<(String, String), (f64, f64)>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn kpis_match_naive(
        evs in events(),
        month in any::<bool>(),
        threads in 1usize..4,
        // Away from UTC a day's file holds rows of two local days, so
        // batches span periods (the row-by-row path of the fold).
        tz in prop::sample::select(vec![
            chrono_tz::Tz::UTC,
            chrono_tz::Tz::America__New_York,
            chrono_tz::Tz::Asia__Kolkata,
        ]),
    ) {
        let period = if month { Period::Month } else { Period::Week };
        // Two ingests: a day's rows come in two files out of time order.
        let url = fresh_store_in_two(&evs, "kpi-prop");
        prop_assert_eq!(engine(&url, period, tz, threads), naive(&evs, period, tz));
    }
}

/// The engine's KPIs of the store at `url` (signup `a`, 7-day conversion),
/// as numerators and denominators by metric and period.
fn engine(url: &str, period: Period, tz: chrono_tz::Tz, threads: usize) -> Table {
    let spec = KpiSpec {
        period,
        tz,
        purchase: Default::default(),
        conversion_days: 7,
        signup: "a".into(),
    };
    block(async {
        let options = OpenOptions {
            threads,
            ..Default::default()
        };
        let events = Events::open(url, options).await.unwrap();
        kpis(&events, &spec).await.unwrap()
    })
    .into_iter()
    .map(|r| ((r.metric, r.period), (r.numerator, r.denominator)))
    .collect()
}

fn naive(evs: &[Ev], period: Period, tz: chrono_tz::Tz) -> Table {
    // Dates in the reporting time zone.
    let date = |ts: i64| {
        chrono::DateTime::from_timestamp_micros(ts)
            .unwrap()
            .with_timezone(&tz)
            .date_naive()
    };
    let min = evs.iter().map(|e| e.ts).min().unwrap();
    let max = evs.iter().map(|e| e.ts).max().unwrap();
    let first = start(period, date(min));
    let n = index(period, first, date(max)) + 1;
    let of = |ts: i64| index(period, first, date(ts));
    let active = |p: i64| -> BTreeSet<u8> {
        evs.iter()
            .filter(|e| of(e.ts) == p)
            .map(|e| e.user)
            .collect()
    };
    let purchases = |p: i64| {
        evs.iter()
            .filter(move |e| e.name == "purchase" && of(e.ts) == p)
    };
    let mut t = Table::new();
    for p in 0..n {
        let label = nth_start(period, first, p).to_string();
        let mut put = |m: &str, num: f64, den: f64| {
            t.insert((m.to_string(), label.clone()), (num, den));
        };
        let users = active(p).len() as f64;
        // Days of the period between the first and the last event's dates.
        let days: Vec<chrono::NaiveDate> = date(min)
            .iter_days()
            .take_while(|d| *d <= date(max))
            .filter(|d| index(period, first, *d) == p)
            .collect();
        let user_days: BTreeSet<(u8, chrono::NaiveDate)> = evs
            .iter()
            .filter(|e| of(e.ts) == p)
            .map(|e| (e.user, date(e.ts)))
            .collect();
        let dau = user_days.len() as f64;
        let nd = days.len() as f64;
        let cents: i64 = purchases(p).filter_map(|e| e.revenue).sum();
        let rev = cents as f64 / 100.0;
        let orders = purchases(p).count() as f64;
        let buyers = purchases(p).map(|e| e.user).collect::<BTreeSet<_>>().len() as f64;
        put("active_users", users, 1.0);
        put("dau", dau, nd);
        put("stickiness", if nd > 0.0 { dau / nd } else { 0.0 }, users);
        put("revenue", rev, 1.0);
        put("orders", orders, 1.0);
        put("purchasers", buyers, 1.0);
        put("arpu", rev, users);
        put("arppu", rev, buyers);
        put("aov", rev, orders);
        if p > 0 {
            let prev = active(p - 1);
            let now = active(p);
            let before: BTreeSet<u8> = (0..p - 1).flat_map(active).collect();
            let pool: BTreeSet<u8> = before.difference(&prev).copied().collect();
            put(
                "churn_rate",
                prev.difference(&now).count() as f64,
                prev.len() as f64,
            );
            put(
                "reactivation_rate",
                pool.intersection(&now).count() as f64,
                pool.len() as f64,
            );
        }
    }
    let users: BTreeSet<u8> = evs.iter().map(|e| e.user).collect();
    let (mut buyers, mut repeat, mut eligible, mut converted) = (0.0, 0.0, 0.0, 0.0);
    for u in users {
        let mine: Vec<&Ev> = evs.iter().filter(|e| e.user == u).collect();
        let bought: Vec<i64> = mine
            .iter()
            .filter(|e| e.name == "purchase")
            .map(|e| e.ts)
            .collect();
        if !bought.is_empty() {
            buyers += 1.0;
        }
        if bought.len() >= 2 {
            repeat += 1.0;
        }
        // First-order conversion counts from the first signup (event "a").
        let signup = mine.iter().filter(|e| e.name == "a").map(|e| e.ts).min();
        if let Some(s) = signup.filter(|&s| s + 7 * DAY <= max) {
            eligible += 1.0;
            if bought
                .iter()
                .min()
                .is_some_and(|&f| f >= s && f - s <= 7 * DAY)
            {
                converted += 1.0;
            }
        }
    }
    t.insert(("repurchase_rate".into(), "all".into()), (repeat, buyers));
    t.insert(
        ("first_order_conversion_7d".into(), "all".into()),
        (converted, eligible),
    );
    t
}

/// A day's second file holds an earlier signup (event `a`) of a user the
/// first file already showed later that day, or an earlier purchase: the
/// first signup and the first purchase must still become the earlier ones (here they
/// decide whether the purchase came within 7 days). Both files are tried
/// first: the events are split between the two ingests both ways.
#[test]
fn earlier_rows_in_a_later_file_move_the_first_event_and_purchase_back() {
    let hour = DAY / 24;
    let ev = |user, name, ts| Ev {
        user,
        name,
        ts: BASE + ts,
        revenue: (name == "purchase").then_some(500),
    };
    // Even indexes go to the first ingest, odd ones to the second.
    let evs = vec![
        ev(1, "a", 9 * hour),                   // first file of day 0 starts at 09:00
        ev(0, "a", 12 * hour),                  // second file of day 0: user 0 at 12:00
        ev(0, "b", 15 * hour),                  // first file: user 0 at 15:00
        ev(1, "a", 10 * DAY),                   // the data runs past the window
        ev(0, "purchase", 7 * DAY + 13 * hour), // 7 days 1 hour after 12:00
        // User 2 first seen at 14:00 on day 0, buys on day 7 at 15:00
        // (first file) and 13:00 (second): the 13:00 one is within 7 days.
        ev(2, "a", 14 * hour),
        ev(2, "purchase", 7 * DAY + 15 * hour),
        ev(2, "purchase", 7 * DAY + 13 * hour),
    ];
    // The same rows with the files' shares swapped.
    let mut swapped = vec![ev(3, "a", 10 * DAY)];
    swapped.extend(evs.iter().cloned());
    for (i, evs) in [evs, swapped].iter().enumerate() {
        let url = fresh_store_in_two(evs, &format!("kpi-two-files-{i}"));
        for period in [Period::Week, Period::Month] {
            let got = engine(&url, period, chrono_tz::Tz::UTC, 1);
            let want = naive(evs, period, chrono_tz::Tz::UTC);
            // User 0 did not convert within 7 days, user 2 did.
            assert_eq!(
                want[&("first_order_conversion_7d".to_string(), "all".to_string())],
                (1.0, 3.0)
            );
            assert_eq!(got, want, "split {i}, {period:?}");
        }
    }
}

/// A first purchase before the first signup is not a conversion, even when
/// another purchase comes within the window after the signup on the same day
/// (the fold judges a day's purchases together when the day settles); a
/// purchase at the very time of the signup is one.
#[test]
fn a_purchase_before_the_signup_spoils_a_later_one_the_same_day() {
    let hour = DAY / 24;
    let ev = |user, name, ts| Ev {
        user,
        name,
        ts: BASE + ts,
        revenue: (name == "purchase").then_some(300),
    };
    let evs = vec![
        // User 0 buys, signs up, buys again, all on day 0.
        ev(0, "purchase", 9 * hour),
        ev(0, "a", 10 * hour),
        ev(0, "purchase", 11 * hour),
        // User 1 buys on day 0, signs up on day 1, buys on day 2.
        ev(1, "purchase", 10 * hour),
        ev(1, "a", DAY + 10 * hour),
        ev(1, "purchase", 2 * DAY + 10 * hour),
        // User 2 signs up on day 0 and buys on day 3: converts.
        ev(2, "a", 8 * hour),
        ev(2, "purchase", 3 * DAY),
        // User 3 buys at the instant of the signup: converts.
        ev(3, "a", 8 * hour),
        ev(3, "purchase", 8 * hour),
        // The data runs past the window.
        ev(4, "a", 12 * DAY),
    ];
    let mut swapped = vec![ev(5, "b", 12 * DAY)];
    swapped.extend(evs.iter().cloned());
    for (i, evs) in [evs, swapped].iter().enumerate() {
        let url = fresh_store_in_two(evs, &format!("kpi-before-signup-{i}"));
        for threads in [1, 2] {
            let got = engine(&url, Period::Week, chrono_tz::Tz::UTC, threads);
            let key = ("first_order_conversion_7d".to_string(), "all".to_string());
            assert_eq!(got[&key], (2.0, 4.0), "split {i}, {threads} threads");
            assert_eq!(got, naive(evs, Period::Week, chrono_tz::Tz::UTC));
        }
    }
}
