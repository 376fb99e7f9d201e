//! Reading committed files where they are right now.
//!
//! A file the manifest lists is at its path under `events/`; or still at its
//! staged path, while its commit (or the recovery after a crash) moves it into
//! place; or under `_tenure/retired/`, once a compaction replaced it (it stays
//! there for a retention period, for readers still on an older snapshot).
//! Readers look in that order. A file can move between the look at open time
//! and a read (a concurrent commit or compaction), so a read that finds
//! nothing looks in those places once more before it fails. A committed file
//! found nowhere is an error naming it: never a file skipped, which would
//! answer with a smaller number.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use tenure_schema::{FileEntry, Snapshot, StoreLayout};

use crate::{Store, StoreError};

/// Where a committed events file may be, relative to the store root, in the
/// order readers look: its path, its staged path, its retired path.
pub fn file_locations(f: &FileEntry) -> Vec<String> {
    let mut out = vec![f.path.clone()];
    if !f.staged.is_empty() && f.staged != f.path {
        out.push(f.staged.clone());
    }
    out.push(StoreLayout::retired_file(&f.path));
    out
}

/// Where each committed file of `snapshot` can be read right now (relative to
/// the store root): the first of [`file_locations`] that holds it. A file at
/// none of them is [`StoreError::MissingFile`].
///
/// On local disk one stat per place looked at; on an object store one listing
/// of `events/`, and a request per place only for files not found there
/// (files in the middle of a commit or retired by a compaction).
pub async fn readable_paths(store: &Store, snapshot: &Snapshot) -> Result<Vec<String>, StoreError> {
    let missing = |f: &FileEntry, tried: &[String]| StoreError::MissingFile {
        url: store.url.clone(),
        path: f.path.clone(),
        tried: tried[1..].join(", "),
    };
    if let Some(dir) = &store.local_dir {
        // On local disk a look at each file (one stat) is far cheaper than
        // listing every partition directory (an open, reads and a stat per entry).
        return snapshot
            .files
            .iter()
            .map(|f| {
                let places = file_locations(f);
                places
                    .iter()
                    .find(|p| dir.join(p).is_file())
                    .cloned()
                    .ok_or_else(|| missing(f, &places))
            })
            .collect();
    }
    use futures::TryStreamExt;
    let prefix = store.path("events");
    let present: std::collections::HashSet<String> = crate::retry::idempotent(|| {
        store
            .inner
            .list(Some(&prefix))
            .map_ok(|m| store.relative(&m.location))
            .try_collect()
    })
    .await?;
    let mut out = Vec::with_capacity(snapshot.files.len());
    for f in &snapshot.files {
        if present.contains(&f.path) {
            out.push(f.path.clone());
            continue;
        }
        let places = file_locations(f);
        let mut found = None;
        for p in &places[1..] {
            let path = store.path(p);
            match crate::retry::idempotent(|| store.inner.head(&path)).await {
                Ok(_) => {
                    found = Some(p.clone());
                    break;
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        out.push(found.ok_or_else(|| missing(f, &places))?);
    }
    Ok(out)
}

/// The places one committed file may be (full paths in the object store),
/// and which of them held it last.
#[derive(Debug)]
struct Places {
    /// The committed path relative to the root, for messages.
    name: String,
    /// Where to look, in order.
    paths: Vec<Path>,
    /// Index into `paths` of the place that held it last.
    found: AtomicUsize,
}

/// An object store whose reads of a snapshot's committed files (events files
/// and users dictionary segments), addressed by their committed paths, find
/// each file wherever it is now (see the module docs) and fail naming the file
/// when it is nowhere. Everything else passes through to the store.
#[derive(Debug)]
pub struct CommittedReads {
    inner: Arc<dyn ObjectStore>,
    files: HashMap<Path, Places>,
    url: String,
}

impl std::fmt::Display for CommittedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommittedReads({})", self.inner)
    }
}

/// The store with reads of `snapshot`'s committed files going through
/// [`CommittedReads`]. Looks for every events file first and fails naming the
/// first one that is nowhere ([`StoreError::MissingFile`]); users dictionary
/// segments are looked for when read.
pub async fn committed_reader(store: &Store, snapshot: &Snapshot) -> Result<Store, StoreError> {
    let found = readable_paths(store, snapshot).await?;
    let mut files = HashMap::with_capacity(snapshot.files.len() + snapshot.users.segments.len());
    for (f, at) in snapshot.files.iter().zip(&found) {
        let places = file_locations(f);
        let found = places.iter().position(|p| p == at).unwrap_or(0);
        files.insert(
            store.path(&f.path),
            Places {
                name: f.path.clone(),
                paths: places.iter().map(|p| store.path(p)).collect(),
                found: AtomicUsize::new(found),
            },
        );
    }
    for s in &snapshot.users.segments {
        files.insert(
            store.path(s),
            Places {
                name: s.clone(),
                paths: vec![store.path(s), store.path(&StoreLayout::retired_file(s))],
                found: AtomicUsize::new(0),
            },
        );
    }
    let reads = CommittedReads {
        inner: store.inner.clone(),
        files,
        url: store.url.clone(),
    };
    Ok(Store {
        inner: Arc::new(reads),
        ..store.clone()
    })
}

impl CommittedReads {
    /// Runs `op` on the place that held the file last; if it is gone from
    /// there, on each place once more, in order; then fails naming the file.
    async fn read<T, F, Fut>(&self, location: &Path, op: F) -> object_store::Result<T>
    where
        F: Fn(Path) -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let Some(places) = self.files.get(location) else {
            return op(location.clone()).await;
        };
        let last = places.found.load(Ordering::Relaxed);
        match op(places.paths[last].clone()).await {
            Err(object_store::Error::NotFound { .. }) => {}
            other => return other,
        }
        // Moved since it was found: a commit moving a staged file into place,
        // or a compaction retiring it.
        for (i, p) in places.paths.iter().enumerate() {
            if i == last {
                continue;
            }
            match op(p.clone()).await {
                Err(object_store::Error::NotFound { .. }) => continue,
                Ok(v) => {
                    places.found.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => return Err(e),
            }
        }
        // Not `NotFound`: callers (DataFusion's listing among them) take a
        // missing object for an empty prefix and would skip the file.
        Err(object_store::Error::Generic {
            store: "tenure",
            source: Box::new(StoreError::MissingFile {
                url: self.url.clone(),
                path: places.name.clone(),
                tried: places.paths[1..]
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for CommittedReads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut got = self
            .read(location, |p| {
                let options = options.clone();
                async move { self.inner.get_opts(&p, options).await }
            })
            .await?;
        // Callers keep addressing the file by its committed path.
        got.meta.location = location.clone();
        Ok(got)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.read(location, |p| async move {
            self.inner.get_ranges(&p, ranges).await
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, staged: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            staged: staged.into(),
            date: "2024-01-01".into(),
            rows: 1,
            bytes: 3,
            min_ts: 0,
            max_ts: 0,
            txn: "t".into(),
            events: None,
            identity: 0,
        }
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn reads_follow_a_file_from_staged_to_committed_to_retired() {
        let store = Store::open("memory://committed-follow").unwrap();
        let f = entry(
            "events/date=2024-01-01/a.parquet",
            "_tenure/staging/t/a.parquet",
        );
        let snapshot = Snapshot {
            files: vec![f.clone()],
            ..Default::default()
        };
        let put = |p: &str| block_on(store.inner.put(&store.path(p), Bytes::from("abc").into()));
        put(&f.staged).unwrap();
        assert_eq!(
            block_on(readable_paths(&store, &snapshot)).unwrap(),
            std::slice::from_ref(&f.staged)
        );
        let reader = block_on(committed_reader(&store, &snapshot)).unwrap();
        let get = || {
            block_on(async {
                let got = reader.inner.get(&store.path(&f.path)).await?;
                assert_eq!(got.meta.location, store.path(&f.path));
                got.bytes().await
            })
        };
        assert_eq!(get().unwrap(), "abc");
        // The commit moves it into place, then a compaction retires it.
        let mv = |a: &str, b: &str| {
            block_on(store.inner.rename(&store.path(a), &store.path(b))).unwrap()
        };
        mv(&f.staged, &f.path);
        assert_eq!(get().unwrap(), "abc");
        let retired = StoreLayout::retired_file(&f.path);
        mv(&f.path, &retired);
        assert_eq!(get().unwrap(), "abc");
        let ranges = vec![1..3, 0..1];
        let got = block_on(reader.inner.get_ranges(&store.path(&f.path), &ranges)).unwrap();
        assert_eq!(got, [Bytes::from("bc"), Bytes::from("a")]);
        // Gone from every place: an error naming the file, not "not found".
        block_on(store.inner.delete(&store.path(&retired))).unwrap();
        let err = get().unwrap_err();
        assert!(
            !matches!(err, object_store::Error::NotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&f.path), "{err}");
        let err = block_on(readable_paths(&store, &snapshot)).unwrap_err();
        assert!(matches!(err, StoreError::MissingFile { .. }), "{err:?}");
        assert!(err.to_string().contains(&f.path), "{err}");
    }
}
