//! Tenure's storage access, shared by ingest (which writes) and the engine (which
//! reads): opening an object store from a URL, and loading the committed
//! manifest snapshot.
#![deny(missing_docs)]

mod log;
pub mod retry;
mod store;

use futures::TryStreamExt;
use tenure_schema::{FileEntry, Snapshot, StoreLayout};

pub use store::{RETRY, RetryPolicy, Store};

/// Errors opening or reading a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL cannot be opened.
    #[error("cannot open store {url}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The store holds a manifest Tenure cannot read.
    #[error("corrupt store {url}: {message}")]
    Corrupt {
        /// The store.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// The newest committed snapshot, or the empty version 0 of a new store.
///
/// Reads the checkpoint hint, that checkpoint and the commit files after it (one
/// listing from the checkpoint on, not of the whole log). Stores without a hint
/// (new ones, and those written before checkpoints) are listed whole and read
/// back from the newest version to the newest whole state.
///
/// When the newest commit file is unreadable (truncated, or not JSON: a crash
/// while it was written on a disk that lost it), the state of the last complete
/// version is returned with [`Snapshot::unreadable`] set, and a warning goes to
/// stderr once per process; the next commit (or `tenure repair`) writes the whole
/// state as a new version. An unreadable version that later deltas depend on is
/// an error: nothing committed is dropped silently.
pub async fn load_latest(store: &Store) -> Result<Snapshot, StoreError> {
    let mut attempt = 0;
    loop {
        match log::load(store).await {
            // A listed file vanished: a concurrent prune of versions far behind
            // the newest checkpoint. Look again.
            Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) if attempt < 3 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
            Ok((snapshot, warning)) => {
                if let Some(w) = warning {
                    warn_once(&store.url, snapshot.version, &w);
                }
                return Ok(snapshot);
            }
        }
    }
}

/// The version of the newest checkpoint, as its hint names it (`None` before the
/// first checkpoint, or when the hint is unreadable).
pub async fn last_checkpoint(store: &Store) -> Result<Option<u64>, StoreError> {
    log::read_hint(store).await
}

fn warn_once(url: &str, version: u64, message: &str) {
    static SEEN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(String, u64)>>> =
        std::sync::LazyLock::new(Default::default);
    if SEEN
        .lock()
        .expect("warning registry")
        .insert((url.to_string(), version))
    {
        eprintln!("warning: {message}");
    }
}

/// Where a committed file's bytes may be, in the order to try them: its final
/// path under `events/`; its staged path (until the committing writer, or the
/// recovery after its crash, moves it into place); and its retired path (after a
/// compaction replaced it, for the retention period). Readers of a snapshot try
/// each on "not found"; writers only ever move a file along this order.
pub fn candidate_paths(file: &FileEntry) -> [String; 3] {
    [
        file.path.clone(),
        file.staged.clone(),
        StoreLayout::retired_file(&file.path),
    ]
}

/// Where each committed file can be read right now: its final path under
/// `events/`, or, while the committing writer (or the recovery after its crash)
/// has not moved it yet, its staged path. One listing, not one request per file
/// (on local disk, one stat per file).
pub async fn readable_paths(store: &Store, snapshot: &Snapshot) -> Result<Vec<String>, StoreError> {
    if let Some(dir) = &store.local_dir {
        // On local disk a look at each file (one stat) is far cheaper than
        // listing every partition directory (an open, reads and a stat per entry).
        return Ok(snapshot
            .files
            .iter()
            .map(|f| match dir.join(&f.path).is_file() {
                true => f.path.clone(),
                false => f.staged.clone(),
            })
            .collect());
    }
    let prefix = store.path("events");
    let present: std::collections::HashSet<String> = retry::idempotent(|| {
        store
            .inner
            .list(Some(&prefix))
            .map_ok(|m| store.relative(&m.location))
            .try_collect()
    })
    .await?;
    Ok(snapshot
        .files
        .iter()
        .map(|f| {
            if present.contains(&f.path) {
                f.path.clone()
            } else {
                f.staged.clone()
            }
        })
        .collect())
}
