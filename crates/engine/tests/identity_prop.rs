//! Property test of identity merges: random events and random `identify` /
//! `alias` messages, ingested as they come (merges in a later commit than
//! some of the events they merge, late events after the merges, with and
//! without `tenure compact`), give exactly the analyses of a store where
//! every event was written under its person's id to begin with. The persons
//! come from a naive reference written from the rules in DESIGN.md (a full
//! relabel per merge, no union-find).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use tenure_engine::{Events, OpenOptions};
use tenure_ingest::decode::{Location, RawEvent, Scalar};
use tenure_ingest::{Ingest, IngestOptions, Store};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Identify,
    Alias,
}

/// One input message: an event, or a merge `from -> to`.
#[derive(Debug, Clone)]
enum Msg {
    Ev(Ev),
    Merge(Kind, u8, u8, i64),
}

fn id(u: u8) -> String {
    format!("user{u}")
}

/// The persons by the rules, naively: each user's person's name after
/// every merge, in order.
fn naive_persons(msgs: &[Msg]) -> BTreeMap<u8, u8> {
    // group of each user, and per group its name and whether identified.
    let mut group: BTreeMap<u8, u8> = (0..16).map(|u| (u, u)).collect();
    let mut name: BTreeMap<u8, u8> = (0..16).map(|u| (u, u)).collect();
    let mut identified: BTreeSet<u8> = BTreeSet::new();
    for m in msgs {
        let Msg::Merge(kind, from, to, _) = *m else {
            continue;
        };
        if from == to {
            // An identify of a user alone, an alias to itself: nothing.
            continue;
        }
        let gt = group[&to];
        let new_name = if identified.contains(&gt) {
            name[&gt]
        } else {
            to
        };
        let gf = group[&from];
        if gf != gt && !(kind == Kind::Identify && identified.contains(&gf)) {
            for g in group.values_mut() {
                if *g == gf {
                    *g = gt;
                }
            }
            identified.remove(&gf);
        }
        identified.insert(gt);
        name.insert(gt, new_name);
    }
    group.iter().map(|(&u, g)| (u, name[g])).collect()
}

fn raw_event<'a>(user: &'a str, e: &Ev, rev: &'a Option<String>) -> RawEvent<'a> {
    RawEvent {
        user_id: Some(Scalar::Str(user.into())),
        event: Some(Scalar::Str(e.name.into())),
        ts: Some(Scalar::Micros(e.ts)),
        revenue: rev.as_deref().map(|r| Scalar::Num(r.into())),
        ..Default::default()
    }
}

fn cents(e: &Ev) -> Option<String> {
    e.revenue.map(|c| format!("{}.{:02}", c / 100, c % 100))
}

/// Commits `msgs` to `url` as one ingest; with `persons`, every event under
/// its person's id and the merges as plain events of their names.
fn commit(url: &str, msgs: &[Msg], persons: Option<&BTreeMap<u8, u8>>, name: &str) {
    let mut ing = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let loc = Location {
            input: "prop",
            line: i as u64 + 1,
        };
        match (m, persons) {
            (Msg::Ev(e), _) => {
                let user = id(persons.map_or(e.user, |p| p[&e.user]));
                let rev = cents(e);
                ing.push(&raw_event(&user, e, &rev), loc);
            }
            (&Msg::Merge(kind, _, to, ts), Some(p)) => {
                let e = Ev {
                    user: to,
                    name: if kind == Kind::Identify {
                        "identify"
                    } else {
                        "alias"
                    },
                    ts,
                    revenue: None,
                };
                let user = id(p[&to]);
                ing.push(&raw_event(&user, &e, &None), loc);
            }
            (&Msg::Merge(kind, from, to, ts), None) => {
                let (from, to) = (id(from), id(to));
                let raw = RawEvent {
                    kind: Some(Scalar::Str(
                        if kind == Kind::Identify {
                            "identify"
                        } else {
                            "alias"
                        }
                        .into(),
                    )),
                    user_id: Some(Scalar::Str(to.as_str().into())),
                    anonymous_id: (kind == Kind::Identify)
                        .then(|| Scalar::Str(from.as_str().into())),
                    previous_id: (kind == Kind::Alias).then(|| Scalar::Str(from.as_str().into())),
                    ts: Some(Scalar::Micros(ts)),
                    ..Default::default()
                };
                ing.push(&raw, loc);
            }
        }
    }
    ing.add_synthetic_source(name.to_string(), name.to_string(), msgs.len() as u64);
    ing.commit().unwrap();
}

const QUERIES: &[&str] = &[
    "SELECT * FROM retention('week') ORDER BY 1, 2",
    "SELECT * FROM retention('day', 'a', 'purchase') ORDER BY 1, 2",
    "SELECT * FROM funnel('a, b, purchase', '3d') ORDER BY 1, 2",
    "SELECT * FROM kpi('week') ORDER BY 1",
    "SELECT * FROM lifecycle('week') ORDER BY 1, 2",
    "SELECT user_id, frequency, monetary FROM segment('F >= 1 and M >= 0') ORDER BY user_id",
    "SELECT user_id, recency_days, frequency, monetary, r_score, f_score, m_score FROM rfm() ORDER BY 1",
    "SELECT user_id FROM segment('did a and not did purchase') ORDER BY user_id",
    "SELECT * FROM paths('a', 3, 'after') ORDER BY 1, 2, 3",
    // One plan read twice in a query: each run gathers its own merged rows.
    "WITH f AS (SELECT * FROM funnel('a, b', '2d')) SELECT * FROM f UNION ALL SELECT * FROM f ORDER BY 1, 2",
];

/// Segment counts (`tenure segment --count`) and the day (from `BASE`)
/// they are as of: the buyers' pass over the whole history, the buyers'
/// pass with the users seen, and every user's facts.
const COUNTS: &[(&str, i64)] = &[
    ("R < 20d and F >= 1", 100),
    ("not F >= 2", 100),
    ("M <= 150 or R > 10d", 30),
    ("lifecycle = active or F < 1", 40),
];

async fn open(url: &str, threads: usize) -> Events {
    Events::open(
        url,
        OpenOptions {
            threads,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn answers(url: &str, threads: usize) -> Vec<String> {
    block(async {
        let events = open(url, threads).await;
        tenure_engine::sql::register_functions(&events);
        let mut out = Vec::new();
        for q in QUERIES {
            let batches = events.ctx.sql(q).await.unwrap().collect().await.unwrap();
            out.push(format!(
                "{q}\n{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
            ));
        }
        for &(src, day) in COUNTS {
            let (seg, spec) = segment_and_spec(src, BASE + day * DAY);
            let (matched, of) =
                tenure_engine::features::count_matching(&events, &seg.features, &seg.expr, &spec)
                    .await
                    .unwrap();
            out.push(format!("{src} as of day {day}: {matched} of {of}"));
        }
        out
    })
}

fn messages() -> impl Strategy<Value = (Vec<Msg>, Vec<Msg>, Vec<Msg>)> {
    let merge = (
        prop::sample::select(vec![Kind::Identify, Kind::Alias]),
        0u8..12,
        0u8..12,
        0i64..70 * DAY,
    )
        .prop_map(|(k, f, t, off)| Msg::Merge(k, f, t, BASE + off));
    (
        events(),
        prop::collection::vec(merge, 0..10),
        prop::collection::vec(any::<bool>(), 60),
    )
        .prop_map(|(evs, merges, late)| {
            // Events before the merges, merges, and some events after them
            // (a user's late anonymous events).
            // Every event name occurs (queries name them).
            let (mut early, mut after): (Vec<Msg>, Vec<Msg>) = (
                ["a", "b", "purchase"]
                    .iter()
                    .enumerate()
                    .map(|(i, &name)| {
                        Msg::Ev(Ev {
                            user: 12 + i as u8,
                            name,
                            ts: BASE + i as i64 * DAY,
                            revenue: (name == "purchase").then_some(100),
                        })
                    })
                    .collect(),
                Vec::new(),
            );
            for (e, l) in evs.into_iter().zip(late) {
                if l {
                    after.push(Msg::Ev(e));
                } else {
                    early.push(Msg::Ev(e));
                }
            }
            (early, merges, after)
        })
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn merged_store_reads_as_its_persons((early, merges, after) in messages(), compact in any::<bool>(), split in any::<bool>(), threads in 1usize..4) {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let all: Vec<Msg> = early.iter().chain(&merges).chain(&after).cloned().collect();
        prop_assume!(all.iter().any(|m| matches!(m, Msg::Ev(_))));
        let persons = naive_persons(&all);
        // The reference: every event under its person's id, no merges.
        let reference = format!("memory://identity-ref-{n}");
        commit(&reference, &all, Some(&persons), "ref");
        // As it happens: merges after (or with) the events they merge, and
        // late events after them.
        let merged = format!("memory://identity-{n}");
        if split {
            for (i, part) in [&early, &merges, &after].into_iter().enumerate() {
                if !part.is_empty() {
                    commit(&merged, part, None, &format!("part{i}"));
                    // Opened between commits: the persons resolved (and
                    // kept) here are read back after late events added users.
                    block(async {
                        open(&merged, 2).await;
                    });
                }
            }
        } else {
            commit(&merged, &all, None, "all");
        }
        if compact {
            tenure_ingest::compact::compact(
                Store::open(&merged).unwrap(),
                &Default::default(),
                None,
                |_, _| {},
            )
            .unwrap();
        }
        // One thread reads every person under its own key where folds
        // allow it; more split the keys into ranges, and persons across
        // two ranges are read under virtual keys.
        let (want, got) = (answers(&reference, 2), answers(&merged, threads));
        for (w, g) in want.iter().zip(&got) {
            prop_assert_eq!(w, g, "persons {:?}", persons);
        }
        // Again, from the persons the first reading kept.
        let again = answers(&merged, 2);
        for (w, g) in want.iter().zip(&again) {
            prop_assert_eq!(w, g, "persons {:?} (kept)", persons);
        }
    }
}

#[test]
fn naive_reference_follows_the_rules() {
    use Kind::*;
    let m = |k, f, t| Msg::Merge(k, f, t, 0);
    // 0 -> 1 by identify; 2 -> 3; 2 cannot then join 1 by identify (it is
    // identified through 3); alias joins 3's person into 1's.
    let p = naive_persons(&[m(Identify, 0, 1), m(Identify, 2, 3), m(Identify, 2, 1)]);
    assert_eq!((p[&0], p[&2], p[&3]), (1, 3, 3));
    let p = naive_persons(&[
        m(Identify, 0, 1),
        m(Identify, 2, 3),
        m(Alias, 3, 1),
        m(Alias, 1, 9),
    ]);
    assert_eq!((p[&0], p[&1], p[&2], p[&3], p[&9]), (9, 9, 9, 9, 9));
}
