//! Funnels with ClickHouse `windowFunnel` semantics.
//!
//! One scan of the funnel's events (`user_key`, `ts`, one boolean per step and
//! per exclusion, the breakdown value at step 1, the held property) gathered
//! per user by a counting sort on the dense `user_key` (no hash table, no
//! string group-by), then each user's events are folded exactly as
//! ClickHouse's `windowFunnel` does:
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

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, DictionaryArray};
use datafusion::arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType, UInt32Type};
use datafusion::logical_expr::{Expr, cast, col, ident, lit};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::breakdown::NONE_LABEL;
use crate::table::Events;
use crate::{EngineError, Result};

/// Most steps a funnel may have (as ClickHouse's `windowFunnel`).
pub const MAX_STEPS: usize = 32;
/// Most steps and exclusions together (one bit each per event row).
pub const MAX_STEPS_AND_EXCLUSIONS: usize = 32;

/// One funnel step: an event name and an optional condition on its columns.
#[derive(Debug, Clone)]
pub struct Step {
    /// Event name.
    pub event: String,
    /// Extra condition on the event's columns.
    pub condition: Option<Expr>,
    /// How the step is shown (the name, with the condition's text if any).
    pub label: String,
}

/// An event that must not happen between two steps.
#[derive(Debug, Clone)]
pub struct Exclusion {
    /// The excluded step-like event.
    pub step: Step,
    /// From this step (1-based) ...
    pub from_step: usize,
    /// ... to this one (1-based, greater than `from_step`).
    pub to_step: usize,
}

/// ClickHouse's `windowFunnel` options, plus first-touch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
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
    /// Per user key with level >= 2: seconds from step i-1 to step i (µs), for
    /// i = 2..=level; stored flat, `conv_offsets[key]..conv_offsets[key + 1]`.
    pub conv_us: Vec<i64>,
    /// Offsets into `conv_us` (users + 1 entries).
    pub conv_offsets: Vec<u32>,
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
    /// Users of the previous step who did not reach this one.
    pub drop_off: u64,
    /// users / users at the previous step (None for step 1 or an empty group).
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

/// The rows a scan partition produced, column by column.
#[derive(Default)]
struct Gathered {
    key: Vec<u32>,
    ts: Vec<i64>,
    mask: Vec<u32>,
    grp: Vec<u32>,
    hold: Vec<u32>,
    grp_labels: Vec<Option<String>>,
    hold_values: Vec<Option<String>>,
}

impl FunnelSpec {
    fn validate(&self, events: &Events) -> Result<()> {
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
        if self.steps.len() + self.exclusions.len() > MAX_STEPS_AND_EXCLUSIONS {
            return Err(EngineError::BadRequest(format!(
                "at most {MAX_STEPS_AND_EXCLUSIONS} steps and exclusions together"
            )));
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
        for c in self.by.iter().chain(&self.hold) {
            if !events.has_column(c) || ["user_key", "ts", "ingested_at"].contains(&c.as_str()) {
                return Err(EngineError::BadRequest(format!(
                    "`{c}` is not a column of the events table (try variant, event or a declared property)"
                )));
            }
        }
        if self.by.is_some() && self.user_groups.is_some() {
            return Err(EngineError::BadRequest(
                "break down by a column or by a segment, not both".into(),
            ));
        }
        Ok(())
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

/// Scans the events and folds every user's funnel.
pub async fn user_levels(events: &Events, spec: &FunnelSpec) -> Result<UserLevels> {
    spec.validate(events)?;
    let users = events.users();
    let df = events.in_range().await?;
    // No `event IN (...)` filter: rows matching no step are skipped while
    // gathering, and a filter would copy every surviving column once more.
    let mut select = vec![col("user_key"), col("ts")];
    for (i, s) in spec.steps.iter().enumerate() {
        select.push(matcher(s).alias(format!("__step{i}")));
    }
    for (j, x) in spec.exclusions.iter().enumerate() {
        select.push(matcher(&x.step).alias(format!("__excl{j}")));
    }
    let with_grp = spec.by.is_some();
    if let Some(by) = &spec.by {
        select.push(cast(ident(by), dict_type()).alias("__grp"));
    }
    if let Some(h) = &spec.hold {
        select.push(cast(ident(h), dict_type()).alias("__hold"));
    }
    let df = df.select(select)?;
    let streams = df.execute_stream_partitioned().await?;
    let shape = Shape {
        steps: spec.steps.len(),
        exclusions: spec.exclusions.len(),
        grp: with_grp,
        hold: spec.hold.is_some(),
        strict_order: spec.modes.strict_order,
        users,
    };
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        tasks.push(tokio::spawn(gather(stream, shape)));
    }
    let mut parts = Vec::with_capacity(tasks.len());
    for t in tasks {
        parts.push(
            t.await
                .map_err(|e| EngineError::BadRequest(format!("scan task failed: {e}")))??,
        );
    }
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || fold_users(parts, &spec, shape, users))
        .await
        .map_err(|e| EngineError::BadRequest(format!("funnel task failed: {e}")))?
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    steps: usize,
    exclusions: usize,
    grp: bool,
    hold: bool,
    strict_order: bool,
    users: usize,
}

async fn gather(mut stream: SendableRecordBatchStream, shape: Shape) -> Result<Gathered> {
    let mut g = Gathered::default();
    let mut grp_ids = Interner::default();
    let mut hold_ids = Interner::default();
    let flags = shape.steps + shape.exclusions;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let n = batch.num_rows();
        let keys = batch.column(0).as_primitive::<UInt32Type>().values();
        let ts = batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        if keys.iter().any(|&k| k as usize >= shape.users) {
            return Err(EngineError::BadRequest(format!(
                "user_key beyond the users dictionary ({} users): the store is inconsistent",
                shape.users
            )));
        }
        // Bits 0..steps are the steps, then one bit per exclusion.
        let mut mask = vec![0u32; n];
        for f in 0..flags {
            let b: &BooleanArray = batch.column(2 + f).as_boolean();
            let bit = 1u32 << f;
            // `is_true()` columns have no nulls.
            for i in b.values().set_indices() {
                mask[i] |= bit;
            }
        }
        let mut next = 2 + flags;
        let mut dict_col = |wanted: bool| -> Option<BatchIds> {
            wanted.then(|| {
                next += 1;
                batch.column(next - 1).as_dictionary::<Int32Type>()
            })
        };
        let grp_col = dict_col(shape.grp);
        let hold_col = dict_col(shape.hold);
        let grp_map = grp_col.map(|c| grp_ids.map_values(c));
        let hold_map = hold_col.map(|c| hold_ids.map_values(c));
        for i in 0..n {
            let m = mask[i];
            // Rows matching no step are "other events", which only strict order
            // looks at (they are rows whose step condition failed otherwise).
            if m == 0 && !shape.strict_order {
                continue;
            }
            g.key.push(keys[i]);
            g.ts.push(ts[i]);
            g.mask.push(m);
            if let (Some(c), Some(map)) = (grp_col, &grp_map) {
                // Only a step-1 event's value is ever used.
                g.grp.push(if m & 1 == 1 {
                    grp_ids.id(c, map, i)
                } else {
                    u32::MAX
                });
            }
            if let (Some(c), Some(map)) = (hold_col, &hold_map) {
                g.hold.push(if c.is_valid(i) {
                    hold_ids.id(c, map, i)
                } else {
                    u32::MAX
                });
            }
        }
    }
    g.grp_labels = grp_ids.into_values();
    g.hold_values = hold_ids.into_values();
    Ok(g)
}

type BatchIds<'a> = &'a DictionaryArray<Int32Type>;

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Numbers the distinct values of a dictionary column (null included) in the
/// order met. Each batch's dictionary is mapped once; rows then only look up
/// their key.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    null: Option<u32>,
    values: Vec<Option<String>>,
}

impl Interner {
    /// Ids of a batch's dictionary values.
    fn map_values(&mut self, c: &DictionaryArray<Int32Type>) -> Vec<u32> {
        let values = c.values().as_string::<i32>();
        (0..values.len())
            .map(|j| {
                if values.is_null(j) {
                    return self.null_id();
                }
                let v = values.value(j);
                match self.ids.get(v) {
                    Some(&id) => id,
                    None => {
                        let id = self.values.len() as u32;
                        self.values.push(Some(v.to_string()));
                        self.ids.insert(v.to_string(), id);
                        id
                    }
                }
            })
            .collect()
    }

    fn null_id(&mut self) -> u32 {
        *self.null.get_or_insert_with(|| {
            self.values.push(None);
            self.values.len() as u32 - 1
        })
    }

    fn id(&mut self, c: &DictionaryArray<Int32Type>, map: &[u32], i: usize) -> u32 {
        if c.is_null(i) {
            return self.null_id();
        }
        map[c.keys().value(i) as usize]
    }

    fn into_values(self) -> Vec<Option<String>> {
        self.values
    }
}

/// Remaps per-partition ids to one sorted global numbering.
fn global_ids<T: Ord + Clone>(parts: &[Vec<T>]) -> (Vec<T>, Vec<Vec<u32>>) {
    let mut all: Vec<T> = parts.iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    let maps = parts
        .iter()
        .map(|p| {
            p.iter()
                .map(|v| all.binary_search(v).expect("present") as u32)
                .collect()
        })
        .collect();
    (all, maps)
}

fn fold_users(
    mut parts: Vec<Gathered>,
    spec: &FunnelSpec,
    shape: Shape,
    users: usize,
) -> Result<UserLevels> {
    // One numbering of groups and held values across partitions, in sorted
    // order, so ties are broken the same way whatever the scan order.
    let (grp_labels, grp_maps) = global_ids(
        &parts
            .iter()
            .map(|p| p.grp_labels.clone())
            .collect::<Vec<_>>(),
    );
    let (_, hold_maps) = global_ids(
        &parts
            .iter()
            .map(|p| p.hold_values.clone())
            .collect::<Vec<_>>(),
    );
    for (p, (gm, hm)) in parts.iter_mut().zip(grp_maps.iter().zip(&hold_maps)) {
        for g in &mut p.grp {
            if *g != u32::MAX {
                *g = gm[*g as usize];
            }
        }
        for h in &mut p.hold {
            if *h != u32::MAX {
                *h = hm[*h as usize];
            }
        }
    }

    // Counting sort by user key, then fold: each thread owns a contiguous
    // range of user keys, places its rows (reading every partition's keys,
    // sequentially) and folds its users.
    let total: usize = parts.iter().map(|p| p.key.len()).sum();
    if total > u32::MAX as usize {
        return Err(EngineError::BadRequest(
            "more than 4 billion funnel events in one run; narrow the range".into(),
        ));
    }
    let mut offsets = vec![0u32; users + 1];
    for p in &parts {
        for &k in &p.key {
            offsets[k as usize + 1] += 1;
        }
    }
    for i in 0..users {
        offsets[i + 1] += offsets[i];
    }
    let params = Params::of(spec);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let chunk = users.div_ceil(threads).max(1);
    let mut level = vec![0u8; users];
    let mut group = vec![u32::MAX; users];
    let mut conv: Vec<(Vec<i64>, Vec<u32>)> = Vec::new();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for ((lv, gr), start) in level
            .chunks_mut(chunk)
            .zip(group.chunks_mut(chunk))
            .zip((0..users).step_by(chunk))
        {
            let (offsets, params, parts) = (&offsets, &params, &parts);
            handles.push(s.spawn(move || {
                let end = start + lv.len();
                let base = offsets[start];
                let len = (offsets[end] - base) as usize;
                let mut cursor: Vec<u32> = offsets[start..end].iter().map(|o| o - base).collect();
                let mut ts = vec![0i64; len];
                let mut mask = vec![0u32; len];
                let mut grp = if shape.grp {
                    vec![0u32; len]
                } else {
                    Vec::new()
                };
                let mut hold = if shape.hold {
                    vec![0u32; len]
                } else {
                    Vec::new()
                };
                for p in parts.iter() {
                    for (i, &k) in p.key.iter().enumerate() {
                        let k = k as usize;
                        if k < start || k >= end {
                            continue;
                        }
                        let c = &mut cursor[k - start];
                        let at = *c as usize;
                        *c += 1;
                        ts[at] = p.ts[i];
                        mask[at] = p.mask[i];
                        if shape.grp {
                            grp[at] = p.grp[i];
                        }
                        if shape.hold {
                            hold[at] = p.hold[i];
                        }
                    }
                }
                let rows = Rows {
                    ts: &ts,
                    mask: &mask,
                    grp: &grp,
                    hold: &hold,
                };
                let mut scratch = Scratch::default();
                let mut conv_us = Vec::new();
                let mut conv_len = Vec::with_capacity(lv.len());
                for (j, (l, g)) in lv.iter_mut().zip(gr.iter_mut()).enumerate() {
                    let u = start + j;
                    let range = (offsets[u] - base) as usize..(offsets[u + 1] - base) as usize;
                    let before = conv_us.len();
                    if !range.is_empty() {
                        let out = fold_user(&rows, range, params, &mut scratch);
                        *l = out.level;
                        if out.level > 0 {
                            *g = out.group;
                            let path = &scratch.best_path[..out.level as usize];
                            conv_us.extend(path.windows(2).map(|w| w[1] - w[0]));
                        }
                    }
                    conv_len.push((conv_us.len() - before) as u32);
                }
                (conv_us, conv_len)
            }));
        }
        for h in handles {
            conv.push(h.join().expect("funnel fold thread panicked"));
        }
    });
    drop(parts);
    let mut conv_us = Vec::new();
    let mut conv_offsets = Vec::with_capacity(users + 1);
    conv_offsets.push(0u32);
    for (c, lens) in conv {
        conv_us.extend_from_slice(&c);
        for l in lens {
            let last = *conv_offsets.last().expect("non-empty");
            conv_offsets.push(last + l);
        }
    }
    // Labels: a column breakdown, a segment breakdown, or one group.
    let labels = if shape.grp {
        let labels: Vec<String> = grp_labels
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| NONE_LABEL.to_string()))
            .collect();
        // "(none)" may sort among real values; keep the numbering as is and
        // let the report order by label.
        labels
    } else if let Some((of_user, labels)) = &spec.user_groups {
        for (u, g) in group.iter_mut().enumerate() {
            if level[u] > 0 {
                *g = of_user.get(u).copied().unwrap_or(u32::MAX);
                if *g == u32::MAX {
                    level[u] = 0;
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
    Ok(UserLevels {
        level,
        group,
        labels,
        conv_us,
        conv_offsets,
    })
}

struct Rows<'a> {
    ts: &'a [i64],
    mask: &'a [u32],
    grp: &'a [u32],
    hold: &'a [u32],
}

/// The spec, flattened for the per-user fold.
#[derive(Debug, Clone)]
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
}

impl Params {
    /// Flattens a spec.
    pub fn of(spec: &FunnelSpec) -> Self {
        Self {
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
    best_path: Vec<i64>,
    fold: FoldState,
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
    rows: &Rows,
    range: std::ops::Range<usize>,
    p: &Params,
    scratch: &mut Scratch,
) -> Outcome {
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
/// `quantile_cont`), on sorted values.
pub fn quantile_cont(sorted: &[i64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    Some(a + (b - a) * (pos - lo as f64))
}

/// Runs a funnel: one row per group and step.
pub async fn funnel(
    events: &Events,
    spec: &FunnelSpec,
) -> Result<(Vec<FunnelRow>, Vec<HistogramRow>)> {
    let ul = user_levels(events, spec).await?;
    Ok(summarize(&ul, spec))
}

/// Turns per-user levels into the report rows.
pub fn summarize(ul: &UserLevels, spec: &FunnelSpec) -> (Vec<FunnelRow>, Vec<HistogramRow>) {
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
        for r in reached[g].iter_mut().take(l as usize) {
            *r += 1;
        }
        let conv = &ul.conv_us[ul.conv_offsets[u] as usize..ul.conv_offsets[u + 1] as usize];
        for (k, &c) in conv.iter().enumerate() {
            times[g][k + 1].push(c);
        }
    }
    // Groups in label order.
    let mut order: Vec<usize> = (0..groups).collect();
    order.sort_by(|&a, &b| ul.labels[a].cmp(&ul.labels[b]));
    let mut rows = Vec::new();
    let mut hist = Vec::new();
    for g in order {
        if reached[g][0] == 0 && groups > 1 {
            continue;
        }
        for k in 0..n {
            let users = reached[g][k];
            let first = reached[g][0];
            let prev = if k == 0 {
                None
            } else {
                Some(reached[g][k - 1])
            };
            let t = &mut times[g][k];
            t.sort_unstable();
            let secs = |q: f64| quantile_cont(t, q).map(|v| v / 1e6);
            rows.push(FunnelRow {
                group: ul.labels[g].clone(),
                step: k as u32 + 1,
                event: spec.steps[k].label.clone(),
                users,
                drop_off: prev.map_or(0, |p| p - users),
                conversion_from_previous: prev.filter(|&p| p > 0).map(|p| users as f64 / p as f64),
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
                        group: ul.labels[g].clone(),
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
