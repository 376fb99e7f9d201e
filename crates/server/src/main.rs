//! `tenure-server`: the HTTP ingest service as a standalone process (the same
//! library `tenure serve` calls). Prints `listening on http://ADDR` once bound;
//! SIGTERM or Ctrl-C stop it gracefully (flush and commit).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tenure_server::{BadEventPolicy, Server, ServerConfig};

/// Segment-compatible HTTP ingest into a Tenure store.
///
/// Example: tenure-server --to ./store --wal ./wal --write-key dev-key
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Store to commit events to (a path or an object-store URL).
    #[arg(long)]
    to: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Write-ahead log directory (local disk).
    #[arg(long)]
    wal: PathBuf,
    /// Accepted write key (repeatable).
    #[arg(long = "write-key", required = true)]
    write_keys: Vec<String>,
    /// Project configuration (declared properties, Parquet limits).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Largest request body in bytes, after gzip.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Largest message in bytes.
    #[arg(long)]
    max_event_bytes: Option<usize>,
    /// Refuse a whole request when any of its messages is invalid.
    #[arg(long)]
    refuse_partial_batches: bool,
    /// Commit once this many WAL bytes are waiting.
    #[arg(long)]
    flush_bytes: Option<u64>,
    /// Commit at the latest this many milliseconds after acknowledging.
    #[arg(long)]
    flush_age_ms: Option<u64>,
    /// Uncommitted WAL bytes beyond which requests get 503.
    #[arg(long)]
    max_wal_bytes: Option<u64>,
    /// Queued bytes beyond which requests get 429.
    #[arg(long)]
    max_queue_bytes: Option<usize>,
    /// Requests in progress beyond which requests get 429.
    #[arg(long)]
    max_inflight: Option<usize>,
    /// Dedup window for messageIds, in seconds.
    #[arg(long)]
    dedup_window_secs: Option<u64>,
}

fn config(a: Args) -> Result<ServerConfig, String> {
    let mut c = ServerConfig::new(a.to, a.wal);
    c.listen = a.listen;
    c.write_keys = a.write_keys;
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
    if let Some(s) = a.dedup_window_secs {
        c.dedup_window = Duration::from_secs(s);
    }
    Ok(c)
}

async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> ExitCode {
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tenure-server: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let server = Server::bind(cfg).await?;
        println!("listening on http://{}", server.local_addr());
        server.run(signalled()).await
    });
    match result {
        Ok(r) => {
            eprintln!(
                "tenure-server: stopped; received {}, acknowledged {}, rejected {}, duplicates {}, committed {}",
                r.received, r.acked, r.rejected, r.duplicates, r.flushed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tenure-server: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
