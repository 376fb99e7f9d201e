//! The server flushing its WAL to an S3-compatible server (the one `.ci/test`
//! starts) behind a fault-injecting proxy: every acknowledged event ends up in
//! the store exactly once, whether a flush retries to success or fails and
//! leaves its segments in the WAL for a later attempt or the next start.

mod common;

use std::time::Duration;

use arrow_array::{Array, StringArray};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::Store;
use tenure_ingest::io::Io;
use tenure_server::ServerError;
use tenure_testkit::{Fault, FaultPlan, FaultProxy, s3_test_server, unique_prefix};

const TS: &str = "2026-01-05T10:00:00Z";

/// One fault of each kind first, so every kind is surely exercised.
const EVERY_KIND: [Fault; 7] = [
    Fault::Drop,
    Fault::LostResponse,
    Fault::Status(500),
    Fault::Status(503),
    Fault::StatusAfterForward(500),
    Fault::Delay(Duration::from_millis(150)),
    Fault::ResetMidBody,
];

/// The event ids a reader of the store sees, read directly (no proxy). Every
/// committed file must be readable and hold the rows the manifest says.
fn stored_ids(direct: &str) -> Vec<String> {
    try_stored_ids(direct).unwrap_or_else(|e| panic!("{e}"))
}

/// [`stored_ids`], or why a committed file could not be read. While a commit
/// is moving its files into place (a copy, then a delete, on S3), a reader
/// that listed `events/` just before the copy looks for the staged file just
/// after the delete: "not found" (a reader race of object stores, not a fault).
fn try_stored_ids(direct: &str) -> Result<Vec<String>, String> {
    let io = Io::new(Store::open(direct).unwrap());
    let snap = tenure_ingest::manifest::load_latest(&io).unwrap();
    let paths =
        tenure_ingest::io::block_on(tenure_store::readable_paths(&io.store, &snap)).unwrap();
    let mut ids = Vec::new();
    for (f, path) in snap.files.iter().zip(&paths) {
        let data = io
            .get(path)
            .map_err(|e| format!("committed file {} unreadable: {e}", f.path))?;
        let mut rows = 0;
        for b in ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let col = b.column_by_name("event_id").unwrap();
            let col = col.as_any().downcast_ref::<StringArray>().unwrap();
            ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
            rows += b.num_rows() as u64;
        }
        assert_eq!(rows, f.rows, "{} holds other rows than committed", f.path);
    }
    Ok(ids)
}

async fn stored_ids_async(direct: &str) -> Vec<String> {
    let direct = direct.to_string();
    tokio::task::spawn_blocking(move || stored_ids(&direct))
        .await
        .unwrap()
}

/// Sends `batches` batches of `per` messages with ids `<tag>-<b>-<i>`; every
/// one must be acknowledged. Returns the ids.
async fn send(srv: &Running, tag: &str, batches: usize, per: usize) -> Vec<String> {
    let c = client();
    let mut ids = Vec::new();
    for b in 0..batches {
        let msgs = (0..per)
            .map(|i| {
                let id = format!("{tag}-{b}-{i}");
                ids.push(id.clone());
                track(&id, &format!("u{}", i % 13), "view_item", TS)
            })
            .collect();
        let (status, body) = post(&c, &srv.url("/v1/batch"), batch(msgs)).await;
        assert_eq!(status, 200, "{body}");
        // Pacing, so that the flusher commits many small groups meanwhile.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    ids
}

fn assert_exactly_once(mut got: Vec<String>, want: &[String]) {
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got.len(), want.len(), "stored events");
    assert_eq!(got, want);
}

/// The answer to a flush's manifest put is lost after the server stored it:
/// the flush is committed (once), not taken for a concurrent commit of the
/// same segments whose files are then deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_a_flush_commit_loses_nothing() {
    let Some((endpoint, bucket)) = s3_test_server() else {
        return;
    };
    for fault in [Fault::LostResponse, Fault::StatusAfterForward(500)] {
        let dir = tempfile::tempdir().unwrap();
        let proxy = FaultProxy::start(&endpoint, FaultPlan::none()).unwrap();
        let prefix = unique_prefix("flush-lost-answer");
        let direct = format!("s3://{bucket}/{prefix}");
        let mut cfg = config(dir.path());
        cfg.store_url = format!("{direct}?endpoint={}", proxy.endpoint());
        let srv = Running::start(cfg).await;
        proxy.set_plan(
            FaultPlan::none()
                .script([fault])
                .only("PUT", "/_tenure/manifest/"),
        );
        let ids = send(&srv, "m", 3, 20).await;
        let report = srv.stop().await.unwrap();
        assert_eq!(proxy.stats().count(fault.name()), 1, "{fault:?}");
        assert_eq!(report.flushed, 60, "{fault:?}");
        assert_exactly_once(stored_ids_async(&direct).await, &ids);
    }
}

/// A server flushing through a proxy that faults about a third of all
/// requests, then through one that refuses every manifest put for a while:
/// every acknowledged event is stored exactly once in the end (after a restart
/// without faults for what the stopping server could not commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_through_a_faulty_s3_store_every_event_once() {
    let Some((endpoint, bucket)) = s3_test_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&endpoint, FaultPlan::none()).unwrap();
    let prefix = unique_prefix("flush-faulty");
    let direct = format!("s3://{bucket}/{prefix}");
    let mut cfg = config(dir.path());
    cfg.store_url = format!("{direct}?endpoint={}", proxy.endpoint());
    cfg.flush_bytes = 8 << 10;
    let srv = Running::start(cfg.clone()).await;
    proxy.set_plan(
        FaultPlan::seeded(11)
            .script(EVERY_KIND)
            .share(0.05, Fault::Drop)
            .share(0.05, Fault::LostResponse)
            .share(0.05, Fault::Status(500))
            .share(0.04, Fault::Status(503))
            .share(0.04, Fault::StatusAfterForward(500))
            .share(0.05, Fault::Delay(Duration::from_millis(150)))
            .share(0.05, Fault::ResetMidBody),
    );
    let mut ids = send(&srv, "a", 40, 25).await;
    // The flushes retry to success: wait until every event is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let poll = direct.clone();
        let seen = tokio::task::spawn_blocking(move || try_stored_ids(&poll))
            .await
            .unwrap();
        if seen.is_ok_and(|s| s.len() >= ids.len()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flushes did not catch up within 2 minutes: {:?}",
            proxy.stats()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_exactly_once(stored_ids_async(&direct).await, &ids);
    let stats = proxy.stats();
    eprintln!("proxy {stats:?}");

    // Commits refused outright: flushes fail and the segments stay in the WAL.
    proxy.set_plan(
        FaultPlan::seeded(2)
            .share(1.0, Fault::Status(403))
            .only("PUT", "/_tenure/manifest/"),
    );
    ids.extend(send(&srv, "b", 10, 40).await);
    // Stopping retries a few times, then leaves what it could not commit.
    match srv.stop().await {
        Err(ServerError::Uncommitted { segments, .. }) => assert!(segments > 0),
        other => panic!("refused commits, yet the stop said {other:?}"),
    }
    assert!(proxy.stats().count("status") > 0);
    let partial = stored_ids_async(&direct).await;
    assert_eq!(partial.len(), 1000, "refused commits stored nothing");

    proxy.set_plan(FaultPlan::none());
    let again = Running::start(cfg).await;
    again.stop().await.unwrap();
    assert_exactly_once(stored_ids_async(&direct).await, &ids);
    for kind in [
        "drop",
        "lost-response",
        "500",
        "503",
        "status-after-forward",
        "delay",
        "reset-mid-body",
    ] {
        assert!(stats.count(kind) > 0, "no {kind} fault injected: {stats:?}");
    }
}
