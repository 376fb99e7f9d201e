//! Opening an object store from a URL or a plain path.

use std::sync::{Arc, LazyLock, Mutex};

use object_store::{ObjectStore, local::LocalFileSystem, memory::InMemory, path::Path};

use crate::StoreError;

/// A store root: the object store and the prefix under which the table lives.
#[derive(Clone)]
pub struct Store {
    /// The object store.
    pub inner: Arc<dyn ObjectStore>,
    /// Root prefix inside it (empty for a local directory).
    pub root: Path,
    /// The URL the user gave, for messages.
    pub url: String,
    /// The directory, when the store is on local disk (object stores have no
    /// directories, but a local file system keeps empty ones after renames).
    pub local_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// `memory://name` stores live for the process, so that several commands in one
/// test (or one `tenure run`) can share them.
static MEMORY_STORES: LazyLock<Mutex<std::collections::HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(Default::default);

impl Store {
    /// Opens a store from a plain local path, `file://`, `memory://`, `s3://`,
    /// `gs://` or `az://` URL. Cloud credentials and endpoints come from the
    /// standard environment variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, ...).
    /// A local directory is created if it does not exist (for writers: `ingest
    /// --to`, `gen --to`).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, true)
    }

    /// Opens a store that must already exist, for commands that only read: a
    /// local directory that does not exist is an error naming it (a misspelt
    /// `--data` must not leave an empty directory behind and answer "no
    /// events"). Object stores have no directories; an empty prefix reads as
    /// a store without events.
    pub fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, false)
    }

    fn open_with(url: &str, create: bool) -> Result<Self, StoreError> {
        let bad = |message: String| StoreError::BadUrl {
            url: url.to_string(),
            message,
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = MEMORY_STORES
                .lock()
                .expect("memory store registry")
                .entry(name.to_string())
                .or_default()
                .clone();
            return Ok(Self {
                inner: store,
                root: Path::from(prefix),
                url: url.to_string(),
                local_dir: None,
            });
        }
        let local = if let Some(rest) = url.strip_prefix("file://") {
            Some(rest.to_string())
        } else if !url.contains("://") {
            Some(url.to_string())
        } else {
            None
        };
        if let Some(dir) = local {
            if dir.is_empty() {
                return Err(bad("empty path".into()));
            }
            if create {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {dir}: {e}")))?;
            } else if !std::path::Path::new(&dir).is_dir() {
                return Err(bad(match std::fs::metadata(&dir) {
                    Ok(_) => format!("{dir} is not a directory"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                        "no such directory {dir} (a store is created by `tenure ingest --to` or `tenure gen --to`)"
                    ),
                    Err(e) => format!("cannot open {dir}: {e}"),
                }));
            }
            let fs = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad(e.to_string()))?
                .with_automatic_cleanup(true);
            return Ok(Self {
                inner: Arc::new(fs),
                root: Path::default(),
                url: url.to_string(),
                local_dir: Some(std::path::PathBuf::from(&dir)),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let bucket = parsed
            .host_str()
            .ok_or_else(|| bad("missing bucket".into()))?;
        let root = Path::from(parsed.path().trim_matches('/'));
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}`; use a local path, file://, memory://, s3://, gs:// or az://"
                )));
            }
        };
        Ok(Self {
            inner,
            root,
            url: url.to_string(),
            local_dir: None,
        })
    }

    /// A path under the root.
    pub fn path(&self, rel: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.root))
        }
    }

    /// Removes a local directory tree under the root if it holds no files (only
    /// empty directories left behind by renames); a no-op on object stores.
    pub fn remove_empty_dirs(&self, rel: &str) {
        fn only_dirs(p: &std::path::Path) -> bool {
            std::fs::read_dir(p).is_ok_and(|rd| {
                rd.flatten()
                    .all(|e| e.path().is_dir() && only_dirs(&e.path()))
            })
        }
        if let Some(dir) = &self.local_dir {
            let p = dir.join(rel);
            if only_dirs(&p) {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }

    /// The path relative to the root, as the manifest records it.
    pub fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(root)
                .map(|s| s.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string())
        }
    }
}
