//! Tenure's storage access, shared by ingest (which writes) and the engine (which
//! reads): opening an object store from a URL, and loading the committed
//! manifest snapshot.
#![deny(missing_docs)]

pub mod retry;
mod store;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tenure_schema::{MANIFEST_PREFIX, Snapshot, StoreLayout};

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
pub async fn load_latest(store: &Store) -> Result<Snapshot, StoreError> {
    let prefix = store.path(MANIFEST_PREFIX);
    let metas: Vec<object_store::ObjectMeta> =
        retry::idempotent(|| store.inner.list(Some(&prefix)).try_collect()).await?;
    let latest = metas
        .iter()
        .filter_map(|m| StoreLayout::manifest_version(m.location.filename()?))
        .max();
    let Some(version) = latest else {
        return Ok(Snapshot::default());
    };
    let path = store.path(&StoreLayout::manifest(version));
    let data = retry::idempotent(|| async { store.inner.get(&path).await?.bytes().await }).await?;
    Snapshot::from_json(&data).map_err(|e| StoreError::Corrupt {
        url: store.url.clone(),
        message: format!("manifest version {version}: {e}"),
    })
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
