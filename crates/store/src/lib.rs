//! Tenure's storage access, shared by ingest (which writes) and the engine (which
//! reads): opening an object store from a URL, and loading the committed
//! manifest snapshot.
#![deny(missing_docs)]

mod committed;
mod store;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tenure_schema::{MANIFEST_PREFIX, Snapshot, StoreLayout};

pub use committed::{CommittedReads, committed_reader, file_locations, readable_paths};
pub use store::Store;

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
pub async fn load_latest(store: &Store) -> Result<Snapshot, StoreError> {
    let prefix = store.path(MANIFEST_PREFIX);
    let metas: Vec<object_store::ObjectMeta> =
        store.inner.list(Some(&prefix)).try_collect().await?;
    let latest = metas
        .iter()
        .filter_map(|m| StoreLayout::manifest_version(m.location.filename()?))
        .max();
    let Some(version) = latest else {
        return Ok(Snapshot::default());
    };
    let data = store
        .inner
        .get(&store.path(&StoreLayout::manifest(version)))
        .await?
        .bytes()
        .await?;
    Snapshot::from_json(&data).map_err(|e| StoreError::Corrupt {
        url: store.url.clone(),
        message: format!("manifest version {version}: {e}"),
    })
}
