//! Paths (DESIGN.md, "Paths and predictions"): per user, the next (or
//! previous) `depth` events from the first occurrence of an anchor event in
//! range, events ordered by time then event name, optionally only while the
//! gap between two consecutive events stays within a session; aggregated
//! into a tree of paths.
//!
//! Rows, per breakdown group (the value at the anchor event): the anchor
//! itself at depth 0 (`path` empty, every anchored user), then every path of
//! 1 to `depth` events kept (the `top` with the most users per depth, each
//! under a kept parent): `users` (whose path starts with it), `share` (of
//! the group's anchored users), `drop_off` (users whose path ends there,
//! before `depth`: no further event, or a gap longer than the session) and
//! `direction` (`after` or `before` the anchor).
//! Paths after the anchor read forwards (`view > cart > buy`); paths before
//! it read in time order too, ending next to the anchor (depth 1 is the
//! event just before it).
//!
//! One [`UserFold`] over the events in user order: per user the rows come
//! sorted by time; ties are ordered by event name here.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;

use crate::breakdown::NONE_LABEL;
use crate::fold::{FoldInput, Rows, UserFold};
use crate::table::Events;
use crate::{EngineError, Result};

/// Separator of a path's events.
pub const ARROW: &str = " > ";

/// The parent of a path as the `path` column writes it: one event fewer on
/// the side away from the anchor (the last for paths after it, the first for
/// paths before); the anchor (`""`) for a one-event path.
pub fn parent(path: &str, after: bool) -> String {
    let parts: Vec<&str> = path.split(ARROW).collect();
    match parts.len() {
        0 | 1 => String::new(),
        n if after => parts[..n - 1].join(ARROW),
        _ => parts[1..].join(ARROW),
    }
}

/// Most events in a path.
pub const MAX_DEPTH: usize = 20;

/// What to compute.
#[derive(Debug, Clone)]
pub struct PathsSpec {
    /// The anchor event.
    pub anchor: String,
    /// Events after the anchor (`true`) or before it.
    pub after: bool,
    /// Events per path (1 to [`MAX_DEPTH`]).
    pub depth: usize,
    /// Paths kept per depth.
    pub top: usize,
    /// Largest gap between two consecutive events of a path (µs), if any.
    pub session_us: Option<i64>,
    /// Break down by these properties at the anchor event.
    pub by: Option<String>,
}

/// The output columns.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, true),
        Field::new("depth", DataType::UInt32, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("users", DataType::UInt64, false),
        Field::new("share", DataType::Float64, false),
        Field::new("drop_off", DataType::UInt64, false),
        Field::new("direction", DataType::Utf8, false),
    ]))
}

/// The paths of `spec` over `events` (the range's events).
pub async fn paths(events: &Events, spec: &PathsSpec) -> Result<Vec<RecordBatch>> {
    let fold = PathsFold::new(events, spec)?;
    crate::fold::run(events, fold).await
}

/// Paths as a per-user fold.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PathsFold {
    anchor: String,
    after: bool,
    depth: usize,
    top: usize,
    session_us: Option<i64>,
    #[serde(with = "crate::codec::opt_expr")]
    by: Option<Expr>,
}

impl PathsFold {
    /// The fold of `spec`, checked.
    pub fn new(events: &Events, spec: &PathsSpec) -> Result<Self> {
        if spec.depth == 0 || spec.depth > MAX_DEPTH {
            return Err(EngineError::BadRequest(format!(
                "--depth {}: expected 1 to {MAX_DEPTH} events",
                spec.depth
            )));
        }
        if spec.top == 0 {
            return Err(EngineError::BadRequest(
                "--top 0: keep at least one path per depth".into(),
            ));
        }
        if spec.session_us.is_some_and(|s| s <= 0) {
            return Err(EngineError::BadRequest(
                "--session must be a positive duration (30m)".into(),
            ));
        }
        if let Some(names) = crate::features::event_names(events)
            && !names.contains(&spec.anchor)
        {
            let near = names
                .iter()
                .map(|n| (strsim::levenshtein(n, &spec.anchor), n))
                .filter(|(d, _)| *d <= 2)
                .min();
            return Err(EngineError::BadRequest(format!(
                "unknown event `{}`{}",
                spec.anchor,
                match near {
                    Some((_, n)) => format!(", did you mean `{n}`?"),
                    None => String::new(),
                }
            )));
        }
        Ok(Self {
            anchor: spec.anchor.clone(),
            after: spec.after,
            depth: spec.depth,
            top: spec.top,
            session_us: spec.session_us,
            by: spec
                .by
                .as_deref()
                .map(|b| crate::breakdown::by_expr(events, b))
                .transpose()?,
        })
    }
}

/// Per key range: event and group names, and users per (group, path).
#[derive(Default)]
pub struct PathsState {
    names: crate::fold::Interner,
    groups: crate::fold::Interner,
    counts: HashMap<(u32, Vec<u32>), u64>,
    /// Scratch: a user's rows as (time, name id), and the batch's ids.
    user: Vec<(i64, u32)>,
    ids: Vec<u32>,
}

/// Users per (group label, path of event names nearest the anchor first).
pub type PathCounts = HashMap<(Option<String>, Vec<String>), u64>;

impl UserFold for PathsFold {
    type State = PathsState;
    type Partial = PathCounts;

    fn name(&self) -> &'static str {
        "paths"
    }

    fn input(&self) -> FoldInput {
        FoldInput {
            columns: vec!["event".into()],
            values: self.by.iter().cloned().collect(),
            ordered: true,
            ..Default::default()
        }
    }

    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn start(&self, _keys: Range<u32>) -> PathsState {
        PathsState::default()
    }

    fn update(&self, st: &mut PathsState, rows: &Rows<'_>) -> DfResult<()> {
        let ts = rows.ts();
        // Name ids: once per dictionary value, else per row.
        st.ids.clear();
        let events = rows.column(0);
        match events.as_dictionary_opt::<Int32Type>() {
            Some(d) => {
                let values = d.values().as_string::<i32>();
                let map: Vec<u32> = (0..values.len())
                    .map(|v| st.names.id(values.is_valid(v).then(|| values.value(v))))
                    .collect();
                st.ids.extend(
                    d.keys()
                        .iter()
                        .map(|k| k.map_or(u32::MAX, |k| map[k as usize])),
                );
            }
            None => {
                let text = datafusion::arrow::compute::cast(events, &DataType::Utf8)?;
                let text = text.as_string::<i32>();
                for i in 0..text.len() {
                    let id = st.names.id(text.is_valid(i).then(|| text.value(i)));
                    st.ids.push(id);
                }
            }
        }
        let anchor = st.names.id(Some(&self.anchor));
        let groups = match &self.by {
            Some(_) => Some(datafusion::arrow::compute::cast(
                rows.column(1),
                &DataType::Utf8,
            )?),
            None => None,
        };
        let groups = groups.as_ref().map(|g| g.as_string::<i32>());
        for (_, range) in rows.users() {
            if !range.clone().any(|i| st.ids[i] == anchor) {
                continue;
            }
            st.user.clear();
            st.user.extend(range.clone().map(|i| (ts[i], st.ids[i])));
            // Ties in time are ordered by event name.
            if st.user.windows(2).any(|w| w[0].0 == w[1].0) {
                let names = &st.names;
                st.user.sort_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then_with(|| names.get(a.1).cmp(&names.get(b.1)))
                });
            }
            let Some(p) = st.user.iter().position(|&(_, id)| id == anchor) else {
                continue;
            };
            // The anchor row in the user's original order, for the group.
            let group = match groups {
                Some(g) => {
                    let t = st.user[p].0;
                    let row = range
                        .clone()
                        .find(|&i| ts[i] == t && st.ids[i] == anchor)
                        .expect("the anchor row");
                    st.groups.id(g.is_valid(row).then(|| g.value(row)))
                }
                None => 0,
            };
            let mut path = Vec::with_capacity(self.depth);
            let mut prev = st.user[p].0;
            let step = |q: usize, prev: &mut i64, path: &mut Vec<u32>| -> bool {
                let (t, id) = st.user[q];
                if self.session_us.is_some_and(|s| (t - *prev).abs() > s) {
                    return false;
                }
                *prev = t;
                path.push(id);
                true
            };
            if self.after {
                for q in p + 1..st.user.len() {
                    if path.len() == self.depth || !step(q, &mut prev, &mut path) {
                        break;
                    }
                }
            } else {
                for q in (0..p).rev() {
                    if path.len() == self.depth || !step(q, &mut prev, &mut path) {
                        break;
                    }
                }
            }
            *st.counts.entry((group, path)).or_insert(0) += 1;
        }
        Ok(())
    }

    fn finish(&self, st: PathsState) -> DfResult<PathCounts> {
        let name = |id: u32| st.names.get(id).unwrap_or(NONE_LABEL).to_string();
        let mut out = PathCounts::new();
        for ((g, path), n) in st.counts {
            let group = self.by.as_ref().map(|_| {
                st.groups
                    .get(g)
                    .map_or_else(|| NONE_LABEL.to_string(), str::to_string)
            });
            let path = path.into_iter().map(name).collect();
            *out.entry((group, path)).or_insert(0) += n;
        }
        Ok(out)
    }

    fn merge(&self, into: &mut PathCounts, other: PathCounts) -> DfResult<()> {
        for (k, n) in other {
            *into.entry(k).or_insert(0) += n;
        }
        Ok(())
    }

    fn emit(&self, counts: PathCounts) -> DfResult<RecordBatch> {
        Ok(tree_batch(&counts, self.depth, self.top, self.after)?)
    }
}

/// One row of the tree.
struct Node {
    group: Option<String>,
    depth: usize,
    /// Events nearest the anchor first.
    path: Vec<String>,
    users: u64,
    drop_off: u64,
}

/// The kept nodes of the tree, as rows of [`schema`].
fn tree_batch(
    counts: &PathCounts,
    depth: usize,
    top: usize,
    after: bool,
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    // Per group: users per prefix (depth 0: the anchor), and users whose
    // path ends at it.
    type Tree = HashMap<Vec<String>, (u64, u64)>;
    let mut groups: std::collections::BTreeMap<Option<String>, Tree> = Default::default();
    for ((group, path), &n) in counts {
        let tree = groups.entry(group.clone()).or_default();
        for d in 0..=path.len() {
            let node = tree.entry(path[..d].to_vec()).or_insert((0, 0));
            node.0 += n;
            if d == path.len() && d < depth {
                node.1 += n;
            }
        }
    }
    let mut rows: Vec<Node> = Vec::new();
    for (group, tree) in groups {
        let mut kept: std::collections::HashSet<Vec<String>> = Default::default();
        kept.insert(Vec::new());
        for d in 0..=depth {
            let mut level: Vec<(&Vec<String>, &(u64, u64))> = tree
                .iter()
                .filter(|(p, _)| p.len() == d && (d == 0 || kept.contains(&p[..d - 1])))
                .collect();
            level.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
            level.truncate(if d == 0 { 1 } else { top });
            for (p, &(users, drop_off)) in level {
                kept.insert(p.clone());
                rows.push(Node {
                    group: group.clone(),
                    depth: d,
                    path: p.clone(),
                    users,
                    drop_off,
                });
            }
        }
    }
    let anchored: HashMap<Option<String>, u64> = rows
        .iter()
        .filter(|r| r.depth == 0)
        .map(|r| (r.group.clone(), r.users))
        .collect();
    let text = |r: &Node| {
        let mut p: Vec<&str> = r.path.iter().map(String::as_str).collect();
        if !after {
            p.reverse();
        }
        p.join(ARROW)
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.group.clone()))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.depth as u32),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(text))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.users))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| {
            let all = anchored.get(&r.group).copied().unwrap_or(0);
            if all == 0 {
                0.0
            } else {
                r.users as f64 / all as f64
            }
        }))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.drop_off),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|_| if after { "after" } else { "before" }),
        )),
    ];
    RecordBatch::try_new(schema(), cols)
}
