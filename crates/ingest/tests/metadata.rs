//! The store's metadata and durability: compaction keeps replaced files for a
//! retention period, an unreadable newest manifest falls back to the last
//! complete version, local writes are fsynced, and the manifest log is
//! checkpointed and pruned.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::generator::GenSpec;
use tenure_ingest::io::Io;
use tenure_ingest::{Ingest, IngestOptions, Store, generator_write, manifest};
use tenure_schema::{CHECKPOINT_INTERVAL, Delta, FileEntry, RETIRED_PREFIX, Snapshot, StoreLayout};

fn gen_spec(users: u64) -> GenSpec {
    GenSpec {
        users,
        days: 5,
        seed: 7,
        start_day: GenSpec::DEFAULT_START,
    }
}

/// A store with several files per date partition.
fn fragmented_store(url: &str) {
    let mut o = IngestOptions::default();
    o.config.ingest.buffer_rows = 400;
    o.config.ingest.file_rows = 200;
    generator_write::ingest_generated(&gen_spec(300), Store::open(url).unwrap(), o, None).unwrap();
}

fn ingest_lines(url: &str, name: &str, lines: &[&str]) -> tenure_ingest::Summary {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(name);
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    let mut ing = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    ing.add_file(&f).unwrap();
    ing.commit().unwrap()
}

fn rows_in(data: bytes::Bytes) -> u64 {
    ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows() as u64)
        .sum()
}

/// Reads a file of a snapshot the way a reader does: its final path, then its
/// staged path, then its retired path.
fn read_through_candidates(io: &Io, f: &FileEntry) -> Result<bytes::Bytes, String> {
    let candidates = [
        f.path.clone(),
        f.staged.clone(),
        StoreLayout::retired_file(&f.path),
    ];
    assert_eq!(tenure_store::file_locations(f), candidates);
    for c in &candidates {
        if let Some(data) = io.get_opt(c).map_err(|e| e.to_string())? {
            return Ok(data);
        }
    }
    Err(format!("{} is in none of {candidates:?}", f.path))
}

fn files_under(dir: &Path, sub: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(sub)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn readers_of_the_previous_version_still_read_every_file_after_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        dir.path().to_str().unwrap().to_string(),
        format!("memory://retire-{}", std::process::id()),
    ] {
        fragmented_store(&url);
        let io = Io::new(Store::open(&url).unwrap());
        // A reader loads the snapshot, then a compaction runs before it reads.
        let old = manifest::load_latest(&io).unwrap();
        let s = tenure_ingest::compact(
            Store::open(&url).unwrap(),
            &Default::default(),
            None,
            |_, _| {},
        )
        .unwrap();
        assert!(s.files_after < s.files_before, "{url}: nothing compacted");
        let mut rows = 0;
        for f in &old.files {
            let data = read_through_candidates(&io, f).unwrap_or_else(|e| panic!("{url}: {e}"));
            let n = rows_in(data);
            assert_eq!(n, f.rows, "{url}: {}", f.path);
            rows += n;
        }
        assert_eq!(rows, old.rows());
        let new = manifest::load_latest(&io).unwrap();
        assert_eq!(new.rows(), old.rows());
        if !url.starts_with("memory://") {
            // `events/` holds exactly the committed files; the replaced ones
            // wait under the retired prefix.
            let mut committed: Vec<String> = new.files.iter().map(|f| f.path.clone()).collect();
            committed.sort();
            assert_eq!(files_under_events(dir.path()), committed);
            let replaced = old
                .files
                .iter()
                .filter(|f| !committed.contains(&f.path))
                .count();
            assert_eq!(files_under(dir.path(), RETIRED_PREFIX).len(), replaced);
            assert_eq!(new.retired.len(), replaced);
        }
    }
}

#[test]
fn replaced_files_are_deleted_once_their_retention_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    fragmented_store(url);
    let old = snapshot(url);
    let cfg = Default::default();
    tenure_ingest::compact(Store::open(url).unwrap(), &cfg, None, |_, _| {}).unwrap();
    let retired = files_under(dir.path(), RETIRED_PREFIX);
    assert!(!retired.is_empty());
    // Within the retention period a later compaction keeps them.
    tenure_ingest::compact(Store::open(url).unwrap(), &cfg, None, |_, _| {}).unwrap();
    assert_eq!(files_under(dir.path(), RETIRED_PREFIX), retired);
    assert_eq!(snapshot(url).retired.len(), retired.len());
    // Past it, they are deleted and leave the state.
    let s = tenure_ingest::compact_retaining(
        Store::open(url).unwrap(),
        &cfg,
        None,
        Duration::ZERO,
        |_, _| {},
    )
    .unwrap();
    assert!(
        s.notes.iter().any(|n| n.contains("deleted")),
        "{:?}",
        s.notes
    );
    assert!(files_under(dir.path(), RETIRED_PREFIX).is_empty());
    let now = snapshot(url);
    assert!(now.retired.is_empty() && now.removed.is_empty());
    assert_eq!(now.rows(), old.rows());
    let mut committed: Vec<String> = now.files.iter().map(|f| f.path.clone()).collect();
    committed.sort();
    assert_eq!(files_under_events(dir.path()), committed);
}

fn truncate(path: &Path) {
    let data = std::fs::read(path).unwrap();
    std::fs::write(path, &data[..data.len() / 2]).unwrap();
}

#[test]
fn a_truncated_newest_manifest_falls_back_to_the_last_complete_version() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    ingest_lines(
        url,
        "a.ndjson",
        &[r#"{"user_id":"a","event":"x","ts":"2026-01-02T00:00:00Z"}"#],
    );
    let first = snapshot(url);
    ingest_lines(
        url,
        "b.ndjson",
        &[r#"{"user_id":"b","event":"x","ts":"2026-01-03T00:00:00Z"}"#],
    );
    truncate(&dir.path().join(StoreLayout::manifest(2)));
    // Reads work, on version 1's state.
    let snap = snapshot(url);
    assert_eq!(snap.files, first.files);
    assert_eq!(snap.unreadable, Some(2));
    assert_eq!(read_table(url).len(), 1);
    // So does an ingest: it commits version 3 as a whole snapshot.
    let s = ingest_lines(
        url,
        "c.ndjson",
        &[r#"{"user_id":"c","event":"x","ts":"2026-01-04T00:00:00Z"}"#],
    );
    assert_eq!(s.version, Some(3));
    let snap = snapshot(url);
    assert_eq!(snap.unreadable, None);
    assert_eq!(snap.rows(), 2);
    assert_eq!(snap.users.count, first.users.count + 1);
    // Later commits build on it as usual.
    ingest_lines(
        url,
        "d.ndjson",
        &[r#"{"user_id":"a","event":"y","ts":"2026-01-05T00:00:00Z"}"#],
    );
    assert_eq!(snapshot(url).rows(), 3);
}

#[test]
fn repair_rewrites_a_truncated_newest_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    ingest_lines(
        url,
        "a.ndjson",
        &[r#"{"user_id":"a","event":"x","ts":"2026-01-02T00:00:00Z"}"#],
    );
    ingest_lines(
        url,
        "b.ndjson",
        &[r#"{"user_id":"b","event":"x","ts":"2026-01-03T00:00:00Z"}"#],
    );
    let good = snapshot(url);
    ingest_lines(
        url,
        "c.ndjson",
        &[r#"{"user_id":"c","event":"x","ts":"2026-01-04T00:00:00Z"}"#],
    );
    truncate(&dir.path().join(StoreLayout::manifest(3)));
    let io = Io::new(Store::open(url).unwrap());
    let notes = manifest::maintain(&io, manifest::DEFAULT_RETAIN).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("version 3 was unreadable")),
        "{notes:?}"
    );
    let snap = snapshot(url);
    assert_eq!(snap.unreadable, None);
    assert_eq!(snap.files, good.files);
    assert_eq!(snap.users.count, good.users.count);
    // The whole state is in version 4: it no longer depends on version 3.
    let v4 = std::fs::read(dir.path().join(StoreLayout::manifest(4))).unwrap();
    assert_eq!(Snapshot::from_json(&v4).unwrap().files, good.files);
    // Garbage (complete JSON of the wrong shape) is an error, never a fallback.
    let next = StoreLayout::manifest(snap.version + 1);
    std::fs::write(dir.path().join(next), br#"{"not":"a manifest"}"#).unwrap();
    let err = manifest::load_latest(&io).unwrap_err();
    assert!(err.to_string().contains("corrupt store"), "{err}");
}

#[test]
fn local_commits_take_the_fsync_path() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let before = tenure_ingest::io::synced_files();
    ingest_lines(
        url,
        "a.ndjson",
        &[
            r#"{"user_id":"a","event":"x","ts":"2026-01-02T00:00:00Z"}"#,
            r#"{"user_id":"b","event":"x","ts":"2026-01-03T00:00:00Z"}"#,
        ],
    );
    // Two staged files, their renames into place, the users segment and the
    // manifest version (other tests in this process may add more).
    assert!(tenure_ingest::io::synced_files() - before >= 6);
}

/// Commits `n` tiny versions (one file each) through the ordinary commit path.
fn commit_tiny_versions(io: &Io, n: u64) {
    for _ in 0..n {
        let base = manifest::load_latest(io).unwrap();
        let mut next = base.clone();
        next.version += 1;
        next.files.push(tiny_file(next.version));
        next.txn = format!("t{}", next.version);
        next.operation = "ingest".into();
        assert!(manifest::try_commit(io, &base, &next).unwrap());
        manifest::after_commit(io, next.version);
    }
}

fn tiny_file(v: u64) -> FileEntry {
    FileEntry {
        path: format!("events/date=2026-01-01/part-{v:06}.parquet"),
        staged: format!("_tenure/staging/t{v}/date=2026-01-01/part-{v:06}.parquet"),
        date: "2026-01-01".into(),
        rows: 1,
        bytes: 100,
        min_ts: v as i64,
        max_ts: v as i64,
        txn: format!("t{v}"),
        events: None,
        identity: 0,
    }
}

fn manifest_names(dir: &Path) -> Vec<String> {
    files_under(dir, tenure_schema::MANIFEST_PREFIX)
}

#[test]
fn the_log_is_checkpointed_and_pruned_and_opens_from_the_newest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let io = Io::new(Store::open(url).unwrap());
    commit_tiny_versions(&io, 2 * CHECKPOINT_INTERVAL + 50);
    let snap = manifest::load_latest(&io).unwrap();
    assert_eq!(snap.version, 250);
    assert_eq!(snap.files.len(), 250);
    assert!(
        snap.files
            .iter()
            .enumerate()
            .all(|(i, f)| *f == tiny_file(i as u64 + 1))
    );
    let names = manifest_names(dir.path());
    assert!(names.contains(&StoreLayout::checkpoint(100)));
    assert!(names.contains(&StoreLayout::checkpoint(200)));
    assert_eq!(
        tenure_ingest::io::block_on(tenure_store::last_checkpoint(&io.store)).unwrap(),
        Some(200)
    );
    // Each commit file is a small delta, not the whole state.
    let v250 = std::fs::read(dir.path().join(StoreLayout::manifest(250))).unwrap();
    assert!(v250.len() < 1500, "{} bytes", v250.len());
    let d: Delta = serde_json::from_slice(&v250).unwrap();
    assert_eq!((d.parent, d.version, d.txn.as_str()), (249, 250, "t250"));
    // Versions are kept for the retention period...
    assert!(names.contains(&StoreLayout::manifest(1)));
    // ...and then pruned up to the previous checkpoint.
    commit_tiny_versions(&io, 50);
    manifest::checkpoint(&io, Duration::ZERO).unwrap();
    let names = manifest_names(dir.path());
    assert!(!names.contains(&StoreLayout::manifest(199)), "{names:?}");
    assert!(!names.contains(&StoreLayout::checkpoint(100)));
    assert!(names.contains(&StoreLayout::checkpoint(200)));
    assert!(names.contains(&StoreLayout::manifest(201)));
    let snap = manifest::load_latest(&io).unwrap();
    assert_eq!((snap.version, snap.files.len()), (300, 300));
    // Without the hint the log is walked back to the newest checkpoint.
    std::fs::remove_file(dir.path().join(StoreLayout::last_checkpoint())).unwrap();
    assert_eq!(manifest::load_latest(&io).unwrap(), snap);
    // A stale writer whose version was pruned cannot commit into the gap.
    manifest::checkpoint(&io, Duration::ZERO).unwrap();
    let mut stale = snap.clone();
    stale.version = 150;
    let mut next = stale.clone();
    next.version = 151;
    assert!(!manifest::try_commit(&io, &stale, &next).unwrap());
}

#[test]
fn stores_written_as_whole_snapshots_still_open_and_take_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let root = dir.path().join(tenure_schema::MANIFEST_PREFIX);
    std::fs::create_dir_all(&root).unwrap();
    let mut s = Snapshot::default();
    for v in 1..=3 {
        s.version = v;
        s.files.push(tiny_file(v));
        s.removed
            .push(format!("events/date=2026-01-01/old-{v}.parquet"));
        s.txn = format!("t{v}");
        // The old format: every version the whole snapshot, pretty-printed.
        std::fs::write(dir.path().join(StoreLayout::manifest(v)), s.to_json()).unwrap();
    }
    let io = Io::new(Store::open(url).unwrap());
    assert_eq!(manifest::load_latest(&io).unwrap(), s);
    commit_tiny_versions(&io, 2);
    let snap = manifest::load_latest(&io).unwrap();
    assert_eq!((snap.version, snap.files.len()), (5, 5));
    // The next vacuum starts the legacy `removed` entries' retention.
    manifest::vacuum(&io, manifest::DEFAULT_RETAIN).unwrap();
    let snap = manifest::load_latest(&io).unwrap();
    assert!(snap.removed.is_empty());
    assert_eq!(snap.retired.len(), 3);
    manifest::vacuum(&io, Duration::ZERO).unwrap();
    assert!(manifest::load_latest(&io).unwrap().retired.is_empty());
}

#[test]
fn users_segments_merge_into_one_without_changing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    for (i, user) in ["ann", "bob", "cy", "dee"].iter().enumerate() {
        ingest_lines(
            url,
            &format!("{i}.ndjson"),
            &[&format!(
                r#"{{"user_id":"{user}","event":"x","ts":"2026-01-0{}T00:00:00Z"}}"#,
                i + 1
            )],
        );
    }
    let keys = |url: &str| {
        let mut pairs: Vec<String> = table_lines(url, &["user_id", "user_key"]);
        pairs.sort();
        pairs
    };
    let before = keys(url);
    assert_eq!(snapshot(url).users.segments.len(), 4);
    let io = Io::new(Store::open(url).unwrap());
    manifest::maintain(&io, manifest::DEFAULT_RETAIN).unwrap();
    let snap = snapshot(url);
    assert_eq!(snap.users.segments.len(), 1);
    assert_eq!(snap.users.count, 4);
    // The old segments wait out the retention period.
    assert_eq!(snap.retired.len(), 4);
    assert_eq!(keys(url), before);
    // A known user keeps its key, a new one gets the next.
    ingest_lines(
        url,
        "e.ndjson",
        &[
            r#"{"user_id":"bob","event":"y","ts":"2026-01-06T00:00:00Z"}"#,
            r#"{"user_id":"eve","event":"y","ts":"2026-01-06T00:00:00Z"}"#,
        ],
    );
    let after = keys(url);
    assert!(
        after.iter().filter(|l| l.ends_with(",bob,1")).count() == 2,
        "{after:?}"
    );
    assert!(after.iter().any(|l| l.ends_with(",eve,4")), "{after:?}");
    manifest::vacuum(&io, Duration::ZERO).unwrap();
    assert_eq!(
        files_under(dir.path(), tenure_schema::USERS_PREFIX).len(),
        2
    );
}

/// The delta a committer writes for a one-file commit on top of version `v - 1`.
fn tiny_delta(v: u64) -> Vec<u8> {
    serde_json::to_vec(&Delta {
        tenure_delta: 1,
        parent: v - 1,
        version: v,
        txn: format!("t{v}"),
        operation: "ingest".into(),
        patch: serde_json::json!({
            "set": {"version": v, "txn": format!("t{v}")},
            "append": {"files": [tiny_file(v)]},
        }),
    })
    .unwrap()
}

#[test]
fn tiny_deltas_are_what_a_commit_writes() {
    let mut base = Snapshot::default();
    for v in 1..=3 {
        let mut next = base.clone();
        next.version = v;
        next.files.push(tiny_file(v));
        next.txn = format!("t{v}");
        if v == 1 {
            next.operation = "ingest".into();
        }
        if v > 1 {
            let written: serde_json::Value =
                serde_json::from_slice(&next.commit_file(&base)).unwrap();
            let ours: serde_json::Value = serde_json::from_slice(&tiny_delta(v)).unwrap();
            assert_eq!(written, ours);
        }
        base = next;
    }
}

/// Builds a store of `n` one-file commits quickly: each delta is written
/// directly (no fsync, no diff of the growing state), with a checkpoint every
/// [`CHECKPOINT_INTERVAL`] versions as the committers would write it.
fn build_long_log(dir: &Path, n: u64) {
    let io = Io::new(Store::open(dir.to_str().unwrap()).unwrap());
    std::fs::create_dir_all(dir.join(tenure_schema::MANIFEST_PREFIX)).unwrap();
    let first = Snapshot {
        version: 1,
        files: vec![tiny_file(1)],
        txn: "t1".into(),
        operation: "ingest".into(),
        ..Default::default()
    };
    std::fs::write(
        dir.join(StoreLayout::manifest(1)),
        first.commit_file(&Snapshot::default()),
    )
    .unwrap();
    for v in 2..=n {
        std::fs::write(dir.join(StoreLayout::manifest(v)), tiny_delta(v)).unwrap();
        if v.is_multiple_of(CHECKPOINT_INTERVAL) {
            manifest::checkpoint(&io, manifest::DEFAULT_RETAIN).unwrap();
        }
    }
}

/// The figure: opening a store of 10,000 commits. Prints the median of 21 loads;
/// asserts only the state.
#[test]
fn opening_a_store_of_10000_commits_reads_one_checkpoint_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let n = 10_000 + 37;
    build_long_log(dir.path(), n);
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let mut times = Vec::new();
    let mut snap = Snapshot::default();
    for _ in 0..21 {
        let t = Instant::now();
        snap = tenure_ingest::io::block_on(tenure_store::load_latest(&store)).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "opening a store of {n} commits ({} files): median {:?}, min {:?}, max {:?}",
        snap.files.len(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    assert_eq!(snap.version, n);
    assert_eq!(snap.files.len() as u64, n);
    assert_eq!(snap.files[n as usize - 1], tiny_file(n));
}
