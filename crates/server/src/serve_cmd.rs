//! The `serve` command's arguments and runner, shared by the `tenure serve`
//! subcommand and the standalone `tenure-server` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{BadEventPolicy, ServeReport, Server, ServerConfig, ServerError};

/// Segment-compatible HTTP ingest into a Tenure store.
///
/// Apps and servers send events with Segment or RudderStack libraries pointed
/// at this address; each event is acknowledged only once it is fsynced to the
/// write-ahead log, and committed to the store by size or age. SIGTERM flushes
/// and commits before exiting.
///
/// Write keys come from `--write-key` (visible to `ps`: for development),
/// `--write-key-file` (one key per line; blank lines and `#` comments are
/// skipped) or the `TENURE_WRITE_KEYS` environment variable (keys separated
/// by commas or whitespace); all of them are accepted.
///
/// Example:
///
///   tenure serve --to ./store --wal ./wal --write-key-file /run/secrets/tenure-keys
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Store to commit events to (a path or an object-store URL).
    #[arg(long)]
    pub to: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Write-ahead log directory (local disk).
    #[arg(long)]
    pub wal: PathBuf,
    /// Accepted write key (repeatable; shown by `ps`: prefer
    /// --write-key-file or TENURE_WRITE_KEYS).
    #[arg(long = "write-key")]
    pub write_keys: Vec<String>,
    /// File of accepted write keys, one per line (repeatable).
    #[arg(long = "write-key-file")]
    pub write_key_files: Vec<PathBuf>,
    /// Project configuration (declared properties, Parquet limits).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Largest request body in bytes, after gzip.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Largest message in bytes.
    #[arg(long)]
    pub max_event_bytes: Option<usize>,
    /// Refuse a whole request when any of its messages is invalid.
    #[arg(long)]
    pub refuse_partial_batches: bool,
    /// Commit once this many WAL bytes are waiting.
    #[arg(long)]
    pub flush_bytes: Option<u64>,
    /// Commit at the latest this many milliseconds after acknowledging.
    #[arg(long)]
    pub flush_age_ms: Option<u64>,
    /// Uncommitted WAL bytes beyond which requests get 503.
    #[arg(long)]
    pub max_wal_bytes: Option<u64>,
    /// Queued bytes beyond which requests get 429.
    #[arg(long)]
    pub max_queue_bytes: Option<usize>,
    /// Requests in progress beyond which requests get 429.
    #[arg(long)]
    pub max_inflight: Option<usize>,
    /// Requests without a write key in their headers (read for a `writeKey` in
    /// the body) in progress beyond which such requests get 429.
    #[arg(long)]
    pub max_unauthenticated: Option<usize>,
    /// Dedup window for messageIds, in seconds.
    #[arg(long)]
    pub dedup_window_secs: Option<u64>,
    /// A web origin whose pages may send events from the browser, e.g.
    /// https://shop.example (repeatable; `*` for any). Preflight requests are
    /// answered and responses carry the CORS headers for it.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Keep the named segments of this file live (repeatable): per-user state
    /// updated from every acknowledged event, each segment evaluated on every
    /// change and when time moves a user across a threshold (`R >= 30d`
    /// entering on the 30th day, a `did ... within 24h` count losing an
    /// event). Membership at any instant equals `tenure segment --as-of` at
    /// it over the events received by then. Scores, means and predictions
    /// (population-relative) are refused. See queries/triggers.seg.
    #[arg(long = "segments", value_name = "FILE.seg")]
    pub segments: Vec<PathBuf>,
    /// Where live transitions go (repeatable): `ndjson:<path>` (appended,
    /// fsynced; each transition once, also after a crash), `webhook:<url>`
    /// (a POST per transition with an `Idempotency-Key` header, retried with
    /// backoff, dead letters after 6 failures; at least once) or `store`
    /// (`segment_entered` / `segment_exited` events of the store, so
    /// `tenure retention --start-event segment_entered` works). A transition
    /// is `{"id", "type", "segment", "user_id", "at", "features"}`.
    #[arg(long = "emit", value_name = "SINK")]
    pub emit: Vec<crate::SinkSpec>,
    /// Key that may read the profile API (repeatable): `GET /v1/users/{id}`
    /// and `GET /v1/segments/{name}?offset=&limit=`, sent as the HTTP Basic
    /// user like a write key (a write key does not read).
    #[arg(long = "read-key", value_name = "KEY")]
    pub read_keys: Vec<String>,
    /// With --segments: write the live state to `<wal>/live/checkpoint.bin`
    /// this often (and at shutdown), so that a restart reads it back and
    /// folds only the events committed after it instead of the whole store.
    /// Writing one holds the live state still for about 0.6-0.9 s per 10M
    /// users: requests acknowledged meanwhile get their answer when it is
    /// done. Sooner when the WAL segments kept for it grow past
    /// --max-wal-bytes. 0: at shutdown only.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub live_checkpoint_secs: f64,
}

/// The environment variable of accepted write keys.
pub const WRITE_KEYS_ENV: &str = "TENURE_WRITE_KEYS";

/// The write keys of the arguments, their files and `env` (the value of
/// [`WRITE_KEYS_ENV`]), in that order, without repeats.
pub fn write_keys(a: &ServeArgs, env: Option<&str>) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |k: &str| {
        if !k.is_empty() && !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    };
    for k in &a.write_keys {
        add(k.trim());
    }
    for f in &a.write_key_files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("--write-key-file {}: {e}", f.display()))?;
        let mut found = false;
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                add(line);
                found = true;
            }
        }
        if !found {
            return Err(format!(
                "--write-key-file {}: no key in it (one key per line)",
                f.display()
            ));
        }
    }
    for k in env.unwrap_or("").split([',', ' ', '\t', '\n']) {
        add(k.trim());
    }
    if keys.is_empty() {
        return Err(format!(
            "no write key: pass --write-key-file <file> (one key per line), set {WRITE_KEYS_ENV}, or --write-key <key>"
        ));
    }
    Ok(keys)
}

/// The server configuration these arguments describe.
pub fn config(a: ServeArgs) -> Result<ServerConfig, String> {
    let env = std::env::var(WRITE_KEYS_ENV).ok();
    let keys = write_keys(&a, env.as_deref())?;
    let mut c = ServerConfig::new(a.to, a.wal);
    c.listen = a.listen;
    c.write_keys = keys;
    c.cors_origins = a.cors_origins;
    c.segments = a.segments;
    c.emit = a.emit;
    c.read_keys = a.read_keys;
    c.live_checkpoint = Duration::try_from_secs_f64(a.live_checkpoint_secs)
        .map_err(|_| "--live-checkpoint-secs: a number of seconds, 0 or more".to_string())?;
    if let Some(p) = a.config {
        c.ingest = tenure_schema::Config::load(&p).map_err(|e| e.to_string())?;
    }
    if a.refuse_partial_batches {
        c.bad_events = BadEventPolicy::RefuseBatch;
    }
    c.max_body_bytes = a.max_body_bytes.unwrap_or(c.max_body_bytes);
    c.max_event_bytes = a.max_event_bytes.unwrap_or(c.max_event_bytes);
    c.flush_bytes = a.flush_bytes.unwrap_or(c.flush_bytes);
    if let Some(ms) = a.flush_age_ms {
        c.flush_age = Duration::from_millis(ms);
    }
    c.max_wal_bytes = a.max_wal_bytes.unwrap_or(c.max_wal_bytes);
    c.max_queue_bytes = a.max_queue_bytes.unwrap_or(c.max_queue_bytes);
    c.max_inflight_requests = a.max_inflight.unwrap_or(c.max_inflight_requests);
    c.max_unauthenticated_requests = a
        .max_unauthenticated
        .unwrap_or(c.max_unauthenticated_requests);
    if let Some(s) = a.dedup_window_secs {
        c.dedup_window = Duration::from_secs(s);
    }
    Ok(c)
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers now and returns a
/// future that resolves on either. Installed before the server says it
/// listens: a handler installed on the future's first poll left a window in
/// which a SIGTERM killed the process instead of stopping it (found by the
/// chaos test under load). Call it inside the runtime.
pub fn signalled() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(interrupt) => {}
        }
    }
}

/// Binds, prints the address, serves until SIGTERM or Ctrl-C, then flushes.
/// Must not be called from inside a tokio runtime.
pub fn run(args: ServeArgs) -> Result<ServeReport, ServerError> {
    let cfg = config(args).map_err(ServerError::Config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    rt.block_on(async {
        let stop = signalled();
        let server = Server::bind(cfg).await?;
        println!("listening on http://{}", server.local_addr());
        server.run(stop).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["tenure", "--to", "s", "--wal", "w"];
        argv.extend(extra);
        Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn write_keys_come_from_flags_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# production\nk-file-1\n\n  k-file-2  \nk-flag\n").unwrap();
        let a = args(&[
            "--write-key",
            "k-flag",
            "--write-key-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(
            write_keys(&a, Some("k-env-1, k-env-2\tk-file-1")).unwrap(),
            ["k-flag", "k-file-1", "k-file-2", "k-env-1", "k-env-2"]
        );
        assert_eq!(write_keys(&args(&[]), Some("only")).unwrap(), ["only"]);
    }

    #[test]
    fn no_key_a_missing_file_or_an_empty_file_is_an_error() {
        let none = write_keys(&args(&[]), None).unwrap_err();
        assert!(
            none.contains("--write-key-file") && none.contains(WRITE_KEYS_ENV),
            "{none}"
        );
        assert!(write_keys(&args(&[]), Some(" , ")).is_err());
        let missing =
            write_keys(&args(&["--write-key-file", "/nonexistent/keys"]), None).unwrap_err();
        assert!(missing.contains("/nonexistent/keys"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing yet\n\n").unwrap();
        let e =
            write_keys(&args(&["--write-key-file", empty.to_str().unwrap()]), None).unwrap_err();
        assert!(e.contains("no key"), "{e}");
    }
}
