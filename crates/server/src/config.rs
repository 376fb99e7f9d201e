//! Everything `tenure serve` can be told, with defaults sized for one machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::ServerError;

/// What to do with the valid events of a request that also holds invalid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadEventPolicy {
    /// Store the valid events; answer 400 listing the invalid ones (Segment's way:
    /// one bad message does not cost the rest of the batch).
    #[default]
    KeepGood,
    /// Store nothing from the request; answer 400 listing the invalid ones.
    RefuseBatch,
}

/// Options of the HTTP ingest service. Build with [`ServerConfig::new`] and
/// adjust fields; [`crate::serve`] validates them before binding.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The store events are committed to (a local path or an object-store URL).
    pub store_url: String,
    /// Address to listen on; port 0 picks a free port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Directory of the write-ahead log. Must be on local disk: an event is
    /// acknowledged only once it is fsynced here.
    pub wal_dir: PathBuf,
    /// Accepted write keys (HTTP Basic user name). At least one is required.
    pub write_keys: Vec<String>,
    /// Project configuration: declared properties and Parquet limits.
    pub ingest: tenure_schema::Config,
    /// Largest request body, after gzip decompression; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest single message; a request holding a larger one gets 413.
    pub max_event_bytes: usize,
    /// Valid events of a partly invalid request: kept or refused.
    pub bad_events: BadEventPolicy,
    /// Commit once this many WAL bytes are waiting (the WAL segment rolls then).
    pub flush_bytes: u64,
    /// Commit events at the latest this long after they were acknowledged.
    pub flush_age: Duration,
    /// Uncommitted WAL bytes on disk beyond which requests get 503 (the store is
    /// not keeping up, or is down).
    pub max_wal_bytes: u64,
    /// Bytes accepted but not yet written to the WAL beyond which requests get 429.
    pub max_queue_bytes: usize,
    /// Requests being read or processed at once; more get 429 without being read,
    /// which bounds the memory request bodies take.
    pub max_inflight_requests: usize,
    /// Requests without a write key in their headers (the key may be the body's
    /// `writeKey`) being read at once, counted apart from
    /// `max_inflight_requests`: connections that never authenticate cannot
    /// take the places of clients that do. More get 429 without being read.
    pub max_unauthenticated_requests: usize,
    /// A message whose `messageId` was seen this recently is dropped as a duplicate.
    pub dedup_window: Duration,
    /// At most this many `messageId`s are remembered (oldest forgotten first).
    pub dedup_max_entries: usize,
    /// A client must send its headers and body within this time (slow clients get
    /// 408 or are disconnected instead of holding memory).
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for open requests before closing them.
    pub shutdown_grace: Duration,
    /// Web origins (`https://shop.example`, or `*`) whose pages may send
    /// events from the browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Segment files whose named segments are kept live (`--segments`).
    pub segments: Vec<PathBuf>,
    /// Where live transitions go (`--emit`).
    pub emit: Vec<crate::SinkSpec>,
    /// Keys that may read the profile API (`--read-key`).
    pub read_keys: Vec<String>,
    /// The longest the live timer thread sleeps between looks.
    pub live_tick: Duration,
    /// How often the live state is checkpointed (zero: at shutdown only).
    pub live_checkpoint: Duration,
}

impl ServerConfig {
    /// Defaults for a store and a WAL directory: 127.0.0.1:8080, 1 MiB bodies,
    /// 32 KiB messages (Segment's limits are 500 KB and 32 KB), commits every
    /// 128 MiB or 5 minutes, 4 GiB of WAL and 64 MiB of queue before pushing back,
    /// a 24-hour / 2-million-id dedup window.
    pub fn new(store_url: impl Into<String>, wal_dir: impl Into<PathBuf>) -> Self {
        Self {
            store_url: store_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            wal_dir: wal_dir.into(),
            write_keys: Vec::new(),
            ingest: tenure_schema::Config::default(),
            max_body_bytes: 1 << 20,
            max_event_bytes: 32 << 10,
            bad_events: BadEventPolicy::KeepGood,
            flush_bytes: 128 << 20,
            flush_age: Duration::from_secs(300),
            max_wal_bytes: 4 << 30,
            max_queue_bytes: 64 << 20,
            max_inflight_requests: 256,
            max_unauthenticated_requests: 32,
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_max_entries: 2_000_000,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            cors_origins: Vec::new(),
            segments: Vec::new(),
            emit: Vec::new(),
            read_keys: Vec::new(),
            live_tick: Duration::from_millis(100),
            live_checkpoint: Duration::from_secs(600),
        }
    }

    /// Refuses settings that cannot work, before anything is opened.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: &str| Err(ServerError::Config(m.to_string()));
        if self.write_keys.is_empty() {
            return bad("no write keys configured; pass --write-key KEY (repeatable)");
        }
        if self
            .write_keys
            .iter()
            .any(|k| k.is_empty() || k.contains(':'))
        {
            return bad("a write key must be non-empty and must not contain ':'");
        }
        if self.segments.is_empty() && (!self.emit.is_empty() || !self.read_keys.is_empty()) {
            return bad(
                "--emit and --read-key need --segments <file.seg>: they serve live segments",
            );
        }
        if self
            .read_keys
            .iter()
            .any(|k| k.is_empty() || k.contains(':') || self.write_keys.contains(k))
        {
            return bad(
                "a read key must be non-empty, must not contain ':' and must differ from every write key",
            );
        }
        if self.max_event_bytes == 0 || self.max_body_bytes < self.max_event_bytes {
            return bad("max_body_bytes must be at least max_event_bytes, which must be positive");
        }
        if self.flush_bytes == 0 || self.flush_age.is_zero() {
            return bad("flush_bytes and flush_age must be positive");
        }
        if self.max_wal_bytes < self.flush_bytes {
            return bad("max_wal_bytes must be at least flush_bytes");
        }
        if self.max_inflight_requests == 0
            || self.max_unauthenticated_requests == 0
            || self.max_queue_bytes == 0
        {
            return bad(
                "max_inflight_requests, max_unauthenticated_requests and max_queue_bytes must be positive",
            );
        }
        Ok(())
    }
}
