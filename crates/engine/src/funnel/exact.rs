//! The exact funnel fold: per-step windows and minimum gaps, optional steps
//! and any-order groups.
//!
//! ClickHouse's `windowFunnel` loop keeps one chain per level, the one with
//! the latest step-1 event. That is optimal while the only limit is the
//! window from step 1, but not once a step has its own limits: a minimum gap
//! may need an earlier predecessor, a window from the previous step a later
//! one. So when any step has `after`, `within`, `?` or braces, each user is
//! folded by a dynamic program over the user's events instead: for every
//! step and every event that can complete it, the latest step-1 time of any
//! valid chain ending there (a later start leaves the most room in the
//! funnel's window), found with a sliding-window maximum over the previous
//! step's events. It costs O(events x steps x (1 + optional steps skipped))
//! per user, plus O(events x members) for a group.
//!
//! # Definitions
//!
//! A *chain* is a choice of events for step 1 and for some later steps, in
//! step order, where every step it skips is optional, and where for each two
//! consecutive chosen steps (previous at `p`, next at `t`):
//!
//! * `p <= t` (`p < t` with `strict_increase`); one event may serve two
//!   consecutive steps, as in ClickHouse;
//! * `t - p >= after` and `t - p <= within` of the next step (both bounds
//!   count), and `t <= start + window` (the funnel's window from step 1);
//! * an any-order group completes at `t`, the time of one of its members'
//!   events, when every member has an event in `[p, t]` (`(p, t]` with
//!   `strict_increase`), in any order (one event may serve the previous step
//!   and a member, or two members whose conditions it meets); the next step
//!   counts from `t`;
//! * no exclusion event that applies to the gap happens strictly between
//!   `p` and `t`: `--exclude x:FROM-TO` applies to a gap from step `i` to
//!   step `j` (steps between skipped) when FROM..TO-1 meets `i..j-1`, so an
//!   exclusion after an optional step also blocks the chains that skip it;
//! * step 1 is in the entry range (with `first_touch`, only the user's first
//!   step-1 event in range).
//!
//! A user *reaches* a step when some chain chooses it; the user's level is
//! the deepest step reached. A required step reached implies every earlier
//! required step; an optional step's row counts the users of some chain
//! through it. The breakdown value and the times to convert come from one
//! chain: among the chains ending at the earliest event that reaches the
//! user's deepest step, the one with the latest step-1 event, then the
//! latest previous step (by time, then the later step: through an optional
//! step rather than around it), and so on back (as the `windowFunnel` loop
//! picks;
//! at equal times, the largest breakdown value starts the chain, but a user
//! who reaches step 1 alone takes the first step-1 event, the smallest);
//! a step it skips has no time to convert, and the step after a skipped one
//! counts from the step before it (so an optional step's time covers the
//! users whose chain took it, and the next step's times mix both paths).
//! Without gaps, groups and `?`,
//! these are exactly ClickHouse's levels, which the property test checks;
//! except with `strict_increase`, where ClickHouse's loop is greedy and can
//! miss a chain (`a@0 c@1 c@2` through `a > c > c` gives 2, as ClickHouse
//! does, where the definition gives 3): a funnel without the options above
//! keeps ClickHouse's answer.
//!
//! # Worked examples
//!
//! Events at minutes, one user, `--window 1d`:
//!
//! * `view, cart within 1h, checkout after 1m within 30m, purchase` with
//!   `view@0 cart@50 checkout@50 checkout@52 purchase@90`: cart is 50 min
//!   after view (<= 1h); checkout@50 is 0 min after cart (< 1m) but
//!   checkout@52 is 2 min after it; purchase has no limit of its own ->
//!   level 4, times to convert 50, 2 and 38 min.
//! * the same with `view@0 cart@70`: cart is 70 min after view -> level 1;
//!   `view@0 view@30 cart@70` -> level 2 (from the second view).
//! * `view, wishlist?, purchase within 10m` with `view@0 wishlist@5
//!   purchase@30`: through the wishlist purchase is 25 min after its
//!   previous step, but skipping it, 30 min after view: neither is within
//!   10 min, so the user reaches view and the wishlist, not the purchase.
//!   With `purchase@12`: the chain through the wishlist is 7 min -> all
//!   three steps, times 5 and 7 min.
//! * `view, wishlist?, purchase` with `view@0 purchase@9`: the chain skips
//!   the wishlist -> level 3, the optional row does not count the user.
//! * `view, {cart, wishlist} within 1h, purchase` with `view@0 wishlist@10
//!   cart@40 purchase@45`: the group completes at 40 (its last member) ->
//!   level 3, times 40 and 5 min; with `cart@-5` (before view) only the
//!   wishlist follows the view -> level 1.
//!
//! Conversion from the previous step divides by the previous *required*
//! step's users, so an optional step never shrinks the funnel after it.

use std::collections::VecDeque;

use super::{FRows, Params};

/// A step's limits, flattened for the fold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRule {
    /// The flag bits of the step (its members' bits for a group).
    pub bits: u32,
    /// A group's members' bits, one each (empty for one event).
    pub members: Vec<u32>,
    /// A chain may skip the step.
    pub optional: bool,
    /// Least time since the previous step, µs.
    pub after: i64,
    /// Most time since the previous step, µs (`i64::MAX`: none).
    pub within: i64,
}

/// Every step's limits and where the exclusions' bits start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// Per step.
    pub steps: Vec<StepRule>,
    /// The first exclusion's bit.
    pub exclusions_at: u32,
}

impl Rules {
    /// The rules of `steps`, their matchers numbered in the fold's flag
    /// order (each step's members, or itself), exclusions after them.
    pub fn of(steps: &[super::Step]) -> Self {
        let mut bit = 0u32;
        let steps = steps
            .iter()
            .map(|s| {
                let members: Vec<u32> = s
                    .matchers()
                    .map(|_| {
                        bit += 1;
                        1u32 << (bit - 1)
                    })
                    .collect();
                StepRule {
                    bits: members.iter().fold(0, |a, b| a | b),
                    members: if s.any_of.is_empty() {
                        Vec::new()
                    } else {
                        members
                    },
                    optional: s.optional,
                    after: s.after_us,
                    within: s.within_us.unwrap_or(i64::MAX),
                }
            })
            .collect();
        Rules {
            steps,
            exclusions_at: bit,
        }
    }
}

/// One event of a user, as the fold reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// Held value (`u32::MAX` null), sorted first.
    pub hold: u32,
    /// Time, µs.
    pub ts: i64,
    /// Breakdown value's rank.
    pub grp: u32,
    /// Flag bits (steps' matchers, then exclusions).
    pub mask: u32,
}

/// A step not chosen by the attributed chain (no time to convert).
pub const SKIPPED: i64 = i64::MIN;

/// One user's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Deepest step reached (0: none).
    pub level: u8,
    /// Bit `k`: step `k + 1` reached by some chain.
    pub reached: u32,
    /// Breakdown rank of the attributed chain's step-1 event.
    pub group: u32,
    /// The attributed chain's time per step up to `level` ([`SKIPPED`] for
    /// a skipped step).
    pub path: Vec<i64>,
}

/// A valid chain's end: an event completing a step.
#[derive(Debug, Clone, Copy)]
struct Node {
    ts: i64,
    /// Latest step-1 time of the valid chains ending here.
    start: i64,
    /// Breakdown rank of that chain's step-1 event.
    grp: u32,
    /// The chain's previous step and its node there.
    parent_step: u8,
    parent: u32,
}

/// A predecessor step's sliding window.
#[derive(Debug, Default)]
struct Lane {
    step: usize,
    /// Next node of `step` to enter the window.
    next: usize,
    /// Nodes in the window with decreasing starts (ties: the later kept).
    deque: VecDeque<u32>,
    /// The exclusions that block a gap from `step` (those applying after it
    /// or after a step skipped on the way), in time order.
    excl: Vec<i64>,
    /// Exclusions before the current time.
    excl_at: usize,
}

/// Buffers reused across users.
#[derive(Debug, Default)]
pub struct Scratch {
    events: Vec<Event>,
    nodes: Vec<Vec<Node>>,
    excl: Vec<Vec<i64>>,
    lanes: Vec<Lane>,
    member_next: Vec<usize>,
    member_last: Vec<i64>,
    seg: Found,
    /// The last user's outcome.
    pub found: Found,
}

/// Folds one user's rows (`range` of `rows`).
pub(super) fn fold_rows(
    rows: &FRows,
    range: std::ops::Range<usize>,
    p: &Params,
    rules: &Rules,
    sc: &mut Scratch,
) {
    let mut events = std::mem::take(&mut sc.events);
    events.clear();
    for r in range {
        events.push(Event {
            hold: rows.hold.get(r).copied().unwrap_or(0),
            ts: rows.ts[r],
            grp: rows.grp.get(r).copied().unwrap_or(0),
            mask: rows.mask[r],
        });
    }
    fold_events(&mut events, !rows.hold.is_empty(), p, rules, sc);
    sc.events = events;
}

/// Folds one user's events (any order; sorted here). With `held`, each
/// held value is a funnel of its own (null values in none) and the user
/// keeps the deepest (the first value on ties); reached steps add up.
pub fn fold_events(events: &mut [Event], held: bool, p: &Params, rules: &Rules, sc: &mut Scratch) {
    events.sort_unstable();
    sc.found.level = 0;
    sc.found.reached = 0;
    sc.found.group = 0;
    sc.found.path.clear();
    let mut start = 0;
    while start < events.len() {
        let h = events[start].hold;
        let end = start + events[start..].partition_point(|e| e.hold == h);
        if !held || h != u32::MAX {
            let mut seg = std::mem::take(&mut sc.seg);
            fold_segment(&events[start..end], p, rules, sc, &mut seg);
            sc.found.reached |= seg.reached;
            if seg.level > sc.found.level {
                sc.found.level = seg.level;
                sc.found.group = seg.group;
                sc.found.path.clear();
                sc.found.path.extend_from_slice(&seg.path);
            }
            sc.seg = seg;
        }
        start = end;
    }
}

fn fold_segment(evs: &[Event], p: &Params, r: &Rules, sc: &mut Scratch, out: &mut Found) {
    let n = r.steps.len();
    out.level = 0;
    out.reached = 0;
    out.group = 0;
    out.path.clear();
    sc.nodes.resize_with(n.max(sc.nodes.len()), Vec::new);
    for v in &mut sc.nodes[..n] {
        v.clear();
    }
    // Exclusion times after each level (1-based), in time order.
    sc.excl.resize_with((n + 1).max(sc.excl.len()), Vec::new);
    for v in &mut sc.excl[..=n] {
        v.clear();
    }
    if !p.exclusions.is_empty() {
        for e in evs {
            let mut x = e.mask.checked_shr(r.exclusions_at).unwrap_or(0);
            while x != 0 {
                let j = x.trailing_zeros() as usize;
                x &= x - 1;
                let (from, to) = p.exclusions[j];
                for l in from..to {
                    sc.excl[l].push(e.ts);
                }
            }
        }
    }
    let strict = p.modes.strict_increase;
    for e in evs {
        if e.mask & r.steps[0].bits != 0 && e.ts >= p.entry_from && e.ts < p.entry_to {
            sc.nodes[0].push(Node {
                ts: e.ts,
                start: e.ts,
                grp: e.grp,
                parent_step: u8::MAX,
                parent: 0,
            });
            if p.modes.first_touch {
                break;
            }
        }
    }
    for k in 1..n {
        let rule = &r.steps[k];
        // The steps a chain may come from: the previous one, and past it
        // while the steps between are optional.
        sc.lanes.resize_with(k.min(n), Lane::default);
        let mut lanes = 0;
        let mut j = k - 1;
        loop {
            let lane = &mut sc.lanes[lanes];
            lane.step = j;
            lane.next = 0;
            lane.deque.clear();
            lane.excl_at = 0;
            lane.excl.clear();
            for l in j + 1..=k {
                lane.excl.extend_from_slice(&sc.excl[l]);
            }
            if j + 1 < k {
                lane.excl.sort_unstable();
            }
            lanes += 1;
            if j == 0 || !r.steps[j].optional {
                break;
            }
            j -= 1;
        }
        let (before, after) = sc.nodes.split_at_mut(k);
        if sc.lanes[..lanes].iter().all(|l| before[l.step].is_empty()) {
            continue;
        }
        let here = &mut after[0];
        sc.member_next.clear();
        sc.member_next.resize(rule.members.len(), 0);
        sc.member_last.clear();
        sc.member_last.resize(rule.members.len(), i64::MIN);
        for e in evs {
            if e.mask & rule.bits == 0 {
                continue;
            }
            let t = e.ts;
            let mut hi = t.saturating_sub(rule.after);
            if strict {
                hi = hi.min(t - 1);
            }
            if !rule.members.is_empty() {
                // The latest time from which every member happened by `t`.
                let mut all = i64::MAX;
                for (m, &bit) in rule.members.iter().enumerate() {
                    let (next, last) = (&mut sc.member_next[m], &mut sc.member_last[m]);
                    while *next < evs.len() && evs[*next].ts <= t {
                        if evs[*next].mask & bit != 0 {
                            *last = evs[*next].ts;
                        }
                        *next += 1;
                    }
                    all = all.min(*last);
                }
                if all == i64::MIN {
                    continue;
                }
                hi = hi.min(if strict { all - 1 } else { all });
            }
            let lo = match rule.within {
                i64::MAX => i64::MIN,
                w => t.saturating_sub(w),
            };
            // The best predecessor: latest start, then latest time, then
            // the later step, then the later event.
            let mut best: Option<(i64, i64, usize, u32)> = None;
            for lane in &mut sc.lanes[..lanes] {
                let nodes = &before[lane.step];
                while lane.next < nodes.len() && nodes[lane.next].ts <= hi {
                    let s = nodes[lane.next].start;
                    while lane
                        .deque
                        .back()
                        .is_some_and(|&b| nodes[b as usize].start <= s)
                    {
                        lane.deque.pop_back();
                    }
                    lane.deque.push_back(lane.next as u32);
                    lane.next += 1;
                }
                while lane.excl_at < lane.excl.len() && lane.excl[lane.excl_at] < t {
                    lane.excl_at += 1;
                }
                let lo = match lane.excl_at {
                    0 => lo,
                    a => lo.max(lane.excl[a - 1]),
                };
                while lane
                    .deque
                    .front()
                    .is_some_and(|&f| nodes[f as usize].ts < lo)
                {
                    lane.deque.pop_front();
                }
                if let Some(&f) = lane.deque.front() {
                    let nd = &nodes[f as usize];
                    let key = (nd.start, nd.ts, lane.step, f);
                    if best.is_none_or(|b| key > b) {
                        best = Some(key);
                    }
                }
            }
            if let Some((start, _, j, f)) = best
                && t <= start.saturating_add(p.window)
            {
                here.push(Node {
                    ts: t,
                    start,
                    grp: before[j][f as usize].grp,
                    parent_step: j as u8,
                    parent: f,
                });
            }
        }
    }
    let Some(deepest) = (0..n).rev().find(|&k| !sc.nodes[k].is_empty()) else {
        return;
    };
    for k in 0..=deepest {
        if !sc.nodes[k].is_empty() {
            out.reached |= 1 << k;
        }
    }
    out.level = deepest as u8 + 1;
    out.path.resize(deepest + 1, SKIPPED);
    let (mut k, mut at) = (deepest, 0u32);
    let node = sc.nodes[k][0];
    out.group = node.grp;
    loop {
        let nd = sc.nodes[k][at as usize];
        out.path[k] = nd.ts;
        if nd.parent_step == u8::MAX {
            break;
        }
        (k, at) = (nd.parent_step as usize, nd.parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funnel::Modes;

    const MIN: i64 = 60_000_000;

    struct Rule {
        names: Vec<&'static str>,
        optional: bool,
        after: i64,
        within: Option<i64>,
    }

    fn step(names: &[&'static str]) -> Rule {
        Rule {
            names: names.to_vec(),
            optional: false,
            after: 0,
            within: None,
        }
    }

    /// Folds `events` (name, minute) through `steps`, window 1 day.
    fn run(steps: &[Rule], events: &[(&str, i64)]) -> Found {
        let mut names: Vec<&str> = Vec::new();
        let mut bit = 0;
        let rules: Vec<StepRule> = steps
            .iter()
            .map(|s| {
                let members: Vec<u32> = s
                    .names
                    .iter()
                    .map(|n| {
                        names.push(n);
                        bit += 1;
                        1 << (bit - 1)
                    })
                    .collect();
                StepRule {
                    bits: members.iter().fold(0, |a, b| a | b),
                    members: if members.len() > 1 { members } else { vec![] },
                    optional: s.optional,
                    after: s.after * MIN,
                    within: s.within.map_or(i64::MAX, |w| w * MIN),
                }
            })
            .collect();
        let p = Params {
            steps: steps.len(),
            window: 1440 * MIN,
            modes: Modes::default(),
            exclusions: vec![],
            entry_from: i64::MIN,
            entry_to: i64::MAX,
            exact: None,
        };
        let rules = Rules {
            steps: rules,
            exclusions_at: bit,
        };
        let mut evs: Vec<Event> = events
            .iter()
            .map(|(n, m)| Event {
                hold: 0,
                ts: m * MIN,
                grp: 0,
                mask: names
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| *x == n)
                    .fold(0, |a, (i, _)| a | 1 << i),
            })
            .filter(|e| e.mask != 0)
            .collect();
        let mut sc = Scratch::default();
        fold_events(&mut evs, false, &p, &rules, &mut sc);
        sc.found
    }

    fn minutes(f: &Found) -> Vec<Option<i64>> {
        f.path
            .iter()
            .map(|&t| (t != SKIPPED).then_some(t / MIN))
            .collect()
    }

    #[test]
    fn the_module_docs_examples() {
        let gaps = [
            step(&["view"]),
            Rule {
                within: Some(60),
                ..step(&["cart"])
            },
            Rule {
                after: 1,
                within: Some(30),
                ..step(&["checkout"])
            },
            step(&["purchase"]),
        ];
        let f = run(
            &gaps,
            &[
                ("view", 0),
                ("cart", 50),
                ("checkout", 50),
                ("checkout", 52),
                ("purchase", 90),
            ],
        );
        assert_eq!((f.level, f.reached), (4, 0b1111));
        assert_eq!(minutes(&f), [Some(0), Some(50), Some(52), Some(90)]);
        assert_eq!(run(&gaps, &[("view", 0), ("cart", 70)]).level, 1);
        let f = run(&gaps, &[("view", 0), ("view", 30), ("cart", 70)]);
        assert_eq!((f.level, minutes(&f)), (2, vec![Some(30), Some(70)]));

        let optional = [
            step(&["view"]),
            Rule {
                optional: true,
                ..step(&["wishlist"])
            },
            Rule {
                within: Some(10),
                ..step(&["purchase"])
            },
        ];
        let f = run(&optional, &[("view", 0), ("wishlist", 5), ("purchase", 30)]);
        assert_eq!((f.level, f.reached), (2, 0b011));
        let f = run(&optional, &[("view", 0), ("wishlist", 5), ("purchase", 12)]);
        assert_eq!((f.level, f.reached), (3, 0b111));
        assert_eq!(minutes(&f), [Some(0), Some(5), Some(12)]);
        let f = run(&optional, &[("view", 0), ("purchase", 9)]);
        assert_eq!((f.level, f.reached), (3, 0b101));
        assert_eq!(minutes(&f), [Some(0), None, Some(9)]);

        let group = [
            step(&["view"]),
            Rule {
                within: Some(60),
                ..step(&["cart", "wishlist"])
            },
            step(&["purchase"]),
        ];
        let f = run(
            &group,
            &[
                ("view", 0),
                ("wishlist", 10),
                ("cart", 40),
                ("purchase", 45),
            ],
        );
        assert_eq!(
            (f.level, minutes(&f)),
            (3, vec![Some(0), Some(40), Some(45)])
        );
        let f = run(
            &group,
            &[
                ("cart", -5),
                ("view", 0),
                ("wishlist", 10),
                ("purchase", 45),
            ],
        );
        assert_eq!(f.level, 1);
    }

    #[test]
    fn a_minimum_gap_takes_an_earlier_predecessor_than_the_latest() {
        // The windowFunnel loop would keep only cart@9 and miss checkout@10.
        let steps = [
            step(&["view"]),
            step(&["cart"]),
            Rule {
                after: 5,
                ..step(&["checkout"])
            },
        ];
        let f = run(
            &steps,
            &[("view", 0), ("cart", 2), ("cart", 9), ("checkout", 10)],
        );
        assert_eq!(
            (f.level, minutes(&f)),
            (3, vec![Some(0), Some(2), Some(10)])
        );
    }
}
