//! The events table as DataFusion sees it: exactly the files of the newest
//! committed manifest version (never a directory listing), pruned by date
//! before anything is read. Every committed file must be readable: one that is
//! missing is an error naming it, never a smaller answer.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;
use tenure_schema::{Snapshot, event_schema, stored_schema};
use tenure_store::Store;

use crate::{EngineError, Result};

/// The URL a store's files are registered under in the sessions Tenure
/// opens (a local directory, a memory store and a bucket prefix alike):
/// `tenure://s` and a digest (FNV-1a) of the store's URL as given, so every
/// session and process that opens the same store agrees on it, a plan
/// decoded in a session of another store fails instead of reading it, and
/// one session can hold several stores.
pub(crate) fn store_url(url: &str) -> String {
    let digest = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("tenure://s{digest:016x}")
}

/// Options for opening the events table.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct OpenOptions {
    /// Worker threads (DataFusion target partitions); 0 means the number of cores.
    pub threads: usize,
    /// Only events at or after this instant (UTC µs).
    pub from: Option<i64>,
    /// Only events before this instant (UTC µs).
    pub to: Option<i64>,
    /// Run the session's plans elsewhere (a cluster; see [`crate::remote`]).
    #[serde(skip)]
    pub remote: Option<crate::remote::Remote>,
}

/// A stored file of the table.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its path in the store.
    pub path: object_store::path::Path,
    /// Its size in bytes (from the manifest).
    pub size: u64,
    /// Its earliest event time (UTC µs, from the manifest).
    pub min_ts: i64,
    /// How many distinct event names it holds (from the manifest; `None`
    /// when not recorded): with at most [`Part::SMALL_DICTIONARY`], its
    /// `event` column is read with one-byte dictionary keys.
    pub event_names: Option<u32>,
}

impl Part {
    /// The most distinct values a dictionary with one-byte keys can hold
    /// (parquet refuses to read a larger one with `UInt8` keys).
    pub const SMALL_DICTIONARY: u32 = u8::MAX as u32;

    /// Is this file's `event` dictionary small enough for one-byte keys?
    pub fn small_events(&self) -> bool {
        self.event_names
            .is_some_and(|n| n <= Self::SMALL_DICTIONARY)
    }
}

/// An opened store: its committed snapshot and a DataFusion session with the
/// table `events` registered.
#[derive(Clone)]
pub struct Events {
    /// The store.
    pub store: Store,
    /// The committed snapshot read.
    pub snapshot: Snapshot,
    /// A session with `events` registered.
    pub ctx: SessionContext,
    /// Smallest and largest `ts` of the files in range (UTC µs), if any.
    pub ts_range: Option<(i64, i64)>,
    /// Files registered (after date pruning).
    pub files: usize,
    /// The same files, for passes that read them directly; `None` when
    /// `events` is a view over them (see `abtest::Exposures::restrict`), which
    /// such passes must then go through.
    pub parts: Option<Vec<Part>>,
    /// The range asked for.
    pub options: OpenOptions,
    /// Per user key, the earliest event time seen (UTC µs): events before it
    /// do not exist for the analyses (an A/B readout's exposure; see
    /// `abtest::Exposures::restrict`). Folds apply it while scanning.
    pub since: Option<std::sync::Arc<Vec<i64>>>,
    /// Per user key, the exclusive end of the events that exist for the
    /// analyses (an A/B readout's pre-exposure window for CUPED); folds apply
    /// it with [`Events::since`].
    pub before: Option<std::sync::Arc<Vec<i64>>>,
    /// Identity merges not folded into the files (read under virtual keys).
    pub identity: Option<std::sync::Arc<crate::identity::Identity>>,
    /// Each of `parts`' footer and page index, read when the store is opened
    /// (the folds' scans use them to split users into ranges of equal rows,
    /// and do not read them again).
    pub(crate) footers: Footers,
}

/// Footers (with page indexes) of files, each read at most once.
pub(crate) type Footers =
    std::sync::Arc<Vec<tokio::sync::OnceCell<parquet::arrow::arrow_reader::ArrowReaderMetadata>>>;

/// Reads the footers of `parts`: one task per thread (decoding a footer and
/// its page index is CPU work), each reading 8 files at a time. A file that
/// cannot be read is left for its reader to report, naming it.
async fn read_footers(
    store: &Arc<dyn object_store::ObjectStore>,
    parts: &[Part],
    local_dir: Option<&std::path::Path>,
    threads: usize,
) -> Footers {
    use futures::StreamExt;
    let footers: Footers =
        std::sync::Arc::new((0..parts.len()).map(|_| Default::default()).collect());
    let per = parts.len().div_ceil(threads.max(1)).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (c, chunk) in parts.chunks(per).enumerate() {
        let (store, footers, chunk) = (store.clone(), footers.clone(), chunk.to_vec());
        let local = local_dir.map(std::path::Path::to_path_buf);
        tasks.spawn(async move {
            let (store, footers, local) = (&store, &footers, local.as_deref());
            futures::stream::iter(chunk.iter().enumerate())
                .for_each_concurrent(8, |(j, p)| async move {
                    let _ = footers[c * per + j]
                        .get_or_try_init(|| crate::stored::read_footer(store, p, local))
                        .await;
                })
                .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    footers
}

/// Threads to use: the option, else `TENURE_THREADS`, else the number of cores.
pub fn thread_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::env::var("TENURE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}

impl Events {
    /// Opens the store at `url` and registers its committed files as `events`.
    pub async fn open(url: &str, options: OpenOptions) -> Result<Self> {
        // Reading never creates a store: a misspelt directory is an error.
        let store = Store::open_existing(url)?;
        let snapshot = tenure_store::load_latest(&store).await?;
        Self::with_snapshot(store, snapshot, options, url).await
    }

    /// Opens the store at `url` at a snapshot read before (a plan's, decoded
    /// where it runs): the same files whatever was committed since. A file
    /// compaction retired since is read where it was retired to.
    pub async fn open_snapshot(
        url: &str,
        snapshot: Snapshot,
        options: OpenOptions,
    ) -> Result<Self> {
        let store = Store::open_existing(url)?;
        Self::with_snapshot(store, snapshot, options, url).await
    }

    async fn with_snapshot(
        store: Store,
        snapshot: Snapshot,
        options: OpenOptions,
        url: &str,
    ) -> Result<Self> {
        // Every committed file is looked for now (a missing one fails here,
        // naming it), and every read finds it wherever it is then: at its
        // path, staged, or retired by a concurrent compaction.
        let store = tenure_store::committed_reader(&store, &snapshot).await?;
        let threads = thread_count(options.threads);
        // DataFusion's own settings may be tuned from the environment
        // (`DATAFUSION_EXECUTION_BATCH_SIZE=...`); ours override them.
        let mut config = SessionConfig::from_env()?
            .with_target_partitions(threads)
            .with_information_schema(false);
        // Statistics would cost a footer read per file at registration; the
        // manifest already knows rows and time ranges.
        config.options_mut().execution.collect_statistics = false;
        // Parquet filter pushdown (late materialization) was measured on the
        // purchases-only scan and the funnel: no gain in CPU time, so it stays off.
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(crate::json::prop_udf().as_ref().clone());
        // Files are addressed under a private scheme mapped to this store, so a
        // local directory, a memory store and a bucket prefix all look alike.
        // On a cluster the store travels by a URL every process resolves
        // alike, and its private URL is derived from that one on every side.
        // (Plans name the store by `store_url(&store.url)`; on a cluster
        // that URL is the travelling one, options included.)
        let mut store = store;
        let travels = match &options.remote {
            Some(_) => Some(crate::remote::travelling_url(&store, url)?),
            None => None,
        };
        if let Some(t) = &travels {
            store.url = t.clone();
        }
        let registered = store_url(&store.url);
        let base = url::Url::parse(&registered).expect("a valid URL");
        ctx.register_object_store(&base, store.inner.clone());
        let mut urls = Vec::new();
        let mut parts = Vec::new();
        let mut range: Option<(i64, i64)> = None;
        for f in &snapshot.files {
            if options.to.is_some_and(|t| f.min_ts >= t)
                || options.from.is_some_and(|t| f.max_ts < t)
            {
                continue;
            }
            // Addressed by its committed path wherever it is (see above).
            let full = store.path(&f.path);
            urls.push(ListingTableUrl::parse(format!("{registered}/{full}"))?);
            parts.push(Part {
                path: full,
                size: f.bytes,
                min_ts: f.min_ts,
                event_names: f.events.as_ref().and_then(|e| u32::try_from(e.len()).ok()),
            });
            range = Some(match range {
                None => (f.min_ts, f.max_ts),
                Some((a, b)) => (a.min(f.min_ts), b.max(f.max_ts)),
            });
        }
        if let (Some((a, b)), Some(from)) = (range, options.from) {
            range = Some((a.max(from), b));
        }
        if let (Some((a, b)), Some(to)) = (range, options.to) {
            range = Some((a, b.min(to - 1)));
        }
        let schema = stored_schema(&snapshot.properties);
        let files = urls.len();
        if urls.is_empty() {
            ctx.register_batch(
                "events",
                datafusion::arrow::record_batch::RecordBatch::new_empty(schema),
            )?;
        } else {
            let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(opts)
                .with_schema(schema);
            ctx.register_table("events", Arc::new(ListingTable::try_new(config)?))?;
        }
        let ctx = match &options.remote {
            None => ctx,
            Some(remote) => {
                // The store travels by its URL; the plans' files name it by
                // its private one (see `crate::remote`).
                let travels = travels.as_deref().unwrap_or(&store.url);
                let mut state = ctx.state();
                let config = crate::remote::with_tenure_options(state.config().clone());
                *state.config_mut() = config;
                state
                    .config_mut()
                    .options_mut()
                    .set("tenure.store", travels)?;
                SessionContext::new_with_state((remote.0)(state)?)
            }
        };
        // The persons are loaded while the footers are read: both before
        // any fold can start.
        let started = std::time::Instant::now();
        let (footers, identity) = tokio::join!(
            read_footers(&store.inner, &parts, store.local_dir.as_deref(), threads),
            crate::identity::Identity::load(&store, &snapshot)
        );
        let identity = identity?;
        if let Some(id) = &identity {
            tracing::debug!(
                "identity: {} persons read under virtual keys, {} keys absorbed (with the footers, {:?})",
                id.person.len(),
                id.gone(),
                started.elapsed()
            );
        }
        Ok(Self {
            store,
            snapshot,
            ctx,
            ts_range: range,
            files,
            parts: Some(parts),
            options,
            since: None,
            before: None,
            identity,
            footers,
        })
    }

    /// The `events` table limited to the requested range (`--from`/`--to`):
    /// every per-user pass starts from this.
    pub async fn in_range(&self) -> Result<datafusion::dataframe::DataFrame> {
        use datafusion::logical_expr::{col, lit};
        let ts = |t: i64| {
            lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
                Some(t),
                Some("UTC".into()),
            ))
        };
        if self.since.is_some() || self.before.is_some() {
            return Err(crate::EngineError::Internal(
                "events restricted to an experiment's exposures are read through folds, not a DataFusion plan".into(),
            ));
        }
        let mut df = self.ctx.table("events").await?;
        if let Some(from) = self.options.from {
            df = df.filter(col("ts").gt_eq(ts(from)))?;
        }
        if let Some(to) = self.options.to {
            df = df.filter(col("ts").lt(ts(to)))?;
        }
        Ok(df)
    }

    /// Properties declared in the store (typed columns).
    pub fn has_column(&self, name: &str) -> bool {
        event_schema(&self.snapshot.properties)
            .index_of(name)
            .is_ok()
    }

    /// Number of user keys the folds see: the users dictionary's, and one
    /// more per merged person read under a virtual key (see
    /// [`crate::identity`]).
    pub fn users(&self) -> usize {
        match &self.identity {
            Some(i) => i.key_space() as usize,
            None => self.snapshot.users.count as usize,
        }
    }

    /// Number of people: users, with every merged person counted once.
    pub fn persons(&self) -> usize {
        match &self.identity {
            Some(i) => self.users() - i.gone(),
            None => self.users(),
        }
    }

    /// An error for an empty selection.
    pub fn empty_error(&self) -> EngineError {
        EngineError::BadRequest(format!(
            "no events in {}{}",
            self.store.url,
            if self.options.from.is_some() || self.options.to.is_some() {
                " in the requested range"
            } else {
                ""
            }
        ))
    }
}
