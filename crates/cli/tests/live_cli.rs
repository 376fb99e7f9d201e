//! `tenure serve --segments`: live membership from history and from events
//! as they arrive, time-driven transitions at their exact instant, the
//! profile API and its read key, the NDJSON and store sinks, a restart and a
//! SIGKILL without losing or repeating a transition, and membership equal to
//! `tenure segment --as-of` at the same instant over the same events.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000_000;
const WRITE: &str = "wk";
const READ: &str = "rk";

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn triggers() -> String {
    format!("{}/../../queries/triggers.seg", env!("CARGO_MANIFEST_DIR"))
}

/// RFC 3339 with microseconds, as the server writes `at`.
fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// One HTTP/1.1 request; the status and the body.
fn http(addr: &str, method: &str, path: &str, key: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = {
        // base64 of "key:" for the short ASCII keys used here.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("{key}:").into_bytes();
        let mut out = String::new();
        for c in raw.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Runs a command that must succeed.
fn succeed(cmd: &mut Command) {
    let st = cmd.output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// `tenure ingest <dir>/<file> --to <dir>/store`, which must succeed.
fn ingest(d: &Path, file: &str) {
    succeed(
        tenure()
            .arg("ingest")
            .arg(d.join(file))
            .arg("--to")
            .arg(d.join("store")),
    );
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A server child process, killed if a test fails before stopping it.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Served {
    /// SIGKILL.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

fn serve(dir: &Path, log: &str) -> (Served, String) {
    serve_with(dir, log, &[])
}

fn serve_with(dir: &Path, log: &str, extra: &[&str]) -> (Served, String) {
    let mut child = tenure()
        .arg("serve")
        .arg("--to")
        .arg(dir.join("store"))
        .arg("--wal")
        .arg(dir.join("wal"))
        .args(["--write-key", WRITE, "--read-key", READ])
        .args(["--listen", "127.0.0.1:0"])
        .args(if extra.contains(&"--flush-age-ms") {
            &[][..]
        } else {
            &["--flush-age-ms", "200"][..]
        })
        .arg("--segments")
        .arg(triggers())
        .arg("--segments")
        .arg(dir.join("extra.seg"))
        .arg("--emit")
        .arg(format!("ndjson:{}", dir.join("out.ndjson").display()))
        .args(["--emit", "store"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| {
            panic!(
                "unexpected {line:?}: {}",
                std::fs::read_to_string(dir.join(log)).unwrap_or_default()
            )
        })
        .to_string();
    (Served(child), addr)
}

fn transitions(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

/// Waits (up to 20 s) until the NDJSON sink holds a transition.
fn wait_for(dir: &Path, user: &str, segment: &str, kind: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(t) = transitions(dir)
            .into_iter()
            .find(|t| t["user_id"] == user && t["segment"] == segment && t["type"] == kind)
        {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {kind} of {user} in {segment}: {:#?}",
            transitions(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn members(addr: &str, segment: &str) -> (String, BTreeSet<String>) {
    let (status, body) = http(addr, "GET", &format!("/v1/segments/{segment}"), READ, None);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let users = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    (v["as_of"].as_str().unwrap().to_string(), users)
}

/// `tenure segment --as-of at --users` over the store.
fn batch_members(dir: &Path, expr: &str, at: &str) -> BTreeSet<String> {
    let out = tenure()
        .args(["segment", "--data"])
        .arg(dir.join("store"))
        .args([expr, "--as-of", at, "--users", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: serde_json::Value = json(&text);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect()
}

fn stop(mut served: Served) {
    let child = &mut served.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
}

#[test]
fn live_segments_from_history_events_and_time_match_the_batch_definition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = now();
    // History, ingested before the server starts: a buyer whose 30th day
    // without a purchase comes 4 s after now, a champion, a first buyer.
    let lapse_at = t0 + 4_000_000;
    let mut history = vec![serde_json::json!({
        "user_id": "lapsing", "event": "purchase", "ts": rfc3339(lapse_at - 30 * DAY), "revenue": 20
    })];
    for k in 0..5 {
        history.push(serde_json::json!({
            "user_id": "champ", "event": "purchase", "ts": rfc3339(t0 - (k * 3 + 1) * DAY), "revenue": 120
        }));
    }
    history.push(serde_json::json!({
        "user_id": "once", "event": "purchase", "ts": rfc3339(t0 - 2 * DAY), "revenue": 15.5
    }));
    let text: String = history.iter().map(|h| format!("{h}\n")).collect();
    std::fs::write(d.join("history.ndjson"), text).unwrap();
    ingest(d, "history.ndjson");
    // A segment whose membership ends by time within the test: two views
    // dated so that the older leaves its hour 3 s from now.
    std::fs::write(
        d.join("extra.seg"),
        "segment two_views = did view_item >= 2 times within 1h\n",
    )
    .unwrap();

    let (child, addr) = serve(d, "serve-1.log");
    // The read key reads; a write key does not; no key does not.
    assert_eq!(
        http(&addr, "GET", "/v1/segments/champions", WRITE, None).0,
        401
    );
    assert_eq!(http(&addr, "GET", "/v1/users/champ", "nope", None).0, 401);
    let (_, champions) = members(&addr, "champions");
    assert_eq!(champions, BTreeSet::from(["champ".to_string()]));
    let (status, body) = http(&addr, "GET", "/v1/users/once", READ, None);
    assert_eq!(status, 200, "{body}");
    let once = json(&body);
    assert_eq!(once["segments"], serde_json::json!(["first_purchase"]));
    assert_eq!(once["features"]["frequency"], 1);
    assert_eq!(http(&addr, "GET", "/v1/segments/nope", READ, None).0, 404);
    assert_eq!(http(&addr, "GET", "/v1/users/nobody", READ, None).0, 404);

    // Events as they arrive.
    let t1 = now();
    let view_old = t1 - 3_600_000_000 + 3_000_000;
    let msgs = serde_json::json!({"batch": [
        {"type": "track", "userId": "browser", "event": "view_item", "timestamp": rfc3339(t1 - 2_000_000), "messageId": "m1"},
        {"type": "track", "userId": "browser", "event": "view_item", "timestamp": rfc3339(t1 - 1_000_000), "messageId": "m2"},
        {"type": "track", "userId": "browser", "event": "view_item", "timestamp": rfc3339(t1), "messageId": "m3"},
        {"type": "track", "userId": "once", "event": "purchase", "timestamp": rfc3339(t1), "messageId": "m4", "properties": {"revenue": 9.99}},
        {"type": "track", "userId": "viewer", "event": "view_item", "timestamp": rfc3339(view_old), "messageId": "m5"},
        {"type": "track", "userId": "viewer", "event": "view_item", "timestamp": rfc3339(t1), "messageId": "m6"},
    ]});
    let (status, body) = http(&addr, "POST", "/v1/batch", WRITE, Some(&msgs.to_string()));
    assert_eq!(status, 200, "{body}");
    // A retried batch (same messageIds) changes nothing.
    assert_eq!(
        http(&addr, "POST", "/v1/batch", WRITE, Some(&msgs.to_string())).0,
        200
    );

    let browsed = wait_for(d, "browser", "browsed_without_buying", "segment_entered");
    assert_eq!(browsed["features"]["count_1d:view_item"], 3);
    wait_for(d, "once", "first_purchase", "segment_exited");
    wait_for(d, "viewer", "two_views", "segment_entered");
    // Time-driven: stamped at the exact instant, with no event.
    let lapsed = wait_for(d, "lapsing", "lapsed_buyer", "segment_entered");
    assert_eq!(lapsed["at"], rfc3339(lapse_at));
    assert_eq!(lapsed["features"]["recency"], 30);
    let left = wait_for(d, "viewer", "two_views", "segment_exited");
    assert_eq!(left["at"], rfc3339(view_old + 3_600_000_000 + 1));

    // Live membership equals `tenure segment --as-of` at the same instant.
    let mut live = HashMap::new();
    let mut as_of = String::new();
    for seg in [
        "browsed_without_buying",
        "lapsed_buyer",
        "first_purchase",
        "champions",
        "two_views",
    ] {
        let (at, users) = members(&addr, seg);
        as_of = at;
        live.insert(seg, users);
    }
    stop(child);
    let defs = [
        (
            "browsed_without_buying",
            "did view_item >= 3 times within 24h and not did purchase within 24h",
        ),
        ("lapsed_buyer", "R >= 30d"),
        ("first_purchase", "F = 1"),
        ("champions", "R <= 30d and F >= 5 and M >= 500"),
        ("two_views", "did view_item >= 2 times within 1h"),
    ];
    for (seg, expr) in defs {
        assert_eq!(
            batch_members(d, expr, &as_of),
            live[seg],
            "{seg} as of {as_of}"
        );
    }
    // The store sink: transitions are events of the store.
    let entered = batch_members(d, "did segment_entered", &rfc3339(now() + DAY));
    assert!(
        entered.contains("lapsing") && entered.contains("browser"),
        "{entered:?}"
    );

    // A restart repeats nothing; a SIGKILL and a restart neither lose nor
    // repeat a transition, and what changed while down comes out at start.
    let before = transitions(d);
    let (child, addr) = serve(d, "serve-2.log");
    std::thread::sleep(Duration::from_millis(300));
    let msg = serde_json::json!({"batch": [
        {"type": "track", "userId": "browser", "event": "purchase", "timestamp": rfc3339(now()), "messageId": "m7", "properties": {"revenue": 5}},
    ]});
    assert_eq!(
        http(&addr, "POST", "/v1/batch", WRITE, Some(&msg.to_string())).0,
        200
    );
    wait_for(d, "browser", "browsed_without_buying", "segment_exited");
    child.kill();
    let (child, addr) = serve(d, "serve-3.log");
    std::thread::sleep(Duration::from_millis(500));
    let (_, browsing) = members(&addr, "browsed_without_buying");
    assert!(browsing.is_empty(), "{browsing:?}");
    stop(child);
    let after = transitions(d);
    assert!(after.len() > before.len());
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "earlier lines are kept as written"
    );
    let ids: Vec<&str> = after.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a transition id repeated: {after:#?}"
    );
    // Replayed in order from the first start's membership (taken as known,
    // not emitted), the sink's transitions alternate per user and segment.
    let mut state: HashMap<(String, String), bool> = HashMap::new();
    for (user, seg) in [("champ", "champions"), ("once", "first_purchase")] {
        state.insert((format!("{user:?}"), format!("{seg:?}")), true);
    }
    for t in &after {
        let key = (t["user_id"].to_string(), t["segment"].to_string());
        let entered = t["type"] == "segment_entered";
        assert_ne!(state.get(&key).copied().unwrap_or(false), entered, "{t}");
        state.insert(key, entered);
    }
}

#[test]
fn bad_live_segments_are_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bad.seg"), "segment top = r_score = 5\n").unwrap();
    let out = tenure()
        .arg("serve")
        .arg("--to")
        .arg(d.join("store"))
        .arg("--wal")
        .arg(d.join("wal"))
        .args(["--write-key", WRITE, "--listen", "127.0.0.1:0"])
        .arg("--segments")
        .arg(d.join("bad.seg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`r_score` cannot be kept live"), "{err}");
    let out = tenure()
        .arg("serve")
        .arg("--to")
        .arg(d.join("store"))
        .arg("--wal")
        .arg(d.join("wal"))
        .args([
            "--write-key",
            WRITE,
            "--emit",
            "ndjson:x",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --segments"));
    let out = tenure()
        .arg("serve")
        .args(["--to", "s", "--wal", "w", "--write-key", WRITE])
        .args(["--segments", "x.seg", "--emit", "kafka:topic"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sink"));
}

/// SIGKILL at random moments while transitions are being made: after every
/// restart the NDJSON sink holds each transition id once, and replayed in
/// order it gives exactly the membership the server reports (nothing lost,
/// nothing repeated).
#[test]
fn sigkill_while_transitions_flow_loses_and_repeats_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("extra.seg"),
        "segment two_views = did view_item >= 2 times within 1h\n",
    )
    .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut msg = 0;
    // Checkpoints all the time: kills land before, during and after them.
    let often = ["--live-checkpoint-secs", "0.1"];
    for round in 0..8 {
        if round == 4 {
            // Another writer's ingest while the server is down: a store
            // file the checkpoint lacks, read whole at the next start.
            let lines: String = (0..30)
                .map(|i| {
                    let event = ["view_item", "purchase"][i % 2];
                    let line = serde_json::json!({
                        "user_id": format!("k{}", i % 5), "event": event,
                        "ts": rfc3339(now() - 1_000_000 - i as i64),
                        "event_id": format!("batch-{i}"), "revenue": "2.50"
                    });
                    format!("{line}\n")
                })
                .collect();
            std::fs::write(d.join("other.ndjson"), lines).unwrap();
            ingest(d, "other.ndjson");
        }
        let (child, addr) = serve_with(d, &format!("kill-{round}.log"), &often);
        // Bursts of views and purchases for a few users, spread over a few
        // checkpoints; some in flight when killed.
        for _ in 0..(3 + rnd(8)) {
            let batch: Vec<serde_json::Value> = (0..(1 + rnd(20)))
                .map(|_| {
                    msg += 1;
                    let event = ["view_item", "view_item", "purchase"][rnd(3) as usize];
                    serde_json::json!({
                        "type": "track", "userId": format!("k{}", rnd(12)), "event": event,
                        "timestamp": rfc3339(now() - rnd(3_000_000) as i64),
                        "messageId": format!("k-{msg}"), "properties": {"revenue": 1}
                    })
                })
                .collect();
            let body = serde_json::json!({ "batch": batch }).to_string();
            let (status, text) = http(&addr, "POST", "/v1/batch", WRITE, Some(&body));
            assert_eq!(status, 200, "{text}");
            std::thread::sleep(Duration::from_millis(rnd(80)));
        }
        child.kill();
    }
    // A last start settles what changed while the server was down.
    let (child, addr) = serve_with(d, "kill-last.log", &often);
    std::thread::sleep(Duration::from_millis(500));
    let profiles = |addr: &str| -> Vec<String> {
        (0..12)
            .map(|u| {
                let (status, text) = http(addr, "GET", &format!("/v1/users/k{u}"), READ, None);
                if status != 200 {
                    return format!("{status}");
                }
                let mut v = json(&text);
                v.as_object_mut().unwrap().remove("as_of");
                v.to_string()
            })
            .collect()
    };
    let restored = profiles(&addr);
    let mut live = BTreeSet::new();
    for seg in [
        "browsed_without_buying",
        "first_purchase",
        "two_views",
        "champions",
    ] {
        for u in members(&addr, seg).1 {
            live.insert((u, seg.to_string()));
        }
    }
    stop(child);
    let all = transitions(d);
    let ids: BTreeSet<&str> = all.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "a transition id repeated");
    let mut replayed = BTreeSet::new();
    for t in &all {
        let key = (
            t["user_id"].as_str().unwrap().to_string(),
            t["segment"].as_str().unwrap().to_string(),
        );
        let entered = t["type"] == "segment_entered";
        assert_eq!(replayed.contains(&key), !entered, "{t}");
        if entered {
            replayed.insert(key);
        } else {
            replayed.remove(&key);
        }
    }
    replayed.retain(|(_, s)| s != "lapsed_buyer");
    assert_eq!(replayed, live, "the sink's membership is the server's");
    // The starts read a checkpoint back: the state is the one a fold of the
    // whole store gives (the checkpoint removed), feature by feature, and
    // that start finds nothing to emit.
    let logs: String = (0..8)
        .map(|r| std::fs::read_to_string(d.join(format!("kill-{r}.log"))).unwrap())
        .collect();
    assert!(logs.contains("from the checkpoint of"), "{logs}");
    assert!(logs.contains("tenure-server: live checkpoint: "), "{logs}");
    assert!(
        !logs.contains("live checkpoint failed") && !logs.contains("deleting the WAL segments"),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("from the checkpoint") && !l.contains(" of 0 store file(s)")),
        "the other writer's file is read: {logs}"
    );
    // A damaged checkpoint (one byte flipped) is not used.
    let path = d.join("wal/live/checkpoint.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let (child, addr) = serve(d, "refold.log");
    let log = std::fs::read_to_string(d.join("refold.log")).unwrap();
    assert!(
        log.contains("checkpoint not used (") && log.contains("checksum does not match"),
        "{log}"
    );
    assert_eq!(profiles(&addr), restored);
    stop(child);
    assert_eq!(
        transitions(d).len(),
        all.len(),
        "a full fold changes nothing"
    );
}

/// After a crash the WAL holds segments not committed yet. The restart reads
/// them into the live state before the flusher commits (and moves) them:
/// with a history that takes a while to fold, the flusher used to win the
/// race and the server refused to start ("cannot read the WAL").
#[test]
fn a_restart_reads_uncommitted_wal_segments_before_they_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("extra.seg"), "segment any = did view_item\n").unwrap();
    succeed(
        tenure()
            .args(["gen", "--users", "20000", "--days", "30", "--to"])
            .arg(d.join("store")),
    );
    // Nothing is committed before the kill (a long flush age), and no
    // checkpoint while serving.
    let slow = ["--flush-age-ms", "600000", "--live-checkpoint-secs", "0"];
    for round in 0..2 {
        let (child, addr) = serve_with(d, &format!("crash-{round}.log"), &slow);
        let msg = serde_json::json!({"batch": [
            {"type": "track", "userId": format!("late{round}"), "event": "view_item",
             "timestamp": rfc3339(now()), "messageId": format!("late-{round}")},
        ]});
        assert_eq!(
            http(&addr, "POST", "/v1/batch", WRITE, Some(&msg.to_string())).0,
            200
        );
        child.kill();
    }
    let (child, addr) = serve_with(d, "crash-last.log", &slow);
    for round in 0..2 {
        let (status, text) = http(&addr, "GET", &format!("/v1/users/late{round}"), READ, None);
        assert_eq!(status, 200, "{text}");
        assert!(
            json(&text)["segments"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("any"))
        );
    }
    stop(child);
}

/// An event the live state applied but the store's commit dropped (its
/// `event_id` was already stored, by another writer): a checkpoint holding it
/// is not used, the restart folds the store and counts the event once.
#[test]
fn a_commit_that_drops_applied_events_voids_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("extra.seg"), "segment viewer = did view_item\n").unwrap();
    let ts = rfc3339(now() - 5_000_000);
    let line = serde_json::json!({
        "user_id": "dup", "event": "view_item", "ts": ts, "event_id": "same-id"
    });
    std::fs::write(d.join("batch.ndjson"), format!("{line}\n")).unwrap();
    ingest(d, "batch.ndjson");
    let views = |addr: &str| {
        let (status, text) = http(addr, "GET", "/v1/users/dup", READ, None);
        assert_eq!(status, 200, "{text}");
        json(&text)["features"]["count_1d:view_item"].clone()
    };
    let often = ["--live-checkpoint-secs", "0.1"];
    let (child, addr) = serve_with(d, "first.log", &often);
    assert_eq!(views(&addr), 1);
    let msg = serde_json::json!({"batch": [
        {"type": "track", "userId": "dup", "event": "view_item", "timestamp": ts, "messageId": "same-id"},
    ]});
    assert_eq!(
        http(&addr, "POST", "/v1/batch", WRITE, Some(&msg.to_string())).0,
        200
    );
    // Committed (and dropped as a duplicate) and checkpointed meanwhile.
    std::thread::sleep(Duration::from_millis(800));
    stop(child);
    let (child, addr) = serve_with(d, "second.log", &often);
    let log = std::fs::read_to_string(d.join("second.log")).unwrap();
    assert!(
        log.contains("checkpoint not used (a commit of WAL segments wrote 0 of the 1"),
        "{log}"
    );
    assert_eq!(views(&addr), 1, "the store holds the event once");
    stop(child);
}
