//! Tenure's HTTP ingest service: a Segment-compatible tracking API
//! (`POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`, ...) that
//! acknowledges an event only once it is fsynced to a local write-ahead log,
//! and commits the log to the store through the normal ingest path.
//!
//! The moving parts, each in its own module:
//! - `http`: routing, write keys, body limits, gzip, responses;
//! - `message`: Segment payloads, clock-skew correction, validation;
//! - `wal`: records, segments, recovery, and the writer thread that groups the
//!   fsyncs of concurrent requests;
//! - `flush`: the thread that commits closed segments (one `Ingest`
//!   transaction each time) and deletes them;
//! - `dedup`: the `messageId` window, kept across restarts.
//!
//! What an acknowledgement (200) means: every event of the request is in the
//! WAL, fsynced, in records the reader accepts; a duplicate `messageId` is
//! acknowledged only once its first copy is. Failures answer 503 (or 507 when
//! the WAL's disk is full) and leave nothing behind that a retry would double.
//! A WAL segment is deleted only after a commit that read it through to its
//! last sequence number. `/health` answers 503 while the WAL cannot be written
//! or commits keep failing.
//!
//! The CLI calls [`serve`] (or [`Server::bind`] then [`Server::run`] when it
//! needs the bound address first).
#![deny(missing_docs)]

mod checkpoint;
mod config;
mod dedup;
mod error;
mod flush;
mod http;
mod live;
pub mod logs;
mod message;
mod metrics;
mod posthog;
pub mod serve_cmd;
mod wal;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tenure_ingest::IngestOptions;
use tenure_ingest::validate::PropertyNames;
use tenure_schema::DeclaredProperty;
use tokio::net::TcpListener;

pub use config::{BadEventPolicy, ServerConfig};
pub use error::ServerError;
pub use live::SinkSpec;

use dedup::{Dedup, DedupFiles};
use flush::{FlushEnd, Flusher};
use metrics::Metrics;
use wal::{Limits, Wal};

/// State shared by every request.
pub(crate) struct App {
    pub cfg: ServerConfig,
    pub keys: Vec<Vec<u8>>,
    pub names: PropertyNames,
    pub declared: Vec<DeclaredProperty>,
    pub wal: Arc<Wal>,
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Places for requests read before their write key is known (no key in
    /// their headers), apart from `inflight`.
    pub unauthenticated: Arc<tokio::sync::Semaphore>,
    /// Live segments, when `--segments` is given.
    pub live: Option<Arc<live::LiveApp>>,
}

/// What a server did, reported when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Messages received with a valid write key.
    pub received: u64,
    /// Messages acknowledged (durable in the WAL; duplicates included).
    pub acked: u64,
    /// Messages rejected as invalid.
    pub rejected: u64,
    /// Messages dropped as duplicates.
    pub duplicates: u64,
    /// Events committed to the store (recovered ones included).
    pub flushed: u64,
    /// Notes from start-up recovery (torn tails dropped, segments replayed).
    pub recovery: Vec<String>,
}

/// A server bound to its address, recovered, not yet serving.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    writer: JoinHandle<()>,
    flusher: JoinHandle<FlushEnd>,
    recovery: Vec<String>,
    /// The live timer and sink threads.
    live_threads: Vec<JoinHandle<()>>,
    // Held for the server's life: a second server on the same WAL would corrupt it.
    _lock: std::fs::File,
}

/// Binds, recovers, serves until `shutdown` resolves, then flushes and commits
/// everything acknowledged. The whole life of `tenure serve`.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeReport, ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// Builds the live state (plan, store history, uncommitted WAL events),
/// settles it against the transition journal, opens the sinks and starts the
/// timer and sink threads.
async fn start_live(
    config: &ServerConfig,
    store: &tenure_ingest::Store,
    base: &tenure_schema::Snapshot,
    declared: &[DeclaredProperty],
    recovered: &[wal::segment::Segment],
    wal: &Arc<Wal>,
    max_record: usize,
) -> Result<(Arc<live::LiveApp>, Vec<JoinHandle<()>>, String), ServerError> {
    let cfg_err = |m: String| ServerError::Config(m);
    let mut files = Vec::new();
    for p in &config.segments {
        let text = std::fs::read_to_string(p)
            .map_err(|e| cfg_err(format!("cannot read segment file {}: {e}", p.display())))?;
        files.push((p.display().to_string(), text));
    }
    let mut lc = tenure_live::LiveConfig::default();
    for d in declared {
        use tenure_schema::PropertyType as T;
        let kind = match d.ty {
            T::String => tenure_live::PropKind::Text,
            T::Int => tenure_live::PropKind::Exact(0),
            T::Float => tenure_live::PropKind::Float,
            T::Bool => tenure_live::PropKind::Bool,
            T::Timestamp => tenure_live::PropKind::Time,
            T::Decimal => tenure_live::PropKind::Exact(2),
        };
        lc.typed.insert(d.name.clone(), kind);
    }
    let plan = tenure_live::Plan::new(&files, lc).map_err(cfg_err)?;
    let read_keys = config
        .read_keys
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let dir = config.wal_dir.join("live");
    // Opened first: a torn last line is cut before the journal is read.
    let journal = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || live::Sinks::open(&dir))
            .await
            .expect("journal task")
            .map_err(cfg_err)?
    };
    let first_start = !live::Sinks::has_baseline(&dir);
    let names: Vec<String> = plan.segments().iter().map(|s| s.name.clone()).collect();
    let fingerprint = checkpoint::fingerprint(&files, declared);
    let now = live::now_micros();
    let rt = tokio::runtime::Handle::current();
    // The last checkpoint, and what it lacks of the store (not at a first
    // start: its membership would continue a journal with no baseline).
    let restored = if first_start {
        Ok(None)
    } else {
        let (dir, plan, base) = (dir.clone(), plan.clone(), base.clone());
        let kept = checkpoint::retained_dir(&config.wal_dir);
        let recovered = recovered.to_vec();
        tokio::task::spawn_blocking(move || {
            let Some(r) = checkpoint::read(&dir, &fingerprint, plan)? else {
                return Ok(None);
            };
            let journal = std::fs::metadata(dir.join("journal.ndjson")).map_or(0, |m| m.len());
            if journal < r.journal_offset {
                return Err(format!(
                    "the transition journal is {journal} bytes, shorter than the {} the checkpoint recorded",
                    r.journal_offset
                ));
            }
            let mut candidates = checkpoint::retained(&kept)?;
            candidates.extend(recovered);
            let d = checkpoint::delta(&base, &r, &candidates)?;
            Ok(Some((r, d)))
        })
        .await
        .expect("checkpoint task")
    };
    let app = Arc::new(live::LiveApp::new(
        tenure_live::Live::new(plan.clone()),
        read_keys,
        declared,
        wal.writer(),
    ));
    let mut how: String;
    // With a checkpoint: the coverage it records (records it holds) and its
    // journal offset.
    let mut from_checkpoint: Option<(checkpoint::Coverage, u64)> = None;
    match restored {
        Ok(Some((r, delta))) => {
            let checkpoint::Restored {
                mut live,
                coverage,
                journal_offset,
                written_at,
                ..
            } = r;
            let (store2, declared2, files) = (store.clone(), declared.to_vec(), delta.files);
            let rt2 = rt.clone();
            let n_files = files.len();
            let loaded = tokio::task::spawn_blocking(move || {
                live::load_store(&store2, &files, &mut live, &declared2, now, &rt2)
                    .map(|read| (live, read))
            })
            .await
            .expect("live load task")
            .and_then(|(live, read)| {
                *app.live.lock().expect("live state") = live;
                live::load_wal(
                    &app,
                    &delta.segments,
                    None,
                    Some(&coverage),
                    declared,
                    &config.ingest.ingest,
                    max_record,
                    now,
                )
                .map(|_| read)
            });
            match loaded {
                Ok(read) => {
                    how = format!(
                        "from the checkpoint of {} plus {read} event(s) of {n_files} store file(s) and {} committed WAL segment(s) since",
                        tenure_live::rfc3339(written_at),
                        delta.segments.len()
                    );
                    from_checkpoint = Some((coverage, journal_offset));
                }
                Err(e) => how = format!("checkpoint not used (reading what it lacks: {e}): "),
            }
        }
        Ok(None) => how = "no checkpoint yet: ".to_string(),
        Err(why) => how = format!("checkpoint not used ({why}): "),
    }
    if from_checkpoint.is_none() {
        let mut state = tenure_live::Live::new(plan);
        state.reserve(base.users.count as usize);
        let (store, base2, declared2) = (store.clone(), base.clone(), declared.to_vec());
        let rt2 = rt.clone();
        let (state, read) = tokio::task::spawn_blocking(move || {
            live::load_store(&store, &base2.files, &mut state, &declared2, now, &rt2)
                .map(|read| (state, read))
        })
        .await
        .expect("live load task")
        .map_err(|e| cfg_err(format!("live segments: cannot read the store: {e}")))?;
        how.push_str(&format!("folded {read} event(s) of the store"));
        *app.live.lock().expect("live state") = state;
    }
    live::load_wal(
        &app,
        recovered,
        Some(base),
        from_checkpoint.as_ref().map(|c| &c.0),
        declared,
        &config.ingest.ingest,
        max_record,
        now,
    )
    .map_err(|e| cfg_err(format!("live segments: cannot read the WAL: {e}")))?;
    {
        // The new state holds every record of the segments not committed
        // yet (those committed are in the store files it folded).
        let mut c = app.coverage.lock().expect("coverage");
        for seg in recovered {
            if !base.sources.iter().any(|s| s.hash == seg.source_hash()) {
                c.add(seg.writer, seg.first_seq, seg.last_seq);
            }
        }
    }
    // The membership sinks last heard of: what the checkpoint recorded and
    // the journal after it; or the baseline and the whole journal. The first
    // start takes the current membership as known (recorded as the baseline
    // the journal continues): no backlog of history's transitions. Later
    // starts emit what changed while the server was down.
    let mut out = Vec::new();
    {
        let journal_from = from_checkpoint.as_ref().map(|k| k.1);
        let known = if first_start {
            HashMap::new()
        } else {
            let (dir, names) = (dir.clone(), names.clone());
            tokio::task::spawn_blocking(move || {
                live::Sinks::journal_membership(&dir, &names, journal_from)
            })
            .await
            .expect("membership task")
            .map_err(cfg_err)?
        };
        let mut state = app.live.lock().expect("live state");
        if from_checkpoint.is_some() {
            for (user, (mask, bits)) in &known {
                for i in 0..names.len() {
                    if mask >> i & 1 == 1 {
                        state.set_known(user, i, bits >> i & 1 == 1);
                    }
                }
            }
            state.settle(now, tenure_live::Before::Kept, &mut out);
        } else if first_start {
            state.settle(now, tenure_live::Before::Nothing, &mut out);
            live::Sinks::write_baseline(&dir, &state).map_err(cfg_err)?;
        } else {
            let before = |user: &str, i: usize| known.get(user).is_some_and(|b| b.1 >> i & 1 == 1);
            state.settle(now, tenure_live::Before::Journal(&before), &mut out);
        }
    }
    let refolded = from_checkpoint.is_none();
    let _ = app.checkpoints.set(checkpoint::Context {
        dir: dir.clone(),
        fingerprint,
        files: base.files.iter().map(|f| f.path.clone()).collect(),
        sources: base.sources.iter().map(|s| s.hash.clone()).collect(),
        every: (!config.live_checkpoint.is_zero()).then_some(config.live_checkpoint),
        kept_limit: config.max_wal_bytes,
    });
    let shared = journal.shared();
    let mut threads = Vec::new();
    for spec in &config.emit {
        let sink: Box<dyn live::Sink> = match spec {
            SinkSpec::Ndjson(p) => Box::new(live::NdjsonSink::open(p).map_err(cfg_err)?),
            SinkSpec::Store => Box::new(live::StoreSink::new(wal.clone(), rt.clone(), app.clone())),
            SinkSpec::Webhook(u) => Box::new(
                live::WebhookSink::new(u, &dir, rt.clone(), shared.clone()).map_err(cfg_err)?,
            ),
        };
        threads.push(journal.start_sink(sink).map_err(cfg_err)?);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    app.connect(tx, shared);
    app.locked(|_, o| *o = out);
    threads.push(
        std::thread::Builder::new()
            .name("tenure-live-journal".into())
            .spawn(move || live::run_journal(journal, rx))
            .map_err(|e| cfg_err(e.to_string()))?,
    );
    let timer_thread = {
        let app = app.clone();
        let tick = config.live_tick;
        std::thread::Builder::new()
            .name("tenure-live-timers".into())
            .spawn(move || live::run_timers(app, tick))
            .map_err(|e| cfg_err(e.to_string()))?
    };
    let checkpoint_thread = {
        let app = app.clone();
        std::thread::Builder::new()
            .name("tenure-live-checkpoint".into())
            .spawn(move || live::run_checkpoints(app, refolded))
            .map_err(|e| cfg_err(e.to_string()))?
    };
    threads.push(checkpoint_thread);
    threads.push(timer_thread);
    Ok((app, threads, how))
}

fn wal_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Wal {
        path: path.display().to_string(),
        source,
    }
}

impl Server {
    /// Checks the configuration and the store, takes the WAL directory's lock,
    /// recovers what an earlier run left in the WAL (queued for commit right
    /// away), and binds the listen address.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let store = tenure_ingest::Store::open(&config.store_url)?;
        let base = tenure_store::load_latest(&store).await?;
        let declared = if base.version == 0 {
            config.ingest.properties.clone()
        } else {
            if !config.ingest.properties.is_empty() && config.ingest.properties != base.properties {
                return Err(ServerError::Config(format!(
                    "the store {} declares other properties than the config; a store keeps the properties of its first ingest",
                    store.url
                )));
            }
            base.properties.clone()
        };
        let dir = config.wal_dir.clone();
        std::fs::create_dir_all(&dir).map_err(wal_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(wal_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(ServerError::Config(format!(
                "the WAL directory {} is in use by another server",
                dir.display()
            )));
        }
        let max_record = wal::record::max_record_len(config.max_body_bytes, config.max_event_bytes);
        let now = chrono::Utc::now().timestamp();
        let window = config.dedup_window.as_secs() as i64;
        let max_ids = config.dedup_max_entries;
        let (recovered, dedup, dedup_files) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let recovered = wal::segment::recover(&dir, max_record).map_err(wal_err(&dir))?;
                let mut dedup = Dedup::new(window, max_ids);
                let ids_dir = dir.join("dedup");
                let files = DedupFiles::load(ids_dir.clone(), window, max_ids, now, &mut dedup)
                    .map_err(wal_err(&ids_dir))?;
                Ok::<_, ServerError>((recovered, dedup, files))
            })
            .await
            .expect("recovery task")?
        };
        let mut notes = recovered.notes.clone();
        if !recovered.segments.is_empty() {
            notes.push(format!(
                "{} WAL segment(s) with {} event(s) from an earlier run queued for commit",
                recovered.segments.len(),
                recovered.events
            ));
        }
        for n in &notes {
            eprintln!("tenure-server: recovery: {n}");
        }
        let metrics = Arc::new(Metrics::new());
        let limits = Limits {
            flush_bytes: config.flush_bytes,
            flush_age: config.flush_age,
            max_wal_bytes: config.max_wal_bytes,
            max_queue_bytes: config.max_queue_bytes,
        };
        let recovered_bytes = recovered.segments.iter().map(|s| s.bytes).sum();
        let wal = Arc::new(Wal::new(
            dir.clone(),
            limits,
            max_record,
            dedup,
            recovered_bytes,
            metrics.clone(),
        ));
        wal.seed_dedup(&recovered.ids, now);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;

        let recovered_segments: Vec<wal::segment::Segment> = if config.segments.is_empty() {
            Vec::new()
        } else {
            recovered.segments.clone()
        };
        let store_for_live = store.clone();
        let (seg_tx, seg_rx) = std::sync::mpsc::channel();
        // Recovered segments go to the flusher once the live state has read
        // them: committed, they are moved away (or deleted).
        let for_flusher = seg_tx.clone();
        let flusher = Flusher {
            store,
            opts: IngestOptions {
                config: config.ingest.clone(),
                max_bad: None,
                format: None,
            },
            wal: wal.clone(),
            metrics: metrics.clone(),
            dedup_files,
            group_bytes: config.flush_bytes,
            max_record,
            // Kept for checkpoints only if they are taken while serving.
            retain: (!config.segments.is_empty() && !config.live_checkpoint.is_zero())
                .then(|| checkpoint::retained_dir(&config.wal_dir)),
        };
        let flusher = std::thread::Builder::new()
            .name("tenure-flush".into())
            .spawn(move || flusher.run(seg_rx))
            .map_err(wal_err(&dir))?;
        let writer = {
            let wal = wal.clone();
            std::thread::Builder::new()
                .name("tenure-wal".into())
                .spawn(move || wal.run_writer(seg_tx))
                .map_err(wal_err(&dir))?
        };
        let (live, live_threads) = if config.segments.is_empty() {
            (None, Vec::new())
        } else {
            let started = std::time::Instant::now();
            let app = start_live(
                &config,
                &store_for_live,
                &base,
                &declared,
                &recovered_segments,
                &wal,
                max_record,
            )
            .await?;
            let note = format!(
                "live segments: {} user(s) rebuilt in {:.1} s, {}",
                app.0.live.lock().expect("live state").users(),
                started.elapsed().as_secs_f64(),
                app.2
            );
            eprintln!("tenure-server: {note}");
            notes.push(note);
            (Some(app.0), app.1)
        };
        for s in recovered.segments {
            for_flusher.send(s).expect("the flusher runs");
        }
        drop(for_flusher);
        let app = Arc::new(App {
            live,
            keys: config
                .write_keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            names: PropertyNames::from_declared(&declared),
            declared,
            inflight: Arc::new(tokio::sync::Semaphore::new(config.max_inflight_requests)),
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(
                config.max_unauthenticated_requests,
            )),
            wal,
            metrics,
            cfg: config,
        });
        Ok(Self {
            listener,
            app,
            writer,
            flusher,
            recovery: notes,
            live_threads,
            _lock: lock,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets open
    /// requests finish (up to the configured grace), writes and fsyncs what is
    /// queued, and commits every WAL segment before returning.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeReport, ServerError> {
        let Self {
            listener,
            app,
            writer,
            flusher,
            recovery,
            live_threads,
            _lock,
        } = self;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let stream = match conn {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, do not spin.
                            eprintln!("tenure-server: accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let timeout = app.cfg.request_timeout;
                    let app = app.clone();
                    let svc = service_fn(move |req| http::handle(app.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(timeout)
                        .serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(app.cfg.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!(
                "tenure-server: some requests were still open after the shutdown grace period"
            );
        }
        if let Some(live) = &app.live {
            // Timers stop; the sinks deliver what was sent (the store sink
            // through the WAL, so before it closes).
            live.close();
            let live = live.clone();
            tokio::task::spawn_blocking(move || {
                // The timer thread (last) first: what it evaluated last is
                // sent before the journal's channel closes.
                let mut threads = live_threads;
                for _timer_then_checkpoints in 0..2 {
                    if let Some(t) = threads.pop() {
                        let _ = t.join();
                    }
                }
                // The last checkpoint: the next start reads it back instead
                // of folding the store. (A journal that cannot write gives
                // up now rather than hold the mark.)
                live.stopping();
                live::checkpoint_now(&live);
                live.finish();
                for t in threads {
                    let _ = t.join();
                }
            })
            .await
            .expect("join task");
        }
        app.wal.close();
        let end = tokio::task::spawn_blocking(move || {
            let _ = writer.join();
            flusher.join().unwrap_or_else(|_| FlushEnd {
                left: 1,
                last_error: Some("the flusher panicked".into()),
            })
        })
        .await
        .expect("join task");
        let m = &app.metrics;
        let report = ServeReport {
            received: m.received.load(Relaxed),
            acked: m.acked.load(Relaxed),
            rejected: m.rejected.load(Relaxed),
            duplicates: m.duplicates.load(Relaxed),
            flushed: m.flushed.load(Relaxed),
            recovery,
        };
        if end.left > 0 {
            return Err(ServerError::Uncommitted {
                segments: end.left,
                message: end.last_error.unwrap_or_default(),
            });
        }
        Ok(report)
    }
}
