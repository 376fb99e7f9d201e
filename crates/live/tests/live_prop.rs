//! Live membership against the definition: random events received in random
//! order (late, early, dated ahead), random clock advances; at every check,
//! each user's live membership equals the segment language's reference
//! evaluator over a feature row computed naively from the events received
//! by then, as of then. Transitions replayed give the same membership.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tenure_dsl::{CompileContext, Feature, FeatureRow, LifecycleAxis};
use tenure_live::{Before, Live, LiveConfig, LiveEvent, Plan, Prop, Transition, TransitionType};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

const SEGMENTS: &str = r#"
segment buyers_recent = R < 3d and F >= 2
segment browsing = did view >= 3 times within 1d and not did purchase within 1d
segment growing = lifecycle = growing
segment cooling = lifecycle = cooling
segment fresh = first_seen within 2d
segment idle = not last_seen within 1d
segment big = M >= 50
segment big_recent = did purchase where revenue > 20 within 3d
segment spend = sum(revenue) within 2d > 30
segment avg_spend = avg(revenue) within 5d >= 10 and not R > 4d
segment treated = variant = "b" and did view
segment red = did cart where (color = "red" or color in ("blue", "12")) >= 2 times
segment nested = @browsing or (@big and not @treated)
"#;

fn config() -> LiveConfig {
    LiveConfig {
        tenure_days: [1, 3, 6],
        activity_days: [1, 2, 4],
        ..LiveConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Ev {
    user: usize,
    event: &'static str,
    ts: i64,
    received: i64,
    revenue: Option<i128>,
    variant: Option<&'static str>,
    color: Option<&'static str>,
}

impl Ev {
    fn live(&self) -> LiveEvent {
        let mut props = Vec::new();
        if let Some(r) = self.revenue {
            props.push(("revenue".to_string(), Prop::Exact(r, 2)));
        }
        if let Some(v) = self.variant {
            props.push(("variant".to_string(), Prop::Text(v.to_string())));
        }
        if let Some(c) = self.color {
            props.push(("color".to_string(), Prop::Json(c.to_string())));
        }
        LiveEvent {
            user_id: format!("u{}", self.user),
            event: self.event.to_string(),
            ts: self.ts,
            props,
        }
    }
}

fn days(t: i64, at: i64) -> i64 {
    (at - t).div_euclid(DAY)
}

fn stage(d: i64, b: [i64; 3], names: [&str; 4]) -> String {
    names[b.iter().position(|x| d <= *x).unwrap_or(3)].to_string()
}

/// The feature row of one user as of `at`, from scratch.
fn naive_row(events: &[&Ev], at: i64, features: &[Feature]) -> Option<FeatureRow> {
    let cfg = config();
    let evs: Vec<&&Ev> = events.iter().filter(|e| e.ts <= at).collect();
    if evs.is_empty() {
        return None;
    }
    let purchases: Vec<&&&Ev> = evs.iter().filter(|e| e.event == "purchase").collect();
    let last_purchase = purchases.iter().map(|e| e.ts).max();
    let mut row = FeatureRow {
        recency: last_purchase.map(|l| days(l, at)),
        frequency: Some(purchases.len() as i64),
        monetary: Some(purchases.iter().filter_map(|e| e.revenue).sum()),
        first_seen: evs.iter().map(|e| e.ts).min(),
        last_seen: evs.iter().map(|e| e.ts).max(),
        ..FeatureRow::default()
    };
    let first = row.first_seen.unwrap();
    row.lifecycle_tenure = Some(stage(
        days(first, at),
        cfg.tenure_days,
        ["new", "growing", "mature", "veteran"],
    ));
    row.lifecycle_activity = last_purchase.map(|l| {
        stage(
            days(l, at),
            cfg.activity_days,
            ["active", "cooling", "silent", "churned"],
        )
    });
    // Latest variant; at equal times the greatest.
    let latest = evs
        .iter()
        .filter_map(|e| e.variant.map(|v| (e.ts, v)))
        .max();
    if let Some((_, v)) = latest {
        row.properties.insert("variant".into(), v.to_string());
    }
    let in_window =
        |e: &Ev, w: &Option<tenure_dsl::ast::Duration>| w.is_none_or(|w| e.ts >= at - w.micros());
    for f in features {
        match f {
            Feature::EventCount {
                event,
                within,
                filter,
            } => {
                let n = evs
                    .iter()
                    .filter(|e| e.event == event && in_window(e, within))
                    .filter(
                        |e| match filter.as_ref().map(|f| f.to_string()).as_deref() {
                            None => true,
                            Some("revenue > 20") => e.revenue.is_some_and(|r| r > 2000),
                            Some(s) if s.starts_with("(color = \"red\" or") => {
                                matches!(e.color, Some("red" | "blue" | "12"))
                            }
                            Some(other) => panic!("no reference for filter {other}"),
                        },
                    )
                    .count() as i64;
                if filter.is_none() {
                    row.event_counts.insert((event.clone(), *within), n);
                } else {
                    row.filtered_counts.insert(f.clone(), n);
                }
            }
            Feature::Total {
                aggregate, within, ..
            } => {
                let vals: Vec<i128> = evs
                    .iter()
                    .filter(|e| in_window(e, within))
                    .filter_map(|e| e.revenue)
                    .collect();
                let sum = vals.iter().sum::<i128>() as f64 / 100.0;
                match aggregate {
                    tenure_dsl::Aggregate::Sum => {
                        row.totals.insert(f.clone(), sum);
                    }
                    tenure_dsl::Aggregate::Avg => {
                        if !vals.is_empty() {
                            row.totals.insert(f.clone(), sum / vals.len() as f64);
                        }
                    }
                }
            }
            Feature::Lifecycle(LifecycleAxis::Tenure | LifecycleAxis::Activity) => {}
            _ => {}
        }
    }
    Some(row)
}

fn event_strategy() -> impl Strategy<Value = Vec<Ev>> {
    let one = (
        0usize..4,
        prop::sample::select(vec!["view", "view", "cart", "purchase", "signup"]),
        // Coarse times, so that ties (equal times, a window's exact edge) occur.
        (0i64..(12 * 24)).prop_map(|k| k * HOUR),
        prop_oneof![
            6 => 0i64..HOUR,
            2 => 0i64..(3 * DAY),
            1 => -(20 * HOUR)..0i64,
        ],
        prop::option::of(0i128..6000),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::option::of(prop::sample::select(vec!["red", "blue", "12", "green"])),
    );
    prop::collection::vec(one, 1..40).prop_map(|v| {
        v.into_iter()
            .map(|(user, event, ts, delay, revenue, variant, color)| Ev {
                user,
                event,
                ts,
                received: (ts + delay).max(0),
                revenue: if event == "purchase" || event == "cart" {
                    revenue
                } else {
                    None
                },
                variant,
                color: if event == "cart" { color } else { None },
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn live_membership_is_the_definition_at_every_instant(
        mut events in event_strategy(),
        checks in prop::collection::vec(0i64..(16 * DAY), 1..12),
        restart in prop::option::of(0usize..12),
    ) {
        let plan = Plan::new(&[("t.seg".into(), SEGMENTS.into())], config()).unwrap();
        let segments: Vec<_> = plan.segments().to_vec();
        let mut live = Live::new(plan);
        events.sort_by_key(|e| e.received);
        let mut checks = checks;
        checks.sort_unstable();
        let mut out: Vec<Transition> = Vec::new();
        let mut next = 0;
        let mut replayed: HashMap<(String, String), bool> = HashMap::new();
        for (k, &t) in checks.iter().enumerate() {
            if restart == Some(k) {
                // A restart from the written state (as of the last check):
                // settling finds nothing changed, and what follows goes on
                // exactly as without the restart.
                let mut bytes = Vec::new();
                live.write_state(&mut bytes).unwrap();
                let plan = Plan::new(&[("t.seg".into(), SEGMENTS.into())], config()).unwrap();
                let (mut back, read) = Live::read_state(plan, &bytes).unwrap();
                prop_assert_eq!(read, bytes.len());
                let plan = Plan::new(&[("t.seg".into(), SEGMENTS.into())], config()).unwrap();
                prop_assert!(Live::read_state(plan, &bytes[..bytes.len() - 1]).is_err());
                let at = if k == 0 { 0 } else { checks[k - 1] };
                back.settle(at, Before::Kept, &mut out);
                prop_assert!(out.is_empty(), "{:?}", out);
                live = back;
            }
            while next < events.len() && events[next].received <= t {
                let e = &events[next];
                // Timers fired before some events only: an event also finds
                // what is due for its user by itself.
                if next % 2 == 0 {
                    live.advance(e.received, &mut out);
                }
                live.apply(e.live(), e.received, &mut out);
                next += 1;
            }
            live.advance(t, &mut out);
            for tr in out.drain(..) {
                prop_assert!(tr.at <= t);
                let key = (tr.user_id.clone(), tr.segment.clone());
                let was = replayed.get(&key).copied().unwrap_or(false);
                prop_assert_eq!(was, tr.kind == TransitionType::Exited, "{:?}", tr);
                replayed.insert(key, tr.kind == TransitionType::Entered);
            }
            let received: Vec<&Ev> = events[..next].iter().collect();
            for user in 0..4 {
                let mine: Vec<&Ev> = received.iter().copied().filter(|e| e.user == user).collect();
                let id = format!("u{user}");
                for (i, s) in segments.iter().enumerate() {
                    let expected = naive_row(&mine, t, &s.features)
                        .is_some_and(|row| tenure_dsl::eval(&s.expr, &row, &CompileContext::new(t)));
                    prop_assert_eq!(
                        live.is_member(&id, i), expected,
                        "user {} segment {} at {}", id, s.name, t
                    );
                    let key = (id.clone(), s.name.clone());
                    prop_assert_eq!(replayed.get(&key).copied().unwrap_or(false), expected);
                }
            }
        }
    }
}

#[test]
fn time_driven_transitions_are_stamped_at_their_due_instant() {
    let plan = Plan::new(
        &[("t.seg".into(), "segment lapsed = R >= 30d".into())],
        LiveConfig::default(),
    )
    .unwrap();
    let mut live = Live::new(plan);
    let mut out = Vec::new();
    let t0 = 1_700_000_000_000_000;
    live.apply(
        LiveEvent {
            user_id: "ann".into(),
            event: "purchase".into(),
            ts: t0,
            props: vec![("revenue".into(), Prop::Exact(1999, 2))],
        },
        t0 + 5,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(live.next_due(), Some(t0 + DAY));
    // Fired late (40 days on), the entry is stamped when R reached 30 days.
    live.advance(t0 + 40 * DAY, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].at, t0 + 30 * DAY);
    assert_eq!(out[0].kind, TransitionType::Entered);
    assert_eq!(out[0].features.get("recency"), Some(&serde_json::json!(30)));
    assert_eq!(
        out[0].id,
        Transition::id_of("ann", "lapsed", TransitionType::Entered, t0 + 30 * DAY)
    );
    // A new purchase takes her out at once.
    out.clear();
    live.apply(
        LiveEvent {
            user_id: "ann".into(),
            event: "purchase".into(),
            ts: t0 + 41 * DAY,
            props: vec![],
        },
        t0 + 41 * DAY,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, TransitionType::Exited);
    let (n, members) = live.members(0, 0, 10);
    assert_eq!((n, members.len()), (0, 0));
}

#[test]
fn population_features_are_refused_with_the_reason() {
    let err = Plan::new(
        &[("t.seg".into(), "segment c = r_score = 5".into())],
        LiveConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("segment `c`: `r_score` cannot be kept live"),
        "{err}"
    );
    assert!(err.contains("fixed thresholds"), "{err}");
    let err = Plan::new(
        &[("t.seg".into(), "segment c = country = \"JP\"".into())],
        LiveConfig::default(),
    )
    .unwrap_err();
    assert!(err.contains("country"), "{err}");
    let _ = BTreeMap::<i32, i32>::new();
}

fn purchase(user: &str, ts: i64) -> LiveEvent {
    LiveEvent {
        user_id: user.into(),
        event: "purchase".into(),
        ts,
        props: vec![("revenue".into(), Prop::Exact(500, 2))],
    }
}

/// One request's events arrive at one instant: no membership held between
/// them, so none is reported (the first version entered and left `F = 1`
/// for a new user's `[purchase, purchase]`).
#[test]
fn events_received_together_are_evaluated_once() {
    let plan = Plan::new(
        &[("t.seg".into(), "segment first = F = 1".into())],
        LiveConfig::default(),
    )
    .unwrap();
    let mut live = Live::new(plan);
    let mut out = Vec::new();
    let t0 = 1_700_000_000_000_000;
    live.apply_all(
        vec![
            purchase("ann", t0),
            purchase("bo", t0),
            purchase("ann", t0 + 1),
        ],
        t0 + 2,
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].user_id.as_str(), out[0].kind),
        ("bo", TransitionType::Entered)
    );
    assert!(!live.is_member("ann", 0));
}

/// An instant read before another thread moved the user's state on does not
/// date an evaluation before it: it counts as the state's instant.
#[test]
fn a_stale_instant_does_not_go_back_in_time() {
    let plan = Plan::new(
        // The view count makes a view evaluate the user.
        &[(
            "t.seg".into(),
            "segment lapsed = R >= 30d and did view >= 0 times".into(),
        )],
        LiveConfig::default(),
    )
    .unwrap();
    let mut live = Live::new(plan);
    let mut out = Vec::new();
    let t0 = 1_700_000_000_000_000;
    live.apply(purchase("ann", t0), t0, &mut out);
    live.advance(t0 + 30 * DAY, &mut out);
    assert_eq!(out.len(), 1);
    // A view read its clock just before the 30th day; it is evaluated at the
    // state's instant, where R is 30: still in.
    live.apply(
        LiveEvent {
            user_id: "ann".into(),
            event: "view".into(),
            ts: t0 + 30 * DAY - 5,
            props: vec![],
        },
        t0 + 30 * DAY - 1,
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(live.is_member("ann", 0));
}
