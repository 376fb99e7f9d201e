//! Funnels with ClickHouse `windowFunnel` semantics.
//!
//! One scan of the funnel's events (`user_key`, `ts`, a bit per step and per
//! exclusion, the breakdown value at step 1, the held property): each stored
//! file, sorted by user, is kept as a run; users are then gathered block by
//! block from all runs into cache-sized buffers (no hash table, no string
//! group-by, no global sort), and each user's events are folded exactly as
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

pub mod syntax;

use std::collections::HashMap;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Expr, cast, col, ident, lit};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::breakdown::NONE_LABEL;
use crate::stored::{self, Origin};
use crate::table::{Events, Part};
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

impl Step {
    /// A step on an event name alone (no condition), labelled by the name.
    pub fn named(event: &str) -> Self {
        Self {
            event: event.to_string(),
            condition: None,
            label: event.to_string(),
        }
    }
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

/// Rows sorted by user key: a stored file, or a stretch of a scan partition.
/// Each user's rows are gathered from every run by the fold.
#[derive(Default)]
struct Run {
    /// Where the run goes among runs: its file's earliest time when known.
    /// Runs taken in time order leave each user's rows (nearly) in time order,
    /// so the per-user sort has (almost) nothing to do.
    order: i64,
    key: Vec<u32>,
    ts: Vec<i64>,
    mask: Vec<u32>,
    grp: Vec<u32>,
    hold: Vec<u32>,
}

/// A scan task's rows (as runs) and its numbering of groups and held values.
#[derive(Default)]
struct Gathered {
    runs: Vec<Run>,
    grp_ids: Interner,
    hold_ids: Interner,
    /// The stored file the last run came from (direct reads).
    file: Option<usize>,
}

/// Most runs a task may keep; beyond (unsorted input) they are merged into
/// one, sorted by key.
const MAX_RUNS: usize = 4096;

/// One batch's columns, ready to be gathered.
struct BatchRows<'a> {
    keys: &'a [u32],
    ts: &'a [i64],
    /// Bits 0..steps are the steps, then one bit per exclusion.
    mask: &'a [u32],
    grp: Option<BatchIds<'a>>,
    hold: Option<BatchIds<'a>>,
}

impl Gathered {
    /// Starts a run (a new file) of at most `rows` rows.
    fn start_run(&mut self, order: i64, rows: usize, shape: &Shape) {
        let with = |on: bool| {
            if on {
                Vec::with_capacity(rows)
            } else {
                Vec::new()
            }
        };
        self.runs.push(Run {
            order,
            key: Vec::with_capacity(rows),
            ts: Vec::with_capacity(rows),
            mask: Vec::with_capacity(rows),
            grp: with(shape.grp),
            hold: with(shape.hold),
        });
    }

    /// Appends a batch's rows in range that matter to the funnel to the
    /// current run; a key below the previous one starts a new run.
    fn push(&mut self, b: &BatchRows, shape: &Shape) -> Result<()> {
        if b.keys.iter().any(|&k| k as usize >= shape.users) {
            return Err(EngineError::BadRequest(format!(
                "user_key beyond the users dictionary ({} users): the store is inconsistent",
                shape.users
            )));
        }
        if self.runs.is_empty() {
            self.start_run(i64::MIN, 0, shape);
        }
        // Each row's group and held value, numbered through the batch's
        // dictionary (mapped once).
        let row_ids = |ids: &mut Interner, c: Option<BatchIds>| {
            c.map(|c| {
                let map = ids.map_values(c);
                match c.nulls() {
                    None => c.keys().values().iter().map(|&k| map[k as usize]).collect(),
                    Some(_) => (0..c.len())
                        .map(|i| ids.id(c, &map, i))
                        .collect::<Vec<u32>>(),
                }
            })
        };
        let grp = row_ids(&mut self.grp_ids, b.grp);
        let hold = row_ids(&mut self.hold_ids, b.hold);
        let (from, to) = shape.range;
        let runs = &mut self.runs;
        let mut run = runs.last_mut().expect("a run was started");
        for i in 0..b.keys.len() {
            let m = b.mask[i];
            // Rows matching no step are "other events", which only strict order
            // looks at (they are rows whose step condition failed otherwise).
            if m == 0 && !shape.strict_order {
                continue;
            }
            let (k, t) = (b.keys[i], b.ts[i]);
            if t < from || t >= to {
                continue;
            }
            if run.key.last().is_some_and(|&last| k < last) {
                let order = run.order;
                runs.push(Run {
                    order,
                    ..Run::default()
                });
                run = runs.last_mut().expect("just started");
            }
            run.key.push(k);
            run.ts.push(t);
            run.mask.push(m);
            if let Some(g) = &grp {
                // Only a step-1 event's value is ever used.
                run.grp.push(if m & 1 == 1 { g[i] } else { u32::MAX });
            }
            if let (Some(h), Some(c)) = (&hold, b.hold) {
                run.hold.push(if c.is_valid(i) { h[i] } else { u32::MAX });
            }
        }
        Ok(())
    }

    /// Merges the runs into one sorted by key when there are too many of them
    /// for the fold to walk (input not sorted by user).
    fn coalesce(&mut self) {
        if self.runs.len() <= MAX_RUNS {
            return;
        }
        let runs = std::mem::take(&mut self.runs);
        let mut all = Run {
            order: i64::MIN,
            ..Run::default()
        };
        for r in runs {
            all.key.extend(r.key);
            all.ts.extend(r.ts);
            all.mask.extend(r.mask);
            all.grp.extend(r.grp);
            all.hold.extend(r.hold);
        }
        let mut idx: Vec<u32> = (0..all.key.len() as u32).collect();
        idx.sort_by_key(|&i| all.key[i as usize]);
        fn permute<T: Copy>(v: &[T], idx: &[u32]) -> Vec<T> {
            if v.is_empty() {
                return Vec::new();
            }
            idx.iter().map(|&i| v[i as usize]).collect()
        }
        self.runs = vec![Run {
            order: i64::MIN,
            key: permute(&all.key, &idx),
            ts: permute(&all.ts, &idx),
            mask: permute(&all.mask, &idx),
            grp: permute(&all.grp, &idx),
            hold: permute(&all.hold, &idx),
        }];
    }
}

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
///
/// When `events` is the stored files and no step has a condition, the files
/// are read directly (`user_key`, `ts`, `event` as its dictionary, the
/// breakdown and held columns): each event name is matched against the steps
/// once per batch dictionary, and each file, sorted by user, becomes one run.
/// Otherwise a DataFusion plan evaluates the step conditions.
pub async fn user_levels(events: &Events, spec: &FunnelSpec) -> Result<UserLevels> {
    spec.validate(events)?;
    let users = events.users();
    let shape = Shape {
        steps: spec.steps.len(),
        exclusions: spec.exclusions.len(),
        grp: spec.by.is_some(),
        hold: spec.hold.is_some(),
        strict_order: spec.modes.strict_order,
        users,
        range: (
            events.options.from.unwrap_or(i64::MIN),
            events.options.to.unwrap_or(i64::MAX),
        ),
    };
    let plain = spec
        .steps
        .iter()
        .chain(spec.exclusions.iter().map(|x| &x.step))
        .all(|s| s.condition.is_none());
    let parts = match &events.parts {
        Some(files) if plain => gather_direct(events, files, spec, shape).await?,
        _ => gather_planned(events, spec, shape).await?,
    };
    let spec = spec.clone();
    let threads = crate::table::thread_count(events.options.threads);
    tokio::task::spawn_blocking(move || fold_users(parts, &spec, shape, threads))
        .await
        .map_err(|e| EngineError::Internal(format!("funnel task failed: {e}")))?
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    steps: usize,
    exclusions: usize,
    grp: bool,
    hold: bool,
    strict_order: bool,
    users: usize,
    /// Rows kept: `range.0 <= ts < range.1`.
    range: (i64, i64),
}

/// Reads the stored files themselves, one run per file.
async fn gather_direct(
    events: &Events,
    files: &[Part],
    spec: &FunnelSpec,
    shape: Shape,
) -> Result<Vec<Gathered>> {
    let min_ts: Vec<i64> = files.iter().map(|p| p.min_ts).collect();
    let steps: Vec<String> = spec
        .steps
        .iter()
        .chain(spec.exclusions.iter().map(|x| &x.step))
        .map(|s| s.event.clone())
        .collect();
    let (by, hold) = (spec.by.clone(), spec.hold.clone());
    let mut columns = vec!["user_key", "ts", "event"];
    columns.extend(spec.by.as_deref());
    columns.extend(spec.hold.as_deref());
    let fold = move |g: &mut Gathered, origin: Origin<'_>, batch: &RecordBatch| {
        if g.file != Some(origin.file) {
            g.file = Some(origin.file);
            g.start_run(min_ts[origin.file], origin.rows, &shape);
        }
        let (keys, ts) = origin.keys_and_times(batch)?;
        let mut mask = Vec::new();
        let step_mask = |name: &str| {
            steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_str() == name)
                .fold(0u32, |m, (i, _)| m | 1 << i)
        };
        if !stored::map_text(origin.column(batch, "event")?, step_mask, &mut mask) {
            return Err(origin.wrong("event"));
        }
        // A breakdown or held column as a dictionary of strings (a file
        // written before the column was declared has only nulls).
        let as_dict = |name: &Option<String>| -> Result<Option<ArrayRef>> {
            let Some(name) = name else { return Ok(None) };
            let c = match batch.column_by_name(name) {
                Some(c) => c.clone(),
                None => new_null_array(&dict_type(), batch.num_rows()),
            };
            if c.data_type() == &dict_type() {
                return Ok(Some(c));
            }
            Ok(Some(
                datafusion::arrow::compute::cast(&c, &dict_type()).map_err(|e| origin.error(&e))?,
            ))
        };
        let (grp, held) = (as_dict(&by)?, as_dict(&hold)?);
        g.push(
            &BatchRows {
                keys,
                ts,
                mask: &mask,
                grp: grp.as_ref().map(|c| c.as_dictionary::<Int32Type>()),
                hold: held.as_ref().map(|c| c.as_dictionary::<Int32Type>()),
            },
            &shape,
        )
    };
    stored::scan_files(events, files, &columns, Gathered::default, fold).await
}

/// Evaluates the steps (and their conditions) in a DataFusion plan over
/// `events` (which may be a view); runs are stretches sorted by key.
async fn gather_planned(events: &Events, spec: &FunnelSpec, shape: Shape) -> Result<Vec<Gathered>> {
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
    if let Some(by) = &spec.by {
        select.push(cast(ident(by), dict_type()).alias("__grp"));
    }
    if let Some(h) = &spec.hold {
        select.push(cast(ident(h), dict_type()).alias("__hold"));
    }
    let streams = df.select(select)?.execute_stream_partitioned().await?;
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        tasks.push(tokio::spawn(gather(stream, shape)));
    }
    stored::join(tasks).await
}

async fn gather(mut stream: SendableRecordBatchStream, shape: Shape) -> Result<Gathered> {
    let mut g = Gathered::default();
    let flags = shape.steps + shape.exclusions;
    let mut mask = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let n = batch.num_rows();
        mask.clear();
        mask.resize(n, 0u32);
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
        let grp = dict_col(shape.grp);
        let hold = dict_col(shape.hold);
        g.push(
            &BatchRows {
                keys: batch.column(0).as_primitive::<UInt32Type>().values(),
                ts: batch
                    .column(1)
                    .as_primitive::<TimestampMicrosecondType>()
                    .values(),
                mask: &mask,
                grp,
                hold,
            },
            &shape,
        )?;
    }
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

/// Users per block of the fold: a block's rows are gathered into buffers that
/// stay in cache.
const BLOCK: usize = 4096;

/// Scratch space of one fold thread.
#[derive(Default)]
struct Block {
    /// Offsets of each user's rows in the block (users + 1).
    counts: Vec<u32>,
    /// Next free slot per user.
    pos: Vec<u32>,
    /// Where each run's slice for the block ends.
    ends: Vec<usize>,
    ts: Vec<i64>,
    mask: Vec<u32>,
    grp: Vec<u32>,
    hold: Vec<u32>,
    scratch: Scratch,
}

/// The fold's outcome for a contiguous range of users.
struct Folded {
    level: Vec<u8>,
    group: Vec<u32>,
    conv_us: Vec<i64>,
    /// Conversion times per user (counts into `conv_us`).
    conv_len: Vec<u32>,
}

/// A run and the global ids of its task's groups and held values.
struct TaskRun<'a> {
    run: &'a Run,
    grp: &'a [u32],
    hold: &'a [u32],
}

fn global_id(map: &[u32], id: u32) -> u32 {
    if id == u32::MAX { id } else { map[id as usize] }
}

/// Folds the users `lo..hi`: block by block, each user's rows are taken from
/// every run (in run order) into cache-sized buffers, then folded.
fn fold_range(
    runs: &[TaskRun],
    lo: usize,
    hi: usize,
    p: &Params,
    shape: &Shape,
    b: &mut Block,
) -> Folded {
    let mut out = Folded {
        level: vec![0; hi - lo],
        group: vec![u32::MAX; hi - lo],
        conv_us: Vec::new(),
        conv_len: Vec::with_capacity(hi - lo),
    };
    let mut cur: Vec<usize> = runs
        .iter()
        .map(|r| r.run.key.partition_point(|&k| (k as usize) < lo))
        .collect();
    b.ends.clear();
    b.ends.resize(runs.len(), 0);
    let mut first = lo;
    while first < hi {
        let end = (first + BLOCK).min(hi);
        let width = end - first;
        // Count each user's rows, then place them run after run.
        b.counts.clear();
        b.counts.resize(width + 1, 0);
        for (r, TaskRun { run, .. }) in runs.iter().enumerate() {
            let mut j = cur[r];
            while j < run.key.len() && (run.key[j] as usize) < end {
                b.counts[run.key[j] as usize - first + 1] += 1;
                j += 1;
            }
            b.ends[r] = j;
        }
        for u in 0..width {
            b.counts[u + 1] += b.counts[u];
        }
        let total = b.counts[width] as usize;
        b.ts.resize(total, 0);
        b.mask.resize(total, 0);
        if shape.grp {
            b.grp.resize(total, 0);
        }
        if shape.hold {
            b.hold.resize(total, 0);
        }
        b.pos.clear();
        b.pos.extend_from_slice(&b.counts[..width]);
        for (r, TaskRun { run, grp, hold }) in runs.iter().enumerate() {
            for j in cur[r]..b.ends[r] {
                let u = run.key[j] as usize - first;
                let at = b.pos[u] as usize;
                b.pos[u] += 1;
                b.ts[at] = run.ts[j];
                b.mask[at] = run.mask[j];
                if shape.grp {
                    b.grp[at] = global_id(grp, run.grp[j]);
                }
                if shape.hold {
                    b.hold[at] = global_id(hold, run.hold[j]);
                }
            }
            cur[r] = b.ends[r];
        }
        let rows = Rows {
            ts: &b.ts[..total],
            mask: &b.mask[..total],
            grp: &b.grp[..if shape.grp { total } else { 0 }],
            hold: &b.hold[..if shape.hold { total } else { 0 }],
        };
        for u in 0..width {
            let range = b.counts[u] as usize..b.counts[u + 1] as usize;
            let before = out.conv_us.len();
            if !range.is_empty() {
                let o = fold_user(&rows, range, p, &mut b.scratch);
                let at = first - lo + u;
                out.level[at] = o.level;
                if o.level > 0 {
                    out.group[at] = o.group;
                    let path = &b.scratch.best_path[..o.level as usize];
                    out.conv_us.extend(path.windows(2).map(|w| w[1] - w[0]));
                }
            }
            out.conv_len.push((out.conv_us.len() - before) as u32);
        }
        first = end;
    }
    out
}

fn fold_users(
    mut parts: Vec<Gathered>,
    spec: &FunnelSpec,
    shape: Shape,
    threads: usize,
) -> Result<UserLevels> {
    let users = shape.users;
    // One numbering of groups and held values across tasks, in sorted order,
    // so ties are broken the same way whatever the scan order.
    let (grp_labels, grp_maps) = global_ids(
        &parts
            .iter()
            .map(|p| p.grp_ids.values.clone())
            .collect::<Vec<_>>(),
    );
    let (_, hold_maps) = global_ids(
        &parts
            .iter()
            .map(|p| p.hold_ids.values.clone())
            .collect::<Vec<_>>(),
    );
    for p in &mut parts {
        p.coalesce();
    }
    let total: usize = parts
        .iter()
        .flat_map(|p| &p.runs)
        .map(|r| r.key.len())
        .sum();
    if total > u32::MAX as usize {
        return Err(EngineError::BadRequest(
            "more than 4 billion funnel events in one run; narrow the range".into(),
        ));
    }
    // Runs in time order (stable: equal orders keep scan order), each with its
    // task's group and held-value numbering (applied as rows are placed).
    let mut runs: Vec<TaskRun> = parts
        .iter()
        .zip(grp_maps.iter().zip(&hold_maps))
        .flat_map(|(p, (grp, hold))| p.runs.iter().map(move |run| TaskRun { run, grp, hold }))
        .collect();
    runs.sort_by_key(|r| r.run.order);

    // Ranges of users, several per thread, taken by threads as they go.
    let ranges = (threads.max(1) * 8).min(users.div_ceil(BLOCK)).max(1);
    let params = Params::of(spec);
    let folded = crate::par::fold_ranges(
        users,
        users.div_ceil(ranges),
        threads,
        Block::default,
        |lo, hi, block| fold_range(&runs, lo, hi, &params, &shape, block),
    );
    drop(runs);
    drop(parts);
    let mut level = Vec::with_capacity(users);
    let mut group = Vec::with_capacity(users);
    let mut conv_us = Vec::new();
    let mut conv_offsets = Vec::with_capacity(users + 1);
    conv_offsets.push(0u32);
    for f in folded {
        level.extend_from_slice(&f.level);
        group.extend_from_slice(&f.group);
        conv_us.extend_from_slice(&f.conv_us);
        for l in f.conv_len {
            let last = *conv_offsets.last().expect("non-empty");
            conv_offsets.push(last + l);
        }
    }
    // Labels: a column breakdown, a segment breakdown, or one group.
    let labels = if shape.grp {
        // "(none)" may sort among real values; keep the numbering as is and
        // let the report order by label.
        grp_labels
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| NONE_LABEL.to_string()))
            .collect()
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
    let ul = user_levels(events, spec).await?;
    Ok(summarize(&ul, spec))
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
            let mut secs = |q: f64| quantile_cont(t, q).map(|v| v / 1e6);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            steps: 2,
            exclusions: 0,
            grp: false,
            hold: false,
            strict_order: false,
            users: 100,
            range: (i64::MIN, i64::MAX),
        }
    }

    #[test]
    fn a_key_going_down_starts_a_run_and_too_many_runs_merge_sorted() {
        let mut g = Gathered::default();
        // Keys 99, 98, ..., 0 repeated: every row but those after a 0 starts a
        // new run.
        let keys: Vec<u32> = (0..MAX_RUNS as u32 * 2).map(|i| 99 - i % 100).collect();
        let ts: Vec<i64> = (0..keys.len() as i64).collect();
        let mask = vec![1u32; keys.len()];
        let rows = BatchRows {
            keys: &keys,
            ts: &ts,
            mask: &mask,
            grp: None,
            hold: None,
        };
        g.push(&rows, &shape()).unwrap();
        assert_eq!(g.runs.len(), keys.len() - keys.len() / 100);
        assert!(g.runs.len() > MAX_RUNS);
        g.coalesce();
        assert_eq!(g.runs.len(), 1);
        let run = &g.runs[0];
        assert!(run.key.windows(2).all(|w| w[0] <= w[1]));
        // Stable: a key's rows keep their order, and every row is there.
        for (k, t) in run.key.iter().zip(&run.ts) {
            assert_eq!(keys[*t as usize], *k);
        }
        let mut seen = run.ts.clone();
        seen.sort();
        assert_eq!(seen, ts);
        assert!(
            run.key
                .windows(2)
                .zip(run.ts.windows(2))
                .all(|(k, t)| k[0] != k[1] || t[0] < t[1])
        );
    }

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

    #[test]
    fn rows_out_of_range_or_matching_nothing_are_left_out() {
        let mut g = Gathered::default();
        let mut sh = shape();
        sh.range = (10, 20);
        let rows = BatchRows {
            keys: &[1, 2, 3, 4],
            ts: &[5, 10, 15, 20],
            mask: &[1, 2, 0, 1],
            grp: None,
            hold: None,
        };
        g.push(&rows, &sh).unwrap();
        assert_eq!(g.runs.len(), 1);
        assert_eq!(g.runs[0].key, vec![2]);
        sh.users = 3;
        assert!(g.push(&rows, &sh).is_err(), "key 3 is beyond 3 users");
    }
}
