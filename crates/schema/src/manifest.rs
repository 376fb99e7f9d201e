//! The manifest: which files are committed, and the store's paths.
//!
//! Every commit writes a full snapshot as `_tenure/manifest/v<version>.json` with a
//! conditional put (create only if absent), so two writers racing for the same
//! version cannot both win and no commit is ever lost. The newest version is the
//! table; nothing under `events/` is visible to Tenure unless a snapshot lists it.

use serde::{Deserialize, Serialize};

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
    /// Files removed by compaction; any copy of them under `events/` is garbage.
    pub removed: Vec<String>,
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
}
