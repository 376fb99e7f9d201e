//! Tenure's storage access, shared by ingest (which writes) and the engine (which
//! reads): opening an object store from a URL, and loading the committed
//! manifest snapshot.
#![deny(missing_docs)]

mod committed;
mod log;
pub mod retry;
mod store;

use tenure_schema::Snapshot;

pub use committed::{CommittedReads, committed_reader, file_locations, readable_paths};
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
    /// A file the committed manifest lists is at none of the places it may be
    /// (its path, its staged path, its retired path): the store is damaged. A
    /// runtime failure, never a smaller answer.
    #[error(
        "committed file {path} of store {url} cannot be read: it is missing (also looked for it at {tried})"
    )]
    MissingFile {
        /// The store.
        url: String,
        /// The file's committed path, relative to the store root.
        path: String,
        /// The other places looked at.
        tried: String,
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
