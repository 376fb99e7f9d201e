//! Reading and committing manifest versions, and keeping the log small.
//!
//! A commit writes a delta of what it changed (see [`tenure_schema::Delta`]).
//! Every [`CHECKPOINT_INTERVAL`] versions the committer also merges the users
//! dictionary's segments into one (a version of its own, keys unchanged), writes
//! a checkpoint of the whole state and the hint naming it, and prunes the log
//! before the previous checkpoint once it is older than [`DEFAULT_RETAIN`].
//! [`vacuum`] deletes the files that left the table once their retention has
//! passed and drops them from the state; `tenure compact` and `tenure repair`
//! run it ([`maintain`]).

use std::collections::HashSet;
use std::time::Duration;

use tenure_store::retry::{OPERATION_RETRIES, is_transport_error};

use tenure_schema::{
    CHECKPOINT_INTERVAL, CheckpointHint, MANIFEST_PREFIX, RetiredFile, Snapshot, StoreLayout,
};

use crate::users::{decode_segment, encode_segment};
use crate::{IngestError, io::Io};

/// How long files that left the table (and old log versions) are kept by default:
/// a reader that loaded an older version has this long to read its files.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(3600);

/// The newest committed snapshot, or the empty version 0 of a new store.
pub fn load_latest(io: &Io) -> Result<Snapshot, IngestError> {
    Ok(crate::io::block_on(tenure_store::load_latest(&io.store))?)
}

/// Tries to commit `next` (version `base.version + 1`, built from `base`); `false`
/// when another writer committed that version first (reload, rebase and try the
/// next one). Writes a delta against `base`, or the whole state when `base`
/// stands in for an unreadable version.
pub fn try_commit(io: &Io, base: &Snapshot, next: &Snapshot) -> Result<bool, IngestError> {
    assert_eq!(
        next.version,
        base.version + 1,
        "a commit makes the version after its base"
    );
    // A base older than the newest checkpoint is stale; its version number may
    // even have been pruned from the log, where a conditional put would succeed
    // unseen. Make the caller reload instead.
    if crate::io::block_on(tenure_store::last_checkpoint(&io.store))?
        .is_some_and(|c| c >= next.version)
    {
        return Ok(false);
    }
    let rel = StoreLayout::manifest(next.version);
    let data = next.commit_file(base);
    let mut retries = 0;
    loop {
        match io.put_if_absent(&rel, data.clone()) {
            Ok(true) => return Ok(true),
            Ok(false) => return Ok(committed_by(io, &rel, &next.txn)?.unwrap_or(false)),
            Err(e) => {
                if let Ok(Some(ours)) = committed_by(io, &rel, &next.txn) {
                    return Ok(ours);
                }
                let transport = matches!(&e, IngestError::ObjectStore(o) if is_transport_error(o));
                if !transport || retries == OPERATION_RETRIES {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(100 << retries));
                retries += 1;
            }
        }
    }
}

/// Housekeeping after a successful commit of `version`: on every
/// [`CHECKPOINT_INTERVAL`]th version, merges the users segments, writes a
/// checkpoint and prunes the log. Never fails the commit: a problem is a warning
/// (the next checkpoint tries again).
pub fn after_commit(io: &Io, version: u64) {
    if !version.is_multiple_of(CHECKPOINT_INTERVAL) {
        return;
    }
    if let Err(e) = merge_users(io).and_then(|_| checkpoint(io, DEFAULT_RETAIN)) {
        eprintln!(
            "warning: manifest checkpoint of {} failed: {e}",
            io.store.url
        );
    }
}

/// Commits `make(current)` as the next version, reloading and retrying when
/// another writer wins; `make` returns `None` to give up (nothing to do any more).
fn commit_change(
    io: &Io,
    operation: &str,
    mut make: impl FnMut(&Snapshot) -> Option<Snapshot>,
) -> Result<Option<u64>, IngestError> {
    let txn = uuid::Uuid::now_v7().simple().to_string();
    loop {
        let base = load_latest(io)?;
        let Some(mut next) = make(&base) else {
            return Ok(None);
        };
        next.version = base.version + 1;
        next.unreadable = None;
        next.txn = txn.clone();
        next.operation = operation.into();
        next.committed_at = chrono::Utc::now().to_rfc3339();
        if try_commit(io, &base, &next)? {
            return Ok(Some(next.version));
        }
    }
}

/// Merges the users dictionary's segments into one file (same keys, same ids)
/// and commits it; the old segments are retired. `None` when there was at most
/// one segment.
pub fn merge_users(io: &Io) -> Result<Option<u64>, IngestError> {
    let base = load_latest(io)?;
    if base.users.segments.len() < 2 {
        return Ok(None);
    }
    let mut pairs = Vec::with_capacity(base.users.count as usize);
    for seg in &base.users.segments {
        pairs.extend(decode_segment(io.get(seg)?)?);
    }
    pairs.sort_unstable_by_key(|(k, _)| *k);
    if pairs.len() as u64 != base.users.count
        || pairs.iter().enumerate().any(|(i, (k, _))| *k as usize != i)
    {
        return Err(IngestError::Corrupt {
            url: io.store.url.clone(),
            message: format!(
                "users dictionary segments do not hold keys 0..{} exactly once",
                base.users.count
            ),
        });
    }
    let merged = StoreLayout::users_segment(&format!("merged-{}", uuid::Uuid::now_v7().simple()));
    io.put(
        &merged,
        encode_segment(0, pairs.iter().map(|(_, id)| id.as_str()))?,
    )?;
    let old = base.users.segments.clone();
    let now = chrono::Utc::now().timestamp();
    let done = commit_change(io, "merge-users", |cur| {
        // Segments committed since are kept after the merged one.
        if !cur.users.segments.starts_with(&old) {
            return None;
        }
        let mut next = cur.clone();
        let mut segments = vec![merged.clone()];
        segments.extend(cur.users.segments[old.len()..].iter().cloned());
        next.users.segments = segments;
        next.retired.extend(old.iter().map(|p| RetiredFile {
            path: p.clone(),
            retired_at: now,
        }));
        Some(next)
    })?;
    if done.is_none() {
        io.delete(&merged)?;
    }
    Ok(done)
}

/// Writes a checkpoint of the newest version (when it has none yet) and the hint
/// naming it, then deletes log files before the previous checkpoint that are
/// older than `retain`.
pub fn checkpoint(io: &Io, retain: Duration) -> Result<(), IngestError> {
    let snap = load_latest(io)?;
    if snap.version == 0 || snap.unreadable.is_some() {
        return Ok(());
    }
    let hint = crate::io::block_on(tenure_store::last_checkpoint(&io.store))?;
    if hint.is_none_or(|h| h < snap.version) {
        let body = serde_json::to_vec(&snap).expect("a snapshot always serialises");
        io.put(&StoreLayout::checkpoint(snap.version), body)?;
        let hint_body = serde_json::to_vec(&CheckpointHint {
            version: snap.version,
        })
        .expect("a hint always serialises");
        io.put(&StoreLayout::last_checkpoint(), hint_body)?;
    }
    prune(io, retain)
}

/// Deletes commit and checkpoint files older than the second newest checkpoint
/// (so a reader that read the previous hint still finds everything after it),
/// once they are older than `retain`.
fn prune(io: &Io, retain: Duration) -> Result<(), IngestError> {
    let listing = io.list(MANIFEST_PREFIX)?;
    let mut checkpoints: Vec<u64> = listing
        .iter()
        .filter_map(|(_, m)| StoreLayout::checkpoint_version(m.location.filename()?))
        .collect();
    checkpoints.sort_unstable();
    let Some(&keep_from) = checkpoints.iter().rev().nth(1) else {
        return Ok(());
    };
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(retain.as_secs() as i64);
    for (rel, meta) in &listing {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        let version =
            StoreLayout::manifest_version(name).or_else(|| StoreLayout::checkpoint_version(name));
        if version.is_some_and(|v| v < keep_from) && meta.last_modified < cutoff {
            io.delete(rel)?;
        }
    }
    Ok(())
}

/// Deletes the files that left the table more than `retain` ago (from their
/// retired path, and from their old path should a crash have left them there)
/// and commits a version without them. Entries of stores written before
/// retention (`removed`) start their retention now. Returns notes.
pub fn vacuum(io: &Io, retain: Duration) -> Result<Vec<String>, IngestError> {
    let snap = load_latest(io)?;
    let cutoff = chrono::Utc::now().timestamp() - retain.as_secs() as i64;
    let live: HashSet<&str> = snap
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(snap.users.segments.iter().map(String::as_str))
        .collect();
    let mut expired: HashSet<String> = HashSet::new();
    for r in snap.retired.iter().filter(|r| r.retired_at <= cutoff) {
        io.delete(&StoreLayout::retired_file(&r.path))?;
        if !live.contains(r.path.as_str()) {
            io.delete(&r.path)?;
        }
        expired.insert(r.path.clone());
    }
    if expired.is_empty() && snap.removed.is_empty() {
        return Ok(Vec::new());
    }
    let now = chrono::Utc::now().timestamp();
    commit_change(io, "vacuum", |cur| {
        let mut next = cur.clone();
        next.retired.retain(|r| !expired.contains(&r.path));
        let legacy = std::mem::take(&mut next.removed);
        next.retired
            .extend(legacy.into_iter().map(|path| RetiredFile {
                path,
                retired_at: now,
            }));
        (next.retired != cur.retired || !cur.removed.is_empty()).then_some(next)
    })?;
    io.store.remove_empty_dirs(tenure_schema::RETIRED_PREFIX);
    let mut notes = Vec::new();
    if !expired.is_empty() {
        notes.push(format!(
            "deleted {} file(s) replaced more than {}s ago",
            expired.len(),
            retain.as_secs()
        ));
    }
    Ok(notes)
}

/// Rewrites an unreadable newest version: commits the last complete state again
/// as a whole snapshot, so the bad file is superseded. `None` when the newest
/// version was readable.
pub fn rewrite_unreadable(io: &Io) -> Result<Option<(u64, u64)>, IngestError> {
    let snap = load_latest(io)?;
    let Some(bad) = snap.unreadable else {
        return Ok(None);
    };
    let done = commit_change(io, "repair", |cur| {
        cur.unreadable.is_some().then(|| cur.clone())
    })?;
    Ok(done.map(|v| (bad, v)))
}

/// Everything `tenure compact` and `tenure repair` do to the metadata: rewrite an
/// unreadable newest version, vacuum what left the table more than `retain`
/// ago, merge the users segments, checkpoint and prune. Returns notes.
pub fn maintain(io: &Io, retain: Duration) -> Result<Vec<String>, IngestError> {
    let mut notes = Vec::new();
    if let Some((bad, v)) = rewrite_unreadable(io)? {
        notes.push(format!(
            "manifest version {bad} was unreadable; wrote the last complete state again as version {v}"
        ));
    }
    notes.extend(vacuum(io, retain)?);
    if let Some(v) = merge_users(io)? {
        notes.push(format!(
            "merged the users dictionary into one segment (version {v})"
        ));
    }
    checkpoint(io, retain)?;
    Ok(notes)
}

/// Whether the manifest version at `rel` was committed by transaction `txn`;
/// `None` when there is no such version. Every commit file (whole snapshot or
/// delta) carries its `txn` at the top level; one that cannot be parsed is not
/// ours (ours was whole when sent).
fn committed_by(io: &Io, rel: &str, txn: &str) -> Result<Option<bool>, IngestError> {
    Ok(io.get_opt(rel)?.map(|data| {
        serde_json::from_slice::<serde_json::Value>(&data)
            .is_ok_and(|v| v.get("txn").and_then(|t| t.as_str()) == Some(txn))
    }))
}
