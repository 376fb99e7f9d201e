//! A real Segment client library sends to the server: Segment's Python SDK
//! (`segment-analytics-python`, installed by `.ci/test` into the test venv)
//! with its host pointed at a loopback server. Every event must come back from
//! the committed Parquet with the fields the app gave it, retried messageIds
//! stored once, and a wrong write key refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

/// 2026-01-05T10:00:00Z, the script's first event time, in microseconds.
const BASE_MICROS: i64 = 1_767_607_200_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_python_library_events_come_back_from_parquet() {
    let Ok(python) = std::env::var("TENURE_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide segment-analytics-python (TENURE_TEST_PYTHON)"
        );
        eprintln!("skipped: set TENURE_TEST_PYTHON to a python with segment-analytics-python");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment_client.py");
    let host = format!("http://{}", srv.addr);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(host)
            .arg(KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let said: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the script's last line is JSON ({e}): {stdout}{stderr}");
    });
    assert_eq!(said["errors"], serde_json::json!([]), "{stderr}");
    // The library reads `code` and `message` from the error body.
    assert_eq!(said["bad_key"]["status"], 401, "{said}");
    assert!(
        said["bad_key"]["error"]
            .as_str()
            .unwrap()
            .contains("unauthorized"),
        "{said}"
    );

    let report = srv.stop().await.unwrap();
    // 250 tracks, identify, page, screen, 3 retries, one without messageId.
    assert_eq!(report.acked, 257, "{report:?}");
    assert_eq!(report.duplicates, 3, "{report:?}");
    let rows = stored_async(&dir.path().join("store")).await;
    assert_eq!(rows.len(), 254);
    let counts = id_counts(&rows);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");

    // Timestamps: Segment's skew correction moves each event by the time
    // between the library's `sentAt` and the server receiving the batch, which
    // on one machine is between zero and the length of the run.
    let window = took.as_micros() as i64;
    for i in 0..250usize {
        let id = format!("py-{i}");
        let r = rows.iter().find(|r| r.event_id == id).unwrap();
        assert_eq!(r.user_id, format!("user-{}", i % 7), "{r:?}");
        let event = if i % 5 == 0 { "purchase" } else { "view_item" };
        assert_eq!(r.event, event, "{r:?}");
        let sent = BASE_MICROS + i as i64 * 1_000_000;
        assert!(
            (0..=window).contains(&(r.ts - sent)),
            "{id}: stored {} for {sent}",
            r.ts
        );
        // The first copy is kept, not the retry's "again".
        let props: serde_json::Value =
            serde_json::from_str(r.properties.as_deref().unwrap()).unwrap();
        assert_eq!(
            props,
            serde_json::json!({"sku": format!("sku-{i}"), "price": 9.99,
                "qty": i % 3 + 1, "gift": i % 2 == 0}),
            "{id}"
        );
    }
    let find = |id: &str| rows.iter().find(|r| r.event_id == id).unwrap();
    let r = find("py-identify");
    assert_eq!(
        (r.event.as_str(), r.user_id.as_str()),
        ("identify", "user-1")
    );
    let r = find("py-page");
    assert_eq!((r.event.as_str(), r.user_id.as_str()), ("page", "anon-9"));
    let r = find("py-screen");
    assert_eq!((r.event.as_str(), r.user_id.as_str()), ("screen", "user-2"));
    let r = rows.iter().find(|r| r.event == "no_explicit_id").unwrap();
    assert_eq!(r.user_id, "user-3");
    assert_eq!(r.event_id.len(), 36, "the library's UUID: {r:?}");
}
