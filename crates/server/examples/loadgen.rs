//! A bounded load generator for the HTTP ingest service. Loopback only; stops
//! by itself after `--seconds` or `--batches`, whichever comes first.
//!
//! Without `--url` it starts an in-process server on 127.0.0.1 (temp store,
//! WAL under `--dir`, fsync before every acknowledgement as always); with
//! `--url` it loads a running `tenure-server` (e.g. the release binary), and
//! with `--server-pid` it also reports that process's resident memory each
//! second and its peak.
//!
//! Each of `--clients` connections sends Segment `/v1/batch` requests of
//! `--per-batch` track messages (unique messageIds per run) back to back, and
//! the generator prints acknowledged events/s, the ack latency percentiles of
//! the batches answered 200, and how many were pushed back with 429/503.
//!
//! ```text
//! cargo build --release -p tenure-server --examples --bins
//! target/release/examples/loadgen --seconds 10 --clients 32 --per-batch 100
//! target/release/examples/loadgen --url http://127.0.0.1:8080 --key K --server-pid PID
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use tenure_server::{Server, ServerConfig};

#[derive(Parser, Debug)]
#[command(about = "Bounded loopback load generator for tenure-server")]
struct Args {
    /// A running server to load (loopback only); default: an in-process server.
    #[arg(long)]
    url: Option<String>,
    /// Write key (with --url).
    #[arg(long, default_value = "load")]
    key: String,
    /// Stop after this many seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many batches (whichever comes first).
    #[arg(long, default_value_t = 1_000_000)]
    batches: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Messages per batch.
    #[arg(long, default_value_t = 100)]
    per_batch: usize,
    /// Gzip the bodies (as Segment's libraries can).
    #[arg(long)]
    gzip: bool,
    /// After a 429/503, wait this many milliseconds before the next request
    /// (0: hammer on, to hold the server in overload).
    #[arg(long, default_value_t = 0)]
    backoff_ms: u64,
    /// Report this process's resident memory (the server's, with --url).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Directory for the in-process server's WAL and store (default: a temp dir
    /// under the system temp directory, which must be a real disk for the
    /// fsyncs to mean anything).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// In-process server: requests in progress beyond which it answers 429.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// In-process server: uncommitted WAL bytes beyond which it answers 503.
    #[arg(long)]
    max_wal_bytes: Option<u64>,
    /// In-process server: worker threads of its runtime (shared with the clients).
    #[arg(long)]
    threads: Option<usize>,
    /// Send at most this many events per second in all (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Default)]
struct Counts {
    acked_batches: AtomicU64,
    r429: AtomicU64,
    r503: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

fn main() {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build().unwrap().block_on(run(args));
}

/// Appends one Segment track message (about 230 bytes). Hand-rolled rather
/// than `write!`: the generator shares the machine's two cores with the server,
/// so it must spend as little as it can per event.
fn message(out: &mut String, run_id: &str, n: usize) {
    fn num(out: &mut String, mut v: usize, width: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        while v > 0 || digits.len() - i < width.max(1) {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push_str(std::str::from_utf8(&digits[i..]).expect("digits"));
    }
    out.push_str(r#"{"type":"track","messageId":""#);
    out.push_str(run_id);
    out.push('-');
    num(out, n, 0);
    out.push_str(r#"","userId":"u"#);
    num(out, n % 50_000, 0);
    out.push_str(r#"","event":""#);
    out.push_str(["view_item", "add_to_cart", "purchase"][n % 3]);
    out.push_str(r#"","timestamp":"2026-01-05T10:"#);
    num(out, (n / 60) % 60, 2);
    out.push(':');
    num(out, n % 60, 2);
    out.push_str(r#".000Z","properties":{"sku":"#);
    num(out, n % 1000, 0);
    out.push_str(
        r#","price":9.99,"country":"JP"},"context":{"library":{"name":"loadgen","version":"1"}}}"#,
    );
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn run(args: Args) {
    let keep_dir;
    let mut inproc = None;
    let (base, key, pid) = match &args.url {
        Some(u) => {
            let url = reqwest::Url::parse(u).expect("--url is a URL");
            let host = url.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            assert!(loopback, "loopback only: {host} is not a loopback address");
            (
                u.trim_end_matches('/').to_string(),
                args.key.clone(),
                args.server_pid,
            )
        }
        None => {
            keep_dir = match &args.dir {
                Some(d) => tempfile::tempdir_in(d).unwrap(),
                None => tempfile::tempdir().unwrap(),
            };
            let d = keep_dir.path();
            let mut cfg = ServerConfig::new(d.join("store").display().to_string(), d.join("wal"));
            cfg.listen = ([127, 0, 0, 1], 0).into();
            cfg.write_keys = vec!["load".into()];
            cfg.max_inflight_requests = args.max_inflight;
            if let Some(b) = args.max_wal_bytes {
                cfg.max_wal_bytes = b;
                cfg.flush_bytes = cfg.flush_bytes.min(b);
            }
            let server = Server::bind(cfg).await.unwrap();
            let base = format!("http://{}", server.local_addr());
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(server.run(async move {
                let _ = stop_rx.await;
            }));
            inproc = Some((stop_tx, serving, keep_dir));
            (
                base,
                "load".to_string(),
                Some(args.server_pid.unwrap_or(std::process::id())),
            )
        }
    };
    let url = format!("{base}/v1/batch");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    // Unique per run, so a server's dedup window does not drop a rerun's events.
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let rss_at_start = pid.and_then(|p| rss_kib(p, "VmRSS:"));

    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // One client: each task holds one of its pooled connections at a time.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.clients)
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (c, url, auth, next, stop, counts, run_id) = (
            client.clone(),
            url.clone(),
            auth.clone(),
            next.clone(),
            stop.clone(),
            counts.clone(),
            run_id.clone(),
        );
        let (batches, per_batch, gzip, backoff) = (
            args.batches,
            args.per_batch,
            args.gzip,
            Duration::from_millis(args.backoff_ms),
        );
        let (rate, paced_from) = (args.rate, started);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut body = String::with_capacity(per_batch * 260 + 64);
            loop {
                if stop.load(Relaxed) || Instant::now() >= deadline {
                    return lat;
                }
                let b = next.fetch_add(1, Relaxed);
                if b >= batches {
                    return lat;
                }
                if rate > 0 {
                    // Paced: batch b leaves no earlier than its share of the rate.
                    let due =
                        paced_from + Duration::from_secs_f64((b * per_batch) as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                body.clear();
                body.push_str(r#"{"batch":["#);
                for i in 0..per_batch {
                    if i > 0 {
                        body.push(',');
                    }
                    message(&mut body, &run_id, b * per_batch + i);
                }
                body.push_str(r#"],"sentAt":"2026-01-05T11:00:00.000Z"}"#);
                let mut req = c.post(&url).header("authorization", &auth);
                req = if gzip {
                    use std::io::Write;
                    let mut z = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    z.write_all(body.as_bytes()).unwrap();
                    req.header("content-encoding", "gzip")
                        .body(z.finish().unwrap())
                } else {
                    req.body(std::mem::replace(
                        &mut body,
                        String::with_capacity(per_batch * 260 + 64),
                    ))
                };
                let t = Instant::now();
                let status = match req.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                match status {
                    200 => {
                        lat.push(t.elapsed());
                        counts.acked_batches.fetch_add(1, Relaxed);
                    }
                    429 | 503 => {
                        if status == 429 {
                            counts.r429.fetch_add(1, Relaxed)
                        } else {
                            counts.r503.fetch_add(1, Relaxed)
                        };
                        if !backoff.is_zero() {
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    0 => {
                        counts.failed.fetch_add(1, Relaxed);
                    }
                    _ => {
                        counts.other.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    // One line a second: acknowledged events/s, push-backs, resident memory.
    let ticker = {
        let (counts, stop) = (counts.clone(), stop.clone());
        let per_batch = args.per_batch as u64;
        tokio::spawn(async move {
            let mut last = (0, 0, 0);
            let mut sec = 0;
            while !stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sec += 1;
                let now = (
                    counts.acked_batches.load(Relaxed),
                    counts.r429.load(Relaxed),
                    counts.r503.load(Relaxed),
                );
                let rss = pid
                    .and_then(|p| rss_kib(p, "VmRSS:"))
                    .map_or(String::new(), |k| format!("  rss {} MiB", k / 1024));
                eprintln!(
                    "{sec:>4}s  {:>8} events/s acked  {:>5} x429 {:>5} x503{rss}",
                    (now.0 - last.0) * per_batch,
                    now.1 - last.1,
                    now.2 - last.2,
                );
                last = now;
            }
        })
    };
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, Relaxed);
    let _ = ticker.await;

    lat.sort();
    let acked = lat.len() * args.per_batch;
    println!(
        "{acked} events acknowledged in {:.2}s: {:.0} events/s ({} clients, batches of {}{})",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64(),
        args.clients,
        args.per_batch,
        if args.gzip { ", gzip" } else { "" },
    );
    if lat.is_empty() {
        println!("no batch was acknowledged");
    } else {
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "ack latency per batch (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(pct(0.5)),
            ms(pct(0.9)),
            ms(pct(0.99)),
            ms(lat[lat.len() - 1]),
        );
    }
    println!(
        "pushed back: {} x 429, {} x 503; other statuses {}; failed requests {}",
        counts.r429.load(Relaxed),
        counts.r503.load(Relaxed),
        counts.other.load(Relaxed),
        counts.failed.load(Relaxed),
    );
    if let Some(p) = pid {
        println!(
            "{} resident memory: {} MiB at start, peak {} MiB{}",
            if args.url.is_some() {
                "server"
            } else {
                "process (server and clients)"
            },
            rss_at_start.unwrap_or(0) / 1024,
            rss_kib(p, "VmHWM:").unwrap_or(0) / 1024,
            if args.url.is_some() {
                " (over the server's whole life)"
            } else {
                ""
            },
        );
    }
    // One line for scripts (benches/serve_load.sh takes medians over runs).
    let pct_ms = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "RESULT events_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} r429={} r503={} failed={} peak_rss_mib={}",
        acked as f64 / elapsed.as_secs_f64(),
        pct_ms(0.5),
        pct_ms(0.9),
        pct_ms(0.99),
        pct_ms(1.0),
        counts.r429.load(Relaxed),
        counts.r503.load(Relaxed),
        counts.failed.load(Relaxed) + counts.other.load(Relaxed),
        pid.and_then(|p| rss_kib(p, "VmHWM:"))
            .map_or(0, |k| k / 1024),
    );
    if let Some((stop_tx, serving, _dir)) = inproc {
        let _ = stop_tx.send(());
        let t = Instant::now();
        let report = serving.await.unwrap().unwrap();
        println!(
            "graceful stop took {:.2}s; {} events committed in all",
            t.elapsed().as_secs_f64(),
            report.flushed,
        );
    }
}
