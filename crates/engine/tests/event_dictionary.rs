//! A file's `event` column is read with one-byte dictionary keys when its
//! manifest entry lists at most 255 names, and with four-byte keys
//! otherwise: both readings give the same KPIs (flags on `event`) as a
//! store where the other events share one name.

mod common;

use common::*;
use tenure_engine::calendar::Period;
use tenure_engine::kpi::{KpiRow, KpiSpec, kpis};
use tenure_engine::{Events, OpenOptions};

/// Events of 40 users: each user's signup (`a`), some purchases, and other
/// events named `other(i)`; all but the last user's on the first day (one
/// file holds every name), the last user's over three weeks.
fn events(other: impl Fn(usize) -> &'static str) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut n = 0usize;
    for user in 0..40u8 {
        let start = i64::from(user) * 60_000_000;
        let step = if user == 39 { DAY / 2 } else { 1_000_000 };
        evs.push(Ev {
            user,
            name: "a",
            ts: start,
            revenue: None,
        });
        for k in 0..30i64 {
            let ts = start + 1 + k * step;
            let name = if (k + i64::from(user)) % 7 == 0 {
                "purchase"
            } else {
                other(n)
            };
            let revenue = (name == "purchase").then_some(100 + k);
            evs.push(Ev {
                user,
                name,
                ts,
                revenue,
            });
            n += 1;
        }
    }
    evs
}

fn kpis_of(evs: &[Ev], threads: usize) -> Vec<KpiRow> {
    let url = fresh_store(evs, "event-dictionary");
    let spec = KpiSpec {
        period: Period::Week,
        tz: chrono_tz::Tz::UTC,
        purchase: Default::default(),
        conversion_days: 7,
        signup: "a".into(),
    };
    block(async {
        let events = Events::open(
            &url,
            OpenOptions {
                threads,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        kpis(&events, &spec).await.unwrap()
    })
}

#[test]
fn one_and_four_byte_keys_give_the_same_kpis() {
    let names: Vec<&'static str> = (0..400)
        .map(|i| &*Box::leak(format!("other{i}").into_boxed_str()))
        .collect();
    for threads in [1, 3] {
        let few = kpis_of(&events(|_| "b"), threads);
        assert!(
            few.iter()
                .any(|r| r.metric == "orders" && r.numerator > 0.0)
        );
        // 253 other names, `a` and `purchase`: 255, the most one byte keys.
        let most = kpis_of(&events(|n| names[n % 253]), threads);
        // 254 other names: 256, read with four-byte keys.
        let over = kpis_of(&events(|n| names[n % 254]), threads);
        let many = kpis_of(&events(|n| names[n % 400]), threads);
        assert_eq!(most, few, "255 names, {threads} threads");
        assert_eq!(over, few, "256 names, {threads} threads");
        assert_eq!(many, few, "402 names, {threads} threads");
    }
}

/// `event` read with one-byte keys both for a flag and as a breakdown value
/// (`retention --by event --return-event purchase`): every user's first event
/// is `a`, so the one group holds exactly the rows of the reading without a
/// breakdown. The value column is passed on with the keys the fold expects.
#[test]
fn a_breakdown_by_event_reads_one_byte_keys_as_declared() {
    use datafusion::prelude::{col, lit};
    use tenure_engine::retention::{Mode, RetentionSpec, retention};
    let names: Vec<&'static str> = (0..10)
        .map(|i| &*Box::leak(format!("other{i}").into_boxed_str()))
        .collect();
    let url = fresh_store(&events(|n| names[n % 10]), "event-dictionary-by");
    let spec = |by: Option<&str>| RetentionSpec {
        period: Period::Week,
        tz: chrono_tz::Tz::UTC,
        start: None,
        ret: Some(col("event").eq(lit("purchase"))),
        mode: Mode::NDay,
        as_of: None,
        by: by.map(String::from),
        read: None,
        revenue: false,
    };
    let (plain, by) = block(async {
        let events = Events::open(
            &url,
            OpenOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let plain = retention(&events, &spec(None)).await.unwrap().rows;
        let by = retention(&events, &spec(Some("event"))).await.unwrap().rows;
        (plain, by)
    });
    assert!(plain.iter().any(|r| r.users.unwrap_or(0) > 0));
    assert!(by.iter().all(|r| r.group.as_deref() == Some("a")), "{by:?}");
    let ungrouped: Vec<_> = by
        .into_iter()
        .map(|mut r| {
            r.group = None;
            r
        })
        .collect();
    assert_eq!(ungrouped, plain);
}
