//! Live segments: per-user state kept from every acknowledged event, the
//! named segments of a file evaluated on each change and whenever time moves
//! a user across a threshold, and the transitions that makes.
//!
//! ## The model
//! Membership of a user in a segment at instant T is what `tenure segment
//! --as-of T` says over the events received by then: the features (R, F, M,
//! first and last seen, lifecycle stages, latest properties, `did` counts in
//! windows, sums and means) are those of the user's events with `ts <= T`.
//! The state changes at *evaluation points*, each stamped with its instant:
//! - an event received at `now` is applied and the user evaluated at `now`
//!   (an event dated later than `now`, within the store's one-day tolerance,
//!   waits and is applied at its own time);
//! - every time-driven change is due at an exact instant computed from the
//!   state: a `did e within w` count loses an event at `ts + w + 1µs`, R and
//!   the lifecycle stages move at whole days after the last purchase or the
//!   first event, `first_seen within w` ends at `first_seen + w + 1µs`. Each
//!   user has one timer, at the earliest of these; [`Live::advance`] fires
//!   those due and evaluates the user at the due instant itself, however late
//!   the call comes.
//!
//! Between evaluation points no feature changes, so membership read at any
//! instant equals the definition at that instant. A transition's `at` is its
//! evaluation point; its `id` hashes (user, segment, type, at), so the same
//! transition always has the same id.
//!
//! Population-relative features (quintile scores, means) and predictions
//! change for everyone with anyone's event; they are refused (see
//! [`Plan::new`]).
#![deny(missing_docs)]

mod checkpoint;
mod filter;
mod plan;
mod state;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use plan::{LiveConfig, LiveSegment, MAX_SEGMENTS, Plan, PropKind};
use state::User;
use tenure_dsl::{CompileContext, FeatureRow};

/// A property value carried by an event, typed as the store types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    /// A text column.
    Text(String),
    /// An exact number: mantissa and decimal places (`revenue` in cents is
    /// `Exact(cents, 2)`).
    Exact(i128, u32),
    /// A float column.
    Float(f64),
    /// A boolean column.
    Bool(bool),
    /// A timestamp column (UTC microseconds).
    Time(i64),
    /// A value of the `properties` JSON, as text (strings unquoted, other
    /// values as written; `null` is absent).
    Json(String),
}

impl Prop {
    /// The value as text, as a cast to Utf8 writes it.
    pub fn text(&self) -> String {
        match self {
            Prop::Text(t) | Prop::Json(t) => t.clone(),
            Prop::Exact(m, 0) => m.to_string(),
            Prop::Exact(m, s) => {
                let p = 10i128.pow(*s);
                let sign = if *m < 0 { "-" } else { "" };
                let a = m.unsigned_abs();
                let p = p as u128;
                format!("{sign}{}.{:0w$}", a / p, a % p, w = *s as usize)
            }
            Prop::Float(x) => format!("{x:?}"),
            Prop::Bool(b) => b.to_string(),
            // As Arrow casts a timestamp to text (`tenure segment` reads it so).
            Prop::Time(t) => chrono::DateTime::from_timestamp_micros(*t)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_else(|| t.to_string()),
        }
    }
}

/// One acknowledged event, with the properties the plan wants
/// ([`Plan::wanted_properties`]) that it has.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// The user.
    pub user_id: String,
    /// Event name.
    pub event: String,
    /// When it happened, UTC microseconds.
    pub ts: i64,
    /// Property values by name (`revenue` among them for purchases).
    pub props: Vec<(String, Prop)>,
}

/// Entered or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionType {
    /// The condition became true.
    Entered,
    /// The condition stopped being true.
    Exited,
}

impl TransitionType {
    /// `segment_entered` / `segment_exited`.
    pub fn name(self) -> &'static str {
        match self {
            TransitionType::Entered => "segment_entered",
            TransitionType::Exited => "segment_exited",
        }
    }
}

/// A user entering or leaving a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Stable idempotency key: a hash of (user, segment, type, at).
    pub id: String,
    /// Entered or exited.
    pub kind: TransitionType,
    /// The segment's name.
    pub segment: String,
    /// The user.
    pub user_id: String,
    /// When the condition became true or false, UTC microseconds.
    pub at: i64,
    /// The segment's features for the user at `at`, by column name.
    pub features: serde_json::Map<String, serde_json::Value>,
}

impl Transition {
    /// The idempotency key of a transition.
    pub fn id_of(user_id: &str, segment: &str, kind: TransitionType, at: i64) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [
            user_id.as_bytes(),
            segment.as_bytes(),
            kind.name().as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&at.to_le_bytes());
        format!("{:032x}", h.digest128())
    }

    /// The record sinks write: `{"id", "type", "segment", "user_id", "at",
    /// "features"}`, `at` in RFC 3339 with microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": self.kind.name(),
            "segment": self.segment,
            "user_id": self.user_id,
            "at": rfc3339(self.at),
            "features": self.features,
        })
    }
}

/// UTC microseconds as RFC 3339 with six decimals.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| t.to_string())
}

/// A user's profile: features now and current segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The user.
    pub user_id: String,
    /// Every feature the segments read, by column name.
    pub features: serde_json::Map<String, serde_json::Value>,
    /// Segments the user is in, in definition order.
    pub segments: Vec<String>,
}

/// User ids in one buffer, with an index from id to position: about 16
/// bytes per user besides the id's text (a `String` each would be 40 or more).
#[derive(Default)]
struct Ids {
    text: String,
    /// Start of each id in `text`; one more entry than ids.
    starts: Vec<u64>,
    index: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl Ids {
    fn get(&self, u: u32) -> &str {
        let (a, b) = (self.starts[u as usize], self.starts[u as usize + 1]);
        &self.text[a as usize..b as usize]
    }

    fn hash(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(id)
    }

    fn find(&self, id: &str) -> Option<u32> {
        let h = self.hash(id);
        self.index.find(h, |&u| self.get(u) == id).copied()
    }

    /// The position of `id`, added if new (`true`).
    fn insert(&mut self, id: &str) -> (u32, bool) {
        if let Some(u) = self.find(id) {
            return (u, false);
        }
        (self.push_new(id), true)
    }

    /// Adds an id known not to be here yet.
    fn push_new(&mut self, id: &str) -> u32 {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        let u = (self.starts.len() - 1) as u32;
        self.text.push_str(id);
        self.starts.push(self.text.len() as u64);
        let h = self.hash(id);
        let Ids {
            index,
            text,
            starts,
            hasher,
        } = self;
        index.insert_unique(h, u, |&v| {
            use std::hash::BuildHasher;
            let (a, b) = (starts[v as usize], starts[v as usize + 1]);
            hasher.hash_one(&text[a as usize..b as usize])
        });
        u
    }
}

/// Membership sinks last heard of: `(user, segment index) -> member`.
pub type Known<'a> = &'a dyn Fn(&str, usize) -> bool;

/// What [`Live::settle`] compares the evaluated membership with.
#[derive(Clone, Copy)]
pub enum Before<'a> {
    /// Nothing (a first start): membership is taken as it is, silently.
    Nothing,
    /// The membership sinks last heard of, by user and segment.
    Journal(Known<'a>),
    /// Each user's segment bits as they are (read back with the state by
    /// [`Live::read_state`], then moved by [`Live::set_known`]).
    Kept,
}

/// The live state of every user.
pub struct Live {
    plan: Plan,
    users: Vec<User>,
    ids: Ids,
    /// (due, user): one current entry per user (`User::scheduled`); others
    /// are stale and skipped.
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    /// Members per segment.
    counts: Vec<u64>,
    /// Per segment, a bit per user: pages of members without a walk over
    /// every user's state.
    bitmaps: Vec<Vec<u64>>,
    /// Every feature any segment reads, for profiles.
    all_features: Vec<tenure_dsl::Feature>,
    /// The user of the last loaded row.
    last_loaded: Option<u32>,
    /// The feature row evaluations reuse.
    scratch: FeatureRow,
}

impl Live {
    /// Empty state for a plan.
    pub fn new(plan: Plan) -> Live {
        let mut all: Vec<tenure_dsl::Feature> = plan
            .segments
            .iter()
            .flat_map(|s| s.features.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        Live {
            counts: vec![0; plan.segments.len()],
            bitmaps: vec![Vec::new(); plan.segments.len()],
            plan,
            users: Vec::new(),
            ids: Ids::default(),
            timers: BinaryHeap::new(),
            all_features: all,
            last_loaded: None,
            scratch: FeatureRow::default(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Users with state.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Applies an event received at `now`: first whatever was due for its
    /// user up to `now`, then the event; appends the transitions made.
    pub fn apply(&mut self, ev: LiveEvent, now: i64, out: &mut Vec<Transition>) {
        self.apply_all(vec![ev], now, out);
    }

    /// Applies events received together at `now` (one request): per user,
    /// whatever was due up to `now`, then all of their events, then one
    /// evaluation. All arrived at the same instant, so no membership in
    /// between them ever held: a batch `[purchase, purchase]` of a new user
    /// does not enter and leave `F = 1`. An instant earlier than a user's
    /// state (a clock read before another thread moved it) counts as the
    /// state's instant.
    pub fn apply_all(&mut self, events: Vec<LiveEvent>, now: i64, out: &mut Vec<Transition>) {
        let mut order: Vec<(u32, LiveEvent)> = events
            .into_iter()
            .map(|ev| (self.user(&ev.user_id), ev))
            .collect();
        // By user, keeping each user's events in the order received.
        order.sort_by_key(|(u, _)| *u);
        let mut rest = order.into_iter().peekable();
        while let Some((u, ev)) = rest.next() {
            let mut mine = vec![ev];
            while let Some((_, ev)) = rest.next_if(|(v, _)| *v == u) {
                mine.push(ev);
            }
            let now = now.max(self.users[u as usize].clock);
            // `scheduled` is never later than the user's next change: before
            // it, nothing is due (and no window holds an event to drop).
            let due = self.users[u as usize].scheduled <= now;
            if due {
                self.advance_user(u, now, out);
            } else {
                self.users[u as usize].clock = now;
            }
            let mut changed = false;
            for ev in mine {
                let user = &mut self.users[u as usize];
                if ev.ts > now {
                    user.defer(ev);
                    changed = true;
                } else {
                    changed |= user.add(&self.plan, &ev, now);
                }
            }
            if changed {
                self.evaluate(u, now, out);
            }
            // Events that changed nothing read cannot move the next change.
            if changed || due {
                self.reschedule(u);
            }
        }
    }

    /// Adds an event of history (received before `now`) without evaluating:
    /// a start-up rebuild calls this for every stored event, then
    /// [`Live::settle`].
    pub fn load(&mut self, ev: LiveEvent, now: i64) {
        if ev.ts > now {
            let u = self.user(&ev.user_id);
            let user = &mut self.users[u as usize];
            user.clock = now;
            user.defer(ev);
        } else {
            self.load_parts(&ev.user_id, &ev.event, ev.ts, &ev.props, now);
        }
    }

    /// [`Live::load`] from borrowed parts, without allocating per event.
    pub fn load_parts(
        &mut self,
        user_id: &str,
        event: &str,
        ts: i64,
        props: &[(String, Prop)],
        now: i64,
    ) {
        if ts > now {
            return self.load(
                LiveEvent {
                    user_id: user_id.to_string(),
                    event: event.to_string(),
                    ts,
                    props: props.to_vec(),
                },
                now,
            );
        }
        // Rows come grouped by user: the previous row's user is looked up once.
        let u = match self.last_loaded {
            Some(u) if self.ids.get(u) == user_id => u,
            _ => self.user(user_id),
        };
        self.last_loaded = Some(u);
        let user = &mut self.users[u as usize];
        user.clock = now;
        let _ = user.add_parts(&self.plan, event, ts, props, now);
    }

    /// Evaluates every user at `now` after a rebuild (first applying the
    /// pending events that are due, so a state read back from before the
    /// restart catches up). `before` is the membership sinks last heard of;
    /// a difference is a transition at `now` (what changed while the server
    /// was down), appended to `out`. With [`Before::Nothing`] (a first
    /// start) the membership is taken as it is, with no transitions.
    pub fn settle(&mut self, now: i64, before: Before<'_>, out: &mut Vec<Transition>) {
        self.users.shrink_to_fit();
        self.last_loaded = None;
        let mut silent = Vec::new();
        for u in 0..self.users.len() as u32 {
            let user = &mut self.users[u as usize];
            user.apply_pending(&self.plan, now);
            user.clock = user.clock.max(now);
            user.scheduled = i64::MAX;
            user.prune(&self.plan, now);
            if let Before::Journal(before) = before {
                let mut known = 0u64;
                for i in 0..self.plan.segments.len() {
                    let was = self.users[u as usize].members >> i & 1 == 1;
                    let is = before(self.ids.get(u), i);
                    if is {
                        known |= 1 << i;
                    }
                    if is != was {
                        self.mark(i, u, is);
                    }
                }
                self.users[u as usize].members = known;
            }
            match before {
                Before::Journal(_) | Before::Kept => self.evaluate(u, now, out),
                Before::Nothing => {
                    self.evaluate(u, now, &mut silent);
                    silent.clear();
                }
            }
            self.reschedule(u);
        }
    }

    /// Records that sinks last heard `user_id` enter (`member`) or leave a
    /// segment, before [`Live::settle`] with [`Before::Kept`] (the journal's
    /// transitions after a state was written). An unknown user is ignored.
    pub fn set_known(&mut self, user_id: &str, segment: usize, member: bool) {
        let Some(u) = self.ids.find(user_id) else {
            return;
        };
        if segment >= self.plan.segments.len() {
            return;
        }
        let bits = &mut self.users[u as usize].members;
        if (*bits >> segment & 1 == 1) != member {
            *bits ^= 1 << segment;
            self.mark(segment, u, member);
        }
    }

    /// Calls `f` with the id of every member of a segment.
    pub fn for_each_member(&self, segment: usize, mut f: impl FnMut(&str)) {
        for (w, &word) in self.bitmaps[segment].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                f(self.ids.get(w as u32 * 64 + b));
            }
        }
    }

    /// Records a user's membership of a segment in its count and bitmap.
    fn mark(&mut self, segment: usize, u: u32, member: bool) {
        let words = &mut self.bitmaps[segment];
        let w = u as usize / 64;
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        if member {
            words[w] |= 1 << (u % 64);
            self.counts[segment] += 1;
        } else {
            words[w] &= !(1 << (u % 64));
            self.counts[segment] -= 1;
        }
    }

    fn user(&mut self, id: &str) -> u32 {
        let (u, new) = self.ids.insert(id);
        if new {
            self.users.push(User::new());
        }
        u
    }

    /// Makes room for `n` more users (a rebuild that knows the store's count).
    pub fn reserve(&mut self, n: usize) {
        self.users.reserve_exact(n);
        self.ids.starts.reserve_exact(n + 1);
        let Ids {
            index,
            text,
            starts,
            hasher,
        } = &mut self.ids;
        index.reserve(n, |&v| {
            use std::hash::BuildHasher;
            let (a, b) = (starts[v as usize], starts[v as usize + 1]);
            hasher.hash_one(&text[a as usize..b as usize])
        });
    }

    /// Fires every timer due by `now`, each at its own instant.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Transition>) {
        while let Some(&Reverse((due, u))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let user = &mut self.users[u as usize];
            if user.scheduled != due {
                continue;
            }
            user.scheduled = i64::MAX;
            self.advance_user(u, now, out);
            self.reschedule(u);
        }
    }

    /// The earliest timer (possibly one that turns out to have nothing to
    /// do): when [`Live::advance`] should next be called.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.peek().map(|r| r.0.0)
    }

    /// A user's features and segments as of `now` (firing their timers due
    /// by then first, whose transitions are appended to `out`).
    pub fn profile(
        &mut self,
        user_id: &str,
        now: i64,
        out: &mut Vec<Transition>,
    ) -> Option<Profile> {
        let u = self.ids.find(user_id)?;
        let now = now.max(self.users[u as usize].clock);
        self.advance_user(u, now, out);
        self.reschedule(u);
        let user = &self.users[u as usize];
        if !user.seen() {
            return None;
        }
        let row = user.row(&self.plan, now);
        Some(Profile {
            user_id: user_id.to_string(),
            features: features_json(&self.all_features, &row),
            segments: self
                .plan
                .segments
                .iter()
                .enumerate()
                .filter(|(i, _)| user.members >> i & 1 == 1)
                .map(|(_, s)| s.name.clone())
                .collect(),
        })
    }

    /// Whether `user_id` is in the segment at index `segment` now (as of
    /// their last evaluation; call [`Live::advance`] first).
    pub fn is_member(&self, user_id: &str, segment: usize) -> bool {
        self.ids
            .find(user_id)
            .is_some_and(|u| self.users[u as usize].members >> segment & 1 == 1)
    }

    /// The segment's index by name.
    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.plan.segments.iter().position(|s| s.name == name)
    }

    /// Members of a segment: their number, and up to `limit` of their ids
    /// after skipping `offset`, in the order users were first seen.
    pub fn members(&self, segment: usize, offset: usize, limit: usize) -> (u64, Vec<String>) {
        let mut ids = Vec::new();
        let mut skip = offset;
        for (w, &word) in self.bitmaps[segment].iter().enumerate() {
            if ids.len() >= limit {
                break;
            }
            let n = word.count_ones() as usize;
            if skip >= n {
                skip -= n;
                continue;
            }
            let mut bits = word;
            while bits != 0 && ids.len() < limit {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                ids.push(self.ids.get(w as u32 * 64 + b).to_string());
            }
        }
        (self.counts[segment], ids)
    }

    /// Processes a user's due changes up to `now`, each at its instant.
    fn advance_user(&mut self, u: u32, now: i64, out: &mut Vec<Transition>) {
        loop {
            let user = &self.users[u as usize];
            let due = user.next_change(&self.plan);
            if due > now {
                break;
            }
            let user = &mut self.users[u as usize];
            user.apply_pending(&self.plan, due);
            user.clock = due;
            self.evaluate(u, due, out);
        }
        let user = &mut self.users[u as usize];
        user.clock = user.clock.max(now);
        user.prune(&self.plan, user.clock);
    }

    fn reschedule(&mut self, u: u32) {
        let user = &mut self.users[u as usize];
        let due = user.next_change(&self.plan);
        if due < user.scheduled {
            user.scheduled = due;
            self.timers.push(Reverse((due, u)));
        }
    }

    /// Evaluates every segment for a user at `at`; appends transitions.
    fn evaluate(&mut self, u: u32, at: i64, out: &mut Vec<Transition>) {
        let user = &self.users[u as usize];
        let mut row = std::mem::take(&mut self.scratch);
        let bits = if user.seen() {
            user.row_into(&self.plan, at, &mut row);
            let ctx = CompileContext::new(at);
            let mut bits = 0u64;
            for (i, s) in self.plan.segments.iter().enumerate() {
                if tenure_dsl::eval(&s.expr, &row, &ctx) {
                    bits |= 1 << i;
                }
            }
            let changed = bits ^ user.members;
            for (i, s) in self.plan.segments.iter().enumerate() {
                if changed >> i & 1 == 0 {
                    continue;
                }
                let kind = if bits >> i & 1 == 1 {
                    TransitionType::Entered
                } else {
                    TransitionType::Exited
                };
                out.push(Transition {
                    id: Transition::id_of(self.ids.get(u), &s.name, kind, at),
                    kind,
                    segment: s.name.clone(),
                    user_id: self.ids.get(u).to_string(),
                    at,
                    features: features_json(&s.features, &row),
                });
            }
            bits
        } else {
            0
        };
        self.scratch = row;
        let changed = bits ^ self.users[u as usize].members;
        for i in 0..self.plan.segments.len() {
            if changed >> i & 1 == 1 {
                self.mark(i, u, bits >> i & 1 == 1);
            }
        }
        self.users[u as usize].members = bits;
    }
}

/// Feature values of a row as JSON, by column name.
fn features_json(
    features: &[tenure_dsl::Feature],
    row: &FeatureRow,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    use tenure_dsl::{Feature, LifecycleAxis};
    let mut m = serde_json::Map::new();
    let time = |t: Option<i64>| t.map_or(Value::Null, |t| Value::String(rfc3339(t)));
    let text = |t: &Option<String>| t.clone().map_or(Value::Null, Value::String);
    let float = |x: Option<f64>| {
        x.and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    };
    for f in features {
        let v = match f {
            Feature::Recency => row.recency.map_or(Value::Null, Value::from),
            Feature::Frequency => row.frequency.map_or(Value::Null, Value::from),
            Feature::Monetary => row
                .monetary
                .map_or(Value::Null, |c| Value::String(Prop::Exact(c, 2).text())),
            Feature::FirstSeen => time(row.first_seen),
            Feature::LastSeen => time(row.last_seen),
            Feature::Lifecycle(LifecycleAxis::Tenure) => text(&row.lifecycle_tenure),
            Feature::Lifecycle(LifecycleAxis::Activity) => text(&row.lifecycle_activity),
            Feature::Property(name) => row
                .properties
                .get(name)
                .map_or(Value::Null, |s| Value::String(s.clone())),
            Feature::EventCount {
                event,
                within,
                filter: None,
            } => Value::from(
                row.event_counts
                    .get(&(event.clone(), *within))
                    .copied()
                    .unwrap_or(0),
            ),
            Feature::EventCount { .. } => {
                Value::from(row.filtered_counts.get(f).copied().unwrap_or(0))
            }
            Feature::Total { .. } => float(row.totals.get(f).copied()),
            _ => Value::Null,
        };
        m.insert(f.column_name(), v);
    }
    m
}
