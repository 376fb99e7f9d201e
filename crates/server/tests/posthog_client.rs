//! PostHog's Python SDK (`posthog`, installed by `.ci/test` into the test
//! venv) sends to the server's PostHog capture endpoints, plain and gzip:
//! every capture comes back from the committed Parquet as the app sent it
//! (user, event, time, properties, `uuid` as event id), `set` arrives as an
//! identify; a wrong key is refused, a malformed body is a 400.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// 2026-01-05T10:00:00Z in microseconds.
const BASE_MICROS: i64 = 1_767_607_200_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_python_library_events_come_back_from_parquet() {
    let Ok(python) = std::env::var("TENURE_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide posthog (TENURE_TEST_PYTHON)"
        );
        eprintln!("skipped: set TENURE_TEST_PYTHON to a python with posthog");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posthog_client.py");
    let host = format!("http://{}", srv.addr);
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let said: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script's last line is JSON ({e}): {stdout}{stderr}"));
    assert_eq!(said["errors"], serde_json::json!([]), "{stderr}");
    // A wrong `api_key` (and no other key) is refused; nothing is stored.
    let r = client()
        .post(format!("http://{}/batch/", srv.addr))
        .header("content-type", "application/json")
        .body(r#"{"api_key":"wrong","batch":[{"event":"e","distinct_id":"x"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A body that is not PostHog's shape is a 400 saying why.
    let r = client()
        .post(format!("http://{}/capture/", srv.addr))
        .body(format!(r#"{{"api_key":"{KEY}","batch":7}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("array"));

    let report = srv.stop().await.unwrap();
    // 120 captures (60 plain, 60 gzip) and one `set`.
    assert_eq!(report.acked, 121, "{report:?}");
    let rows = stored_async(&dir.path().join("store")).await;
    for n in 0..120usize {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let r = rows
            .iter()
            .find(|r| r.event_id == id)
            .unwrap_or_else(|| panic!("capture {n} stored"));
        assert_eq!(r.user_id, format!("user-{}", n % 7), "{r:?}");
        let event = if n % 5 == 0 { "purchase" } else { "view_item" };
        assert_eq!(r.event, event, "{r:?}");
        // PostHog's clients send `sent_at` as well: skew correction moves
        // the time by at most the run's length (seconds).
        let ts = BASE_MICROS + n as i64 * 1_000_000;
        assert!((r.ts - ts).abs() < 120_000_000, "{r:?}");
        let props: serde_json::Value =
            serde_json::from_str(r.properties.as_deref().unwrap_or("{}")).unwrap();
        assert_eq!(props["n"], n, "{r:?}");
        assert_eq!(props["$lib"], "posthog-python", "{r:?}");
    }
    let ids = id_counts(&rows);
    assert!(ids.values().all(|&c| c == 1), "{ids:?}");
    let set = rows
        .iter()
        .filter(|r| r.user_id == "user-1" && !r.event_id.starts_with("00000000-"))
        .collect::<Vec<_>>();
    assert_eq!(set.len(), 1, "the `set` is stored once: {set:?}");
    assert_eq!(set[0].event, "identify", "{set:?}");
}
