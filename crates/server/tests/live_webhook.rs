//! The webhook sink against a real HTTP receiver on loopback: a transition
//! is POSTed with its id in `Idempotency-Key`, retried after failures until
//! accepted, and written to the dead letters after six failures.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Running, batch, client, config, post, track};
use tenure_server::SinkSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests received: (Idempotency-Key, body, status answered).
type Log = Arc<Mutex<Vec<(String, String, u16)>>>;

/// A receiver answering `fail_first` requests with 500, then 200 (or always
/// 503 when `fail_first` is `usize::MAX`).
async fn receiver(fail_first: usize) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_string(), body.to_string());
                    }
                }
                if n == 0 {
                    break (text, String::new());
                }
            };
            let key = head
                .lines()
                .find_map(|h| {
                    let (k, v) = h.split_once(':')?;
                    k.eq_ignore_ascii_case("idempotency-key")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            let status = {
                let mut log = l.lock().unwrap();
                let status = if log.len() < fail_first { 500 } else { 200 };
                let status = if fail_first == usize::MAX {
                    503
                } else {
                    status
                };
                log.push((key, body, status));
                status
            };
            let resp =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (url, log)
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_until_accepted_and_dead_letters_after_six_failures() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("t.seg");
    std::fs::write(&seg, "segment viewers = did view_item\n").unwrap();
    let (good, good_log) = receiver(2).await;
    let (bad, bad_log) = receiver(usize::MAX).await;
    let mut cfg = config(dir.path());
    cfg.segments = vec![seg];
    cfg.emit = vec![SinkSpec::Webhook(good), SinkSpec::Webhook(bad.clone())];
    let srv = Running::start(cfg).await;
    let c = client();
    let now = chrono::Utc::now().to_rfc3339();
    let (status, body) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![track("m1", "ann", "view_item", &now)]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until("accepted by the good receiver", || {
        good_log.lock().unwrap().iter().any(|r| r.2 == 200)
    })
    .await;
    let log = good_log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "two failures, then accepted: {log:?}");
    let first: serde_json::Value = serde_json::from_str(&log[0].1).unwrap();
    assert_eq!(first["type"], "segment_entered");
    assert_eq!(first["user_id"], "ann");
    assert_eq!(first["segment"], "viewers");
    for (key, body, _) in &log {
        assert_eq!(key, first["id"].as_str().unwrap(), "the same id each time");
        assert_eq!(body, &log[0].1);
    }
    let dead = dir.path().join("wal/live/dead-letters.ndjson");
    until("dead letter written", || dead.exists()).await;
    assert_eq!(bad_log.lock().unwrap().len(), 6);
    let letter: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&dead).unwrap().trim()).unwrap();
    assert_eq!(letter["sink"], bad);
    assert_eq!(letter["transition"]["id"], first["id"]);
    assert!(
        letter["error"].as_str().unwrap().contains("503"),
        "{letter}"
    );
    srv.stop().await.unwrap();
}
