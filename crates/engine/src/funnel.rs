//! Funnels with ClickHouse `windowFunnel` semantics.
//!
//! One fold ([`FunnelFold`]) over the funnel's events (`user_key`, `ts`, a bit
//! per step and per exclusion, the breakdown and held columns), read in user
//! order: the scan merges each key range's files block of users by block (no
//! hash table, no string group-by, no global sort, memory of one block per
//! range), and each user's events are folded exactly as ClickHouse's
//! `windowFunnel` does:
//!
//! * every event matching step `i` is an entry `(ts, i)`; an event matching
//!   several steps gives several entries; entries are sorted by `(ts, i)`, so
//!   at equal timestamps the earlier step comes first;
//! * a step-1 entry (re)starts a chain; a step-`i` entry extends the latest
//!   chain at step `i - 1` when `ts <= start + window` (the boundary counts);
//! * the user's level is the deepest step any chain reached.
//!
//! Modes (ClickHouse's meanings, plus `first_touch`), on the 3-step funnel
//! `a > b > c`, window 1 h, with events at minutes:
//!
//! * default: `a@0 b@10 x@20 c@30` -> 3 (other events do not matter);
//!   `a@0 b@70` -> 1 (b is past the window); `a@0 a@50 b@70 c@80` -> 3 (the
//!   chain started at the second `a` is within the window).
//! * `strict_order`: any other event inside a started chain stops the search:
//!   `a@0 b@10 x@20 c@30` -> 2; a step seen before its previous step also
//!   stops it: `a@0 c@10 b@20` -> 1.
//! * `strict_increase`: a step must be strictly later than the previous one:
//!   `a@0 b@0 c@5` -> 1 (default mode gives 3).
//! * `strict_deduplication`: a step repeated while its chain is open stops the
//!   search: `a@0 b@10 b@20 c@30` -> 2.
//! * `first_touch`: only the user's first step-1 event in range starts a chain,
//!   as a plain SQL join funnel does: `a@0 a@50 b@70 c@80` -> 1.
//!
//! Exclusions: an exclusion event between steps `s` and `t` (1-based, s < t)
//! stops every chain that has reached step `s` but not yet step `t` (the user
//! keeps the steps already reached; a later step-1 event may start a clean
//! chain). At equal timestamps steps are applied first, so an exclusion at the
//! same instant as a step is not "between" it and the next.
//!
//! Entry range: only step-1 events in `[entry_from, entry_to)` start chains;
//! later steps count until `start + window` even past `entry_to`, so the last
//! days of a range are not undercounted.
//!
//! Breakdown: a user counts once, in the group of the property value at the
//! step-1 event of the chain that first reached the user's deepest step.
//! Time to convert: that chain's seconds from step `i - 1` to step `i`.
//!
//! Per-step windows and minimum gaps (`add_to_cart within 1h`, `checkout
//! after 1m within 30m`, counted from the previous step), optional steps
//! (`add_to_wishlist?`) and any-order groups (`{add_to_cart,
//! add_to_wishlist}`) are folded exactly by [`exact`] (its docs define them
//! and work examples); the loop above stays for funnels without them.

pub mod exact;
pub mod syntax;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Expr, col, lit};

use crate::breakdown::NONE_LABEL;
use crate::table::Events;
use crate::{EngineError, Result};

/// Most steps a funnel may have (as ClickHouse's `windowFunnel`).
pub const MAX_STEPS: usize = 32;
/// Most steps and exclusions together (one bit each per event row).
pub const MAX_STEPS_AND_EXCLUSIONS: usize = 32;

/// One funnel step: an event name and an optional condition on its columns.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// Event name.
    pub event: String,
    /// Extra condition on the event's columns.
    #[serde(with = "crate::codec::opt_expr")]
    pub condition: Option<Expr>,
    /// How the step is shown (the name, with the condition's text if any).
    pub label: String,
    /// An any-order group: the step is reached when every member has
    /// happened, in any order, since the previous step (`event` and
    /// `condition` are then unused). Empty for a single event.
    #[serde(default)]
    pub any_of: Vec<Step>,
    /// A chain may skip this step (`?`; never the first or the last step).
    #[serde(default)]
    pub optional: bool,
    /// Least time since the previous step of the chain, µs (`after`; 0: none).
    #[serde(default)]
    pub after_us: i64,
    /// Most time since the previous step of the chain, µs (`within`).
    #[serde(default)]
    pub within_us: Option<i64>,
}

impl Step {
    /// A step on an event name alone (no condition), labelled by the name.
    pub fn named(event: &str) -> Self {
        Self {
            event: event.to_string(),
            condition: None,
            label: event.to_string(),
            any_of: Vec::new(),
            optional: false,
            after_us: 0,
            within_us: None,
        }
    }

    /// Whether the step needs the exact fold (a gap, a group or `?`).
    pub fn is_rich(&self) -> bool {
        self.optional || self.after_us > 0 || self.within_us.is_some() || !self.any_of.is_empty()
    }

    /// The matchers of the step: its members, or itself.
    pub(crate) fn matchers(&self) -> impl Iterator<Item = &Step> {
        let own = self.any_of.is_empty().then_some(self);
        own.into_iter().chain(self.any_of.iter())
    }
}

/// An event that must not happen between two steps.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Exclusion {
    /// The excluded step-like event.
    pub step: Step,
    /// From this step (1-based) ...
    pub from_step: usize,
    /// ... to this one (1-based, greater than `from_step`).
    pub to_step: usize,
}

/// ClickHouse's `windowFunnel` options, plus first-touch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Modes {
    /// Any other event inside a started chain stops the search.
    pub strict_order: bool,
    /// Steps need strictly increasing timestamps.
    pub strict_increase: bool,
    /// A repeated step stops the search.
    pub strict_deduplication: bool,
    /// Only the first step-1 event starts a chain.
    pub first_touch: bool,
}

impl Modes {
    /// Parses a comma-separated list of mode names (`default` means none).
    pub fn parse(s: &str) -> Result<Self> {
        let mut m = Modes::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.replace('-', "_").as_str() {
                "default" => {}
                "strict_order" => m.strict_order = true,
                "strict_increase" => m.strict_increase = true,
                "strict_deduplication" => m.strict_deduplication = true,
                "first_touch" => m.first_touch = true,
                other => {
                    return Err(EngineError::BadRequest(format!(
                        "unknown funnel mode `{other}`: expected default, strict_order, strict_increase, strict_deduplication or first_touch (comma-separated)"
                    )));
                }
            }
        }
        Ok(m)
    }
}

/// What to compute.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FunnelSpec {
    /// The steps, in order (1 to 32).
    pub steps: Vec<Step>,
    /// Window in microseconds, measured from the chain's step-1 event (inclusive).
    pub window_us: i64,
    /// Modes.
    pub modes: Modes,
    /// Exclusions.
    pub exclusions: Vec<Exclusion>,
    /// Break down by this column's value at step 1.
    pub by: Option<String>,
    /// Break down by precomputed per-user groups (a segment): `of_user[key]`
    /// indexes `labels`; `u32::MAX` puts the user in no group.
    pub user_groups: Option<(Vec<u32>, Vec<String>)>,
    /// Every step of a chain must have the same value of this column.
    pub hold: Option<String>,
    /// Step-1 events from this instant on start chains (UTC µs).
    pub entry_from: Option<i64>,
    /// Step-1 events before this instant start chains (UTC µs).
    pub entry_to: Option<i64>,
}

/// Per-user outcome.
#[derive(Debug, Clone)]
pub struct UserLevels {
    /// Deepest step per user key (0: never entered).
    pub level: Vec<u8>,
    /// Group per user key (index into `labels`, `u32::MAX` when level is 0).
    pub group: Vec<u32>,
    /// Group labels, sorted (one label, `all`, without a breakdown).
    pub labels: Vec<String>,
    /// Per user key with level >= 2: time from the previous step to step i
    /// (µs, [`exact::SKIPPED`] for a step the user's chain skipped), for
    /// i = 2..=level; stored flat, `conv_offsets[key]..conv_offsets[key + 1]`.
    pub conv_us: Vec<i64>,
    /// Offsets into `conv_us` (users + 1 entries).
    pub conv_offsets: Vec<u32>,
    /// With optional steps (the exact fold), per user key: bit `k` when
    /// step `k + 1` was reached by some chain; empty otherwise (every step
    /// up to the level is reached).
    pub reached: Vec<u32>,
}

impl UserLevels {
    /// Whether user `u` reached step `k` (0-based).
    pub fn reached(&self, u: usize, k: usize) -> bool {
        match self.reached.get(u) {
            Some(r) => r >> k & 1 == 1,
            None => k < self.level[u] as usize,
        }
    }
}

/// One output row per group and step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunnelRow {
    /// Breakdown value (`all` without a breakdown; `(none)` for null).
    pub group: String,
    /// Step number, 1-based.
    pub step: u32,
    /// The step's event (and condition).
    pub event: String,
    /// Users who reached this step.
    pub users: u64,
    /// Users of the previous step who did not reach this one (the previous
    /// required step: optional steps are skipped).
    pub drop_off: u64,
    /// users / users at the previous (required) step (None for step 1 or an
    /// empty group).
    pub conversion_from_previous: Option<f64>,
    /// users / users at step 1.
    pub conversion_from_first: Option<f64>,
    /// Median seconds from the previous step (None for step 1).
    pub median_seconds_to_convert: Option<f64>,
    /// 90th percentile of seconds from the previous step.
    pub p90_seconds_to_convert: Option<f64>,
}

/// One histogram bucket of time to convert.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistogramRow {
    /// Breakdown value.
    pub group: String,
    /// Step number (2 or more): time from the previous step.
    pub step: u32,
    /// The step's event.
    pub event: String,
    /// Bucket label (`1m-5m`).
    pub bucket: String,
    /// Lower bound, seconds (inclusive).
    pub from_seconds: i64,
    /// Upper bound, seconds (exclusive; None for the last bucket).
    pub to_seconds: Option<i64>,
    /// Users whose conversion time falls in the bucket.
    pub users: u64,
}

/// Histogram bucket bounds in seconds.
pub const BUCKETS: &[(i64, &str)] = &[
    (0, "0s"),
    (60, "1m"),
    (300, "5m"),
    (900, "15m"),
    (3_600, "1h"),
    (3 * 3_600, "3h"),
    (6 * 3_600, "6h"),
    (12 * 3_600, "12h"),
    (86_400, "1d"),
    (2 * 86_400, "2d"),
    (3 * 86_400, "3d"),
    (7 * 86_400, "7d"),
    (14 * 86_400, "14d"),
    (30 * 86_400, "30d"),
];

/// Entry kinds beyond steps: exclusions are `EXCL + j`.
const EXCL: u8 = 64;

impl FunnelSpec {
    /// Checks the request against the table (steps, exclusions, columns).
    pub fn validate(&self, events: &Events) -> Result<()> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(EngineError::BadRequest(format!(
                "a funnel needs 1 to {MAX_STEPS} steps, got {}",
                self.steps.len()
            )));
        }
        if self.window_us <= 0 {
            return Err(EngineError::BadRequest(
                "the funnel window must be positive".into(),
            ));
        }
        let matchers: usize = self.steps.iter().map(|s| s.matchers().count()).sum();
        if matchers + self.exclusions.len() > MAX_STEPS_AND_EXCLUSIONS {
            return Err(EngineError::BadRequest(format!(
                "at most {MAX_STEPS_AND_EXCLUSIONS} steps, group members and exclusions together"
            )));
        }
        for s in &self.steps {
            let bad = |why: &str| {
                Err(EngineError::BadRequest(format!(
                    "funnel step `{}`: {why}",
                    s.label
                )))
            };
            if s.after_us < 0 || s.within_us.is_some_and(|w| w <= 0) {
                return bad("`after` and `within` must be positive");
            }
            if s.within_us.is_some_and(|w| s.after_us > w) {
                return bad("`after` is longer than `within`, so no event can match");
            }
            if !s.any_of.is_empty() {
                if s.any_of.len() < 2 {
                    return bad(
                        "an any-order group needs two or more events (a single event needs no braces)",
                    );
                }
                if s.any_of.iter().any(Step::is_rich) {
                    return bad(
                        "a group's members are single events; `after`, `within` and `?` apply to the whole group",
                    );
                }
            }
        }
        let first = &self.steps[0];
        if first.optional || first.after_us > 0 || first.within_us.is_some() {
            return Err(EngineError::BadRequest(format!(
                "step 1 `{}` starts the funnel: it cannot be optional or take `after`/`within` (they count from the previous step)",
                first.label
            )));
        }
        if !first.any_of.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "step 1 `{}` starts the funnel: it cannot be an any-order group (the group's events count from the previous step)",
                first.label
            )));
        }
        let last = self.steps.last().expect("non-empty");
        if last.optional && self.steps.len() > 1 {
            return Err(EngineError::BadRequest(format!(
                "the last step `{}` cannot be optional: it is what the funnel converts to",
                last.label
            )));
        }
        if self.is_rich() && (self.modes.strict_order || self.modes.strict_deduplication) {
            return Err(EngineError::BadRequest(
                "strict_order and strict_deduplication follow ClickHouse's windowFunnel, which has no per-step windows, optional steps or groups: drop the mode or those steps' `after`/`within`/`?`/braces".into(),
            ));
        }
        for x in &self.exclusions {
            if x.from_step < 1 || x.to_step <= x.from_step || x.to_step > self.steps.len() {
                return Err(EngineError::BadRequest(format!(
                    "exclusion `{}` between steps {} and {}: need 1 <= from < to <= {}",
                    x.step.label,
                    x.from_step,
                    x.to_step,
                    self.steps.len()
                )));
            }
        }
        if let Some(by) = &self.by {
            crate::breakdown::by_expr(events, by)?;
        }
        if let Some(c) = &self.hold
            && (!events.has_column(c) || ["user_key", "ts", "ingested_at"].contains(&c.as_str()))
        {
            return Err(EngineError::BadRequest(format!(
                "`{c}` is not a column of the events table (try variant, event or a declared property)"
            )));
        }
        if self.by.is_some() && self.user_groups.is_some() {
            return Err(EngineError::BadRequest(
                "break down by a column or by a segment, not both".into(),
            ));
        }
        Ok(())
    }
}

impl FunnelSpec {
    /// Whether any step has a gap, a group or `?` (then the exact fold runs).
    pub fn is_rich(&self) -> bool {
        self.steps.iter().any(Step::is_rich)
    }
}

fn matcher(s: &Step) -> Expr {
    let e = col("event").eq(lit(s.event.clone()));
    match &s.condition {
        Some(c) => e.and(c.clone()),
        None => e,
    }
    .is_true()
}

/// Folds every user's funnel: per-user levels (for an A/B readout or a
/// segment breakdown) from one [`FunnelFold`] plan.
pub async fn user_levels(events: &Events, spec: &FunnelSpec) -> Result<UserLevels> {
    let fold = FunnelFold::new(events, spec)?;
    let levels = crate::fold::partial(events, fold).await?;
    Ok(levels.into_user_levels(spec))
}

/// The funnel as a per-user fold ([`crate::fold`]), reading users in time
/// order: a flag per step and per exclusion (`event = 'name'`, and the step's
/// condition), the breakdown and held columns; rows matching no step are
/// dropped by the scan unless `strict_order` needs them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FunnelFold {
    spec: FunnelSpec,
    params: Params,
    /// Indexes of the breakdown and held columns among the fold's columns.
    by_at: Option<usize>,
    hold_at: Option<usize>,
    /// The breakdown's value per event (a computed column after the held one).
    #[serde(with = "crate::codec::opt_expr")]
    by: Option<Expr>,
}

impl FunnelFold {
    /// The fold of `spec` over `events` (checked against its columns).
    pub fn new(events: &Events, spec: &FunnelSpec) -> Result<Self> {
        spec.validate(events)?;
        let hold_at = spec.hold.as_ref().map(|_| 0);
        let by_at = spec.by.as_ref().map(|_| usize::from(spec.hold.is_some()));
        Ok(Self {
            spec: spec.clone(),
            params: Params::of(spec),
            by_at,
            hold_at,
            by: spec
                .by
                .as_deref()
                .map(|b| crate::breakdown::by_expr(events, b))
                .transpose()?,
        })
    }
}

impl FunnelFold {
    /// Folds every user of the gathered block: groups its rows by user (a
    /// counting sort over the block's keys), ranks the breakdown and held
    /// values, and folds each user's rows.
    fn fold_block(&self, st: &mut FunnelState) {
        let n = st.buf.keys.len();
        if n == 0 {
            return;
        }
        let (mut lo, mut hi) = (u32::MAX, 0);
        for &k in &st.buf.keys {
            lo = lo.min(k);
            hi = hi.max(k);
        }
        let width = (hi - lo) as usize + 1;
        let at = &mut st.at;
        at.clear();
        at.resize(width + 1, 0);
        for &k in &st.buf.keys {
            at[(k - lo) as usize + 1] += 1;
        }
        for u in 0..width {
            at[u + 1] += at[u];
        }
        let mut grp_rank = Vec::new();
        if self.by_at.is_some() {
            rank_ids(&st.labels, false, &mut grp_rank);
        }
        let mut hold_rank = Vec::new();
        if self.hold_at.is_some() {
            rank_ids(&st.holds, true, &mut hold_rank);
        }
        let (buf, out) = (&st.buf, &mut st.sorted);
        out.ts.resize(n, 0);
        out.mask.resize(n, 0);
        out.grp.resize(if grp_rank.is_empty() { 0 } else { n }, 0);
        // With a held column every row has a held value, null (`u32::MAX`)
        // included: a block whose rows are all null has no ranks, yet its
        // rows must not form chains.
        let held = self.hold_at.is_some();
        out.hold.resize(if held { n } else { 0 }, 0);
        for (i, &k) in buf.keys.iter().enumerate() {
            let slot = &mut at[(k - lo) as usize];
            let j = *slot as usize;
            *slot += 1;
            out.ts[j] = buf.ts[i];
            out.mask[j] = buf.mask[i];
            if !grp_rank.is_empty() {
                out.grp[j] = grp_rank[buf.grp[i] as usize];
            }
            if held {
                let h = buf.hold[i];
                out.hold[j] = if h == u32::MAX {
                    h
                } else {
                    hold_rank[h as usize]
                };
            }
        }
        // Now `at[u]` is where user `lo + u`'s rows end.
        let mut label_of_rank = vec![0u32; grp_rank.iter().max().map_or(0, |&r| r as usize + 1)];
        for (id, &r) in grp_rank.iter().enumerate() {
            label_of_rank[r as usize] = id as u32;
        }
        let frows = FRows {
            ts: &out.ts,
            mask: &out.mask,
            grp: &out.grp,
            hold: &out.hold,
        };
        let mut start = 0;
        for u in 0..width {
            let end = at[u] as usize;
            if end == start {
                continue;
            }
            let at = (lo + u as u32 - st.lo) as usize;
            let o = fold_user(&frows, start..end, &self.params, &mut st.scratch);
            st.level[at] = o.level;
            if o.level > 0 {
                st.group[at] = label_of_rank.get(o.group as usize).copied().unwrap_or(0);
                let path = &st.scratch.best_path[..o.level as usize];
                // Time from the chain's previous step; none for a skipped one.
                let mut prev = path[0];
                st.conv_us.extend(path[1..].iter().map(|&t| {
                    if t == exact::SKIPPED {
                        return exact::SKIPPED;
                    }
                    let d = t - prev;
                    prev = t;
                    d
                }));
                st.conv_len[at] = o.level as u32 - 1;
                if let Some(r) = st.reached.get_mut(at) {
                    *r = st.scratch.reached;
                }
            }
            start = end;
        }
        st.buf.clear();
        st.holds = Default::default();
    }
}

/// Per-user outcomes of a range of users; ranges merge in key order.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Levels {
    level: Vec<u8>,
    /// Per user with a level: its group's id in `labels`, else `u32::MAX`.
    group: Vec<u32>,
    labels: crate::fold::Interner,
    conv_us: Vec<i64>,
    /// `conv_us` of user `i`: `conv_offsets[i]..conv_offsets[i + 1]`.
    conv_offsets: Vec<u32>,
    /// Per user, the steps reached (the exact fold only; else empty).
    reached: Vec<u32>,
}

impl Levels {
    /// The outcome as [`UserLevels`], with the spec's breakdown applied.
    pub fn into_user_levels(self, spec: &FunnelSpec) -> UserLevels {
        self.into_user_levels_from(spec, 0)
    }

    /// [`Self::into_user_levels`] of levels whose entry 0 is user key `lo`
    /// (one key range's).
    fn into_user_levels_from(self, spec: &FunnelSpec, lo: usize) -> UserLevels {
        let Levels {
            mut level,
            mut group,
            labels,
            conv_us,
            mut conv_offsets,
            mut reached,
        } = self;
        if conv_offsets.is_empty() {
            conv_offsets.push(0);
        }
        let labels = if spec.by.is_some() {
            labels
                .values()
                .iter()
                .map(|v| v.clone().unwrap_or_else(|| NONE_LABEL.to_string()))
                .collect()
        } else if let Some((of_user, labels)) = &spec.user_groups {
            for (u, g) in group.iter_mut().enumerate() {
                if level[u] > 0 {
                    *g = of_user.get(lo + u).copied().unwrap_or(u32::MAX);
                    if *g == u32::MAX {
                        level[u] = 0;
                        if let Some(r) = reached.get_mut(u) {
                            *r = 0;
                        }
                    }
                }
            }
            labels.clone()
        } else {
            for (u, g) in group.iter_mut().enumerate() {
                if level[u] > 0 {
                    *g = 0;
                }
            }
            vec!["all".to_string()]
        };
        UserLevels {
            level,
            group,
            labels,
            conv_us,
            conv_offsets,
            reached,
        }
    }
}

/// One key range's funnel state.
pub struct FunnelState {
    lo: u32,
    level: Vec<u8>,
    group: Vec<u32>,
    labels: crate::fold::Interner,
    conv_us: Vec<i64>,
    conv_len: Vec<u32>,
    reached: Vec<u32>,
    scratch: Scratch,
    /// The block of users being gathered ([`crate::fold::Rows::block`]).
    block: Option<u32>,
    /// Its rows so far, as read: key, time, flag bits, breakdown value (an
    /// id in `labels`) and held value (an id in `holds`, `u32::MAX` null).
    buf: Gathered,
    /// Held values of the block (cleared with it).
    holds: crate::fold::Interner,
    /// The block's rows grouped by user, breakdown and held values as ranks.
    sorted: Gathered,
    at: Vec<u32>,
}

/// Rows of a block of users, column by column.
#[derive(Default)]
struct Gathered {
    keys: Vec<u32>,
    ts: Vec<i64>,
    mask: Vec<u32>,
    grp: Vec<u32>,
    hold: Vec<u32>,
}

impl Gathered {
    fn clear(&mut self) {
        self.keys.clear();
        self.ts.clear();
        self.mask.clear();
        self.grp.clear();
        self.hold.clear();
    }
}

/// Each row's value of a text column as an id in `ids` (`null` for a null
/// when given, else the id of null), appended to `out`.
fn value_ids(
    c: &ArrayRef,
    ids: &mut crate::fold::Interner,
    null: Option<u32>,
    out: &mut Vec<u32>,
) -> Result<()> {
    let c = match c.data_type() == &dict_type() {
        true => c.clone(),
        false => datafusion::arrow::compute::cast(c, &dict_type())?,
    };
    let c = c.as_dictionary::<Int32Type>();
    let values = c.values().as_string::<i32>();
    let null = null.unwrap_or_else(|| ids.id(None));
    let of_value: Vec<u32> = (0..values.len())
        .map(|j| match values.is_valid(j) {
            true => ids.id(Some(values.value(j))),
            false => null,
        })
        .collect();
    out.extend(c.keys().iter().map(|k| match k {
        Some(k) => of_value[k as usize],
        None => null,
    }));
    Ok(())
}

/// Per id of `ids`, its rank among the values in `used` by value, so that
/// ties between a user's rows are broken by value as ClickHouse's order
/// would: null first (rank 0) and values from 1, or with `held`, values
/// from 0 (null stays `u32::MAX` and is not ranked).
fn rank_ids(ids: &crate::fold::Interner, held: bool, rank: &mut Vec<u32>) {
    let values = ids.values();
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| values[a as usize].cmp(&values[b as usize]));
    rank.clear();
    rank.resize(values.len(), 0);
    // `Option` orders None first; values follow in string order.
    let base = u32::from(!held && !values.iter().any(|v| v.is_none()));
    for (r, &id) in order.iter().enumerate() {
        rank[id as usize] = r as u32 + base;
    }
}

impl crate::fold::UserFold for FunnelFold {
    type State = FunnelState;
    type Partial = Levels;

    fn name(&self) -> &'static str {
        "funnel"
    }

    fn input(&self) -> crate::fold::FoldInput {
        let columns: Vec<String> = self.spec.hold.iter().cloned().collect();
        let flags = self
            .spec
            .steps
            .iter()
            .flat_map(Step::matchers)
            .chain(self.spec.exclusions.iter().map(|x| &x.step))
            .map(matcher)
            .collect();
        crate::fold::FoldInput {
            columns,
            values: self.by.iter().cloned().collect(),
            flags,
            until: None,
            ordered: true,
            grouped: true,
            // Other events only matter to strict order.
            any_flag: !self.spec.modes.strict_order,
            packed: true,
            narrow: false,
            any_key: false,
        }
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        schema()
    }

    fn start(&self, keys: std::ops::Range<u32>) -> FunnelState {
        let n = (keys.end - keys.start) as usize;
        FunnelState {
            lo: keys.start,
            level: vec![0; n],
            group: vec![u32::MAX; n],
            labels: Default::default(),
            conv_us: Vec::new(),
            conv_len: vec![0; n],
            reached: if self.params.exact.is_some() {
                vec![0; n]
            } else {
                Vec::new()
            },
            scratch: Scratch::default(),
            block: None,
            buf: Gathered::default(),
            holds: Default::default(),
            sorted: Gathered::default(),
            at: Vec::new(),
        }
    }

    fn update(
        &self,
        st: &mut FunnelState,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        let df = |e: EngineError| datafusion::error::DataFusionError::External(Box::new(e));
        let block = rows.block();
        if block != st.block || block.is_none() {
            self.fold_block(st);
            st.block = block;
        }
        let buf = &mut st.buf;
        buf.keys.extend_from_slice(rows.keys());
        buf.ts.extend_from_slice(rows.ts());
        buf.mask.extend_from_slice(rows.flag_bits());
        if let Some(at) = self.by_at {
            value_ids(rows.column(at), &mut st.labels, None, &mut buf.grp).map_err(df)?;
        }
        if let Some(at) = self.hold_at {
            value_ids(
                rows.column(at),
                &mut st.holds,
                Some(u32::MAX),
                &mut buf.hold,
            )
            .map_err(df)?;
        }
        if block.is_none() {
            // Not a grouped reading (a batch of complete users).
            self.fold_block(st);
        }
        Ok(())
    }

    fn finish(&self, mut st: FunnelState) -> datafusion::error::Result<Levels> {
        self.fold_block(&mut st);
        let mut conv_offsets = Vec::with_capacity(st.conv_len.len() + 1);
        let mut total = 0u32;
        conv_offsets.push(0);
        for l in st.conv_len {
            total += l;
            conv_offsets.push(total);
        }
        Ok(Levels {
            level: st.level,
            group: st.group,
            labels: st.labels,
            conv_us: st.conv_us,
            conv_offsets,
            reached: st.reached,
        })
    }

    fn merge(&self, into: &mut Levels, other: Levels) -> datafusion::error::Result<()> {
        let remap = into.labels.absorb(&other.labels);
        into.level.extend_from_slice(&other.level);
        into.reached.extend_from_slice(&other.reached);
        into.group.extend(
            other
                .group
                .iter()
                .map(|&g| remap.get(g as usize).copied().unwrap_or(u32::MAX)),
        );
        if into.conv_offsets.is_empty() {
            into.conv_offsets.push(0);
        }
        let base = *into.conv_offsets.last().expect("non-empty");
        let Some(total) = base.checked_add(other.conv_us.len() as u32) else {
            return datafusion::common::exec_err!("more than 4 billion funnel conversions");
        };
        let _ = total;
        into.conv_us.extend_from_slice(&other.conv_us);
        into.conv_offsets
            .extend(other.conv_offsets.iter().skip(1).map(|&o| base + o));
        Ok(())
    }

    fn emit(&self, levels: Levels) -> datafusion::error::Result<RecordBatch> {
        let ul = levels.into_user_levels(&self.spec);
        let (rows, _) = summarize(&ul, &self.spec);
        batch_of_rows(&rows).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// A [`FunnelFold`] whose key ranges each finish into their [`Tally`]: the
/// funnel's own rows need counts and conversion times per group, not every
/// user's levels (an A/B readout's metric needs those, from the funnel
/// fold itself). A range's tally is all that leaves it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FunnelTally(pub FunnelFold);

impl crate::fold::UserFold for FunnelTally {
    type State = FunnelState;
    type Partial = Tally;

    fn name(&self) -> &'static str {
        "funnel"
    }

    fn input(&self) -> crate::fold::FoldInput {
        self.0.input()
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.0.schema()
    }

    fn start(&self, keys: std::ops::Range<u32>) -> FunnelState {
        self.0.start(keys)
    }

    fn update(
        &self,
        st: &mut FunnelState,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        self.0.update(st, rows)
    }

    fn finish(&self, st: FunnelState) -> datafusion::error::Result<Tally> {
        let lo = st.lo as usize;
        let levels = self.0.finish(st)?;
        let spec = &self.0.spec;
        Ok(Tally::of(&levels.into_user_levels_from(spec, lo), spec))
    }

    fn merge(&self, into: &mut Tally, other: Tally) -> datafusion::error::Result<()> {
        into.absorb(other);
        Ok(())
    }

    fn emit(&self, tally: Tally) -> datafusion::error::Result<RecordBatch> {
        let (rows, _) = tally.rows(&self.0.spec);
        batch_of_rows(&rows).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// A [`FunnelFold`] whose key ranges each finish into one flag per user:
/// reached the last step. What an A/B readout's funnel metric needs, a
/// byte per user instead of the levels, groups and conversion times.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FunnelConverted(pub FunnelFold);

/// Whether each user (by key) reached the funnel's last step.
pub async fn converted(events: &Events, spec: &FunnelSpec) -> Result<Vec<bool>> {
    let fold = FunnelConverted(FunnelFold::new(events, spec)?);
    crate::fold::partial(events, fold).await
}

impl crate::fold::UserFold for FunnelConverted {
    type State = FunnelState;
    type Partial = Vec<bool>;

    fn name(&self) -> &'static str {
        "funnel_converted"
    }

    fn input(&self) -> crate::fold::FoldInput {
        self.0.input()
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        use datafusion::arrow::datatypes::{Field, Schema};
        std::sync::Arc::new(Schema::new(vec![
            Field::new("user_key", DataType::UInt32, false),
            Field::new("converted", DataType::Boolean, false),
        ]))
    }

    fn start(&self, keys: std::ops::Range<u32>) -> FunnelState {
        self.0.start(keys)
    }

    fn update(
        &self,
        st: &mut FunnelState,
        rows: &crate::fold::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        self.0.update(st, rows)
    }

    fn finish(&self, st: FunnelState) -> datafusion::error::Result<Vec<bool>> {
        let steps = self.0.spec.steps.len();
        let levels = self.0.finish(st)?;
        Ok(levels
            .level
            .iter()
            .map(|&l| usize::from(l) == steps)
            .collect())
    }

    fn merge(&self, into: &mut Vec<bool>, other: Vec<bool>) -> datafusion::error::Result<()> {
        crate::fold::append_exact(into, other);
        Ok(())
    }

    fn emit(&self, converted: Vec<bool>) -> datafusion::error::Result<RecordBatch> {
        use datafusion::arrow::array::{BooleanArray, UInt32Array};
        let n = converted.len() as u32;
        Ok(RecordBatch::try_new(
            self.schema(),
            vec![
                std::sync::Arc::new(UInt32Array::from_iter_values(0..n)),
                std::sync::Arc::new(BooleanArray::from(converted)),
            ],
        )?)
    }
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A block's rows as the per-user fold reads them.
struct FRows<'a> {
    ts: &'a [i64],
    mask: &'a [u32],
    grp: &'a [u32],
    hold: &'a [u32],
}

/// The spec, flattened for the per-user fold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Number of steps.
    pub steps: usize,
    /// Window, µs.
    pub window: i64,
    /// Modes.
    pub modes: Modes,
    /// Exclusions as (from_step, to_step), 1-based.
    pub exclusions: Vec<(usize, usize)>,
    /// Entry range.
    pub entry_from: i64,
    /// Entry range end (exclusive).
    pub entry_to: i64,
    /// Per step, its gaps, group and `?`, when any step has one (the exact
    /// fold of [`exact`] runs instead of the windowFunnel loop).
    #[serde(default)]
    pub exact: Option<exact::Rules>,
}

impl Params {
    /// Flattens a spec.
    pub fn of(spec: &FunnelSpec) -> Self {
        Self {
            exact: spec.is_rich().then(|| exact::Rules::of(&spec.steps)),
            steps: spec.steps.len(),
            window: spec.window_us,
            modes: spec.modes,
            exclusions: spec
                .exclusions
                .iter()
                .map(|x| (x.from_step, x.to_step))
                .collect(),
            entry_from: spec.entry_from.unwrap_or(i64::MIN),
            entry_to: spec.entry_to.unwrap_or(i64::MAX),
        }
    }
}

/// One entry of a user's sorted list: `(ts, kind, group, hold)` where kind is
/// 0 (another event), 1..=32 (a step) or `EXCL + j` (an exclusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Hold value (sorted first so each value's entries are contiguous).
    pub hold: u32,
    /// Timestamp, µs.
    pub ts: i64,
    /// 0 other, 1..=32 step, `64 + j` exclusion j.
    pub kind: u8,
    /// Group id of the row (step-1 rows), for attribution.
    pub grp: u32,
}

#[derive(Default)]
struct Scratch {
    entries: Vec<Entry>,
    /// The user's attributed chain: a time per step up to its level
    /// ([`exact::SKIPPED`] for a skipped optional step).
    best_path: Vec<i64>,
    /// Bit `k`: step `k + 1` reached (the exact fold; else every step up
    /// to the level).
    reached: u32,
    fold: FoldState,
    exact: exact::Scratch,
}

/// The result of one user's fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Deepest step.
    pub level: u8,
    /// Group of the chain that first reached it.
    pub group: u32,
}

fn fold_user(
    rows: &FRows,
    range: std::ops::Range<usize>,
    p: &Params,
    scratch: &mut Scratch,
) -> Outcome {
    if let Some(rules) = &p.exact {
        exact::fold_rows(rows, range, p, rules, &mut scratch.exact);
        let f = &scratch.exact.found;
        scratch.best_path.clear();
        scratch.best_path.extend_from_slice(&f.path);
        scratch.reached = f.reached;
        return Outcome {
            level: f.level,
            group: f.group,
        };
    }
    let entries = &mut scratch.entries;
    entries.clear();
    let step_bits = if p.steps >= 32 {
        u32::MAX
    } else {
        (1u32 << p.steps) - 1
    };
    for r in range {
        let m = rows.mask[r];
        let ts = rows.ts[r];
        let hold = if rows.hold.is_empty() {
            0
        } else {
            rows.hold[r]
        };
        let grp = if rows.grp.is_empty() { 0 } else { rows.grp[r] };
        if m == 0 {
            if p.modes.strict_order {
                entries.push(Entry {
                    hold,
                    ts,
                    kind: 0,
                    grp,
                });
            }
            continue;
        }
        let mut steps = m & step_bits;
        while steps != 0 {
            let i = steps.trailing_zeros() as u8;
            steps &= steps - 1;
            if i == 0 && (ts < p.entry_from || ts >= p.entry_to) {
                continue;
            }
            entries.push(Entry {
                hold,
                ts,
                kind: i + 1,
                grp,
            });
        }
        let mut ex = m.checked_shr(p.steps as u32).unwrap_or(0);
        while ex != 0 {
            let j = ex.trailing_zeros() as u8;
            ex &= ex - 1;
            entries.push(Entry {
                hold,
                ts,
                kind: EXCL + j,
                grp,
            });
        }
    }
    entries.sort_unstable();
    let mut best = Outcome { level: 0, group: 0 };
    scratch.best_path.clear();
    let mut start = 0;
    while start < entries.len() {
        let h = entries[start].hold;
        let mut end = start;
        while end < entries.len() && entries[end].hold == h {
            end += 1;
        }
        // Rows without a held value (null) cannot be part of a chain.
        if rows.hold.is_empty() || h != u32::MAX {
            let out = fold_entries(&entries[start..end], p, &mut scratch.fold);
            if out.level > best.level {
                best = out;
                scratch.best_path.clear();
                scratch
                    .best_path
                    .extend_from_slice(&scratch.fold.best_path[..out.level as usize]);
            }
        }
        start = end;
    }
    best
}

/// Per-level chain state of the fold.
#[derive(Debug, Default, Clone)]
pub struct FoldState {
    /// For each level (0-based), the latest chain that reached it:
    /// (start ts, previous ts, start group), or None.
    chains: Vec<Option<(i64, i64, u32)>>,
    /// Timestamps of the steps of each level's chain, `steps * steps` (row per level).
    paths: Vec<i64>,
    /// Path of the chain that first reached the deepest level.
    pub best_path: Vec<i64>,
}

/// Folds one user's sorted entries (one held value) exactly as ClickHouse's
/// `windowFunnel`, plus first-touch, entry range and exclusions.
pub fn fold_entries(entries: &[Entry], p: &Params, st: &mut FoldState) -> Outcome {
    let n = p.steps;
    st.chains.clear();
    st.chains.resize(n, None);
    st.paths.resize(n * n, 0);
    st.best_path.clear();
    st.best_path.resize(n, 0);
    let mut best = Outcome { level: 0, group: 0 };
    if entries.is_empty() {
        return best;
    }
    let mut first_event = false;
    // Records level `l` (0-based) as reached by the chain now stored there.
    let reach = |st: &mut FoldState, best: &mut Outcome, l: usize| {
        if l + 1 > best.level as usize {
            best.level = (l + 1) as u8;
            best.group = st.chains[l].expect("just set").2;
            let (paths, best_path) = (&st.paths, &mut st.best_path);
            best_path[..=l].copy_from_slice(&paths[l * n..l * n + l + 1]);
        }
    };
    // ClickHouse: one step and no strict order -> 1 as soon as there is an entry.
    // (Here an entry can also be an exclusion, which does not count.)
    for e in entries {
        let ts = e.ts;
        if e.kind >= EXCL {
            // Exclusion j: stop chains that reached `from` but not `to`.
            let (from, to) = p.exclusions[(e.kind - EXCL) as usize];
            for l in from - 1..to - 1 {
                if let Some((_, prev, _)) = st.chains[l]
                    && prev < ts
                {
                    st.chains[l] = None;
                }
            }
            continue;
        }
        if p.modes.strict_order && e.kind == 0 {
            if first_event {
                break;
            }
            continue;
        }
        if e.kind == 0 {
            continue;
        }
        let idx = (e.kind - 1) as usize;
        if idx == 0 {
            if p.modes.first_touch && first_event {
                continue;
            }
            st.chains[0] = Some((ts, ts, e.grp));
            st.paths[0] = ts;
            first_event = true;
            reach(st, &mut best, 0);
            if n == 1 {
                return best;
            }
        } else if (p.modes.strict_deduplication && st.chains[idx].is_some())
            || (p.modes.strict_order && first_event && st.chains[idx - 1].is_none())
        {
            // A repeated step (deduplication) or a step before its previous
            // one (strict order) ends the search at the deepest level so far.
            return best;
        } else if let Some((first, prev, g)) = st.chains[idx - 1] {
            let mut matched = ts <= first.saturating_add(p.window);
            if p.modes.strict_increase {
                matched = matched && prev < ts;
            }
            if matched {
                st.chains[idx] = Some((first, ts, g));
                st.paths
                    .copy_within((idx - 1) * n..(idx - 1) * n + idx, idx * n);
                st.paths[idx * n + idx] = ts;
                reach(st, &mut best, idx);
                if idx + 1 == n {
                    return best;
                }
            }
        }
    }
    best
}

/// Quantile with linear interpolation between closest ranks (DuckDB's
/// `quantile_cont`). The values are reordered (selection, not a full sort).
pub fn quantile_cont(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, &mut a, above) = values.select_nth_unstable(lo);
    // The next rank up is the smallest value above `lo`'s.
    let b = if pos.ceil() as usize > lo {
        above.iter().copied().min().unwrap_or(a)
    } else {
        a
    };
    let (a, b) = (a as f64, b as f64);
    Some(a + (b - a) * (pos - lo as f64))
}

/// Runs a funnel: one row per group and step.
pub async fn funnel(
    events: &Events,
    spec: &FunnelSpec,
) -> Result<(Vec<FunnelRow>, Vec<HistogramRow>)> {
    let fold = FunnelTally(FunnelFold::new(events, spec)?);
    Ok(crate::fold::partial(events, fold).await?.rows(spec))
}

/// The schema of funnel rows (the columns of [`FunnelRow`]).
pub fn schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        Field::new("step", DataType::UInt32, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("drop_off", DataType::UInt64, false),
        Field::new("conversion_from_previous", DataType::Float64, true),
        Field::new("conversion_from_first", DataType::Float64, true),
        Field::new("median_seconds_to_convert", DataType::Float64, true),
        Field::new("p90_seconds_to_convert", DataType::Float64, true),
    ]))
}

/// Funnel rows as a batch of [`schema`].
pub fn batch_of_rows(rows: &[FunnelRow]) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Float64Array, StringArray, UInt32Array, UInt64Array};
    use std::sync::Arc;
    let f = |g: fn(&FunnelRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(g)))
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.group.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.step))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.users))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.drop_off),
        )),
        f(|r| r.conversion_from_previous),
        f(|r| r.conversion_from_first),
        f(|r| r.median_seconds_to_convert),
        f(|r| r.p90_seconds_to_convert),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// The schema of histogram rows (the columns of [`HistogramRow`]).
pub fn histogram_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        Field::new("step", DataType::UInt32, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("bucket", DataType::Utf8, false),
        Field::new("from_seconds", DataType::Int64, false),
        Field::new("to_seconds", DataType::Int64, true),
        Field::new("users", DataType::UInt64, false),
    ]))
}

/// Histogram rows as a batch of [`histogram_schema`].
pub fn histogram_batch(rows: &[HistogramRow]) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Int64Array, StringArray, UInt32Array, UInt64Array};
    use std::sync::Arc;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.group.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.step))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.bucket.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.from_seconds),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.to_seconds))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.users))),
    ];
    Ok(RecordBatch::try_new(histogram_schema(), cols)?)
}

/// Funnel rows of a batch of [`schema`] (the table view reads them).
pub fn rows_of_batch(b: &RecordBatch) -> Vec<FunnelRow> {
    use datafusion::arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
    let group = b.column(0).as_string::<i32>();
    let step = b.column(1).as_primitive::<UInt32Type>();
    let event = b.column(2).as_string::<i32>();
    let users = b.column(3).as_primitive::<UInt64Type>();
    let drop_off = b.column(4).as_primitive::<UInt64Type>();
    let f = |j: usize, i: usize| {
        let c = b.column(j).as_primitive::<Float64Type>();
        c.is_valid(i).then(|| c.value(i))
    };
    (0..b.num_rows())
        .map(|i| FunnelRow {
            group: group.value(i).to_string(),
            step: step.value(i),
            event: event.value(i).to_string(),
            users: users.value(i),
            drop_off: drop_off.value(i),
            conversion_from_previous: f(5, i),
            conversion_from_first: f(6, i),
            median_seconds_to_convert: f(7, i),
            p90_seconds_to_convert: f(8, i),
        })
        .collect()
}

/// Turns per-user levels into the report rows.
pub fn summarize(ul: &UserLevels, spec: &FunnelSpec) -> (Vec<FunnelRow>, Vec<HistogramRow>) {
    Tally::of(ul, spec).rows(spec)
}

/// What a funnel's rows are made of, per group: the users who reached each
/// step and the times to convert into each step. Nothing per user: a key
/// range's tally is a few numbers per group plus its conversion times, and
/// tallies merge by adding.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Per group label (every label met, reached or not): users per step
    /// and conversion times per step (µs; none for step 1).
    groups: std::collections::BTreeMap<String, (Vec<u64>, Vec<Vec<i64>>)>,
}

impl Tally {
    /// The tally of `ul`.
    pub fn of(ul: &UserLevels, spec: &FunnelSpec) -> Self {
        let n = spec.steps.len();
        let groups = ul.labels.len();
        let mut reached = vec![vec![0u64; n]; groups];
        let mut times: Vec<Vec<Vec<i64>>> = vec![vec![Vec::new(); n]; groups];
        for (u, &l) in ul.level.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let g = ul.group[u];
            if g == u32::MAX {
                continue;
            }
            let g = g as usize;
            for (k, r) in reached[g].iter_mut().take(l as usize).enumerate() {
                if ul.reached(u, k) {
                    *r += 1;
                }
            }
            let conv = &ul.conv_us[ul.conv_offsets[u] as usize..ul.conv_offsets[u + 1] as usize];
            for (k, &c) in conv.iter().enumerate() {
                if c != exact::SKIPPED {
                    times[g][k + 1].push(c);
                }
            }
        }
        let mut t = Tally::default();
        for (g, label) in ul.labels.iter().enumerate() {
            let entry = t
                .groups
                .entry(label.clone())
                .or_insert_with(|| (vec![0; n], vec![Vec::new(); n]));
            for k in 0..n {
                entry.0[k] += reached[g][k];
                entry.1[k].append(&mut times[g][k]);
            }
        }
        t
    }

    /// Adds `other` in.
    pub fn absorb(&mut self, other: Tally) {
        for (label, (reached, mut times)) in other.groups {
            match self.groups.get_mut(&label) {
                None => {
                    self.groups.insert(label, (reached, times));
                }
                Some((r, t)) => {
                    for (a, b) in r.iter_mut().zip(reached) {
                        *a += b;
                    }
                    for (a, b) in t.iter_mut().zip(times.iter_mut()) {
                        a.append(b);
                    }
                }
            }
        }
    }

    /// The funnel's rows and time-to-convert histogram, groups in label
    /// order.
    pub fn rows(mut self, spec: &FunnelSpec) -> (Vec<FunnelRow>, Vec<HistogramRow>) {
        let n = spec.steps.len();
        let groups = self.groups.len();
        // Conversion from the previous step counts from the previous required
        // one, so an optional step never shrinks the funnel after it.
        let previous: Vec<Option<usize>> = (0..n)
            .map(|k| (0..k).rev().find(|&j| !spec.steps[j].optional))
            .collect();
        let mut rows = Vec::new();
        let mut hist = Vec::new();
        for (label, (reached, times)) in self.groups.iter_mut() {
            if reached[0] == 0 && groups > 1 {
                continue;
            }
            for k in 0..n {
                let users = reached[k];
                let first = reached[0];
                let prev = previous[k].map(|j| reached[j]);
                let t = &mut times[k];
                let mut secs = |q: f64| quantile_cont(t, q).map(|v| v / 1e6);
                rows.push(FunnelRow {
                    group: label.clone(),
                    step: k as u32 + 1,
                    event: spec.steps[k].label.clone(),
                    users,
                    drop_off: prev.map_or(0, |p| p - users),
                    conversion_from_previous: prev
                        .filter(|&p| p > 0)
                        .map(|p| users as f64 / p as f64),
                    conversion_from_first: (first > 0).then(|| users as f64 / first as f64),
                    median_seconds_to_convert: if k == 0 { None } else { secs(0.5) },
                    p90_seconds_to_convert: if k == 0 { None } else { secs(0.9) },
                });
                if k > 0 {
                    let mut counts = vec![0u64; BUCKETS.len()];
                    for &us in t.iter() {
                        let s = us.div_euclid(1_000_000);
                        let b = BUCKETS.partition_point(|(lo, _)| *lo <= s) - 1;
                        counts[b] += 1;
                    }
                    for (b, c) in counts.into_iter().enumerate() {
                        let to = BUCKETS.get(b + 1);
                        hist.push(HistogramRow {
                            group: label.clone(),
                            step: k as u32 + 1,
                            event: spec.steps[k].label.clone(),
                            bucket: match to {
                                Some((_, t)) => format!("{}-{}", BUCKETS[b].1, t),
                                None => format!("{}+", BUCKETS[b].1),
                            },
                            from_seconds: BUCKETS[b].0,
                            to_seconds: to.map(|(s, _)| *s),
                            users: c,
                        });
                    }
                }
            }
        }
        (rows, hist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_selection_equal_interpolation_on_sorted_values() {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        for n in 1..60usize {
            let values: Vec<i64> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 20) as i64
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for q in [0.0, 0.1, 0.5, 0.9, 1.0] {
                let pos = q * (n - 1) as f64;
                let (lo, hi) = (sorted[pos.floor() as usize], sorted[pos.ceil() as usize]);
                let want = lo as f64 + (hi - lo) as f64 * (pos - pos.floor());
                let mut v = values.clone();
                assert_eq!(quantile_cont(&mut v, q), Some(want), "{values:?} q {q}");
            }
        }
        assert_eq!(quantile_cont(&mut [], 0.5), None);
    }
}
