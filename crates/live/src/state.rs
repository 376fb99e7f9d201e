//! One user's state: what their features need, and when they next change.

use std::collections::VecDeque;

use tenure_dsl::{Feature, FeatureRow};

use crate::plan::{Plan, is_avg};
use crate::{LiveEvent, Prop};

const DAY: i64 = 86_400_000_000;
const NONE_MIN: i64 = i64::MIN;
const NONE_MAX: i64 = i64::MAX;

/// Whole days from `t` to `as_of` (as the engine's lifecycle counts them).
fn days_between(t: i64, as_of: i64) -> i64 {
    (as_of - t).div_euclid(DAY)
}

fn bucket(days: i64, bounds: &[i64; 3]) -> usize {
    bounds.iter().position(|b| days <= *b).unwrap_or(3)
}

const TENURE: [&str; 4] = ["new", "growing", "mature", "veteran"];
const ACTIVITY: [&str; 4] = ["active", "cooling", "silent", "churned"];

/// A `did` count: a running total, or the times of the events still inside
/// its window (sorted).
#[derive(Debug, Clone)]
enum Count {
    All(i64),
    Window(VecDeque<i64>),
}

/// A sum / mean: running totals, or the (time, value) pairs in the window.
#[derive(Debug, Clone)]
struct Total {
    n: i64,
    exact: i128,
    float: f64,
    recent: VecDeque<(i64, Value)>,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Exact(i128),
    Float(f64),
}

/// A property's latest value and its time.
type Latest = (i64, Box<str>);

/// One user's state (the id is kept apart, in [`crate::Ids`]). Small on
/// purpose: a store has millions of users, most of them idle. Counts and
/// totals are allocated at the first event they count.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// The instant the state is as of.
    pub clock: i64,
    /// The due time of this user's current timer (`i64::MAX`: none).
    pub scheduled: i64,
    /// One bit per segment.
    pub members: u64,
    first: i64,
    last: i64,
    last_purchase: i64,
    purchases: i64,
    /// Purchase revenue in cents.
    revenue: i64,
    /// Per count of the plan; empty until an event counts.
    counts: Box<[Count]>,
    /// Per total of the plan; empty until an event has a value.
    totals: Box<[Total]>,
    /// Latest (time, value) per property of the plan; empty until one is set.
    props: Box<[Option<Latest>]>,
    /// Events dated after the instant they were received at.
    pub pending: Box<[LiveEvent]>,
}

impl User {
    pub fn new() -> User {
        User {
            clock: NONE_MIN,
            scheduled: NONE_MAX,
            members: 0,
            first: NONE_MAX,
            last: NONE_MIN,
            last_purchase: NONE_MIN,
            purchases: 0,
            revenue: 0,
            counts: Box::new([]),
            totals: Box::new([]),
            props: Box::new([]),
            pending: Box::new([]),
        }
    }

    /// Has an event been applied (is the user in the feature table)?
    pub fn seen(&self) -> bool {
        self.first != NONE_MAX
    }

    /// Adds an event dated at or before `now` (the state's instant).
    pub fn add(&mut self, plan: &Plan, ev: &LiveEvent, now: i64) -> bool {
        self.add_parts(plan, &ev.event, ev.ts, &ev.props, now)
    }

    /// [`User::add`] from borrowed parts (a rebuild reads millions of rows).
    /// Whether a value the segments read changed (if not, membership cannot
    /// have: the caller need not evaluate).
    pub fn add_parts(
        &mut self,
        plan: &Plan,
        event: &str,
        ts: i64,
        props: &[(String, Prop)],
        now: i64,
    ) -> bool {
        let mut changed = !self.seen()
            || (plan.reads_first && ts < self.first)
            || (plan.reads_last && ts > self.last);
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        if plan.purchases && event == plan.config.purchase_event {
            changed = true;
            self.purchases += 1;
            self.last_purchase = self.last_purchase.max(ts);
            if let Some((_, Prop::Exact(m, s))) = props.iter().find(|(n, _)| n == "revenue") {
                // Revenue is stored in cents; a value of another scale is rescaled.
                let cents = match s {
                    2 => *m,
                    s if *s < 2 => m * 10i128.pow(2 - s),
                    s => m / 10i128.pow(s - 2),
                };
                self.revenue = self.revenue.saturating_add(cents as i64);
            }
        }
        if self.counts.is_empty()
            && plan
                .counts
                .iter()
                .any(|c| c.event == event && c.within.is_none_or(|w| ts >= now.saturating_sub(w)))
        {
            self.counts = plan
                .counts
                .iter()
                .map(|c| match c.within {
                    None => Count::All(0),
                    Some(_) => Count::Window(VecDeque::new()),
                })
                .collect();
        }
        for (spec, count) in plan.counts.iter().zip(self.counts.iter_mut()) {
            if event != spec.event {
                continue;
            }
            if let Some(f) = &spec.filter
                && crate::filter::eval(f, props) != Some(true)
            {
                continue;
            }
            match count {
                Count::All(n) => {
                    *n += 1;
                    changed = true;
                }
                Count::Window(times) => {
                    let w = spec.within.unwrap_or(0);
                    if ts >= now.saturating_sub(w) {
                        let at = times.partition_point(|&t| t <= ts);
                        times.insert(at, ts);
                        changed = true;
                    }
                }
            }
        }
        if self.totals.is_empty()
            && plan
                .totals
                .iter()
                .any(|t| props.iter().any(|(n, _)| *n == t.property))
        {
            self.totals = plan
                .totals
                .iter()
                .map(|_| Total {
                    n: 0,
                    exact: 0,
                    float: 0.0,
                    recent: VecDeque::new(),
                })
                .collect();
        }
        for (spec, total) in plan.totals.iter().zip(self.totals.iter_mut()) {
            let Some((_, v)) = props.iter().find(|(n, _)| *n == spec.property) else {
                continue;
            };
            let value = match (v, spec.scale) {
                (Prop::Exact(m, s), Some(scale)) => Value::Exact(if *s <= scale {
                    m * 10i128.pow(scale - s)
                } else {
                    m / 10i128.pow(s - scale)
                }),
                (Prop::Float(x), None) => Value::Float(*x),
                (Prop::Exact(m, s), None) => Value::Float(*m as f64 / 10f64.powi(*s as i32)),
                _ => continue,
            };
            match spec.within {
                None => {
                    changed = true;
                    total.n += 1;
                    match value {
                        Value::Exact(x) => total.exact += x,
                        Value::Float(x) => total.float += x,
                    }
                }
                Some(w) => {
                    if ts >= now.saturating_sub(w) {
                        let at = total.recent.partition_point(|&(t, _)| t <= ts);
                        total.recent.insert(at, (ts, value));
                        changed = true;
                    }
                }
            }
        }
        if self.props.is_empty() && plan.props.iter().any(|p| props.iter().any(|(n, _)| n == p)) {
            self.props = vec![None; plan.props.len()].into_boxed_slice();
        }
        for (name, slot) in plan.props.iter().zip(self.props.iter_mut()) {
            let Some((_, v)) = props.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let text = v.text();
            // The latest value; at equal times the greatest.
            let newer = match slot {
                None => true,
                Some((t, old)) => ts > *t || (ts == *t && *text > **old),
            };
            if newer {
                changed |= slot.as_ref().is_none_or(|(_, old)| **old != *text);
                *slot = Some((ts, text.into_boxed_str()));
            }
        }
        changed
    }

    /// Keeps an event dated after the state's instant for its time.
    pub fn defer(&mut self, ev: LiveEvent) {
        let mut pending = std::mem::take(&mut self.pending).into_vec();
        pending.push(ev);
        self.pending = pending.into_boxed_slice();
    }

    /// Applies the pending events dated at or before `at`.
    pub fn apply_pending(&mut self, plan: &Plan, at: i64) {
        if self.pending.iter().all(|e| e.ts > at) {
            return;
        }
        let pending = std::mem::take(&mut self.pending).into_vec();
        let (now, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|e| e.ts <= at);
        self.pending = later.into_boxed_slice();
        for ev in &now {
            let _ = self.add(plan, ev, at);
        }
    }

    /// Drops window entries that have left their windows at `at`.
    pub fn prune(&mut self, plan: &Plan, at: i64) {
        for (spec, count) in plan.counts.iter().zip(self.counts.iter_mut()) {
            if let (Count::Window(times), Some(w)) = (count, spec.within) {
                let start = at.saturating_sub(w);
                while times.front().is_some_and(|&t| t < start) {
                    times.pop_front();
                }
            }
        }
        for (spec, total) in plan.totals.iter().zip(self.totals.iter_mut()) {
            if let Some(w) = spec.within {
                let start = at.saturating_sub(w);
                while total.recent.front().is_some_and(|&(t, _)| t < start) {
                    total.recent.pop_front();
                }
            }
        }
    }

    /// The next instant after the state's clock at which a feature the plan
    /// reads changes (`i64::MAX`: never, unless an event comes).
    pub fn next_change(&self, plan: &Plan) -> i64 {
        let after = self.clock;
        let mut next = NONE_MAX;
        let mut consider = |t: i64| {
            if t > after && t < next {
                next = t;
            }
        };
        for e in self.pending.iter() {
            consider(e.ts);
        }
        for (spec, count) in plan.counts.iter().zip(self.counts.iter()) {
            if let (Count::Window(times), Some(w)) = (count, spec.within) {
                // The first time past the window of an event still inside it.
                if let Some(&t) = times.iter().find(|&&t| t.saturating_add(w) >= after) {
                    consider(t.saturating_add(w).saturating_add(1));
                }
            }
        }
        for (spec, total) in plan.totals.iter().zip(self.totals.iter()) {
            if let Some(w) = spec.within
                && let Some(&(t, _)) = total
                    .recent
                    .iter()
                    .find(|&&(t, _)| t.saturating_add(w) >= after)
            {
                consider(t.saturating_add(w).saturating_add(1));
            }
        }
        if !self.seen() {
            return next;
        }
        let next_day = |t: i64| t + (days_between(t, after) + 1) * DAY;
        if self.last_purchase != NONE_MIN {
            let days = days_between(self.last_purchase, after);
            if plan.recency || (plan.activity && days <= plan.config.activity_days[2]) {
                consider(next_day(self.last_purchase));
            }
        }
        if plan.tenure && days_between(self.first, after) <= plan.config.tenure_days[2] {
            consider(next_day(self.first));
        }
        for &w in &plan.first_within {
            consider(self.first.saturating_add(w).saturating_add(1));
        }
        for &w in &plan.last_within {
            consider(self.last.saturating_add(w).saturating_add(1));
        }
        next
    }

    /// The user's feature row as of `at` (the state's instant or later,
    /// before the next change).
    pub fn row(&self, plan: &Plan, at: i64) -> FeatureRow {
        let mut row = FeatureRow::default();
        self.row_into(plan, at, &mut row);
        row
    }

    /// [`User::row`] into a row reused from one evaluation to the next (its
    /// keys stay; only values are written: no allocation per evaluation).
    pub fn row_into(&self, plan: &Plan, at: i64, row: &mut FeatureRow) {
        fn set(slot: &mut Option<String>, value: Option<&str>) {
            match (slot.as_mut(), value) {
                (Some(s), Some(v)) => {
                    s.clear();
                    s.push_str(v);
                }
                (None, Some(v)) => *slot = Some(v.to_string()),
                (_, None) => *slot = None,
            }
        }
        if plan.purchases {
            let bought = self.last_purchase != NONE_MIN;
            row.recency = bought.then(|| days_between(self.last_purchase, at));
            row.frequency = Some(self.purchases);
            row.monetary = Some(self.revenue as i128);
            if plan.activity {
                let stage = bought.then(|| {
                    ACTIVITY[bucket(
                        days_between(self.last_purchase, at),
                        &plan.config.activity_days,
                    )]
                });
                set(&mut row.lifecycle_activity, stage);
            }
        }
        row.first_seen = Some(self.first);
        row.last_seen = Some(self.last);
        if plan.tenure {
            let stage = TENURE[bucket(days_between(self.first, at), &plan.config.tenure_days)];
            set(&mut row.lifecycle_tenure, Some(stage));
        }
        if !plan.props.is_empty() {
            row.properties.clear();
        }
        for (name, slot) in plan.props.iter().zip(self.props.iter()) {
            if let Some((_, v)) = slot {
                row.properties.insert(name.clone(), v.to_string());
            }
        }
        let zero = [Count::All(0)];
        let counts = plan
            .counts
            .iter()
            .enumerate()
            .map(|(i, _)| self.counts.get(i).unwrap_or(&zero[0]));
        for (spec, count) in plan.counts.iter().zip(counts) {
            let n = match count {
                Count::All(n) => *n,
                Count::Window(times) => {
                    let start = at.saturating_sub(spec.within.unwrap_or(0));
                    (times.len() - times.partition_point(|&t| t < start)) as i64
                }
            };
            match &spec.feature {
                Feature::EventCount { filter: None, .. } => {
                    match row.event_counts.get_mut(&spec.key) {
                        Some(v) => *v = n,
                        None => {
                            row.event_counts.insert(spec.key.clone(), n);
                        }
                    }
                }
                f => match row.filtered_counts.get_mut(f) {
                    Some(v) => *v = n,
                    None => {
                        row.filtered_counts.insert(f.clone(), n);
                    }
                },
            }
        }
        if !plan.totals.is_empty() {
            row.totals.clear();
        }
        let empty = Total {
            n: 0,
            exact: 0,
            float: 0.0,
            recent: VecDeque::new(),
        };
        let totals = (0..plan.totals.len()).map(|i| self.totals.get(i).unwrap_or(&empty));
        for (spec, total) in plan.totals.iter().zip(totals) {
            let (n, sum) = match spec.within {
                None => (
                    total.n,
                    match spec.scale {
                        Some(s) => total.exact as f64 / 10f64.powi(s as i32),
                        None => total.float,
                    },
                ),
                Some(w) => {
                    let start = at.saturating_sub(w);
                    let from = total.recent.partition_point(|&(t, _)| t < start);
                    let mut exact = 0i128;
                    let mut float = 0f64;
                    for (_, v) in total.recent.range(from..) {
                        match v {
                            Value::Exact(x) => exact += x,
                            Value::Float(x) => float += x,
                        }
                    }
                    let sum = match spec.scale {
                        Some(s) => exact as f64 / 10f64.powi(s as i32),
                        None => float,
                    };
                    ((total.recent.len() - from) as i64, sum)
                }
            };
            let value = if is_avg(&spec.feature) {
                (n > 0).then(|| sum / n as f64)
            } else {
                Some(sum)
            };
            if let Some(v) = value {
                row.totals.insert(spec.feature.clone(), v);
            }
        }
    }
}

impl User {
    /// Appends the state (not the clock nor the timer: a restore sets them).
    pub fn encode(&self, plan: &Plan, out: &mut Vec<u8>) {
        use crate::checkpoint::{put_event, put_i64, put_i128, put_str, put_u64};
        let bought = self.last_purchase != NONE_MIN || self.purchases != 0 || self.revenue != 0;
        let flags = u8::from(self.seen())
            | u8::from(bought) << 1
            | u8::from(!self.counts.is_empty()) << 2
            | u8::from(!self.totals.is_empty()) << 3
            | u8::from(!self.props.is_empty()) << 4
            | u8::from(!self.pending.is_empty()) << 5;
        out.push(flags);
        put_u64(out, self.members);
        if self.seen() {
            put_i64(out, self.first);
            put_i64(out, self.last.wrapping_sub(self.first));
        }
        if bought {
            put_i64(out, self.last_purchase);
            put_i64(out, self.purchases);
            put_i64(out, self.revenue);
        }
        debug_assert!(self.counts.is_empty() || self.counts.len() == plan.counts.len());
        for c in self.counts.iter() {
            match c {
                Count::All(n) => {
                    out.push(0);
                    put_i64(out, *n);
                }
                Count::Window(times) => {
                    out.push(1);
                    put_u64(out, times.len() as u64);
                    let mut prev = 0i64;
                    for &t in times {
                        put_i64(out, t.wrapping_sub(prev));
                        prev = t;
                    }
                }
            }
        }
        let value = |out: &mut Vec<u8>, v: &Value| match v {
            Value::Exact(x) => {
                out.push(0);
                put_i128(out, *x);
            }
            Value::Float(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        for t in self.totals.iter() {
            put_i64(out, t.n);
            put_i128(out, t.exact);
            out.extend_from_slice(&t.float.to_le_bytes());
            put_u64(out, t.recent.len() as u64);
            let mut prev = 0i64;
            for (at, v) in &t.recent {
                put_i64(out, at.wrapping_sub(prev));
                prev = *at;
                value(out, v);
            }
        }
        for p in self.props.iter() {
            match p {
                None => out.push(0),
                Some((t, v)) => {
                    out.push(1);
                    put_i64(out, *t);
                    put_str(out, v);
                }
            }
        }
        if !self.pending.is_empty() {
            put_u64(out, self.pending.len() as u64);
            for ev in self.pending.iter() {
                put_event(out, ev);
            }
        }
    }

    /// Reads what [`User::encode`] wrote for the same plan.
    pub fn decode(
        plan: &Plan,
        user_id: &str,
        r: &mut crate::checkpoint::Reader<'_>,
    ) -> Result<User, String> {
        let bad = |what: &str| Err(format!("malformed live state of user {user_id:?}: {what}"));
        let flags = r.u8()?;
        if flags >> 6 != 0 {
            return bad("unknown flags");
        }
        let mut u = User::new();
        u.members = r.u64()?;
        if flags & 1 != 0 {
            u.first = r.i64()?;
            u.last = u.first.wrapping_add(r.i64()?);
            if u.first == NONE_MAX || u.last < u.first {
                return bad("first seen after last seen");
            }
        }
        if flags & 2 != 0 {
            u.last_purchase = r.i64()?;
            u.purchases = r.i64()?;
            u.revenue = r.i64()?;
        }
        if flags & 4 != 0 {
            let mut counts = Vec::with_capacity(plan.counts.len());
            for spec in &plan.counts {
                let c = match (r.u8()?, spec.within) {
                    (0, None) => Count::All(r.i64()?),
                    (1, Some(_)) => {
                        let n = r.len()?;
                        let mut times = VecDeque::with_capacity(n);
                        let mut prev = 0i64;
                        for _ in 0..n {
                            prev = prev.wrapping_add(r.i64()?);
                            times.push_back(prev);
                        }
                        Count::Window(times)
                    }
                    _ => return bad("a count of another plan"),
                };
                counts.push(c);
            }
            u.counts = counts.into_boxed_slice();
        }
        if flags & 8 != 0 {
            let mut totals = Vec::with_capacity(plan.totals.len());
            for _ in &plan.totals {
                let n = r.i64()?;
                let exact = r.i128()?;
                let float = r.f64()?;
                let k = r.len()?;
                let mut recent = VecDeque::with_capacity(k);
                let mut prev = 0i64;
                for _ in 0..k {
                    prev = prev.wrapping_add(r.i64()?);
                    let v = match r.u8()? {
                        0 => Value::Exact(r.i128()?),
                        1 => Value::Float(r.f64()?),
                        _ => return bad("a value of unknown kind"),
                    };
                    recent.push_back((prev, v));
                }
                totals.push(Total {
                    n,
                    exact,
                    float,
                    recent,
                });
            }
            u.totals = totals.into_boxed_slice();
        }
        if flags & 16 != 0 {
            let mut props = Vec::with_capacity(plan.props.len());
            for _ in &plan.props {
                props.push(match r.u8()? {
                    0 => None,
                    1 => {
                        let t = r.i64()?;
                        Some((t, r.str()?.into()))
                    }
                    _ => return bad("a property slot of unknown kind"),
                });
            }
            u.props = props.into_boxed_slice();
        }
        if flags & 32 != 0 {
            let n = r.len()?;
            let mut pending = Vec::with_capacity(n);
            for _ in 0..n {
                pending.push(crate::checkpoint::get_event(r, user_id)?);
            }
            u.pending = pending.into_boxed_slice();
        }
        Ok(u)
    }
}
