//! In-process tests of the HTTP API with a real HTTP client: authentication,
//! limits, bad input, gzip, dedup, back-pressure, and that every acknowledged
//! event comes back from the store's Parquet.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use tenure_server::BadEventPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TS: &str = "2026-01-05T10:00:00Z";
const TS_MICROS: i64 = 1_767_607_200_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_come_back_from_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    // Concurrent batches share fsyncs; each must still be acknowledged.
    let mut tasks = Vec::new();
    for b in 0..20 {
        let c = c.clone();
        let url = srv.url("/v1/batch");
        tasks.push(tokio::spawn(async move {
            let msgs = (0..50)
                .map(|i| track(&format!("m{b}-{i}"), &format!("u{i}"), "view_item", TS))
                .collect();
            post(&c, &url, batch(msgs)).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
    }
    // Single-message endpoints set the type; identify and page need no event name.
    let (s, _) = post(
        &c,
        &srv.url("/v1/identify"),
        r#"{"userId":"u1","messageId":"id-1","traits":{"plan":"pro"},"timestamp":"2026-01-05T10:00:00Z"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(
        &c,
        &srv.url("/v1/page"),
        r#"{"anonymousId":"a9","messageId":"page-1","name":"Home","timestamp":"2026-01-05T10:00:00Z"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(
        &c,
        &srv.url("/v1/track"),
        r#"{"userId":"u2","messageId":"tr-1","event":"purchase","properties":{"revenue":"12.50"},"timestamp":"2026-01-05T10:00:00Z"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let report = srv.stop().await.unwrap();
    assert_eq!(report.acked, 1003);
    assert_eq!(report.flushed, 1003);

    let rows = stored_async(&dir.path().join("store")).await;
    assert_eq!(rows.len(), 1003);
    let counts = id_counts(&rows);
    assert!(counts.values().all(|&n| n == 1));
    let r = rows.iter().find(|r| r.event_id == "m7-3").unwrap();
    assert_eq!(
        (r.user_id.as_str(), r.event.as_str(), r.ts),
        ("u3", "view_item", TS_MICROS)
    );
    let props: serde_json::Value = serde_json::from_str(r.properties.as_deref().unwrap()).unwrap();
    assert_eq!(props, serde_json::json!({"plan": "pro", "n": 1}));
    let r = rows.iter().find(|r| r.event_id == "id-1").unwrap();
    assert_eq!(r.event, "identify");
    let r = rows.iter().find(|r| r.event_id == "page-1").unwrap();
    assert_eq!((r.event.as_str(), r.user_id.as_str()), ("page", "a9"));
    // The WAL is empty after a clean stop.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_corrected_with_sent_at() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    // The client's clock is ten years off, but the event happened 60 s before
    // sending: it is stored as 60 s before the server received it.
    let body = r#"{"batch":[{"userId":"u","event":"e","messageId":"skew","timestamp":"2036-01-01T00:00:00Z"}],"sentAt":"2036-01-01T00:01:00Z"}"#;
    let before = chrono::Utc::now().timestamp_micros();
    let (s, b) = post(&client(), &srv.url("/v1/batch"), body).await;
    let after = chrono::Utc::now().timestamp_micros();
    assert_eq!(s, 200, "{b}");
    srv.stop().await.unwrap();
    let rows = stored_async(&dir.path().join("store")).await;
    let ts = rows[0].ts;
    assert!(
        ts >= before - 60_000_000 && ts <= after - 60_000_000,
        "{ts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_write_key_is_401_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    let body = batch(vec![track("k1", "u", "e", TS)]);
    let r = c
        .post(srv.url("/v1/batch"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .post(srv.url("/v1/batch"))
        .header("authorization", basic("wrong"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let report = srv.stop().await.unwrap();
    assert_eq!((report.received, report.acked), (0, 0));
    assert!(stored_async(&dir.path().join("store")).await.is_empty());
}

/// Segment's libraries also send the key as `writeKey` in the body; without a
/// Basic header that key decides. A wrong Basic key is not rescued by the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_key_in_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    let send = |body: String, auth: Option<String>| {
        let mut r = c.post(srv.url("/v1/batch")).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap() }
    };
    let with_key = |id: &str, key: &str| {
        serde_json::json!({"batch": [track(id, "u", "e", TS)], "writeKey": key}).to_string()
    };
    assert_eq!(send(with_key("b1", KEY), None).await.status(), 200);
    let r = send(with_key("b2", "wrong"), None).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("writeKey"));
    assert_eq!(
        send(with_key("b3", KEY), Some(basic("wrong")))
            .await
            .status(),
        401
    );
    // A single-message endpoint: the key is a member of the message.
    let r = c
        .post(srv.url("/v1/track"))
        .body(
            serde_json::json!({"userId": "u", "event": "e", "messageId": "b4",
                "timestamp": TS, "writeKey": KEY})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await.unwrap();
    let mut ids: Vec<_> = stored_async(&dir.path().join("store"))
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["b1", "b4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_messages_are_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_body_bytes = 10_000;
    cfg.max_event_bytes = 2_000;
    let srv = Running::start(cfg).await;
    let c = client();
    // A body over the limit.
    let msgs = (0..100)
        .map(|i| track(&format!("big{i}"), "u", "e", TS))
        .collect();
    let (s, _) = post(&c, &srv.url("/v1/batch"), batch(msgs)).await;
    assert_eq!(s, 413);
    // One message over the per-message limit refuses the request.
    let mut big = track("huge", "u", "e", TS);
    big["properties"]["blob"] = serde_json::Value::String("x".repeat(3000));
    let (s, b) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![track("ok", "u", "e", TS), big]),
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("message 1"), "{b}");
    // A small gzip body that inflates past the limit.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&vec![b' '; 1_000_000]).unwrap();
    let r = c
        .post(srv.url("/v1/batch"))
        .header("authorization", basic(KEY))
        .header("content-encoding", "gzip")
        .body(z.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let report = srv.stop().await.unwrap();
    assert_eq!(report.acked, 0);
    assert!(stored_async(&dir.path().join("store")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_partly_invalid_batches() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    let (s, b) = post(&c, &srv.url("/v1/batch"), "{not json").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("batch"), "{b}");
    let (s, b) = post(&c, &srv.url("/v1/track"), r#"{"userId":"u","event":}"#).await;
    assert_eq!(s, 400);
    assert_eq!(b["errors"][0]["index"], 0);
    assert!(
        b["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    // Messages 1 and 3 are bad; 0 and 2 are kept (the default policy).
    let msgs = vec![
        track("good-0", "u", "e", TS),
        serde_json::json!({"type":"track","messageId":"bad-1","event":"e","timestamp":TS}),
        track("good-2", "u", "e", TS),
        track("bad-3", "u", "e", "yesterday-ish"),
    ];
    let (s, b) = post(&c, &srv.url("/v1/batch"), batch(msgs)).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["stored"], 2);
    let errs = b["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0]["index"], 1);
    assert!(errs[0]["reason"].as_str().unwrap().contains("user_id"));
    assert_eq!(errs[1]["index"], 3);
    assert!(errs[1]["reason"].as_str().unwrap().contains("timestamp"));
    let report = srv.stop().await.unwrap();
    // Messages only: the unparseable body was refused as a whole.
    assert_eq!(report.rejected, 3);
    let mut ids: Vec<_> = stored_async(&dir.path().join("store"))
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["good-0", "good-2"]);

    // The same batch under the refusing policy stores nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.bad_events = BadEventPolicy::RefuseBatch;
    let srv = Running::start(cfg).await;
    let msgs = vec![
        track("good-0", "u", "e", TS),
        serde_json::json!({"type":"track","event":"e","timestamp":TS}),
    ];
    let (s, b) = post(&c, &srv.url("/v1/batch"), batch(msgs)).await;
    assert_eq!(s, 400);
    assert_eq!(b["stored"], 0);
    assert_eq!(b["errors"][0]["index"], 1);
    srv.stop().await.unwrap();
    assert!(stored_async(&dir.path().join("store")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_and_duplicate_message_ids() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    let body = batch(vec![
        track("d1", "u", "e", TS),
        track("d2", "u", "e", TS),
        track("d1", "u", "e", TS),
    ]);
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body.as_bytes()).unwrap();
    let r = c
        .post(srv.url("/v1/batch"))
        .header("authorization", basic(KEY))
        .header("content-encoding", "gzip")
        .body(z.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A retry of the same messages is acknowledged and dropped.
    let (s, _) = post(&c, &srv.url("/v1/batch"), body).await;
    assert_eq!(s, 200);
    let report = srv.stop().await.unwrap();
    assert_eq!(report.duplicates, 4);
    // After a restart the committed ids are still remembered.
    let srv = Running::start(config(dir.path())).await;
    let (s, _) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![track("d2", "u", "e", TS), track("d3", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    let report = srv.stop().await.unwrap();
    assert_eq!(report.duplicates, 1);
    let rows = stored_async(&dir.path().join("store")).await;
    let counts = id_counts(&rows);
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let c = client();
    let (s, _) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![track("h1", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    let r = c.get(srv.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h: serde_json::Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tenure_events_received_total 1",
        "tenure_events_acked_total 1",
        "tenure_events_rejected_total 0",
        // the batch and the /health call
        "tenure_http_responses_total{status=\"200\"} 2",
        "tenure_flush_seconds_count",
        "tenure_wal_bytes",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert_eq!(
        c.get(srv.url("/v2/nope")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        c.get(srv.url("/v1/batch")).send().await.unwrap().status(),
        405
    );
    // Each status under its own label: a 405 is not a 404.
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tenure_http_responses_total{status=\"404\"} 1",
        "tenure_http_responses_total{status=\"405\"} 1",
        "tenure_http_responses_total{status=\"other\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_and_inflight_bound_pushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_inflight_requests = 1;
    cfg.request_timeout = Duration::from_millis(800);
    let srv = Running::start(cfg).await;
    // A client that sends its headers and half its body, then stalls.
    let mut slow = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 100\r\n\r\n{{\"batch\":",
        basic(KEY)
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // It holds the only request slot: the next request is pushed back.
    let r = client()
        .post(srv.url("/v1/batch"))
        .header("authorization", basic(KEY))
        .body(batch(vec![track("s1", "u", "e", TS)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // The slow one gets 408 once its time is up, and the slot is free again.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server answers the slow client")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    drop(slow);
    let (s, _) = post(
        &client(),
        &srv.url("/v1/batch"),
        batch(vec![track("s2", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fills_the_wal_then_503_and_nothing_acked_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_bytes = 4_000;
    cfg.max_wal_bytes = 20_000;
    let srv = Running::start(cfg.clone()).await;
    // Break the store: a manifest that is complete JSON but not a manifest makes
    // every commit fail (a truncated one would be skipped with a warning).
    let bogus = dir
        .path()
        .join("store")
        .join(tenure_schema::StoreLayout::manifest(1));
    std::fs::create_dir_all(bogus.parent().unwrap()).unwrap();
    std::fs::write(&bogus, br#"{"not":"a manifest"}"#).unwrap();
    let c = client();
    let mut acked = Vec::new();
    let mut got_503 = false;
    for b in 0..200 {
        let msgs = (0..5)
            .map(|i| track(&format!("w{b}-{i}"), "u", "e", TS))
            .collect();
        let (s, body) = post(&c, &srv.url("/v1/batch"), batch(msgs)).await;
        match s {
            200 => acked.extend((0..5).map(|i| format!("w{b}-{i}"))),
            503 => {
                got_503 = true;
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(got_503, "the WAL bound was never reached");
    assert!(!acked.is_empty());
    // Stopping cannot commit; the WAL keeps everything for the next start.
    let err = srv.stop().await.unwrap_err();
    assert!(
        matches!(err, tenure_server::ServerError::Uncommitted { .. }),
        "{err}"
    );
    std::fs::remove_file(&bogus).unwrap();
    let srv = Running::start(cfg).await;
    let report = srv.stop().await.unwrap();
    assert!(!report.recovery.is_empty());
    let rows = stored_async(&dir.path().join("store")).await;
    let counts = id_counts(&rows);
    for id in &acked {
        assert_eq!(counts.get(id), Some(&1), "{id}");
    }
    assert_eq!(rows.len(), acked.len());
}

/// Issue 16 item 1: a valid 1 MiB batch of tiny messages without `messageId`
/// (generated ids make its WAL record about three times the body) is stored
/// whole, not cut off as a "torn tail" after being acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_tiny_messages_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let max_body = cfg.max_body_bytes;
    let srv = Running::start(cfg).await;
    let c = client();
    let (s, _) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(
            (0..10)
                .map(|i| track(&format!("a{i}"), "u", "e", TS))
                .collect(),
        ),
    )
    .await;
    assert_eq!(s, 200);
    let tiny = r#"{"userId":"u","event":"e"}"#;
    let n = (max_body - 64) / (tiny.len() + 1);
    let body = format!(r#"{{"batch":[{}]}}"#, vec![tiny; n].join(","));
    assert!(body.len() <= max_body && n > 35_000, "{} {n}", body.len());
    let (s, r) = post(&c, &srv.url("/v1/batch"), body).await;
    assert_eq!(s, 200, "{r}");
    let report = srv.stop().await.unwrap();
    assert_eq!(report.acked, 10 + n as u64);
    let rows = stored_async(&dir.path().join("store")).await;
    assert_eq!(rows.len(), 10 + n, "acknowledged events are missing");
    assert_eq!(id_counts(&rows).len(), 10 + n);
}

/// Issue 16 item 10: connections that send headers without credentials and
/// then stall cannot take the places of clients that authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_unauthenticated_connections_do_not_block_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.request_timeout = Duration::from_secs(3);
    let inflight = cfg.max_inflight_requests;
    let srv = Running::start(cfg).await;
    let mut stalled = Vec::new();
    for _ in 0..inflight + 44 {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(
            b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"batch\":[",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    // Let the server read every one of them and start waiting for their bodies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client();
    for i in 0..5 {
        let (s, r) = post(
            &c,
            &srv.url("/v1/batch"),
            batch(vec![track(&format!("real{i}"), "u", "e", TS)]),
        )
        .await;
        assert_eq!(s, 200, "an authenticated client was refused: {r}");
    }
    // A client whose key is only in its body waits in the unauthenticated
    // pool, which the stalled connections hold: pushed back, not lost.
    let keyed = serde_json::json!({
        "batch": [track("body-key", "u", "e", TS)],
        "writeKey": KEY,
    })
    .to_string();
    let r = c
        .post(srv.url("/v1/batch"))
        .body(keyed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // The stalled ones are cut off at the request timeout; then body keys work.
    drop(stalled);
    let start = std::time::Instant::now();
    loop {
        let r = c
            .post(srv.url("/v1/batch"))
            .body(keyed.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(start.elapsed() < Duration::from_secs(20), "still refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.stop().await.unwrap();
    let rows = stored_async(&dir.path().join("store")).await;
    assert_eq!(rows.len(), 6);
}

fn plan_property() -> Vec<tenure_schema::DeclaredProperty> {
    tenure_schema::Config::parse("[properties]\nplan = \"string\"\n")
        .unwrap()
        .properties
}

/// Issue 16 item 12, at start: a config declaring other properties than the
/// store's is refused before serving, as bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_properties_other_than_the_stores_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let (s, _) = post(
        &client(),
        &srv.url("/v1/batch"),
        batch(vec![track("p1", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    srv.stop().await.unwrap();
    let mut cfg = config(dir.path());
    cfg.ingest.properties = plan_property();
    let err = match tenure_server::Server::bind(cfg).await {
        Ok(_) => panic!("a server started on a store with other properties"),
        Err(e) => e,
    };
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("properties"), "{err}");
    // The binary says so and exits 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenure-server"))
        .args(["--to", &dir.path().join("store").display().to_string()])
        .args(["--wal", &dir.path().join("wal").display().to_string()])
        .args(["--write-key", KEY, "--listen", "127.0.0.1:0"])
        .args(["--config", &{
            let p = dir.path().join("tenure.toml");
            std::fs::write(&p, "[properties]\nplan = \"string\"\n").unwrap();
            p.display().to_string()
        }])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("properties"));
}

/// Issue 16 item 12, while serving: the store gets other properties under a
/// running server (it started on an empty store, another writer created the
/// store first). Every commit fails; `/health` must say so instead of "ok",
/// and the events stay in the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commits_make_the_server_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ingest.properties = plan_property();
    let srv = Running::start(cfg).await;
    let c = client();
    let (s, h) = health(&c, &srv).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    // Another server, without declared properties, commits first.
    let mut other = config(dir.path());
    other.wal_dir = dir.path().join("wal-other");
    let other = Running::start(other).await;
    let (s, _) = post(
        &c,
        &other.url("/v1/batch"),
        batch(vec![track("o1", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    other.stop().await.unwrap();
    let (s, _) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![track("m1", "u", "e", TS)]),
    )
    .await;
    assert_eq!(s, 200);
    let (_, h) = health_until(&c, &srv, Duration::from_secs(20), |s, _| s == 503).await;
    assert_eq!(h["status"], "flush-failing", "{h}");
    assert!(h["error"].as_str().unwrap().contains("properties"), "{h}");
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("tenure_flush_failing 0"), "{text}");
    // Nothing acknowledged is dropped: it stays in the WAL.
    let err = srv.stop().await.unwrap_err();
    assert!(
        matches!(err, tenure_server::ServerError::Uncommitted { .. }),
        "{err}"
    );
    let rows = stored_async(&dir.path().join("store")).await;
    assert_eq!(rows.len(), 1);
}

/// One log line per request (`--log-format json`, the `info` default): method,
/// path, status, latency and the events it stored or rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_as_one_json_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenure-server"))
        .args(["--to", &dir.path().join("store").display().to_string()])
        .args(["--wal", &dir.path().join("wal").display().to_string()])
        .args(["--write-key", KEY, "--listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    let c = client();
    let two = batch(vec![
        track("l1", "u1", "view", TS),
        track("l2", "u2", "buy", TS),
    ]);
    let (s, _) = post(&c, &format!("http://{addr}/v1/batch"), two).await;
    assert_eq!(s, 200);
    let bad = batch(vec![
        track("l3", "u3", "view", TS),
        serde_json::json!({"type": "track"}),
    ]);
    let (s, _) = post(&c, &format!("http://{addr}/v1/batch"), bad).await;
    assert_eq!(s, 400);
    let s = c
        .get(format!("http://{addr}/nowhere"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s.as_u16(), 404);
    child.kill().unwrap();
    child.wait().unwrap();
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request")
        .map(|v| v["fields"].clone())
        .collect();
    let seen: Vec<(String, String, u64, u64, u64)> = requests
        .iter()
        .map(|f| {
            assert!(f["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{f}");
            (
                f["method"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_u64().unwrap(),
                f["events"].as_u64().unwrap(),
                f["rejected"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = |m: &str, p: &str, s, e, r| (m.to_string(), p.to_string(), s, e, r);
    assert_eq!(
        seen,
        [
            want("POST", "/v1/batch", 200, 2, 0),
            want("POST", "/v1/batch", 400, 1, 1),
            want("GET", "/nowhere", 404, 0, 0),
        ],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// What analytics.js (analytics-next) needs from a browser: its short paths
/// with a `text/plain` JSON body holding the `writeKey`, CORS for the origins
/// given (preflight answered, others refused), and the settings document it
/// loads pointing back at this server with Segment's metrics off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_short_paths_cors_and_the_settings_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.cors_origins = vec!["https://shop.example".into()];
    let srv = Running::start(cfg).await;
    let c = client();
    let acao = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    // Preflight: allowed origin 204 with the methods and headers; others 403.
    let pre = c
        .request(reqwest::Method::OPTIONS, srv.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert_eq!(acao(&pre).as_deref(), Some("https://shop.example"));
    assert!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        pre.headers()["access-control-allow-headers"],
        "content-type"
    );
    let other = c
        .request(reqwest::Method::OPTIONS, srv.url("/v1/t"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 403);
    assert_eq!(acao(&other), None);

    // The short paths, text/plain bodies, the key in the body.
    let mut sent = 0;
    for (path, body) in [
        (
            "/v1/t",
            format!(
                r#"{{"type":"track","event":"view_item","userId":"b1","messageId":"b-t","timestamp":"{TS}","writeKey":"{KEY}"}}"#
            ),
        ),
        (
            "/v1/p",
            format!(
                r#"{{"type":"page","name":"home","anonymousId":"anon-1","messageId":"b-p","timestamp":"{TS}","writeKey":"{KEY}"}}"#
            ),
        ),
        (
            "/v1/i",
            format!(
                r#"{{"type":"identify","userId":"b1","traits":{{"plan":"pro"}},"messageId":"b-i","timestamp":"{TS}","writeKey":"{KEY}"}}"#
            ),
        ),
    ] {
        let r = c
            .post(srv.url(path))
            .header("origin", "https://shop.example")
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(acao(&r).as_deref(), Some("https://shop.example"), "{path}");
        sent += 1;
    }

    // The settings document: this server as the API host, metrics off.
    let s = c
        .get(srv.url(&format!("/v1/projects/{KEY}/settings")))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status().as_u16(), 200);
    let doc: serde_json::Value = s.json().await.unwrap();
    let io = &doc["integrations"]["Segment.io"];
    assert_eq!(io["apiKey"], KEY);
    assert_eq!(io["apiHost"], format!("{}/v1", srv.addr));
    assert_eq!(io["protocol"], "http");
    assert_eq!(doc["metrics"]["sampleRate"], 0);
    let missing = c
        .get(srv.url("/v1/projects/not-a-key/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    let report = srv.stop().await.unwrap();
    assert_eq!(report.acked, sent, "{report:?}");
    let rows = stored_async(&dir.path().join("store")).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["b-i", "b-p", "b-t"]);
}
