//! Property test (issue 18): live membership equals `tenure segment --as-of T
//! --users` at every instant. Random events are fed to `tenure-live` in time
//! order (each received at its own time), the clock advanced to random
//! instants T; at each, the live members of every segment are the users the
//! engine lists for the same expression over the same events, as of T.

mod common;

use std::collections::BTreeSet;

use common::*;
use datafusion::arrow::array::{Array, AsArray};
use proptest::prelude::*;
use tenure_engine::features::matching_users_by;
use tenure_engine::{Events, OpenOptions};
use tenure_live::{Live, LiveConfig, LiveEvent, Plan, Prop};

fn expressions() -> impl Strategy<Value = Vec<String>> {
    let one = (0usize..10, 0i64..40, 0i64..4, 0i64..20_000).prop_map(|(t, a, b, m)| {
        let x = format!("{}.{:02}", m / 200, m % 100);
        match t {
            0 => format!("R < {a}d and F >= {b}"),
            1 => format!("R >= {a}d or M > {x}"),
            2 => "lifecycle = growing or lifecycle = cooling".to_string(),
            3 => format!("lifecycle in (active, new) and not F = {b}"),
            4 => format!("did purchase where revenue > {x} >= {b} times within {a}d"),
            5 => format!("did a >= {b} times within {a}d and not did b within 2d"),
            6 => format!("sum(revenue) within {a}d >= {x} or avg(revenue) within 9d < 20"),
            7 => format!("first_seen within {a}d"),
            8 => format!("not last_seen within {a}d and did b"),
            _ => format!("M <= {x} and F >= {b}"),
        }
    });
    prop::collection::vec(one, 1..4)
}

fn engine_members(url: &str, src: &str, as_of: i64) -> BTreeSet<String> {
    let options = OpenOptions {
        threads: 2,
        to: Some(as_of + 1),
        ..Default::default()
    };
    let Ok(events) = block(Events::open(url, options)) else {
        return BTreeSet::new(); // nothing stored by then
    };
    let (seg, spec) = segment_and_spec(src, as_of);
    let batches = block(async {
        let stream = matching_users_by(&events, &seg.features, Some(&seg.expr), &spec, 1)
            .await
            .unwrap();
        datafusion::physical_plan::common::collect(stream)
            .await
            .unwrap()
    });
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(1).as_string::<i32>();
            (0..ids.len())
                .map(|i| ids.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn live_membership_equals_tenure_segment_as_of(
        mut evs in events(),
        exprs in expressions(),
        checks in prop::collection::vec(0i64..90 * DAY, 1..5),
    ) {
        let url = fresh_store(&evs, "live-vs-engine");
        let file: String = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| format!("segment s{i} = {e}\n"))
            .collect();
        let plan = Plan::new(&[("t.seg".into(), file)], LiveConfig::default()).unwrap();
        let mut live = Live::new(plan);
        evs.sort_by_key(|e| e.ts);
        // Some instants at midnight, where windows of whole days meet the
        // events snapped to midnight: the edges.
        let mut checks: Vec<i64> = checks
            .into_iter()
            .map(|c| BASE + if c % 3 == 0 { c / DAY * DAY } else { c })
            .collect();
        checks.sort_unstable();
        let mut out = Vec::new();
        let mut next = 0;
        for &t in &checks {
            while next < evs.len() && evs[next].ts <= t {
                let e = &evs[next];
                live.apply(
                    LiveEvent {
                        user_id: format!("user{}", e.user),
                        event: e.name.to_string(),
                        ts: e.ts,
                        props: e
                            .revenue
                            .map(|c| ("revenue".to_string(), Prop::Exact(c as i128, 2)))
                            .into_iter()
                            .collect(),
                    },
                    e.ts,
                    &mut out,
                );
                next += 1;
            }
            live.advance(t, &mut out);
            for (i, src) in exprs.iter().enumerate() {
                let (n, listed) = live.members(i, 0, usize::MAX);
                let listed: BTreeSet<String> = listed.into_iter().collect();
                prop_assert_eq!(n as usize, listed.len());
                prop_assert_eq!(&listed, &engine_members(&url, src, t), "{} as of {}", src, t);
            }
        }
    }
}
