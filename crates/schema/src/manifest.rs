//! The manifest: which files are committed, and the store's paths.
//!
//! The manifest is a log, as Delta Lake's is. Every commit writes
//! `_tenure/manifest/v<version>.json` with a conditional put (create only if
//! absent), so two writers racing for the same version cannot both win and no
//! commit is ever lost. A commit file holds either the whole [`Snapshot`] (stores
//! written before checkpoints existed, and the first commit after an unreadable
//! version) or a small [`Delta`]: what that commit changed relative to the version
//! before it. Every [`CHECKPOINT_INTERVAL`] versions a checkpoint
//! (`v<version>.checkpoint.json`, the whole state) and a hint naming it
//! (`_last_checkpoint.json`) are written, so opening a store reads the hint, one
//! checkpoint and the few deltas after it, however long the log. The newest
//! version is the table; nothing under `events/` is visible to Tenure unless the
//! state lists it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Prefix of the manifest versions.
pub const MANIFEST_PREFIX: &str = "_tenure/manifest";
/// Prefix under which work in progress is written before it is committed.
pub const STAGING_PREFIX: &str = "_tenure/staging";
/// Prefix of the users dictionary segments.
pub const USERS_PREFIX: &str = "_tenure/users";
/// Prefix to which compaction moves the files it replaced (keeping their
/// `events/...` path below it). They stay readable there for a retention
/// period, for readers still working from an older snapshot, and are deleted
/// after it; `events/` itself holds only the committed files.
pub const RETIRED_PREFIX: &str = "_tenure/retired";
/// Prefix of derived data kept to save readers work (each object named by
/// what it was derived from; deleting any of it loses nothing).
pub const CACHE_PREFIX: &str = "_tenure/cache";
/// A checkpoint (the whole state) is written every this many versions.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// Path helpers for the store layout, relative to the store root.
pub struct StoreLayout;

impl StoreLayout {
    /// The manifest file of a version; zero-padded so names sort by version.
    pub fn manifest(version: u64) -> String {
        format!("{MANIFEST_PREFIX}/v{version:020}.json")
    }

    /// Parses a version back out of a manifest file name.
    pub fn manifest_version(file_name: &str) -> Option<u64> {
        file_name
            .strip_prefix('v')?
            .strip_suffix(".json")?
            .parse()
            .ok()
    }

    /// The checkpoint of a version: the whole state after it. Sorts just before
    /// the version's commit file, and is not a commit file itself.
    pub fn checkpoint(version: u64) -> String {
        format!("{MANIFEST_PREFIX}/v{version:020}.checkpoint.json")
    }

    /// Parses a version back out of a checkpoint file name.
    pub fn checkpoint_version(file_name: &str) -> Option<u64> {
        file_name
            .strip_prefix('v')?
            .strip_suffix(".checkpoint.json")?
            .parse()
            .ok()
    }

    /// The hint naming the newest checkpoint ([`CheckpointHint`]).
    pub fn last_checkpoint() -> String {
        format!("{MANIFEST_PREFIX}/_last_checkpoint.json")
    }

    /// Final path of a data file: hive-style date partition under `events/`.
    pub fn event_file(date: &str, name: &str) -> String {
        format!("events/date={date}/{name}")
    }

    /// Staging path of a data file while its transaction is open.
    pub fn staged_file(txn: &str, date: &str, name: &str) -> String {
        format!("{STAGING_PREFIX}/{txn}/date={date}/{name}")
    }

    /// Where a file replaced by compaction is kept during the retention period:
    /// its committed path under [`RETIRED_PREFIX`].
    pub fn retired_file(path: &str) -> String {
        format!("{RETIRED_PREFIX}/{path}")
    }

    /// Users dictionary segment written by a transaction.
    pub fn users_segment(txn: &str) -> String {
        format!("{USERS_PREFIX}/{txn}.parquet")
    }

    /// Identity merges (`identify`, `alias`) recorded by a transaction.
    pub fn identity(txn: &str) -> String {
        format!("_tenure/identity/{txn}.merges")
    }

    /// The resolved persons of an identity log of `entries` entries (with
    /// `folded` of them folded into every file), `digest` naming the log's
    /// files (see `tenure_engine::identity`).
    pub fn identity_persons(entries: usize, folded: usize, digest: u128) -> String {
        format!("{CACHE_PREFIX}/persons-{entries}-{folded}-{digest:032x}.bin")
    }

    /// Dead-letter file of a transaction.
    pub fn dead_letter(txn: &str) -> String {
        format!("dead_letter/{txn}.ndjson")
    }
}

/// One committed data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Final path, relative to the root (`events/date=.../part-....parquet`).
    pub path: String,
    /// Where the file was written before commit; readers fall back to it while the
    /// committing writer (or the next one, after a crash) moves it into place.
    pub staged: String,
    /// Partition date, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Smallest `ts` (microseconds).
    pub min_ts: i64,
    /// Largest `ts` (microseconds).
    pub max_ts: i64,
    /// Transaction that wrote it.
    pub txn: String,
    /// The distinct event names in the file, sorted (`None` for files
    /// committed before they were recorded): the store's event names without
    /// a scan, so a segment naming an unknown event gets a suggestion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// How many entries of [`Snapshot::identity`] the file's keys are folded
    /// through: every row's `user_key` is its person's key under the merges
    /// of those entries (compaction folds merges in; ingest writes keys as
    /// sent, 0). Merges of later entries are applied when the file is read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub identity: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One file of identity merges (see `identity::encode`): `(ts, kind, from_key, to_key)`
/// in the order they were ingested (`kind` 1 = identify: the anonymous
/// `from_key` joins the identified `to_key`; 2 = alias: `from_key`, the
/// previous id, joins `to_key`). The log is the entries in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    /// Root-relative path of the file.
    pub path: String,
    /// Merges in it.
    pub merges: u64,
    /// Transaction that wrote it.
    pub txn: String,
}

/// One ingested input, recorded so that ingesting it again adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Content hash (xxh3-128, hex) of the input bytes.
    pub hash: String,
    /// Name the input was given as (path, or `-`).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time (seconds since the epoch) when it was a file.
    pub mtime: Option<i64>,
    /// Events written from it.
    pub rows: u64,
    /// Transaction that ingested it.
    pub txn: String,
}

/// A file that is no longer part of the table (replaced by compaction, or a users
/// segment merged into another). Its bytes stay at its path or at
/// [`StoreLayout::retired_file`] for the retention period after `retired_at`, for
/// readers of older versions; then a vacuum deletes them and drops the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredFile {
    /// The path it had while it was committed.
    pub path: String,
    /// When it left the table (seconds since the epoch).
    pub retired_at: i64,
}

/// The users dictionary: `user_id` -> dense `user_key` in `0..count`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersEntry {
    /// Number of users; keys are `0..count`.
    pub count: u64,
    /// Segment files (Parquet: `user_key`, `user_id`), each adding a key range.
    pub segments: Vec<String>,
}

/// The event-id index of one committed data file: the sorted 128-bit xxh3
/// hashes of its rows' `event_id`s, so later ingests can drop ids the store
/// already holds without reading the data (see tenure-ingest's `ids` module).
/// Compaction leaves these in place: it does not change a partition's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsEntry {
    /// Partition date, `YYYY-MM-DD`.
    pub date: String,
    /// Root-relative path of the index file.
    pub path: String,
    /// Rows of the data file it indexes (a partition whose entries cover
    /// fewer rows than its files hold is read from its files instead).
    pub rows: u64,
}

/// One version of the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Version number; 0 is the empty table that exists before any commit.
    pub version: u64,
    /// Declared properties, fixed by the first commit.
    pub properties: Vec<crate::DeclaredProperty>,
    /// Committed data files.
    pub files: Vec<FileEntry>,
    /// Files removed by compaction in stores written before [`Snapshot::retired`]
    /// existed; any copy of them under `events/` is garbage. New commits leave it
    /// empty, and the next vacuum moves its entries to `retired`.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Files that left the table and are kept for a retention period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredFile>,
    /// The users dictionary.
    pub users: UsersEntry,
    /// Ingested inputs.
    pub sources: Vec<SourceEntry>,
    /// Id of the transaction that made this version.
    pub txn: String,
    /// What made it (`ingest`, `compact`).
    pub operation: String,
    /// When it was committed (RFC 3339).
    pub committed_at: String,
    /// Event-id indexes of committed files (absent in stores written before
    /// they existed).
    #[serde(default)]
    pub ids: Vec<IdsEntry>,
    /// The identity merge log (see [`IdentityEntry`]), in commit order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity: Vec<IdentityEntry>,
    /// Set by the loader when the newest commit file (this version) could not be
    /// read (truncated or not JSON): the state is then that of the last complete
    /// version before it, and the next commit writes the whole state so that the
    /// unreadable file is superseded. Never stored.
    #[serde(skip)]
    pub unreadable: Option<u64>,
}

impl Snapshot {
    /// Total committed rows.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Serialises the snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a snapshot always serialises")
    }

    /// Parses a snapshot.
    pub fn from_json(text: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The commit file that makes `self` (version `base.version + 1`) from
    /// `base`: a delta, or the whole state when `base` stands in for an
    /// unreadable version.
    pub fn commit_file(&self, base: &Snapshot) -> Vec<u8> {
        if base.unreadable.is_some() {
            return serde_json::to_vec(self).expect("a snapshot always serialises");
        }
        // The long lists are compared typed (no JSON tree of the whole state);
        // the rest of the snapshot generically, so fields added later travel too.
        let mut patch = diff(&as_object(&base.shell()), &as_object(&self.shell()));
        let mut set = Map::new();
        let mut append = Map::new();
        list_diff("files", &base.files, &self.files, &mut set, &mut append);
        list_diff(
            "sources",
            &base.sources,
            &self.sources,
            &mut set,
            &mut append,
        );
        list_diff(
            "retired",
            &base.retired,
            &self.retired,
            &mut set,
            &mut append,
        );
        list_diff(
            "removed",
            &base.removed,
            &self.removed,
            &mut set,
            &mut append,
        );
        list_diff("ids", &base.ids, &self.ids, &mut set, &mut append);
        list_diff(
            "identity",
            &base.identity,
            &self.identity,
            &mut set,
            &mut append,
        );
        for (part, more) in [("set", set), ("append", append)] {
            if more.is_empty() {
                continue;
            }
            if let Value::Object(m) = patch
                .entry(part)
                .or_insert_with(|| Value::Object(Map::new()))
            {
                m.extend(more);
            }
        }
        let delta = Delta {
            tenure_delta: 1,
            parent: base.version,
            version: self.version,
            txn: self.txn.clone(),
            operation: self.operation.clone(),
            patch: Value::Object(patch),
        };
        serde_json::to_vec(&delta).expect("a delta always serialises")
    }
}

impl Snapshot {
    /// The snapshot without its long lists (see [`LISTS`]). Clones them first:
    /// cheap next to serialising them, and it keeps every other field, including
    /// those added later.
    fn shell(&self) -> Snapshot {
        let mut s = self.clone();
        s.files = Vec::new();
        s.sources = Vec::new();
        s.retired = Vec::new();
        s.removed = Vec::new();
        s.ids = Vec::new();
        s.identity = Vec::new();
        s
    }
}

fn list_diff<T: PartialEq + Serialize>(
    name: &str,
    a: &[T],
    b: &[T],
    set: &mut Map<String, Value>,
    append: &mut Map<String, Value>,
) {
    if a == b {
        return;
    }
    let to_value = |items: &[T]| serde_json::to_value(items).expect("a list always serialises");
    if b.len() > a.len() && b[..a.len()] == *a {
        append.insert(name.into(), to_value(&b[a.len()..]));
    } else {
        set.insert(name.into(), to_value(b));
    }
}

fn as_object(s: &Snapshot) -> Map<String, Value> {
    match serde_json::to_value(s).expect("a snapshot always serialises") {
        Value::Object(m) => m,
        _ => unreachable!("a snapshot serialises as an object"),
    }
}

/// What one commit changed: a patch over the JSON form of the [`Snapshot`] before
/// it. Generic over the snapshot's fields, so fields added later travel too.
///
/// A patch of an object is `{"set": {k: v}, "append": {k: [..]}, "patch": {k:
/// patch}, "unset": [k]}`, each part present only when needed: `append` extends an
/// array the commit only added to (files, sources, users segments), `patch`
/// recurses into an object, `set` replaces a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Format marker (1); a commit file without it is a whole snapshot.
    pub tenure_delta: u32,
    /// The version this delta applies to.
    pub parent: u64,
    /// The version it makes.
    pub version: u64,
    /// Transaction that made it (also inside the patch; here for readers of the log).
    pub txn: String,
    /// What made it.
    pub operation: String,
    /// The changes.
    pub patch: Value,
}

/// One commit file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEntry {
    /// The whole state (JSON form of a [`Snapshot`]).
    Full(Value),
    /// Changes relative to the version before.
    Delta(Delta),
}

impl LogEntry {
    /// Parses a commit file; `Err` when it is not complete JSON (truncated, or
    /// garbage) or a delta of the wrong shape.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        if v.get("tenure_delta").is_some() {
            return serde_json::from_value(v)
                .map(LogEntry::Delta)
                .map_err(|e| format!("bad delta: {e}"));
        }
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        Ok(LogEntry::Full(v))
    }
}

/// The hint naming the newest checkpoint, as Delta's `_last_checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHint {
    /// Version of the checkpoint.
    pub version: u64,
}

fn diff(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let (mut set, mut append, mut patch) = (Map::new(), Map::new(), Map::new());
    for (k, vb) in b {
        match (a.get(k), vb) {
            (Some(va), _) if va == vb => {}
            (Some(Value::Array(xa)), Value::Array(xb))
                if xb.len() > xa.len() && xb[..xa.len()] == xa[..] =>
            {
                append.insert(k.clone(), Value::Array(xb[xa.len()..].to_vec()));
            }
            (Some(Value::Object(oa)), Value::Object(ob)) => {
                patch.insert(k.clone(), Value::Object(diff(oa, ob)));
            }
            _ => {
                set.insert(k.clone(), vb.clone());
            }
        }
    }
    let unset: Vec<Value> = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(|k| Value::String(k.clone()))
        .collect();
    let mut out = Map::new();
    for (name, part) in [("set", set), ("append", append), ("patch", patch)] {
        if !part.is_empty() {
            out.insert(name.into(), Value::Object(part));
        }
    }
    if !unset.is_empty() {
        out.insert("unset".into(), Value::Array(unset));
    }
    out
}

/// The top-level fields that may hold thousands of entries. Loading applies
/// deltas to them as typed lists, and everything else through the generic patch
/// on the small rest of the snapshot, so opening a store costs one typed parse of
/// its checkpoint plus the deltas, not a JSON tree of the whole state.
const LISTS: [&str; 6] = ["files", "sources", "retired", "removed", "ids", "identity"];

fn list_op<T: serde::de::DeserializeOwned>(
    list: &mut Vec<T>,
    op: &str,
    v: &Value,
) -> Result<(), String> {
    let items = || Vec::<T>::deserialize(v).map_err(|e| e.to_string());
    match op {
        "set" => *list = items()?,
        "append" => list.extend(items()?),
        "unset" => list.clear(),
        _ => return Err(format!("cannot {op} a list")),
    }
    Ok(())
}

/// Applies the patches of consecutive deltas, in order, to a snapshot.
pub fn apply_deltas<'a>(
    mut snap: Snapshot,
    patches: impl IntoIterator<Item = &'a Value>,
) -> Result<Snapshot, String> {
    let mut files = std::mem::take(&mut snap.files);
    let mut sources = std::mem::take(&mut snap.sources);
    let mut retired = std::mem::take(&mut snap.retired);
    let mut removed = std::mem::take(&mut snap.removed);
    let mut ids = std::mem::take(&mut snap.ids);
    let mut identity = std::mem::take(&mut snap.identity);
    let unreadable = snap.unreadable;
    let mut rest = serde_json::to_value(&snap).map_err(|e| e.to_string())?;
    for patch in patches {
        let Value::Object(parts) = patch else {
            return Err("a patch is an object".into());
        };
        let mut generic = Map::new();
        for (op, body) in parts {
            let mut other = Map::new();
            let mut other_keys = Vec::new();
            let entries: Vec<(&str, &Value)> = match body {
                Value::Object(m) => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                Value::Array(keys) => keys
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|k| (k, &Value::Null))
                    .collect(),
                _ => return Err(format!("bad patch part `{op}`")),
            };
            for (k, v) in entries {
                match k {
                    "files" => list_op(&mut files, op, v)?,
                    "sources" => list_op(&mut sources, op, v)?,
                    "retired" => list_op(&mut retired, op, v)?,
                    "removed" => list_op(&mut removed, op, v)?,
                    "ids" => list_op(&mut ids, op, v)?,
                    "identity" => list_op(&mut identity, op, v)?,
                    _ if body.is_array() => other_keys.push(Value::String(k.to_string())),
                    _ => {
                        other.insert(k.to_string(), v.clone());
                    }
                }
            }
            debug_assert!(LISTS.iter().all(|l| !other.contains_key(*l)));
            if !other.is_empty() {
                generic.insert(op.clone(), Value::Object(other));
            } else if !other_keys.is_empty() {
                generic.insert(op.clone(), Value::Array(other_keys));
            }
        }
        apply_patch(&mut rest, &Value::Object(generic))?;
    }
    let mut snap: Snapshot = serde_json::from_value(rest).map_err(|e| e.to_string())?;
    snap.files = files;
    snap.sources = sources;
    snap.retired = retired;
    snap.removed = removed;
    snap.ids = ids;
    snap.identity = identity;
    snap.unreadable = unreadable;
    Ok(snap)
}

/// Applies a [`Delta::patch`] to the JSON form of a snapshot.
pub fn apply_patch(state: &mut Value, patch: &Value) -> Result<(), String> {
    let (Value::Object(target), Value::Object(p)) = (state, patch) else {
        return Err("a patch applies to an object".into());
    };
    for (part, body) in p {
        match (part.as_str(), body) {
            ("set", Value::Object(m)) => {
                for (k, v) in m {
                    target.insert(k.clone(), v.clone());
                }
            }
            ("append", Value::Object(m)) => {
                for (k, v) in m {
                    let (Some(Value::Array(items)), Value::Array(more)) = (target.get_mut(k), v)
                    else {
                        return Err(format!("cannot append to `{k}`"));
                    };
                    items.extend(more.iter().cloned());
                }
            }
            ("patch", Value::Object(m)) => {
                for (k, v) in m {
                    let inner = target
                        .entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    apply_patch(inner, v)?;
                }
            }
            ("unset", Value::Array(keys)) => {
                for k in keys.iter().filter_map(Value::as_str) {
                    target.remove(k);
                }
            }
            (other, _) => return Err(format!("unknown patch part `{other}`")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_sort_by_version_and_parse_back() {
        let a = StoreLayout::manifest(9);
        let b = StoreLayout::manifest(10);
        assert!(a < b);
        let name = b.rsplit('/').next().unwrap();
        assert_eq!(StoreLayout::manifest_version(name), Some(10));
        assert_eq!(StoreLayout::manifest_version("v12.tmp"), None);
    }

    #[test]
    fn snapshot_round_trips() {
        let s = Snapshot {
            version: 3,
            txn: "t".into(),
            ..Default::default()
        };
        assert_eq!(Snapshot::from_json(s.to_json().as_bytes()).unwrap(), s);
    }

    fn file(n: u32) -> FileEntry {
        FileEntry {
            path: format!("events/date=2026-01-01/p{n}.parquet"),
            staged: format!("_tenure/staging/t/date=2026-01-01/p{n}.parquet"),
            date: "2026-01-01".into(),
            rows: n as u64,
            bytes: 10,
            min_ts: 0,
            max_ts: 1,
            txn: "t".into(),
            events: None,
            identity: 0,
        }
    }

    fn replay(base: &Snapshot, next: &Snapshot) -> Snapshot {
        let LogEntry::Delta(d) = LogEntry::parse(&next.commit_file(base)).unwrap() else {
            panic!("a commit on a readable base writes a delta");
        };
        assert_eq!((d.parent, d.version), (base.version, next.version));
        apply_deltas(base.clone(), [&d.patch]).unwrap()
    }

    #[test]
    fn deltas_replay_appends_replacements_and_nested_changes() {
        let mut a = Snapshot {
            version: 4,
            files: vec![file(1), file(2)],
            removed: vec!["old".into()],
            users: UsersEntry {
                count: 3,
                segments: vec!["s1".into()],
            },
            txn: "a".into(),
            ..Default::default()
        };
        // An ingest: appends a file and a segment.
        let mut b = a.clone();
        b.version = 5;
        b.files.push(file(3));
        b.users.segments.push("s2".into());
        b.users.count = 5;
        b.txn = "b".into();
        assert_eq!(replay(&a, &b), b);
        // A compaction: replaces files, retires the old ones, clears `removed`.
        let mut c = b.clone();
        c.version = 6;
        c.files = vec![file(9)];
        c.retired = b
            .files
            .iter()
            .map(|f| RetiredFile {
                path: f.path.clone(),
                retired_at: 7,
            })
            .collect();
        c.removed.clear();
        c.users.segments = vec!["merged".into()];
        assert_eq!(replay(&b, &c), c);
        // A whole snapshot after an unreadable version.
        a.unreadable = Some(4);
        let full = Snapshot::from_json(&b.commit_file(&a)).unwrap();
        assert_eq!(full, b);
    }
}
