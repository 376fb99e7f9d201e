//! Opening an object store from a URL or a plain path.

use std::sync::{Arc, LazyLock, Mutex};

use std::time::Duration;

use object_store::aws::AmazonS3ConfigKey;
use object_store::{
    BackoffConfig, ObjectStore, RetryConfig, local::LocalFileSystem, memory::InMemory, path::Path,
};

use crate::StoreError;

/// How cloud stores retry a failed request (object_store's client does the
/// retrying). A request is retried after a 5xx, 429 or 408 answer, a refused
/// connection, or a connection closed before the request was sent; after a
/// timeout or a reset only when it is idempotent (reads, plain puts, copies,
/// deletes; not the conditional put of a manifest version, whose outcome the
/// committer checks itself). Each attempt times out after object_store's
/// default 30 s (5 s to connect; `?timeout=` on an s3:// URL changes it), so a
/// request gives up after at most `max_retries` retries or `retry_timeout`
/// plus one attempt, whichever comes first.
pub struct RetryPolicy {
    /// Retries per request.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// The first backoff; it doubles (with jitter) up to `max_backoff`.
    pub init_backoff: Duration,
    /// The longest backoff between two attempts.
    pub max_backoff: Duration,
}

/// Tenure's retry policy for cloud stores: 10 retries within 2 minutes,
/// backing off from 100 ms to at most 10 s.
pub const RETRY: RetryPolicy = RetryPolicy {
    max_retries: 10,
    retry_timeout: Duration::from_secs(120),
    init_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(10),
};

impl RetryPolicy {
    /// As object_store's retry configuration.
    pub fn config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

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
    ///
    /// An `s3://` URL may carry S3 options as a query string, which override the
    /// environment for this store only: any key object_store's S3 builder
    /// accepts (`endpoint`, `region`, `allow_http`, `timeout`, ...), e.g.
    /// `s3://bucket/prefix?endpoint=http://127.0.0.1:9000`. Requests are retried
    /// as [`RETRY`] says.
    ///
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
        let is_s3 = matches!(parsed.scheme(), "s3" | "s3a");
        if parsed.query().is_some() && !is_s3 {
            return Err(bad(
                "options in the URL (`?key=value`) are for s3:// only".into()
            ));
        }
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(RETRY.config());
                for (key, value) in parsed.query_pairs() {
                    let key = key.parse::<AmazonS3ConfigKey>().map_err(|_| {
                        bad(format!(
                            "unknown S3 option `{key}` in the URL (use object_store's names, e.g. `endpoint`, `region`, `allow_http`)"
                        ))
                    })?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(|e| bad(e.to_string()))?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(RETRY.config())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(RETRY.config())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}`; use a local path, file://, memory://, s3://, gs:// or az://"
                )));
            }
        };
        // Options stay out of messages and of the paths shown to users.
        let shown = url.split_once('?').map_or(url, |(u, _)| u);
        Ok(Self {
            inner,
            root,
            url: shown.to_string(),
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
