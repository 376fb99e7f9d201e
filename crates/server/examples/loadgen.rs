//! A bounded load generator: starts an in-process server on loopback (temp
//! store and WAL), sends `BATCHES` batches of `PER_BATCH` track events from
//! `CLIENTS` concurrent connections, and reports acknowledged events/s and
//! acknowledgement latency percentiles. Stops by itself.
//!
//! `cargo run --release -p tenure-server --example loadgen -- [batches] [clients] [per_batch]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tenure_server::{Server, ServerConfig};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let batches = args.first().copied().unwrap_or(2_000);
    let clients = args.get(1).copied().unwrap_or(32);
    let per_batch = args.get(2).copied().unwrap_or(100);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(
        dir.path().join("store").display().to_string(),
        dir.path().join("wal"),
    );
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.write_keys = vec!["load".into()];
    cfg.max_inflight_requests = clients * 2;
    let server = Server::bind(cfg).await.unwrap();
    let url = format!("http://{}/v1/batch", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("load:")
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, auth, next) = (url.clone(), auth.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut refused = 0u64;
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return (lat, refused);
                }
                let msgs: Vec<_> = (0..per_batch)
                    .map(|i| {
                        serde_json::json!({
                            "type": "track", "messageId": format!("{b}-{i}"),
                            "userId": format!("u{}", (b * 7 + i) % 5000), "event": "view_item",
                            "timestamp": "2026-01-05T10:00:00Z",
                            "properties": {"sku": i, "price": "9.99", "country": "JP"}
                        })
                    })
                    .collect();
                let body = serde_json::json!({ "batch": msgs }).to_string();
                let t = Instant::now();
                let r = c
                    .post(&url)
                    .header("authorization", &auth)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    lat.push(t.elapsed());
                } else {
                    refused += 1;
                }
            }
        }));
    }
    let mut lat = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (l, r) = t.await.unwrap();
        lat.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let acked = lat.len() * per_batch;
    println!(
        "{acked} events acknowledged in {:.2}s: {:.0} events/s; {refused} batches refused (429/503)",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ack latency per batch of {per_batch}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
    let _ = stop_tx.send(());
    let t = Instant::now();
    let report = serving.await.unwrap().unwrap();
    println!(
        "graceful stop committed {} events in {:.2}s",
        report.flushed,
        t.elapsed().as_secs_f64()
    );
}
