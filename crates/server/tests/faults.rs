//! Full disks, for real: the WAL, or the store, on a small tmpfs filled to the
//! last byte. Clients get 507 (or 503), never an acknowledgement for what is
//! not durable; once space returns, every acknowledged event (and every
//! refused one the client sent again) ends in the store exactly once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const TS: &str = "2026-01-05T10:00:00Z";
const FS_BYTES: u64 = 8 << 20;

fn batch_of(b: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..20).map(|i| format!("b{b}-{i}")).collect();
    let msgs = ids
        .iter()
        .map(|id| {
            let mut m = track(id, &format!("u{b}"), "e", TS);
            m["properties"]["pad"] = serde_json::Value::String("p".repeat(400));
            m
        })
        .collect();
    (ids, batch(msgs))
}

/// Sends batch `b` until it is acknowledged (space must have returned).
async fn until_acked(c: &reqwest::Client, srv: &Running, body: &str) {
    for _ in 0..100 {
        let (s, r) = post(c, &srv.url("/v1/batch"), body.to_string()).await;
        match s {
            200 => return,
            503 | 507 | 429 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("{s}: {r}"),
        }
    }
    panic!("never acknowledged after space returned");
}

/// Sends the next batch; the WAL's disk has room, so it must be taken.
async fn send(c: &reqwest::Client, srv: &Running, b: &mut usize, sent: &mut HashSet<String>) {
    let (ids, body) = batch_of(*b);
    *b += 1;
    let (s, r) = post(c, &srv.url("/v1/batch"), body).await;
    assert_eq!(s, 200, "{r}");
    sent.extend(ids);
}

fn assert_exactly_once(rows: &[Row], want: &HashSet<String>) {
    let counts = id_counts(rows);
    for id in want {
        assert_eq!(counts.get(id), Some(&1), "{id} is not stored exactly once");
    }
    assert_eq!(rows.len(), want.len(), "events stored that were never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_during_wal_append_is_507_and_nothing_unacknowledged_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::mount(
        &dir.path().join("walfs"),
        FS_BYTES,
        "disk_full_during_wal_append_is_507_and_nothing_unacknowledged_is_kept",
    ) else {
        return;
    };
    let mut cfg = config(dir.path());
    cfg.wal_dir = dir.path().join("walfs").join("wal");
    let srv = Running::start(cfg.clone()).await;
    let c = client();
    let mut sent = HashSet::new();
    let mut b = 0;
    for _ in 0..5 {
        let (ids, body) = batch_of(b);
        b += 1;
        let (s, r) = post(&c, &srv.url("/v1/batch"), body).await;
        assert_eq!(s, 200, "{r}");
        sent.extend(ids);
    }
    let filler = fs.fill("filler");
    assert!(fs.free() < 4096, "{} bytes still free", fs.free());
    // The disk is full: requests are refused, except those that fit in space a
    // commit gives back by deleting a WAL segment.
    let mut refused = Vec::new();
    let mut refusals = 0;
    while refusals < 5 {
        assert!(b < 200, "a full disk never refused a request");
        let (ids, body) = batch_of(b);
        b += 1;
        let (s, r) = post(&c, &srv.url("/v1/batch"), body.clone()).await;
        match s {
            200 => sent.extend(ids),
            // Insufficient Storage: the client may retry (Segment's libraries
            // retry every 5xx).
            507 => {
                refusals += 1;
                assert!(r["message"].as_str().unwrap().contains("WAL"), "{r}");
                refused.push((ids, body));
            }
            other => panic!("{other}: {r}"),
        }
    }
    // Space returns: the clients' retries are taken, nothing was lost meanwhile.
    std::fs::remove_file(&filler).unwrap();
    for (ids, body) in refused {
        until_acked(&c, &srv, &body).await;
        sent.extend(ids);
    }
    let (ids, body) = batch_of(b);
    let (s, _) = post(&c, &srv.url("/v1/batch"), body).await;
    assert_eq!(s, 200);
    sent.extend(ids);
    srv.stop().await.unwrap();
    // A restart on the same WAL finds nothing left behind to recover.
    let report = Running::start(cfg).await.stop().await.unwrap();
    assert_eq!(report.flushed, 0, "{report:?}");
    let rows = stored_async(&dir.path().join("store")).await;
    assert_exactly_once(&rows, &sent);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_disk_full_during_a_flush_keeps_the_wal_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::mount(
        &dir.path().join("storefs"),
        FS_BYTES,
        "store_disk_full_during_a_flush_keeps_the_wal_until_space_returns",
    ) else {
        return;
    };
    let mut cfg = config(dir.path());
    let store = dir.path().join("storefs").join("store");
    cfg.store_url = store.display().to_string();
    let srv = Running::start(cfg).await;
    let c = client();
    let mut sent = HashSet::new();
    let mut b = 0;
    for _ in 0..3 {
        send(&c, &srv, &mut b, &mut sent).await;
    }
    health_until(&c, &srv, Duration::from_secs(20), |_, h| {
        h["flushed"].as_u64() == Some(60)
    })
    .await;
    let filler = fs.fill("filler");
    for _ in 0..10 {
        send(&c, &srv, &mut b, &mut sent).await;
    }
    // Commits fail on the full store; the server says so, the WAL keeps all.
    let (_, h) = health_until(&c, &srv, Duration::from_secs(20), |s, _| s == 503).await;
    assert_eq!(h["status"], "flush-failing", "{h}");
    assert!(h["wal_bytes"].as_u64().unwrap() > 0, "{h}");
    std::fs::remove_file(&filler).unwrap();
    let want = sent.len() as u64;
    health_until(&c, &srv, Duration::from_secs(30), |s, h| {
        s == 200 && h["flushed"].as_u64() == Some(want)
    })
    .await;
    send(&c, &srv, &mut b, &mut sent).await;
    srv.stop().await.unwrap();
    let rows = stored_async(&store).await;
    assert_exactly_once(&rows, &sent);
    drop(fs);
}

/// The WAL fills its disk while the store is down (the WAL bound is larger than
/// the disk), and other files take the last bytes. When the store returns the
/// only space is what commits free by deleting segments: committing must not
/// need disk space on the WAL's side first, or the server wedges for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_disk_filled_by_the_wal_drains_once_the_store_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::mount(
        &dir.path().join("walfs"),
        FS_BYTES,
        "wal_disk_filled_by_the_wal_drains_once_the_store_returns",
    ) else {
        return;
    };
    let mut cfg = config(dir.path());
    cfg.wal_dir = dir.path().join("walfs").join("wal");
    cfg.max_wal_bytes = 4 * FS_BYTES;
    let srv = Running::start(cfg).await;
    // Break the store: an unreadable manifest makes every commit fail.
    let bogus = dir
        .path()
        .join("store")
        .join(tenure_schema::StoreLayout::manifest(1));
    std::fs::create_dir_all(bogus.parent().unwrap()).unwrap();
    std::fs::write(&bogus, b"not a manifest").unwrap();
    let c = client();
    let mut sent = HashSet::new();
    let mut b = 0;
    loop {
        assert!(b < 2_000, "the WAL never filled its disk");
        let (ids, body) = batch_of(b);
        b += 1;
        let (s, r) = post(&c, &srv.url("/v1/batch"), body).await;
        match s {
            200 => sent.extend(ids),
            507 => break,
            other => panic!("{other}: {r}"),
        }
    }
    // Whatever a failed group left free goes to another file.
    let _other = fs.fill("other");
    std::fs::remove_file(&bogus).unwrap();
    let want = sent.len() as u64;
    // The flusher's retries back off: alone this drains in about 30 s, and
    // in the whole suite on two cores it took over 45 s once.
    health_until(&c, &srv, Duration::from_secs(120), |_, h| {
        h["flushed"].as_u64() == Some(want)
    })
    .await;
    send(&c, &srv, &mut b, &mut sent).await;
    srv.stop().await.unwrap();
    let rows = stored_async(&dir.path().join("store")).await;
    assert_exactly_once(&rows, &sent);
    drop(fs);
}
