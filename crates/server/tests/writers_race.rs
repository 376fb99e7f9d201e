//! Issue 16, item 2: one large ingest racing two loops of tiny ingests and a
//! flushing server must commit every row exactly once and keep the users
//! dictionary a bijection (the large ingest rebases on several commits in a row).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{Array, StringArray, UInt32Array};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::io::Io;
use tenure_ingest::users::decode_segment;
use tenure_ingest::{Ingest, IngestOptions, Store};

const ROUNDS: usize = 20;
const BIG_EVENTS: usize = 12_000;
const TINY_INGESTS: u64 = 12;
const POSTS: u64 = 30;

/// Events of users `u{user}` with unique ids `{prefix}-{i}`.
fn write_file(path: &Path, prefix: &str, users: impl Iterator<Item = u64>) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut n = 0;
    for (i, u) in users.enumerate() {
        writeln!(
            f,
            r#"{{"event_id":"{prefix}-{i}","user_id":"u{u}","event":"view","ts":"2026-03-{:02}T10:00:{:02}Z"}}"#,
            1 + i % 3,
            i % 60
        )
        .unwrap();
        n += 1;
    }
    n
}

fn ingest(store: &str, path: &Path, file_rows: usize) -> u64 {
    let mut o = IngestOptions::default();
    o.config.ingest.file_rows = file_rows;
    let mut ing = Ingest::begin(Store::open(store).unwrap(), o).unwrap();
    ing.add_file(path).unwrap();
    ing.commit().unwrap().counters.written
}

/// Checks the dictionary is a bijection of keys `0..count` and user ids, that
/// every stored row agrees with it; returns the stored rows.
fn check_users(store_dir: &Path) -> u64 {
    let store = Store::open(&store_dir.display().to_string()).unwrap();
    let io = Io::new(store.clone());
    let snap = tenure_ingest::manifest::load_latest(&io).unwrap();
    let mut id_of: HashMap<u32, String> = HashMap::new();
    let mut key_of: HashMap<String, u32> = HashMap::new();
    for seg in &snap.users.segments {
        for (k, id) in decode_segment(io.get(seg).unwrap()).unwrap() {
            assert!(id_of.insert(k, id.clone()).is_none(), "key {k} twice");
            assert!(key_of.insert(id.clone(), k).is_none(), "user {id} twice");
        }
    }
    assert_eq!(id_of.len() as u64, snap.users.count);
    assert!((0..snap.users.count as u32).all(|k| id_of.contains_key(&k)));
    let paths = tenure_ingest::io::block_on(tenure_store::readable_paths(&store, &snap)).unwrap();
    let mut rows = 0;
    for p in paths {
        let data = bytes::Bytes::from(std::fs::read(store_dir.join(&p)).unwrap());
        for b in ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let keys = b.column_by_name("user_key").unwrap();
            let keys = keys.as_any().downcast_ref::<UInt32Array>().unwrap();
            let ids = b.column_by_name("user_id").unwrap();
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                assert_eq!(
                    key_of.get(ids.value(i)),
                    Some(&keys.value(i)),
                    "row of {} has key {}",
                    ids.value(i),
                    keys.value(i)
                );
            }
            rows += b.num_rows() as u64;
        }
    }
    assert_eq!(rows, snap.rows());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ingest_racing_tiny_ingests_and_the_server_keeps_users_exact() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.flush_age = Duration::from_millis(20);
        cfg.flush_bytes = 4 << 10;
        let store_dir: PathBuf = dir.path().join("store");
        let store = store_dir.display().to_string();
        let server = Running::start(cfg).await;

        // The large ingest meets users 0..3000, many of which the others meet
        // first; it stages many files so its rekeying takes a while.
        let big = dir.path().join("big.ndjson");
        let big_rows = write_file(&big, "big", (0..BIG_EVENTS as u64).map(|i| i * 7 % 3000));
        let big_task = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || ingest(&store, &big, 2000))
        };
        // Two loops of tiny ingests, each with new and shared users, committing
        // while the large one decodes, stages and (re)tries its commit.
        let tiny = |lane: u64| {
            let (store, dir) = (store.clone(), dir.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                let mut written = 0;
                let mut i = 0u64;
                while i < TINY_INGESTS {
                    let path = dir.join(format!("tiny-{lane}-{i}.ndjson"));
                    let users = [i * 13 % 3000, 3000 + lane * 100_000 + i, i * 31 % 3000 + 1];
                    write_file(&path, &format!("t{lane}-{i}"), users.into_iter());
                    written += ingest(&store, &path, 1 << 20);
                    i += 1;
                }
                written
            })
        };
        let (t1, t2) = (tiny(1), tiny(2));
        // The server, fed while the others run.
        let c = client();
        let mut posted = 0u64;
        let mut n = 0u64;
        while n < POSTS {
            let msgs = (0..5)
                .map(|j| {
                    let user = format!(
                        "u{}",
                        if j % 2 == 0 {
                            n * 17 % 3000
                        } else {
                            900_000 + n * 5 + j
                        }
                    );
                    track(&format!("s-{n}-{j}"), &user, "view", "2026-03-02T11:00:00Z")
                })
                .collect();
            let (status, body) = post(&c, &server.url("/v1/batch"), batch(msgs)).await;
            assert_eq!(status, 200, "{body}");
            posted += 5;
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let big_written = big_task.await.expect("the large ingest does not panic");
        let tiny_written = t1.await.expect("tiny ingests do not panic")
            + t2.await.expect("tiny ingests do not panic");
        server.stop().await.expect("server stops cleanly");
        assert_eq!(big_written, big_rows, "round {round}");
        let dir_path = store_dir.clone();
        let rows = tokio::task::spawn_blocking(move || check_users(&dir_path))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(rows, big_written + tiny_written + posted, "round {round}");
    }
}
