//! Identity merges end to end: the hand-checked fixture
//! (fixtures/identity/README.md) through batch ingest, a late second ingest
//! and `tenure compact`, and the same messages through `tenure serve`
//! (Segment's batch endpoint and PostHog's `$identify`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/identity")
        .join(name)
}

fn run(args: &[&str], store: &Path) -> String {
    let out = tenure()
        .args(args)
        .arg("--data")
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn ingest(input: &Path, store: &Path) -> String {
    let out = tenure()
        .arg("ingest")
        .arg(input)
        .arg("--to")
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Users per funnel step.
fn funnel(store: &Path, window: &str) -> Vec<u64> {
    json(&run(
        &[
            "funnel",
            "--steps",
            "view_item,purchase",
            "--window",
            window,
            "--format",
            "json",
        ],
        store,
    ))
    .iter()
    .map(|r| r["users"].as_u64().unwrap())
    .collect()
}

/// Distinct user keys in the files (raw SQL over the events table).
fn stored_keys(store: &Path) -> String {
    run(
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(DISTINCT user_key) AS k FROM events",
        ],
        store,
    )
}

/// The fixture's worked numbers (README): funnel, daily retention, buyers.
fn check_fixture(store: &Path) {
    assert_eq!(funnel(store, "7d"), vec![3, 2]);
    let days = json(&run(
        &["retention", "--period", "day", "--format", "json"],
        store,
    ));
    let first: Vec<(u64, Option<u64>)> = days
        .iter()
        .filter(|r| r["cohort"] == "2026-01-05")
        .map(|r| (r["cohort_size"].as_u64().unwrap(), r["users"].as_u64()))
        .take(4)
        .collect();
    assert_eq!(
        first,
        vec![(3, Some(3)), (3, Some(1)), (3, Some(1)), (3, Some(1))],
        "{days:?}"
    );
    let buyers = json(&run(
        &["segment", "F >= 1 and M > 0", "--users", "--format", "json"],
        store,
    ));
    let got: Vec<(String, u64, f64)> = buyers
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap().to_string(),
                r["frequency"].as_u64().unwrap(),
                r["monetary"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("u1".to_string(), 2, 13.0), ("u5".to_string(), 2, 12.0)],
        "{buyers:?}"
    );
    let viewers = run(&["segment", "did view_item", "--count"], store);
    assert_eq!(viewers.trim(), "3");
}

#[test]
fn fixture_merges_persons_through_ingest_late_events_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest(&fixture("events.ndjson"), &store);
    // Before the late file: u5's person is {u4, u5}; u3's {a3, u3}.
    assert_eq!(funnel(&store, "6d"), vec![4, 2]);
    ingest(&fixture("late.ndjson"), &store);
    check_fixture(&store);
    // Seven users sent events under their own keys.
    assert_eq!(stored_keys(&store), "k\n7\n");
    let out = tenure()
        .args(["compact", "--data"])
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // a1's two events, u4's view, a3's view and u3's identify and purchase.
    assert!(err.contains("(6 of merged users)"), "{err}");
    check_fixture(&store);
    assert_eq!(stored_keys(&store), "k\n3\n");
    // A second compaction has nothing left to fold.
    let again = tenure()
        .args(["compact", "--data"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to compact"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    check_fixture(&store);
}

/// The persons kept under `_tenure/cache`.
fn kept_persons(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(store.join("_tenure/cache"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.retain(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("persons-")
    });
    out.sort();
    out
}

/// Debug log of a retention run (says where the persons came from).
fn persons_log(store: &Path) -> String {
    let out = tenure()
        .env("RUST_LOG", "tenure_engine=debug")
        .args(["retention", "--period", "day", "--data"])
        .arg(store)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn resolved_persons_are_kept_read_back_and_replaced_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest(&fixture("events.ndjson"), &store);
    assert_eq!(funnel(&store, "6d"), vec![4, 2]);
    let first = kept_persons(&store);
    assert_eq!(first.len(), 1, "{first:?}");
    // The late file adds merges: the next reader resolves the longer log
    // and drops what was kept for the shorter one.
    ingest(&fixture("late.ndjson"), &store);
    assert!(persons_log(&store).contains("resolved the log, kept the persons"));
    let kept = kept_persons(&store);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_ne!(kept, first);
    let good = std::fs::read(&kept[0]).unwrap();
    // Later readers read it, and count as the resolution does.
    assert!(persons_log(&store).contains("read the kept persons"));
    check_fixture(&store);
    // A damaged copy is not believed: the log is resolved again, the
    // numbers stay, and the copy is put back whole.
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    std::fs::write(&kept[0], &bad).unwrap();
    let log = persons_log(&store);
    assert!(log.contains("ignoring the kept persons"), "{log}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), good);
    std::fs::write(&kept[0], b"junk").unwrap();
    check_fixture(&store);
    // Compaction folds the merges into the files: another resolution.
    let out = tenure()
        .args(["compact", "--data"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success());
    check_fixture(&store);
    let after = kept_persons(&store);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, kept);
}

#[test]
fn an_alias_without_previous_id_is_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.ndjson");
    std::fs::write(
        &input,
        "{\"type\":\"alias\",\"userId\":\"u\",\"timestamp\":\"2026-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let out = tenure()
        .arg("ingest")
        .arg(&input)
        .arg("--to")
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected 1"), "{err}");
    let dead = std::fs::read_dir(dir.path().join("store/dead_letter"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dead = std::fs::read_to_string(dead).unwrap();
    assert!(dead.contains("needs `previousId`"), "{dead}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POSTs `body` to `http://addr/path` with the write key; the status code.
fn post(addr: &str, path: &str, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        // The write key `key`: base64("key:").
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic a2V5Og==\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}

#[test]
fn the_http_service_records_merges_from_segment_and_posthog_clients() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut serve = Killed(
        tenure()
            .arg("serve")
            .arg("--to")
            .arg(&store)
            .arg("--wal")
            .arg(dir.path().join("wal"))
            .args(["--write-key", "key", "--listen", "127.0.0.1:0"])
            .args(["--flush-age-ms", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(serve.0.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("listening on http://")
                .map(|s| s.trim().to_string())
        })
        .expect("the server says where it listens");
    std::thread::spawn(move || lines.for_each(drop));
    let messages: Vec<String> = std::fs::read_to_string(fixture("events.ndjson"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let batch = format!("{{\"batch\":[{}]}}", messages.join(","));
    assert_eq!(post(&addr, "/v1/batch", &batch), 200);
    // A PostHog client: an anonymous view, `$set` on the anonymous user
    // (which identifies nobody), `$identify` with the anonymous id, a
    // purchase by the identified user.
    let posthog = r#"{"api_key":"key","batch":[
        {"event":"view_item","distinct_id":"ph-anon","timestamp":"2026-01-05T15:00:00Z","uuid":"p1"},
        {"event":"$set","distinct_id":"ph-anon","timestamp":"2026-01-05T15:01:00Z","uuid":"p0","properties":{"$set":{"plan":"free"}}},
        {"event":"$identify","distinct_id":"ph-user","timestamp":"2026-01-05T15:10:00Z","uuid":"p2","properties":{"$anon_distinct_id":"ph-anon"}},
        {"event":"purchase","distinct_id":"ph-user","timestamp":"2026-01-06T15:00:00Z","uuid":"p3","properties":{"revenue":"4.00"}}]}"#;
    assert_eq!(post(&addr, "/batch/", posthog), 200);
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(serve.0.wait().unwrap().success());
    // Persons: {a1, u1}, {a2}, {a3, u3}, {u4, u5}, {ph-anon, ph-user}. Within
    // 6 days, u1, u3 and ph-user buy after viewing (u5's purchase is 7 days
    // after u4's view).
    assert_eq!(funnel(&store, "6d"), vec![5, 3]);
}
