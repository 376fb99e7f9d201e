//! End-to-end ingest tests on hand-checked fixtures and generated data.

mod common;

use std::io::Write;

use common::*;
use tenure_ingest::generator::GenSpec;
use tenure_ingest::generator_write;
use tenure_ingest::{Ingest, IngestError, IngestOptions, Store};
use tenure_schema::Config;

const COLUMNS: &[&str] = &[
    "event_id",
    "user_id",
    "user_key",
    "event",
    "ts",
    "revenue",
    "variant",
    "country",
    "item_id",
    "properties",
];

fn fixture_config() -> Config {
    Config::load(&fixture("ingest/config.toml")).unwrap()
}

fn opts(config: Config) -> IngestOptions {
    IngestOptions {
        config,
        ..Default::default()
    }
}

fn ingest_files(
    url: &str,
    files: &[&std::path::Path],
    o: IngestOptions,
) -> Result<tenure_ingest::Summary, IngestError> {
    let mut ing = Ingest::begin(Store::open(url)?, o)?;
    for f in files {
        ing.add_file(f)?;
    }
    ing.commit()
}

#[test]
fn fixture_ingests_to_exactly_the_expected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let s = ingest_files(
        url,
        &[&fixture("ingest/events.ndjson")],
        opts(fixture_config()),
    )
    .unwrap();
    assert_eq!(
        (
            s.counters.read,
            s.counters.written,
            s.counters.duplicates,
            s.counters.rejected
        ),
        (10, 9, 1, 0)
    );
    assert_eq!(s.version, Some(1));
    let expected = std::fs::read_to_string(fixture("ingest/expected.csv")).unwrap();
    let mut want = expected.lines();
    let header = want.next().unwrap();
    assert_eq!(header, format!("date,{}", COLUMNS.join(",")));
    assert_eq!(
        table_lines(url, COLUMNS),
        want.map(String::from).collect::<Vec<_>>()
    );
    // Hive-style partitions with the committed files and nothing else.
    let files = files_under_events(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("events/date=2026-03-01/part-"));
    assert!(files[1].starts_with("events/date=2026-03-02/part-"));
    assert!(
        !dir.path().join("_tenure/staging").exists()
            || std::fs::read_dir(dir.path().join("_tenure/staging"))
                .unwrap()
                .next()
                .is_none()
    );
    let snap = snapshot(url);
    assert_eq!(snap.users.count, 4);
    assert_eq!(snap.rows(), 9);
}

#[test]
fn files_carry_zstd_statistics_and_sort_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    ingest_files(
        url,
        &[&fixture("ingest/events.ndjson")],
        opts(fixture_config()),
    )
    .unwrap();
    let snap = snapshot(url);
    let data = std::fs::read(dir.path().join(&snap.files[1].path)).unwrap();
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(data))
            .unwrap();
    use parquet::file::reader::FileReader;
    let md = reader.metadata();
    assert!(
        md.file_metadata()
            .created_by()
            .unwrap()
            .starts_with("tenure ")
    );
    let rg = md.row_group(0);
    let sorting = rg.sorting_columns().expect("sorting columns recorded");
    assert_eq!(sorting.len(), 2);
    let ts = rg
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "ts")
        .unwrap();
    assert!(
        ts.encodings()
            .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED),
        "ts is delta-encoded"
    );
    for col in rg.columns() {
        assert!(matches!(
            col.compression(),
            parquet::basic::Compression::ZSTD(_)
        ));
        assert!(
            col.statistics().is_some(),
            "{} has statistics",
            col.column_path()
        );
    }
}

#[test]
fn bad_records_go_to_the_dead_letter_with_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let mut config = fixture_config();
    config.ingest.max_line_bytes = 1024;
    let s = ingest_files(url, &[&fixture("ingest/bad.ndjson")], opts(config)).unwrap();
    let expected = std::fs::read_to_string(fixture("ingest/bad.expected")).unwrap();
    let want: Vec<(u64, &str)> = expected
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (n, r) = l.split_once('\t').unwrap();
            (n.parse().unwrap(), r)
        })
        .collect();
    assert_eq!(s.counters.rejected, want.len() as u64);
    assert_eq!(s.counters.written, 2);
    let dl = s.dead_letter.expect("dead letter written");
    let path = dir
        .path()
        .join(dl.strip_prefix(url).unwrap().trim_start_matches('/'));
    let text = std::fs::read_to_string(path).unwrap();
    let got: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, (line, reason)) in got.iter().zip(&want) {
        assert_eq!(g["line"], *line, "{g}");
        assert!(
            g["reason"].as_str().unwrap().contains(reason),
            "line {line}: {g}"
        );
        assert!(g["input"].as_str().unwrap().ends_with("bad.ndjson"));
    }
    assert_eq!(event_ids(url), ["b1", "b2"]);
}

#[test]
fn max_bad_fails_the_run_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let o = IngestOptions {
        config: fixture_config(),
        max_bad: Some(3),
        ..Default::default()
    };
    let err = ingest_files(url, &[&fixture("ingest/bad.ndjson")], o).unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("more than --max-bad 3"), "{err}");
    assert_eq!(snapshot(url).version, 0);
    assert!(files_under_events(dir.path()).is_empty());
}

#[test]
fn empty_file_is_a_note_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store");
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let s = ingest_files(url.to_str().unwrap(), &[&empty], opts(Config::default())).unwrap();
    assert_eq!(s.counters.written, 0);
    assert!(s.notes.iter().any(|n| n.contains("empty")), "{:?}", s.notes);
    assert_eq!(s.version, None);
}

#[test]
fn reingesting_the_same_input_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store");
    let url = url.to_str().unwrap();
    let f = fixture("ingest/events.ndjson");
    ingest_files(url, &[&f], opts(fixture_config())).unwrap();
    let s = ingest_files(url, &[&f], opts(fixture_config())).unwrap();
    assert_eq!(s.counters.skipped_inputs, 1);
    assert_eq!(s.version, None);
    // The same bytes under another name are recognised by content.
    let copy = dir.path().join("copy.ndjson");
    std::fs::copy(&f, &copy).unwrap();
    let s = ingest_files(url, &[&copy], opts(fixture_config())).unwrap();
    assert_eq!(s.counters.skipped_inputs, 1);
    assert_eq!(snapshot(url).rows(), 9);
    assert_eq!(snapshot(url).version, 1);
}

#[test]
fn a_store_keeps_its_declared_properties() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    ingest_files(
        url,
        &[&fixture("ingest/events.ndjson")],
        opts(fixture_config()),
    )
    .unwrap();
    let other = Config::parse("[properties]\ncountry = \"int\"\n").unwrap();
    let err = Ingest::begin(Store::open(url).unwrap(), opts(other))
        .err()
        .unwrap();
    assert!(err.to_string().contains("declared properties"), "{err}");
}

fn gen_spec(users: u64) -> GenSpec {
    GenSpec {
        users,
        days: 20,
        seed: 3,
        start_day: GenSpec::DEFAULT_START,
    }
}

#[test]
fn ndjson_csv_and_parquet_inputs_store_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let spec = gen_spec(300);
    let nd = dir.path().join("g.ndjson");
    let csv = dir.path().join("g.csv");
    let pq = dir.path().join("g.parquet");
    let n = generator_write::write_ndjson(&spec, std::fs::File::create(&nd).unwrap()).unwrap();
    generator_write::write_csv(&spec, std::fs::File::create(&csv).unwrap()).unwrap();
    generator_write::write_parquet(&spec, std::fs::File::create(&pq).unwrap()).unwrap();
    let mut tables = Vec::new();
    for (name, f) in [("nd", &nd), ("csv", &csv), ("pq", &pq)] {
        let url = dir.path().join(name);
        let s = ingest_files(
            url.to_str().unwrap(),
            &[f],
            opts(generator_write::gen_config()),
        )
        .unwrap();
        assert_eq!(s.counters.written, n, "{name}");
        assert_eq!(s.counters.rejected, 0, "{name}");
        tables.push(table_lines(url.to_str().unwrap(), COLUMNS));
    }
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0], tables[2]);
    // And generating straight into a store gives the same table too.
    let url = dir.path().join("direct");
    generator_write::ingest_generated(
        &spec,
        Store::open(url.to_str().unwrap()).unwrap(),
        IngestOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(table_lines(url.to_str().unwrap(), COLUMNS), tables[0]);
}

#[test]
fn rows_are_sorted_and_user_keys_dense_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let mut o = IngestOptions::default();
    // Tiny buffers force many files per partition.
    o.config.ingest.buffer_rows = 500;
    o.config.ingest.file_rows = 300;
    generator_write::ingest_generated(&gen_spec(400), Store::open(url).unwrap(), o, None).unwrap();
    let mut key_of = std::collections::HashMap::new();
    let mut max_key = 0;
    for (_, b) in read_table(url) {
        let keys = b
            .column_by_name("user_key")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap()
            .clone();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            .unwrap()
            .clone();
        let ids = b
            .column_by_name("user_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            if i > 0 {
                assert!((keys.value(i - 1), ts.value(i - 1)) <= (keys.value(i), ts.value(i)));
            }
            let k = *key_of
                .entry(ids.value(i).to_string())
                .or_insert(keys.value(i));
            assert_eq!(k, keys.value(i), "one key per user");
            max_key = max_key.max(k);
        }
    }
    assert_eq!(key_of.len(), 400);
    assert_eq!(max_key, 399, "keys are dense");
    assert_eq!(snapshot(url).users.count, 400);
}

#[test]
fn concurrent_writers_both_commit_and_agree_on_user_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store");
    let url = url.to_str().unwrap();
    let a = dir.path().join("a.ndjson");
    let b = dir.path().join("b.ndjson");
    let mut fa = std::fs::File::create(&a).unwrap();
    let mut fb = std::fs::File::create(&b).unwrap();
    for i in 0..50 {
        // Writer A meets users 0..50, writer B users 25..75: 25 shared, 25 new each.
        writeln!(fa, r#"{{"event_id":"a{i}","user_id":"user{i}","event":"view","ts":"2026-02-01T00:00:{:02}Z"}}"#, i % 60).unwrap();
        writeln!(fb, r#"{{"event_id":"b{i}","user_id":"user{}","event":"view","ts":"2026-02-02T00:00:{:02}Z"}}"#, i + 25, i % 60).unwrap();
    }
    drop((fa, fb));
    // Both open against the empty store, so both assign keys 0.. to their users.
    let mut ia = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    let mut ib = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    ia.add_file(&a).unwrap();
    ib.add_file(&b).unwrap();
    assert_eq!(ia.commit().unwrap().version, Some(1));
    assert_eq!(
        ib.commit().unwrap().version,
        Some(2),
        "B rebases onto A's commit"
    );
    let snap = snapshot(url);
    assert_eq!(snap.rows(), 100);
    assert_eq!(snap.users.count, 75);
    let mut key_of = std::collections::HashMap::new();
    for (_, batch) in read_table(url) {
        let keys = batch
            .column_by_name("user_key")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap()
            .clone();
        let ids = batch
            .column_by_name("user_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        for i in 0..batch.num_rows() {
            let k = *key_of
                .entry(ids.value(i).to_string())
                .or_insert(keys.value(i));
            assert_eq!(k, keys.value(i), "{} has one key", ids.value(i));
        }
    }
    let mut keys: Vec<u32> = key_of.values().copied().collect();
    keys.sort();
    assert_eq!(keys, (0..75).collect::<Vec<u32>>());
    // A third writer sees the merged dictionary.
    let mut ic = Ingest::begin(Store::open(url).unwrap(), IngestOptions::default()).unwrap();
    assert_eq!(ic.counters().written, 0);
    let c = dir.path().join("c.ndjson");
    std::fs::write(
        &c,
        "{\"user_id\":\"user70\",\"event\":\"x\",\"ts\":\"2026-02-03\"}\n",
    )
    .unwrap();
    ic.add_file(&c).unwrap();
    ic.commit().unwrap();
    assert_eq!(snapshot(url).users.count, 75);
}

#[test]
fn the_same_input_racing_twice_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store");
    let url = url.to_str().unwrap();
    let f = fixture("ingest/events.ndjson");
    let mut ia = Ingest::begin(Store::open(url).unwrap(), opts(fixture_config())).unwrap();
    let mut ib = Ingest::begin(Store::open(url).unwrap(), opts(fixture_config())).unwrap();
    ia.add_file(&f).unwrap();
    ib.add_file(&f).unwrap();
    ia.commit().unwrap();
    let err = ib.commit().unwrap_err();
    assert!(matches!(err, IngestError::Conflict(_)), "{err}");
    assert_eq!(snapshot(url).rows(), 9);
    assert_eq!(
        files_under_events(dir.path().join("store").as_path()).len(),
        2
    );
}

#[test]
fn compaction_merges_partitions_without_changing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let mut o = IngestOptions::default();
    o.config.ingest.buffer_rows = 400;
    o.config.ingest.file_rows = 200;
    generator_write::ingest_generated(&gen_spec(300), Store::open(url).unwrap(), o, None).unwrap();
    let before = snapshot(url);
    let mut rows_before = table_lines(url, COLUMNS);
    rows_before.sort();
    assert!(
        before.files.len()
            > before
                .files
                .iter()
                .map(|f| &f.date)
                .collect::<std::collections::HashSet<_>>()
                .len()
    );
    let s = tenure_ingest::compact(
        Store::open(url).unwrap(),
        &Default::default(),
        None,
        |_, _| {},
    )
    .unwrap();
    assert!(s.files_after < s.files_before);
    let after = snapshot(url);
    assert_eq!(after.version, before.version + 1);
    let dates: std::collections::HashSet<_> = after.files.iter().map(|f| &f.date).collect();
    assert_eq!(after.files.len(), dates.len(), "one file per partition");
    let mut rows_after = table_lines(url, COLUMNS);
    rows_after.sort();
    assert_eq!(rows_before, rows_after);
    // events/ holds exactly the committed files.
    let mut committed: Vec<String> = after.files.iter().map(|f| f.path.clone()).collect();
    committed.sort();
    assert_eq!(files_under_events(dir.path()), committed);
    // Nothing left to do the second time.
    let s = tenure_ingest::compact(
        Store::open(url).unwrap(),
        &Default::default(),
        None,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(s.version, None);
}

#[test]
fn memory_store_round_trip() {
    let url = "memory://ingest-test/root";
    let s = ingest_files(
        url,
        &[&fixture("ingest/events.ndjson")],
        opts(fixture_config()),
    )
    .unwrap();
    assert_eq!(s.counters.written, 9);
    assert_eq!(event_ids(url).len(), 9);
}

#[test]
fn generating_the_same_spec_twice_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap();
    let spec = gen_spec(50);
    let a = generator_write::ingest_generated(
        &spec,
        Store::open(url).unwrap(),
        IngestOptions::default(),
        None,
    )
    .unwrap();
    let b = generator_write::ingest_generated(
        &spec,
        Store::open(url).unwrap(),
        IngestOptions::default(),
        None,
    )
    .unwrap();
    assert!(a.version.is_some());
    assert_eq!(b.version, None);
    assert_eq!(snapshot(url).rows(), a.counters.written);
}

/// Runs against a real S3-compatible server when `.ci/run` provides one
/// (`TENURE_TEST_S3=1` plus the usual `AWS_*` variables and a bucket).
#[test]
fn s3_store_round_trip_with_conditional_commits() {
    let Ok(bucket) = std::env::var("TENURE_TEST_S3_BUCKET") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide an S3-compatible server"
        );
        eprintln!(
            "skipped: set TENURE_TEST_S3_BUCKET and AWS_ENDPOINT to run against an S3 server"
        );
        return;
    };
    let url = format!("s3://{bucket}/t-{}", uuid_like());
    let f = fixture("ingest/events.ndjson");
    let s = ingest_files(&url, &[&f], opts(fixture_config())).unwrap();
    assert_eq!(s.version, Some(1));
    let expected = std::fs::read_to_string(fixture("ingest/expected.csv")).unwrap();
    assert_eq!(
        table_lines(&url, COLUMNS),
        expected
            .lines()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>()
    );
    // Two writers racing on S3: the conditional put refuses the loser's version.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.ndjson");
    std::fs::write(
        &a,
        "{\"user_id\":\"zed\",\"event\":\"x\",\"ts\":\"2026-02-03\"}\n",
    )
    .unwrap();
    let b = dir.path().join("b.ndjson");
    std::fs::write(
        &b,
        "{\"user_id\":\"amy\",\"event\":\"y\",\"ts\":\"2026-03-02T08:00:00Z\"}\n",
    )
    .unwrap();
    let mut ia = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    let mut ib = Ingest::begin(Store::open(&url).unwrap(), IngestOptions::default()).unwrap();
    ia.add_file(&a).unwrap();
    ib.add_file(&b).unwrap();
    assert_eq!(ia.commit().unwrap().version, Some(2));
    assert_eq!(ib.commit().unwrap().version, Some(3));
    let snap = snapshot(&url);
    assert_eq!(snap.rows(), 11);
    assert_eq!(snap.users.count, 6);
    let s = tenure_ingest::compact(
        Store::open(&url).unwrap(),
        &Default::default(),
        None,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(s.version, Some(4));
    assert_eq!(snapshot(&url).rows(), 11);
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// An input of several 4 MiB pieces, decoded in parallel: dedupe, user keys and
/// dead-letter line numbers must come out as if read line by line, including a
/// duplicate two pieces after its original and an over-long line that starts
/// just before a piece boundary.
#[test]
fn multi_piece_input_is_decoded_as_if_line_by_line() {
    const PIECE: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.ndjson");
    let mut text = String::new();
    let mut bad_lines = Vec::new();
    let mut line_no = 0u64;
    let mut users_in_order: Vec<String> = Vec::new();
    let mut written = 0u64;
    let push = |text: &mut String, line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    for i in 0..90_000u64 {
        line_no += 1;
        if line_no == 50_001 || line_no == 89_999 {
            push(&mut text, r#"{"user_id":"x","event":}"#.into());
            bad_lines.push((line_no, "malformed JSON"));
            continue;
        }
        if text.len() >= PIECE - 3_000 && text.len() < PIECE - 2_000 {
            // Starts 2-3 KB (over max_line) before the first piece boundary,
            // ends after it: skipped without being buffered.
            push(&mut text, format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000)));
            bad_lines.push((line_no, "line longer than 1024 bytes"));
            continue;
        }
        let (id, marker) = if line_no == 70_000 {
            // A repeat of e5: dropped, the original (no marker) kept.
            ("e5".to_string(), ",\"dup\":true")
        } else {
            (format!("e{i}"), "")
        };
        let user = format!("u{:05}", (i * 7_919) % 3_001);
        if marker.is_empty() {
            written += 1;
            if !users_in_order.contains(&user) {
                users_in_order.push(user.clone());
            }
        }
        push(
            &mut text,
            format!(
                r#"{{"event_id":"{id}","user_id":"{user}","event":"view_item","ts":"2026-01-{:02}T10:00:00Z","note":"{}"{marker}}}"#,
                1 + i % 5,
                "n".repeat(60)
            ),
        );
    }
    assert!(text.len() > 3 * PIECE, "spans several pieces");
    std::fs::write(&input, &text).unwrap();
    let url = dir.path().join("store");
    let url = url.to_str().unwrap();
    let mut config = fixture_config();
    config.ingest.max_line_bytes = 1024;
    let s = ingest_files(url, &[&input], opts(config)).unwrap();
    assert_eq!(s.counters.written, written);
    assert_eq!(s.counters.duplicates, 1);
    assert_eq!(s.counters.rejected, bad_lines.len() as u64);
    assert_eq!(s.counters.read, 90_000);

    let dl = s.dead_letter.expect("dead letter written");
    let path = dir
        .path()
        .join("store")
        .join(dl.strip_prefix(url).unwrap().trim_start_matches('/'));
    let got: Vec<serde_json::Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), bad_lines.len());
    for (g, (line, reason)) in got.iter().zip(&bad_lines) {
        assert_eq!(g["line"], *line, "{g}");
        assert!(g["reason"].as_str().unwrap().contains(reason), "{g}");
    }

    let rows = table_lines(url, &["event_id", "user_id", "user_key", "properties"]);
    assert_eq!(rows.len() as u64, written);
    let e5: Vec<&String> = rows
        .iter()
        .filter(|r| r.split(',').nth(1) == Some("e5"))
        .collect();
    assert_eq!(e5.len(), 1);
    assert!(!e5[0].contains("dup"), "the first e5 is kept: {}", e5[0]);
    // Keys are dense, in order of each user's first line.
    for r in &rows {
        let f: Vec<&str> = r.split(',').collect();
        let key: usize = f[3].parse().unwrap();
        assert_eq!(users_in_order[key], f[2], "{r}");
    }
}

/// With only 500 `event_id`s allowed in memory, 30,000 events spill dozens of
/// runs: repeats of ids seen long before (in a spilled run) and just before
/// (in memory) are dropped all the same, the first copy kept, in the parallel
/// NDJSON path and the row-at-a-time CSV path alike.
#[test]
fn duplicates_are_dropped_after_the_ids_spill_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut ndjson = String::new();
    let mut csv = String::from("event_id,user_id,event,ts,note\n");
    let mut firsts = Vec::new();
    let mut repeats = 0u64;
    let mut emitted = std::collections::HashSet::new();
    for i in 0..30_000u64 {
        // Every 10th line repeats an id from far back, every 15th the line before.
        let id = if i % 10 == 9 {
            format!("e{}", (i * 7_919) % (i - 5))
        } else if i % 15 == 14 {
            format!("e{}", i - 1)
        } else {
            format!("e{i}")
        };
        let note = if emitted.insert(id.clone()) {
            firsts.push(id.clone());
            "first"
        } else {
            repeats += 1;
            "repeat"
        };
        let user = format!("u{}", i % 977);
        let day = 1 + i % 3;
        ndjson.push_str(&format!(
            r#"{{"event_id":"{id}","user_id":"{user}","event":"view_item","ts":"2026-01-0{day}T10:00:00Z","note":"{note}"}}"#
        ));
        ndjson.push('\n');
        csv.push_str(&format!(
            "{id},{user},view_item,2026-01-0{day}T10:00:00Z,{note}\n"
        ));
    }
    firsts.sort();
    for (name, text) in [("in.ndjson", ndjson), ("in.csv", csv)] {
        let input = dir.path().join(name);
        std::fs::write(&input, text).unwrap();
        let url = dir.path().join(format!("store-{name}"));
        let url = url.to_str().unwrap();
        let mut config = fixture_config();
        config.ingest.seen_ids_in_memory = 500;
        let s = ingest_files(url, &[&input], opts(config)).unwrap();
        assert_eq!(s.counters.read, 30_000, "{name}");
        assert_eq!(s.counters.duplicates, repeats, "{name}");
        assert!(repeats > 3_000, "{repeats}");
        assert_eq!(s.counters.written, 30_000 - repeats, "{name}");
        let rows = table_lines(url, &["event_id", "properties"]);
        assert!(
            rows.iter().all(|r| r.contains("first")),
            "{name}: a repeat was kept"
        );
        let mut ids = event_ids(url);
        ids.sort();
        assert_eq!(ids, firsts, "{name}");
    }
}

/// Progress of a compressed input counts its compressed bytes, the size the
/// bar's total is made of, so the bar ends at 100%.
#[test]
fn progress_of_a_compressed_input_counts_its_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture("retention/events.ndjson")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let input = dir.path().join("events.ndjson.gz");
    std::fs::write(&input, &gz).unwrap();
    let store = Store::open(dir.path().join("s").to_str().unwrap()).unwrap();
    let mut ing = Ingest::begin(store, IngestOptions::default()).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    ing.set_progress(Box::new(move |n| {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }));
    ing.add_file(&input).unwrap();
    ing.commit().unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        gz.len() as u64,
        "compressed {} bytes, plain {}",
        gz.len(),
        plain.len()
    );
}
