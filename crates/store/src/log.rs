//! Reading the manifest log: checkpoint hint, checkpoint, deltas after it.

use std::collections::{BTreeSet, HashMap};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use tenure_schema::{
    CheckpointHint, LogEntry, MANIFEST_PREFIX, Snapshot, StoreLayout, apply_deltas,
};

use crate::{Store, StoreError};

/// What the commit file of a version holds, as far as loading is concerned.
enum Read {
    Entry(LogEntry),
    /// Not complete JSON (or a malformed delta): why.
    Unreadable(String),
}

/// The names under the manifest prefix: commit versions and checkpoint versions.
#[derive(Default)]
struct Listing {
    commits: BTreeSet<u64>,
    checkpoints: BTreeSet<u64>,
}

async fn list(store: &Store, after: Option<u64>) -> Result<Listing, StoreError> {
    let prefix = store.path(MANIFEST_PREFIX);
    let metas: Vec<object_store::ObjectMeta> = match after {
        // Names are zero-padded, so everything after this commit file is the
        // versions after it (its own checkpoint file sorts before it).
        Some(v) => {
            let offset = store.path(&StoreLayout::manifest(v));
            crate::retry::idempotent(|| {
                store
                    .inner
                    .list_with_offset(Some(&prefix), &offset)
                    .try_collect()
            })
            .await?
        }
        None => crate::retry::idempotent(|| store.inner.list(Some(&prefix)).try_collect()).await?,
    };
    let mut out = Listing::default();
    for m in &metas {
        let Some(name) = m.location.filename() else {
            continue;
        };
        if let Some(v) = StoreLayout::manifest_version(name) {
            out.commits.insert(v);
        } else if let Some(v) = StoreLayout::checkpoint_version(name) {
            out.checkpoints.insert(v);
        }
    }
    Ok(out)
}

async fn get(store: &Store, rel: &str) -> Result<Option<bytes::Bytes>, StoreError> {
    let path = store.path(rel);
    match crate::retry::idempotent(|| async { store.inner.get(&path).await?.bytes().await }).await {
        Ok(r) => Ok(Some(r)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn read_commit(store: &Store, version: u64) -> Result<Read, StoreError> {
    let rel = StoreLayout::manifest(version);
    let path = store.path(&rel);
    let data =
        crate::retry::idempotent(|| async { store.inner.get(&path).await?.bytes().await }).await?;
    Ok(match LogEntry::parse(&data) {
        Ok(e) => Read::Entry(e),
        Err(why) => Read::Unreadable(why),
    })
}

/// A checkpoint's state, or `None` when it is missing or unreadable (then an
/// older starting point is used).
async fn read_checkpoint(store: &Store, version: u64) -> Result<Option<Snapshot>, StoreError> {
    let Some(data) = get(store, &StoreLayout::checkpoint(version)).await? else {
        return Ok(None);
    };
    Ok(Snapshot::from_json(&data).ok())
}

/// The newest checkpoint named by the hint, if the hint is there and readable.
pub(crate) async fn read_hint(store: &Store) -> Result<Option<u64>, StoreError> {
    let Some(data) = get(store, &StoreLayout::last_checkpoint()).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<CheckpointHint>(&data)
        .ok()
        .map(|h| h.version))
}

/// Loads the newest state; the warning is set when an unreadable newest version
/// was skipped.
pub(crate) async fn load(store: &Store) -> Result<(Snapshot, Option<String>), StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        url: store.url.clone(),
        message,
    };
    let mut reads: HashMap<u64, Read> = HashMap::new();
    let whole = |v: u64, state: Value| {
        serde_json::from_value::<Snapshot>(state)
            .map_err(|e| corrupt(format!("manifest version {v}: {e}")))
    };
    let mut start: Option<(u64, Snapshot)> = None;
    let mut listing = Listing::default();
    if let Some(hint) = read_hint(store).await? {
        listing = list(store, Some(hint)).await?;
        // A newer checkpoint than the hint says (its writer stopped before
        // updating the hint) is a better start.
        let mut candidates: Vec<u64> = listing.checkpoints.iter().rev().copied().collect();
        candidates.push(hint);
        for c in candidates {
            if let Some(state) = read_checkpoint(store, c).await? {
                start = Some((c, state));
                break;
            }
        }
    }
    if start.is_none() {
        listing = list(store, None).await?;
        let Some(&newest) = listing.commits.last() else {
            return Ok((Snapshot::default(), None));
        };
        // Walk back from the newest version to a whole state: a checkpoint, a
        // whole-snapshot commit, or the empty version 0.
        let mut v = newest;
        while start.is_none() {
            if v == 0 {
                start = Some((0, Snapshot::default()));
                break;
            }
            if listing.checkpoints.contains(&v)
                && let Some(state) = read_checkpoint(store, v).await?
            {
                start = Some((v, state));
                break;
            }
            if !listing.commits.contains(&v) {
                return Err(corrupt(format!(
                    "manifest version {v} is missing and no checkpoint precedes version {}",
                    v + 1
                )));
            }
            let read = read_commit(store, v).await?;
            if let Read::Entry(LogEntry::Full(state)) = read {
                start = Some((v, whole(v, state)?));
                break;
            }
            reads.insert(v, read);
            v -= 1;
        }
    }
    let (from, mut snapshot) = start.expect("a starting point was found");
    let newest = listing.commits.last().copied().unwrap_or(from).max(from);
    let mut good = from;
    let mut bad: Option<(u64, String)> = None;
    let mut patches: Vec<Value> = Vec::new();
    for v in from + 1..=newest {
        if !listing.commits.contains(&v) {
            return Err(corrupt(format!("manifest version {v} is missing")));
        }
        let read = match reads.remove(&v) {
            Some(r) => r,
            None => read_commit(store, v).await?,
        };
        match read {
            Read::Entry(LogEntry::Full(s)) => {
                snapshot = whole(v, s)?;
                patches.clear();
                good = v;
                bad = None;
            }
            Read::Entry(LogEntry::Delta(d)) => {
                if let Some((b, why)) = &bad {
                    return Err(corrupt(format!(
                        "manifest version {b} is unreadable ({why}) and version {v} was committed on top of it"
                    )));
                }
                if d.parent != good || d.version != v {
                    return Err(corrupt(format!(
                        "manifest version {v} applies to version {}, not {good}",
                        d.parent
                    )));
                }
                patches.push(d.patch);
                good = v;
            }
            Read::Unreadable(why) => {
                if bad.is_none() {
                    bad = Some((v, why));
                }
            }
        }
    }
    let mut snapshot = apply_deltas(snapshot, &patches)
        .map_err(|e| corrupt(format!("manifest versions {from}..={good}: {e}")))?;
    let warning = bad.map(|(b, why)| {
        snapshot.version = newest;
        snapshot.unreadable = Some(b);
        format!(
            "manifest version {b} of {} is unreadable ({why}); using version {good}, the last complete one. Run `tenure repair --data {}` (or any commit) to write it again as version {}",
            store.url,
            store.url,
            newest + 1
        )
    });
    Ok((snapshot, warning))
}
