//! Ingest and compaction against an S3-compatible server (the one `.ci/test`
//! starts) behind a fault-injecting proxy: dropped connections, lost answers,
//! 500/503s, slow answers and resets mid-body. Every run either succeeds or
//! fails with nothing partial visible, and the counts are exact afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::io::Io;
use tenure_ingest::{Ingest, IngestError, IngestOptions, Store, manifest};
use tenure_testkit::{Fault, FaultPlan, FaultProxy, s3_test_server, unique_prefix};

/// Every fault kind, on a share of all requests.
fn faulty(seed: u64) -> FaultPlan {
    FaultPlan::seeded(seed)
        .script([
            Fault::Drop,
            Fault::LostResponse,
            Fault::Status(500),
            Fault::Status(503),
            Fault::StatusAfterForward(500),
            Fault::Delay(Duration::from_millis(150)),
            Fault::ResetMidBody,
        ])
        .share(0.05, Fault::Drop)
        .share(0.05, Fault::LostResponse)
        .share(0.05, Fault::Status(500))
        .share(0.04, Fault::Status(503))
        .share(0.04, Fault::StatusAfterForward(500))
        .share(0.05, Fault::Delay(Duration::from_millis(150)))
        .share(0.05, Fault::ResetMidBody)
}

/// The store URL through the proxy, and the same store reached directly.
fn urls(proxy: &FaultProxy, bucket: &str, tag: &str) -> (String, String) {
    let prefix = unique_prefix(tag);
    (
        format!("s3://{bucket}/{prefix}?endpoint={}", proxy.endpoint()),
        format!("s3://{bucket}/{prefix}"),
    )
}

/// An NDJSON input of `rows` events with ids `<tag>-<i>`, spread over 3 days and
/// `rows / 4` users (some shared with other inputs).
fn input(dir: &Path, tag: &str, rows: usize) -> PathBuf {
    let path = dir.join(format!("{tag}.ndjson"));
    let mut text = String::new();
    for i in 0..rows {
        text.push_str(&format!(
            "{{\"event_id\":\"{tag}-{i}\",\"user_id\":\"u{}\",\"event\":\"view\",\"ts\":\"2026-03-0{}T10:{:02}:00Z\"}}\n",
            (i * 7) % (rows / 4 + 3),
            1 + i % 3,
            i % 60
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn ingest(url: &str, file: &Path) -> Result<tenure_ingest::Summary, IngestError> {
    let mut ing = Ingest::begin(Store::open(url)?, IngestOptions::default())?;
    ing.add_file(file)?;
    ing.commit()
}

/// What a reader of the store sees, read directly (no proxy): every committed
/// file must be readable and hold the rows the manifest says; returns the
/// event ids, the number of committed sources and the users dictionary size.
fn visible(direct: &str) -> (Vec<String>, usize, u64) {
    let io = Io::new(Store::open(direct).unwrap());
    let snap = manifest::load_latest(&io).unwrap();
    let paths =
        tenure_ingest::io::block_on(tenure_store::readable_paths(&io.store, &snap)).unwrap();
    let mut ids = Vec::new();
    for (f, path) in snap.files.iter().zip(&paths) {
        let data = io
            .get(path)
            .unwrap_or_else(|e| panic!("committed file {} unreadable: {e}", f.path));
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
    (ids, snap.sources.len(), snap.users.count)
}

fn assert_exact(direct: &str, want: &[String], sources: usize) {
    let (mut ids, got_sources, _) = visible(direct);
    ids.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got_sources, sources);
    assert_eq!(ids.len(), want.len(), "row count");
    assert_eq!(ids, want);
}

fn ids_of(tag: &str, rows: usize) -> Vec<String> {
    (0..rows).map(|i| format!("{tag}-{i}")).collect()
}

/// The conditional put of a manifest version is stored by the server but its
/// answer is lost (the connection closes, or a 500 comes back): object_store
/// sends it again and gets "already exists". That version is this writer's own
/// commit, not a concurrent one: the ingest succeeds, once, with its files.
#[test]
fn a_lost_answer_to_the_manifest_put_is_our_own_commit() {
    let Some((endpoint, bucket)) = s3_test_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for fault in [Fault::LostResponse, Fault::StatusAfterForward(500)] {
        let plan = || {
            FaultPlan::none()
                .script([fault])
                .only("PUT", "/_tenure/manifest/")
        };
        let proxy = FaultProxy::start(&endpoint, plan()).unwrap();
        let (url, direct) = urls(&proxy, &bucket, "lost-answer");
        let a = input(dir.path(), "a", 40);
        let s = ingest(&url, &a).unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(proxy.stats().count(fault.name()), 1);
        assert_eq!(s.version, Some(1), "{fault:?}");
        assert_eq!(s.counters.written, 40);
        assert_exact(&direct, &ids_of("a", 40), 1);

        // A second ingest, so compaction has two files per partition to merge.
        let b = input(dir.path(), "b", 40);
        assert_eq!(ingest(&url, &b).unwrap().version, Some(2));
        proxy.set_plan(plan());
        let c = tenure_ingest::compact(
            Store::open(&url).unwrap(),
            &Default::default(),
            None,
            |_, _| {},
        )
        .unwrap_or_else(|e| panic!("compaction, {fault:?}: {e}"));
        assert_eq!(proxy.stats().count(fault.name()), 1);
        assert_eq!(c.version, Some(3));
        let mut want = ids_of("a", 40);
        want.extend(ids_of("b", 40));
        assert_exact(&direct, &want, 2);
        let snap =
            tenure_ingest::io::block_on(tenure_store::load_latest(&Store::open(&direct).unwrap()))
                .unwrap();
        assert_eq!(snap.files.len(), 3, "one file per day after compaction");
    }
}

/// Rounds of ingests through a proxy that faults about a third of all
/// requests, then compactions through it: each run succeeds or fails; after
/// each, what a reader sees is complete (every committed file readable, rows as
/// committed); once the faults stop, rerunning the failed ingests and a
/// compaction leaves exactly every event once.
#[test]
fn ingest_and_compaction_through_a_faulty_s3_are_exact() {
    let Some((endpoint, bucket)) = s3_test_server() else {
        return;
    };
    const ROUNDS: usize = 16;
    const ROWS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&endpoint, faulty(16)).unwrap();
    let (url, direct) = urls(&proxy, &bucket, "faulty-ingest");
    let inputs: Vec<PathBuf> = (0..ROUNDS)
        .map(|r| input(dir.path(), &format!("r{r}"), ROWS))
        .collect();
    let mut outcomes: HashMap<&str, u64> = HashMap::new();
    for file in &inputs {
        let result = ingest(&url, file);
        if let Err(e) = &result {
            eprintln!("ingest failed: {e}");
        }
        let ok = result.is_ok();
        *outcomes
            .entry(if ok { "ok" } else { "failed" })
            .or_default() += 1;
        // Whatever happened, a reader sees whole commits only.
        let (ids, sources, _) = visible(&direct);
        assert_eq!(ids.len(), sources * ROWS);
    }
    for _ in 0..4 {
        let ok = tenure_ingest::compact(
            Store::open(&url).unwrap(),
            &Default::default(),
            None,
            |_, _| {},
        )
        .is_ok();
        *outcomes
            .entry(if ok { "compact ok" } else { "compact failed" })
            .or_default() += 1;
        let (ids, sources, _) = visible(&direct);
        assert_eq!(ids.len(), sources * ROWS);
        // Ingest one more input between compactions so there is work left.
        let _ = ingest(&url, &inputs[0]);
    }
    let stats = proxy.stats();
    eprintln!("outcomes {outcomes:?}; proxy {stats:?}");
    // Transient faults are retried away: every run succeeds.
    assert_eq!(
        outcomes,
        HashMap::from([("ok", ROUNDS as u64), ("compact ok", 4)])
    );
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

    // Hard refusals, which no retry overcomes: of the manifest put (the run
    // fails before its commit) and of the copies into `events/` (the run fails
    // after its commit, its files still staged). Either way a reader sees
    // whole commits only, and compaction fails the same two ways.
    let refuse = |path: &str| {
        FaultPlan::seeded(1)
            .share(1.0, Fault::Status(403))
            .only("PUT", path)
    };
    let hard = [
        input(dir.path(), "hard0", ROWS),
        input(dir.path(), "hard1", ROWS),
    ];
    for (file, path) in hard.iter().zip(["/_tenure/manifest/", "/events/"]) {
        proxy.set_plan(refuse(path));
        assert!(ingest(&url, file).is_err(), "refused {path}");
        let (ids, sources, _) = visible(&direct);
        assert_eq!(ids.len(), sources * ROWS);
    }
    for path in ["/_tenure/manifest/", "/events/"] {
        proxy.set_plan(refuse(path));
        let compacted = tenure_ingest::compact(
            Store::open(&url).unwrap(),
            &Default::default(),
            None,
            |_, _| {},
        );
        assert!(compacted.is_err(), "refused {path}");
        let (ids, sources, _) = visible(&direct);
        assert_eq!(ids.len(), sources * ROWS);
        assert!(proxy.stats().count("status") > 0);
    }

    proxy.set_plan(FaultPlan::none());
    for file in inputs.iter().chain(&hard) {
        ingest(&url, file).unwrap();
    }
    let want: Vec<String> = (0..ROUNDS)
        .map(|r| format!("r{r}"))
        .chain(["hard0".into(), "hard1".into()])
        .flat_map(|tag| ids_of(&tag, ROWS))
        .collect();
    let sources = ROUNDS + hard.len();
    assert_exact(&direct, &want, sources);
    tenure_ingest::compact(
        Store::open(&url).unwrap(),
        &Default::default(),
        None,
        |_, _| {},
    )
    .unwrap();
    assert_exact(&direct, &want, sources);
    // Nothing left in staging once the store is compacted and recovered.
    let io = Io::new(Store::open(&direct).unwrap());
    let snap = manifest::load_latest(&io).unwrap();
    let events: Vec<String> = io
        .list("events")
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut committed: Vec<String> = snap.files.iter().map(|f| f.path.clone()).collect();
    committed.sort();
    let mut events = events;
    events.sort();
    assert_eq!(
        events, committed,
        "events/ holds exactly the committed files"
    );
    // Every user_id has one key: the dictionary holds each distinct user once.
    let users: std::collections::HashSet<String> = (0..ROWS)
        .map(|i| format!("u{}", (i * 7) % (ROWS / 4 + 3)))
        .collect();
    assert_eq!(visible(&direct).2, users.len() as u64);
}
