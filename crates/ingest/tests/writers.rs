//! Concurrent writers, staging leases and store-wide event ids (issue 16,
//! items 2, 5 and 8).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use arrow_array::{Array, StringArray, UInt32Array};
use common::*;
use tenure_ingest::io::Io;
use tenure_ingest::users::decode_segment;
use tenure_ingest::{Ingest, IngestOptions, Store};

/// Writes NDJSON events `(event_id, user_id, day of February 2026)`.
fn write_events(path: &Path, events: &[(Option<String>, String, u32)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (i, (id, user, day)) in events.iter().enumerate() {
        let id = id
            .as_ref()
            .map(|id| format!(r#""event_id":"{id}","#))
            .unwrap_or_default();
        writeln!(
            f,
            r#"{{{id}"user_id":"{user}","event":"view","ts":"2026-02-{day:02}T00:{:02}:{:02}Z"}}"#,
            i / 60 % 60,
            i % 60
        )
        .unwrap();
    }
}

/// Checks the users dictionary is a bijection of keys `0..count` and user ids,
/// and that every stored row's `(user_key, user_id)` agrees with it. Returns
/// the stored rows.
pub fn check_users(url: &str) -> u64 {
    let io = Io::new(Store::open(url).unwrap());
    let snap = snapshot(url);
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
    let mut rows = 0;
    for (_, b) in read_table(url) {
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
    assert_eq!(rows, snap.rows());
    rows
}

fn users(range: std::ops::Range<u32>) -> Vec<(Option<String>, String, u32)> {
    range.map(|u| (None, format!("u{u}"), 1)).collect()
}

/// Ingests `x` into `url` so that its commit rebases twice: `a` commits
/// version 1 before X tries, and `b` commits version 2 while X rebases on
/// A's; X commits version 3.
fn commit_rebasing_twice(url: &str, x: &Path, a: &Path, b: &Path) {
    let mut ix = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    ix.add_file(x).unwrap();
    let mut ia = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    ia.add_file(a).unwrap();
    assert_eq!(ia.commit().unwrap().version, Some(1));
    let mut once = Some((url.to_string(), b.to_path_buf()));
    ix.set_rebase_hook(Box::new(move || {
        if let Some((url, b)) = once.take() {
            let mut ib =
                Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
            ib.add_file(&b).unwrap();
            assert_eq!(ib.commit().unwrap().version, Some(2));
        }
    }));
    assert_eq!(ix.commit().unwrap().version, Some(3));
}

#[test]
fn two_successive_rebases_keep_the_users_dictionary_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = store.to_str().unwrap().to_string();
    let (x, a, b) = (
        dir.path().join("x.ndjson"),
        dir.path().join("a.ndjson"),
        dir.path().join("b.ndjson"),
    );
    write_events(&x, &users(0..10));
    write_events(&a, &users(5..15));
    write_events(&b, &[users(8..9), users(20..26), users(2..3)].concat());
    commit_rebasing_twice(&url, &x, &a, &b);
    assert_eq!(check_users(&url), 10 + 10 + 8);
    // u0..u26 but not u15..u19: 21 users.
    assert_eq!(snapshot(&url).users.count, 21);
    // The store stays usable.
    let c = dir.path().join("c.ndjson");
    write_events(&c, &users(0..30));
    let mut ic = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    ic.add_file(&c).unwrap();
    ic.commit().unwrap();
    assert_eq!(check_users(&url), 28 + 30);
    assert_eq!(snapshot(&url).users.count, 30);
}

/// Sets the modification time of every file under `dir` whose name passes
/// `pick` to `age` ago; returns how many.
fn age_files(dir: &Path, age: std::time::Duration, pick: &dyn Fn(&str) -> bool) -> usize {
    let when = std::time::SystemTime::now() - age;
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if pick(&e.file_name().to_string_lossy()) {
                // The writer's lease refresher may replace a file (write a
                // temporary, rename it) between the listing and the open.
                let Ok(f) = std::fs::File::options().write(true).open(&p) else {
                    continue;
                };
                f.set_modified(when).unwrap();
                n += 1;
            }
        }
    }
    n
}

const TWO_HOURS: std::time::Duration = std::time::Duration::from_secs(7200);

fn small_files() -> IngestOptions {
    let mut o = IngestOptions::default();
    o.config.ingest.file_rows = 10;
    o
}

#[test]
fn recovery_keeps_the_staging_of_a_writer_that_holds_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = store.to_str().unwrap().to_string();
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    write_events(&a, &users(0..200));
    write_events(&b, &users(500..510));
    // A long run: its first files were staged two hours ago, its lease is fresh.
    let mut ia = Ingest::begin(Store::open(&url).unwrap(), small_files()).unwrap();
    ia.add_file(&a).unwrap();
    let staging = store.join("_tenure/staging").join(ia.txn());
    let aged = age_files(&staging, TWO_HOURS, &|n| n.ends_with(".parquet"));
    assert!(aged > 0, "A staged files while reading");
    // Another run starts meanwhile: its recovery must leave A's files alone.
    let mut ib = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    ib.add_file(&b).unwrap();
    ib.commit().unwrap();
    let summary = ia.commit().unwrap();
    assert_eq!(summary.counters.written, 200);
    assert_eq!(check_users(&url), 210);
    assert!(!staging.exists(), "A's staging is gone once A committed");
}

#[test]
fn a_commit_whose_staged_files_are_gone_fails_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = store.to_str().unwrap().to_string();
    let a = dir.path().join("a.ndjson");
    write_events(&a, &users(0..200));
    let mut ia = Ingest::begin(Store::open(&url).unwrap(), small_files()).unwrap();
    ia.add_file(&a).unwrap();
    // A was stopped (suspended) past the lease expiry: another run's recovery
    // takes its staging for abandoned and removes it.
    let staging = store.join("_tenure/staging").join(ia.txn());
    assert!(age_files(&staging, TWO_HOURS, &|_| true) > 1);
    drop(Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap());
    let err = ia.commit().unwrap_err();
    assert!(
        err.to_string().contains("is gone") && !err.is_bad_input(),
        "{err}"
    );
    let snap = snapshot(&url);
    assert_eq!((snap.version, snap.rows(), snap.sources.len()), (0, 0, 0));
}

/// `n` events with ids `{prefix}{i}`, spread over five days.
fn export(prefix: &str, range: std::ops::Range<u32>) -> Vec<(Option<String>, String, u32)> {
    range
        .map(|i| {
            (
                Some(format!("{prefix}{i:05}")),
                format!("u{}", i % 37),
                1 + i % 5,
            )
        })
        .collect()
}

fn ingest(url: &str, path: &Path) -> tenure_ingest::Summary {
    let mut ing = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    ing.add_file(path).unwrap();
    ing.commit().unwrap()
}

/// Every stored `event_id`, checked unique.
fn stored_ids(url: &str) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for (_, b) in read_table(url) {
        let ids = b.column_by_name("event_id").unwrap();
        let ids = arrow_cast::cast(ids, &arrow_schema::DataType::Utf8).unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..ids.len() {
            assert!(
                out.insert(ids.value(i).to_string()),
                "{} stored twice",
                ids.value(i)
            );
        }
    }
    out
}

#[test]
fn a_grown_export_stores_only_its_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").display().to_string();
    let f = dir.path().join("export.ndjson");
    write_events(&f, &export("e", 0..1000));
    assert_eq!(ingest(&url, &f).counters.written, 1000);
    // The export grew by one line (a new file name, as a re-download would be).
    let g = dir.path().join("export-2.ndjson");
    write_events(&g, &export("e", 0..1001));
    let c = ingest(&url, &g).counters;
    assert_eq!((c.written, c.duplicates), (1, 1000));
    // The same through the CSV decoder, with one more line.
    let csv = dir.path().join("export-3.csv");
    let mut text = String::from("event_id,user_id,event,ts\n");
    for (id, user, day) in export("e", 995..1002) {
        text.push_str(&format!(
            "{},{user},view,2026-02-{day:02}T00:00:00Z\n",
            id.unwrap()
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let c = ingest(&url, &csv).counters;
    assert_eq!((c.written, c.duplicates), (1, 6));
    assert_eq!(stored_ids(&url).len(), 1002);
    assert_eq!(check_users(&url), 1002);
}

#[test]
fn a_file_edited_in_place_with_the_same_size_and_mtime_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").display().to_string();
    let f = dir.path().join("events.ndjson");
    write_events(&f, &export("e", 0..100));
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    assert_eq!(ingest(&url, &f).counters.written, 100);
    // Line 1 gets another id of the same length; size and mtime stay.
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replacen("e00000", "x00000", 1);
    std::fs::write(&f, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let c = ingest(&url, &f).counters;
    assert_eq!((c.skipped_inputs, c.written, c.duplicates), (0, 1, 99));
    assert_eq!(stored_ids(&url).len(), 101);
    // Unchanged, it is skipped again.
    let c = ingest(&url, &f).counters;
    assert_eq!((c.skipped_inputs, c.written), (1, 0));
}

/// Removes every `ids` key from a manifest file, whole snapshot or delta (whose
/// patch parts carry it too).
fn strip_ids(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("ids");
            m.values_mut().for_each(strip_ids);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_ids),
        _ => {}
    }
}

#[test]
fn stores_written_before_the_id_indexes_are_read_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = store.display().to_string();
    let f = dir.path().join("a.ndjson");
    write_events(&f, &export("e", 0..500));
    ingest(&url, &f);
    // Make it a store of the previous format: no index files, none listed.
    std::fs::remove_dir_all(store.join("_tenure/ids")).unwrap();
    for e in std::fs::read_dir(store.join("_tenure/manifest")).unwrap() {
        let p = e.unwrap().path();
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        strip_ids(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    assert!(snapshot(&url).ids.is_empty());
    let g = dir.path().join("b.ndjson");
    write_events(&g, &export("e", 250..760));
    let c = ingest(&url, &g).counters;
    assert_eq!((c.written, c.duplicates), (260, 250));
    // A partition mixing old files with indexed ones: still exact.
    let h = dir.path().join("c.ndjson");
    write_events(&h, &export("e", 0..800));
    let c = ingest(&url, &h).counters;
    assert_eq!((c.written, c.duplicates), (40, 760));
    assert_eq!(stored_ids(&url).len(), 800);
}

#[test]
fn concurrent_writers_with_overlapping_ids_store_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").display().to_string();
    let (x, a, b) = (
        dir.path().join("x.ndjson"),
        dir.path().join("a.ndjson"),
        dir.path().join("b.ndjson"),
    );
    write_events(&x, &export("e", 0..300));
    write_events(&a, &export("e", 200..400));
    write_events(&b, &[export("e", 0..50), export("e", 1000..1010)].concat());
    let mut ix = Ingest::begin(Store::open(&url).unwrap(), small_files()).unwrap();
    ix.add_file(&x).unwrap();
    // A commits ids 200..400 before X tries; B commits 0..50 while X rebases.
    assert_eq!(ingest(&url, &a).counters.written, 200);
    let mut once = Some((url.clone(), b.clone()));
    ix.set_rebase_hook(Box::new(move || {
        if let Some((url, b)) = once.take() {
            let c = ingest(&url, &b).counters;
            assert_eq!((c.written, c.duplicates), (60, 0));
        }
    }));
    let c = ix.commit().unwrap().counters;
    assert_eq!((c.written, c.duplicates), (150, 150));
    assert_eq!(stored_ids(&url).len(), 410);
    assert_eq!(check_users(&url), 410);
}

/// Identity merges name users by key: a writer that rebases on concurrent
/// commits (which give its new users other keys, twice) records its merges
/// under the keys its users end up with, and every writer's merges are in
/// the log in commit order.
#[test]
fn merges_keep_their_users_through_rebases() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").to_str().unwrap().to_string();
    let identify = |path: &Path, pairs: &[(&str, &str)]| {
        let mut f = std::fs::File::create(path).unwrap();
        for (i, (anon, user)) in pairs.iter().enumerate() {
            writeln!(
                f,
                r#"{{"type":"track","anonymousId":"{anon}","event":"view","timestamp":"2026-02-01T00:00:{i:02}Z"}}"#
            )
            .unwrap();
            writeln!(
                f,
                r#"{{"type":"identify","userId":"{user}","anonymousId":"{anon}","timestamp":"2026-02-01T00:01:{i:02}Z"}}"#
            )
            .unwrap();
        }
    };
    let (x, a, b) = (
        dir.path().join("x.ndjson"),
        dir.path().join("a.ndjson"),
        dir.path().join("b.ndjson"),
    );
    identify(&x, &[("xa1", "xu1"), ("shared-anon", "xu2")]);
    identify(&a, &[("aa1", "au1"), ("shared-anon", "au2")]);
    identify(&b, &[("ba1", "xu1")]);
    commit_rebasing_twice(&url, &x, &a, &b);
    check_users(&url);
    let io = Io::new(Store::open(&url).unwrap());
    let snap = snapshot(&url);
    let mut id_of: HashMap<u32, String> = HashMap::new();
    for seg in &snap.users.segments {
        id_of.extend(decode_segment(io.get(seg).unwrap()).unwrap());
    }
    let mut log = Vec::new();
    let mut merges = Vec::new();
    for e in &snap.identity {
        let m = tenure_schema::identity::decode(&io.get(&e.path).unwrap()).unwrap();
        assert_eq!(m.len() as u64, e.merges);
        merges.extend(
            m.iter()
                .map(|m| (id_of[&m.from].as_str().to_string(), id_of[&m.to].clone())),
        );
        log.extend(m);
    }
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        merges,
        pairs(&[
            ("aa1", "au1"),
            ("shared-anon", "au2"),
            ("ba1", "xu1"),
            ("xa1", "xu1"),
            ("shared-anon", "xu2"),
        ])
    );
    // In commit order, the shared anonymous id went to au2 first; xu2's
    // identify of it is refused.
    let key = |id: &str| *id_of.iter().find(|(_, v)| *v == id).unwrap().0;
    let mut persons = tenure_schema::identity::resolve(&log);
    assert_eq!(persons.person(key("shared-anon")), key("au2"));
    assert_eq!(persons.person(key("ba1")), key("xu1"));
    assert_eq!(persons.person(key("xa1")), key("xu1"));
    assert_eq!(persons.conflicts, 1);
}
