//! Blocking access to the object store for the (CPU-bound, synchronous) ingest
//! pipeline: each call runs on a small shared tokio runtime.
//!
//! On a local store every write is made durable before it returns: object_store's
//! local backend never fsyncs, so after each put, conditional put and rename the
//! file and each directory from its own up to the store root are fsynced. A
//! commit (staged files, users segment, manifest version, files moved into place)
//! is therefore on disk when it returns, and the server may drop its WAL.
//!
//! Every operation but the conditional put is idempotent and runs again after a
//! transport failure ([`tenure_store::retry`]); the conditional put's outcome is
//! settled by [`crate::manifest::try_commit`].

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{IngestError, Store};
use tenure_store::retry::idempotent;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tenure-io")
        .enable_all()
        .build()
        .expect("tokio runtime for object store IO")
});

/// Runs a future to completion on the IO runtime. Must not be called from inside
/// another tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.block_on(f)
}

static SYNCED: AtomicU64 = AtomicU64::new(0);

/// Files fsynced (with their directories) by this process so far; tests use it
/// to check that local writes take the durable path.
pub fn synced_files() -> u64 {
    SYNCED.load(Ordering::Relaxed)
}

/// A store with blocking operations on root-relative paths.
#[derive(Clone, Debug)]
pub struct Io {
    /// The store.
    pub store: Store,
}

impl Io {
    /// Wraps a store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Reads a whole object.
    pub fn get(&self, rel: &str) -> Result<Bytes, IngestError> {
        let p = self.store.path(rel);
        Ok(block_on(idempotent(|| async {
            self.store.inner.get(&p).await?.bytes().await
        }))?)
    }

    /// Reads a whole object, or `None` if it does not exist.
    pub fn get_opt(&self, rel: &str) -> Result<Option<Bytes>, IngestError> {
        match self.get(rel) {
            Ok(b) => Ok(Some(b)),
            Err(IngestError::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Does an object exist? (One `HEAD`.)
    pub fn exists(&self, rel: &str) -> Result<bool, IngestError> {
        let p = self.store.path(rel);
        match block_on(self.store.inner.head(&p)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes (or overwrites) an object atomically (and durably on local disk).
    pub fn put(&self, rel: &str, data: Vec<u8>) -> Result<(), IngestError> {
        let p = self.store.path(rel);
        let data = PutPayload::from(data);
        block_on(idempotent(|| self.store.inner.put(&p, data.clone())))?;
        self.sync(rel)
    }

    /// On a local store, fsyncs the file at `rel` and every directory from its
    /// own up to the store root (a new partition directory must reach its parent
    /// too). A no-op on object stores, whose puts are durable when they return.
    pub fn sync(&self, rel: &str) -> Result<(), IngestError> {
        let Some(root) = &self.store.local_dir else {
            return Ok(());
        };
        let fail = |source: std::io::Error| {
            IngestError::ObjectStore(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::new(
                    source.kind(),
                    format!("cannot fsync {rel} in {}: {source}", root.display()),
                )),
            })
        };
        let file = root.join(rel);
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(fail)?;
            if d == root.as_path() || !d.starts_with(root) {
                break;
            }
            dir = d.parent();
        }
        SYNCED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Creates an object only if it does not exist yet; `false` if it already did.
    /// This conditional put is what makes manifest commits safe between writers.
    pub fn put_if_absent(&self, rel: &str, data: Vec<u8>) -> Result<bool, IngestError> {
        let p = self.store.path(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match block_on(self.store.inner.put_opts(&p, PutPayload::from(data), opts)) {
            Ok(_) => self.sync(rel).map(|()| true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves an object (atomic on local disk; copy then delete on object stores,
    /// so it is always in at least one of the two places). `Ok(false)` when the
    /// source is already gone.
    pub fn rename(&self, from: &str, to: &str) -> Result<bool, IngestError> {
        let (f, t) = (self.store.path(from), self.store.path(to));
        match block_on(idempotent(|| self.store.inner.rename(&f, &t))) {
            Ok(()) => self.sync(to).map(|()| true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; a missing one is fine.
    pub fn delete(&self, rel: &str) -> Result<(), IngestError> {
        let p = self.store.path(rel);
        match block_on(idempotent(|| self.store.inner.delete(&p))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists every object under a prefix, with paths made root-relative.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>, IngestError> {
        let p = self.store.path(prefix);
        let metas: Vec<ObjectMeta> =
            block_on(idempotent(|| self.store.inner.list(Some(&p)).try_collect()))?;
        Ok(metas
            .into_iter()
            .map(|m| (self.store.relative(&m.location), m))
            .collect())
    }
}
