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
        steps: steps.iter().map(|s| Step::named(s)).collect(),
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

/// More users than one fold block (4096) and one thread's range, events over
/// three days written by three ingests (so a date has several files whose
/// times overlap and each user's rows come from several runs, out of time
/// order), with ties at equal times: the direct read of the stored files and
/// the DataFusion plan (forced by a condition that is always true) both give
/// the definition's counts, and the same time-to-convert medians.
#[test]
fn many_users_many_files_match_the_definition() {
    const USERS: u32 = 9_000;
    let names = ["a", "b", "c", "x"];
    // A small deterministic generator (xorshift), so failures reproduce.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let mut evs: Vec<(u32, &str, i64)> = Vec::new();
    for u in 0..USERS {
        for _ in 0..next(12) {
            // One of three days, in its first four hours, in 5-minute steps
            // (coarse enough for ties).
            let ts = BASE + next(3) as i64 * DAY + next(48) as i64 * 5 * MIN;
            evs.push((u, names[next(4) as usize], ts));
        }
    }
    let url = format!("memory://funnel-many-{}", std::process::id());
    for (part, chunk) in evs.chunks(evs.len() / 3 + 1).enumerate() {
        let mut ing = tenure_ingest::Ingest::begin(
            tenure_ingest::Store::open(&url).unwrap(),
            tenure_ingest::IngestOptions::default(),
        )
        .unwrap();
        for (i, (u, name, ts)) in chunk.iter().enumerate() {
            let user = format!("u{u}");
            let raw = tenure_ingest::decode::RawEvent {
                user_id: Some(tenure_ingest::decode::Scalar::Str(user.as_str().into())),
                event: Some(tenure_ingest::decode::Scalar::Str((*name).into())),
                ts: Some(tenure_ingest::decode::Scalar::Micros(*ts)),
                ..Default::default()
            };
            ing.push(
                &raw,
                tenure_ingest::decode::Location {
                    input: "many",
                    line: i as u64 + 1,
                },
            );
        }
        ing.add_synthetic_source(
            format!("many-{part}"),
            format!("many-{part}"),
            chunk.len() as u64,
        );
        ing.commit().unwrap();
    }
    let steps = ["a", "b", "c"];
    let window = 6 * 60 * MIN;
    let mut levels = BTreeMap::new();
    let mut per_user: BTreeMap<u32, Vec<(i64, usize)>> = BTreeMap::new();
    for &(u, name, ts) in &evs {
        let e = per_user.entry(u).or_default();
        let mut any = false;
        for (i, s) in steps.iter().enumerate() {
            if name == *s {
                any = true;
                e.push((ts, i + 1));
            }
        }
        if !any {
            e.push((ts, 0));
        }
    }
    for (u, mut es) in per_user {
        es.sort();
        es.retain(|e| e.1 != 0);
        levels.insert(u, naive_level(&es, steps.len(), window, false));
    }
    let want: Vec<u64> = (1..=steps.len())
        .map(|k| levels.values().filter(|&&l| l >= k).count() as u64)
        .collect();
    assert!(
        want[2] > 100,
        "the data should reach the last step: {want:?}"
    );

    let run = |spec: &FunnelSpec| {
        block(async {
            let events = Events::open(
                &url,
                OpenOptions {
                    threads: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(
                events.files >= 6,
                "want several files per date, got {}",
                events.files
            );
            funnel::funnel(&events, spec).await.unwrap().0
        })
    };
    let direct = run(&spec_of(&steps, window, Modes::default()));
    let mut forced = spec_of(&steps, window, Modes::default());
    forced.steps[0].condition = Some(datafusion::logical_expr::lit(true));
    let planned = run(&forced);
    assert_eq!(direct.iter().map(|r| r.users).collect::<Vec<_>>(), want);
    assert_eq!(direct, planned);
}
