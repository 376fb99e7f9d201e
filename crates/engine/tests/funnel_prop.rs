//! Property tests: the funnel engine against naive references on random
//! events: the existence definition of windowFunnel's level for the default
//! and first-touch modes (and an entry range), and a line-by-line transcription
//! of ClickHouse's loop for the strict modes.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use tenure_engine::funnel::{self, FunnelSpec, Modes, Step};
use tenure_engine::{Events, OpenOptions};

const MIN: i64 = 60_000_000;

fn funnel_events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            0u8..8,
            prop::sample::select(vec!["a", "b", "c", "x"]),
            0i64..240,
        ),
        1..50,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(user, name, m)| Ev {
                user,
                name,
                revenue: None,
                ts: BASE + m * MIN,
            })
            .collect()
    })
}

fn steps() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=4)
}

/// Each user's sorted (ts, step) entries; step 0 is another event.
fn entries(evs: &[Ev], user: u8, steps: &[&str], from: i64, to: i64) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    for e in evs.iter().filter(|e| e.user == user) {
        let mut any = false;
        for (i, s) in steps.iter().enumerate() {
            if e.name == *s {
                any = true;
                if i == 0 && (e.ts < from || e.ts >= to) {
                    continue;
                }
                out.push((e.ts, i + 1));
            }
        }
        if !any {
            out.push((e.ts, 0));
        }
    }
    out.sort();
    out
}

/// windowFunnel's level by its definition: the longest k such that entries
/// p1 < p2 < ... < pk (in (time, step) order) match steps 1..k and pk is
/// within the window of p1. With first touch, p1 is the first step-1 entry.
fn naive_level(es: &[(i64, usize)], n: usize, window: i64, first_touch: bool) -> usize {
    let mut best = 0;
    let starts: Vec<usize> = es
        .iter()
        .enumerate()
        .filter(|(_, e)| e.1 == 1)
        .map(|(i, _)| i)
        .take(if first_touch { 1 } else { usize::MAX })
        .collect();
    for &p1 in &starts {
        // Greedy from a fixed start is optimal: take the earliest next match.
        let mut level = 1;
        let mut at = p1;
        while level < n {
            let next =
                (at + 1..es.len()).find(|&q| es[q].1 == level + 1 && es[q].0 <= es[p1].0 + window);
            match next {
                Some(q) => {
                    level += 1;
                    at = q;
                }
                None => break,
            }
        }
        best = best.max(level);
    }
    best
}

/// ClickHouse's getEventLevel loop, transcribed.
fn clickhouse_level(es: &[(i64, usize)], n: usize, window: i64, m: Modes) -> usize {
    if es.is_empty() || es.iter().all(|e| e.1 == 0) && !m.strict_order {
        return 0;
    }
    if !m.strict_order && n == 1 {
        return 1;
    }
    let mut ts: Vec<Option<(i64, i64)>> = vec![None; n];
    let max_set =
        |ts: &Vec<Option<(i64, i64)>>| (0..n).rev().find(|&j| ts[j].is_some()).map_or(0, |j| j + 1);
    let mut first_event = false;
    for &(t, step) in es {
        if m.strict_order && step == 0 {
            if first_event {
                break;
            }
            continue;
        }
        if step == 0 {
            continue;
        }
        let idx = step - 1;
        if idx == 0 {
            ts[0] = Some((t, t));
            first_event = true;
        } else if m.strict_deduplication && ts[idx].is_some() {
            return max_set(&ts);
        } else if m.strict_order && first_event && ts[idx - 1].is_none() {
            return (0..n).find(|&j| ts[j].is_none()).unwrap_or(n);
        } else if let Some((first, prev)) = ts[idx - 1] {
            let mut ok = t <= first + window;
            if m.strict_increase {
                ok = ok && prev < t;
            }
            if ok {
                ts[idx] = Some((first, t));
                if idx + 1 == n {
                    return n;
                }
            }
        }
    }
    max_set(&ts)
}

fn engine_counts(url: &str, spec: &FunnelSpec) -> Vec<u64> {
    let rows = block(async {
        let events = Events::open(
            url,
            OpenOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        funnel::funnel(&events, spec).await.unwrap().0
    });
    rows.iter().map(|r| r.users).collect()
}

fn spec_of(steps: &[&str], window: i64, modes: Modes) -> FunnelSpec {
    FunnelSpec {
        steps: steps
            .iter()
            .map(|s| Step {
                event: s.to_string(),
                condition: None,
                label: s.to_string(),
            })
            .collect(),
        window_us: window,
        modes,
        exclusions: vec![],
        by: None,
        user_groups: None,
        hold: None,
        entry_from: None,
        entry_to: None,
    }
}

/// Users at or beyond each step, from per-user levels.
fn counts(levels: &BTreeMap<u8, usize>, n: usize) -> Vec<u64> {
    (1..=n)
        .map(|k| levels.values().filter(|&&l| l >= k).count() as u64)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn default_and_first_touch_match_the_definition(
        evs in funnel_events(),
        steps in steps(),
        window in prop::sample::select(vec![1, 10, 30, 120]),
        first_touch in any::<bool>(),
        range in prop::option::of((0i64..120, 1i64..120)),
    ) {
        let window = window * MIN;
        let (from, to) = match range {
            Some((a, len)) => (BASE + a * MIN, BASE + (a + len) * MIN),
            None => (i64::MIN, i64::MAX),
        };
        let url = fresh_store(&evs, "funnel-prop");
        let mut spec = spec_of(&steps, window, Modes { first_touch, ..Default::default() });
        if range.is_some() {
            spec.entry_from = Some(from);
            spec.entry_to = Some(to);
        }
        let got = engine_counts(&url, &spec);
        let mut levels = BTreeMap::new();
        for u in 0..8u8 {
            // Events before the range never matter; the engine does not read them.
            let es: Vec<_> = entries(&evs, u, &steps, from, to)
                .into_iter()
                .filter(|e| e.0 >= from || range.is_none())
                .collect();
            levels.insert(u, naive_level(&es, steps.len(), window, first_touch));
        }
        prop_assert_eq!(got, counts(&levels, steps.len()));
    }

    #[test]
    fn strict_modes_match_clickhouse_loop(
        evs in funnel_events(),
        steps in steps(),
        window in prop::sample::select(vec![1, 10, 30, 120]),
        flags in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let window = window * MIN;
        let modes = Modes {
            strict_order: flags.0,
            strict_increase: flags.1,
            strict_deduplication: flags.2,
            first_touch: false,
        };
        let url = fresh_store(&evs, "funnel-strict-prop");
        let got = engine_counts(&url, &spec_of(&steps, window, modes));
        let mut levels = BTreeMap::new();
        for u in 0..8u8 {
            let mut es = entries(&evs, u, &steps, i64::MIN, i64::MAX);
            if !modes.strict_order {
                es.retain(|e| e.1 != 0);
            }
            levels.insert(u, clickhouse_level(&es, steps.len(), window, modes));
        }
        prop_assert_eq!(got, counts(&levels, steps.len()));
    }
}
