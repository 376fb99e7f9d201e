//! The `tenure` binary: exit codes, help, and the crash test (SIGKILL at random
//! points, then rerun: every input event is stored exactly once).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::io::Io;
use tenure_ingest::{Store, manifest};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// Event ids of the committed table, and the files under `events/`.
fn committed(store: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let io = Io::new(Store::open(store.to_str().unwrap()).unwrap());
    let snap = manifest::load_latest(&io).unwrap();
    let mut ids = Vec::new();
    // Read as any reader does: a committed file not yet moved into place is read
    // from its staged path.
    let paths =
        tenure_ingest::io::block_on(tenure_store::readable_paths(&io.store, &snap)).unwrap();
    for path in &paths {
        let data = io.get(path).unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let col = b
                .column_by_name("event_id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    let mut listed: Vec<String> = snap.files.iter().map(|f| f.path.clone()).collect();
    listed.sort();
    let mut present = Vec::new();
    let mut stack = vec![store.join("events")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                present.push(
                    p.strip_prefix(store)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    present.sort();
    (ids, listed, present)
}

fn input_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn help_teaches_with_examples() {
    for cmd in ["ingest", "gen", "compact"] {
        let out = tenure().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("Example"),
            "{cmd} --help has examples:\n{text}"
        );
        assert!(text.contains("tenure "), "{text}");
    }
}

#[test]
fn exit_codes_distinguish_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let out = tenure()
        .args(["ingest", "/no/such/file.ndjson", "--to"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    let out = tenure()
        .args(["ingest"])
        .arg(fixture("ingest/bad.ndjson"))
        .args(["--max-bad", "2", "--to"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than --max-bad 2"), "{err}");
    let out = tenure()
        .args(["ingest", "x.ndjson", "--to", "ftp://host/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tenure()
        .args(["ingest"])
        .arg(fixture("ingest/events.ndjson"))
        .arg("--config")
        .arg(fixture("ingest/config.toml"))
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for word in [
        "read 10",
        "written 9",
        "rejected 0",
        "duplicates 1",
        "files 2",
        "elapsed",
        "events/s",
    ] {
        assert!(err.contains(word), "summary has {word}: {err}");
    }
}

#[test]
fn stdin_is_ingested_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    for round in 0..2 {
        let mut child = tenure()
            .args(["ingest", "-", "--to"])
            .arg(&store)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let data = std::fs::read(fixture("ingest/events.ndjson")).unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        if round == 1 {
            assert!(err.contains("nothing committed"), "{err}");
        }
    }
    assert_eq!(committed(&store).0.len(), 9);
}

/// A child `tenure ingest` is killed with SIGKILL at random moments (and made to
/// abort at each named point of the commit), rerun each time; at the end the
/// store holds exactly the input's events, once each, and `events/` holds exactly
/// the committed files.
#[test]
fn crash_at_random_points_then_rerun_stores_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let status = tenure()
        .args([
            "gen", "--users", "3000", "--days", "30", "--seed", "11", "--to",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let mut want = input_ids(&input);
    want.sort();
    let store = dir.path().join("store");
    // Small files, so a run stages many and a kill can land between them.
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[ingest]\nbuffer_rows = 2000\nfile_rows = 1000\n").unwrap();
    let ingest = |store: &Path, fault: Option<&str>| {
        let mut c = tenure();
        c.args(["ingest"])
            .arg(&input)
            .arg("--to")
            .arg(store)
            .arg("--config")
            .arg(&config);
        if let Some(f) = fault {
            c.env("TENURE_FAULT", f);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    // How long a clean run takes, to spread the kills over it.
    let t = Instant::now();
    let probe = dir.path().join("probe");
    let ok = tenure()
        .args(["ingest"])
        .arg(&input)
        .arg("--to")
        .arg(&probe)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let full = t.elapsed();
    // Deterministic "random" kill times (a fixed LCG), so failures reproduce.
    let mut x: u64 = 0x5eed;
    for round in 0..8 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let frac = (x >> 33) as f64 / (1u64 << 31) as f64;
        let delay = full.mul_f64(frac * 1.1);
        let mut child = ingest(&store, None).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (ids, listed, present) = committed(&store);
        // Whatever happened, no duplicates are visible and only whole commits are.
        assert!(
            ids.is_empty() || ids.len() == want.len(),
            "round {round}: partial commit of {} events",
            ids.len()
        );
        assert!(
            present.iter().all(|p| listed.contains(p)),
            "round {round}: uncommitted files visible"
        );
        if !ids.is_empty() {
            break;
        }
    }
    for fault in [
        "before-users",
        "before-commit",
        "after-commit",
        "mid-publish",
    ] {
        let fresh = dir.path().join(format!("store-{fault}"));
        let st = ingest(&fresh, Some(fault)).status().unwrap();
        assert!(!st.success(), "{fault}: the fault point was reached");
        let (ids, listed, present) = committed(&fresh);
        let committed_already = fault == "after-commit" || fault == "mid-publish";
        assert_eq!(!ids.is_empty(), committed_already, "{fault}");
        assert!(
            present.iter().all(|p| listed.contains(p)),
            "{fault}: uncommitted files visible"
        );
        let st = ingest(&fresh, None).status().unwrap();
        assert!(st.success());
        let (mut ids, listed, present) = committed(&fresh);
        ids.sort();
        assert_eq!(
            ids, want,
            "{fault}: exactly the input's events after the rerun"
        );
        assert_eq!(
            listed, present,
            "{fault}: events/ holds exactly the committed files"
        );
    }
    // Finish the randomly killed store too.
    let st = ingest(&store, None).status().unwrap();
    assert!(st.success());
    let st = ingest(&store, None).status().unwrap();
    assert!(st.success(), "a further rerun is a no-op");
    let (mut ids, listed, present) = committed(&store);
    ids.sort();
    assert_eq!(ids, want);
    assert_eq!(listed, present);
}

/// DuckDB reads the Parquet straight from `events/` (hive partitions) and finds
/// the same rows, ids, users, revenue and days as in the input.
#[test]
fn duckdb_reads_the_store_back() {
    let Ok(python) = std::env::var("TENURE_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide DuckDB (TENURE_TEST_PYTHON)"
        );
        eprintln!("skipped: set TENURE_TEST_PYTHON to a python with duckdb");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    assert!(
        tenure()
            .args(["gen", "--users", "2000", "--days", "20", "--to"])
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let store = dir.path().join("store");
    assert!(
        tenure()
            .arg("ingest")
            .arg(&input)
            .arg("--to")
            .arg(&store)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/duckdb_check.py"))
        .arg(&store)
        .arg(&input)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("duckdb: rows="), "{text}");
}

/// Gzip and zstd inputs are decompressed, by name or by their first bytes
/// (from a file or stdin); a damaged or truncated one fails the run and
/// commits nothing; a name that promises a compression the content does not
/// have is refused.
#[test]
fn compressed_inputs_are_decompressed_and_damage_commits_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture("retention/events.ndjson")).unwrap();
    let want = input_ids(&fixture("retention/events.ndjson"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(plain.as_slice(), 3).unwrap();
    let ingest = |name: &str, bytes: &[u8]| {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let store = dir.path().join(format!("store-{name}"));
        let out = tenure()
            .arg("ingest")
            .arg(&input)
            .arg("--to")
            .arg(&store)
            .output()
            .unwrap();
        (store, out)
    };
    for (name, bytes) in [
        ("a.ndjson.gz", &gz),
        ("a.ndjson.zst", &zst),
        // Named plainly: the magic number tells.
        ("gz-inside.ndjson", &gz),
        ("zst-inside.ndjson", &zst),
    ] {
        let (store, out) = ingest(name, bytes);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got = committed(&store).0;
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want, "{name}");
    }
    // From stdin.
    let store = dir.path().join("stdin");
    let mut child = tenure()
        .args(["ingest", "-", "--to"])
        .arg(&store)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&zst).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(committed(&store).0.len(), want.len());
    // Truncated: an error, nothing committed.
    for (name, bytes) in [
        ("cut.ndjson.gz", &gz[..gz.len() * 2 / 3]),
        ("cut.ndjson.zst", &zst[..zst.len() * 2 / 3]),
    ] {
        let (store, out) = ingest(name, bytes);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: a truncated input succeeded");
        assert!(err.contains("truncated"), "{name}: {err}");
        let nothing = !store.join("manifest").exists() || committed(&store).0.is_empty();
        assert!(nothing, "{name}: a truncated input committed events");
    }
    // A name that lies.
    let (_, out) = ingest("plain.ndjson.gz", &plain);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("named as gzip-compressed"), "{err}");
}

/// Inputs in a bucket (the S3-compatible server `.ci/test` starts): a glob
/// over keys picks the matching objects only (`/` matched literally), each
/// gzip export is downloaded and ingested under its URL, a rerun adds
/// nothing, and a glob matching nothing is bad input.
#[test]
fn globbed_inputs_in_a_bucket_are_ingested_once() {
    let Ok(bucket) = std::env::var("TENURE_TEST_S3_BUCKET") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide an S3-compatible server"
        );
        eprintln!("skipped: set TENURE_TEST_S3_BUCKET and AWS_ENDPOINT");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.ndjson");
    assert!(
        tenure()
            .args([
                "gen", "--users", "300", "--days", "20", "--seed", "5", "--to"
            ])
            .arg(&all)
            .status()
            .unwrap()
            .success()
    );
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = lines.split_at(lines.len() / 2);
    let gz = |lines: &[&str]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("s3://{bucket}/inputs-{nanos}");
    let io = Io::new(Store::open(&root).unwrap());
    io.put("exports/2026-01.ndjson.gz", gz(a)).unwrap();
    io.put("exports/2026-02.ndjson.gz", gz(b)).unwrap();
    // Not matched: another year, and a deeper folder (`*` stops at `/`).
    io.put("exports/2025-12.ndjson.gz", gz(&lines[..5]))
        .unwrap();
    io.put("exports/old/2026-03.ndjson.gz", gz(&lines[..7]))
        .unwrap();

    let store = dir.path().join("store");
    let pattern = format!("{root}/exports/2026-*.ndjson.gz");
    let count = || {
        let out = tenure()
            .args(["sql", "--format", "csv", "--data"])
            .arg(&store)
            .arg("SELECT count(*) AS n FROM events")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let first = tenure()
        .arg("ingest")
        .arg(&pattern)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("inputs 2"), "{err}");
    assert_eq!(count(), format!("n\n{}\n", lines.len()));

    let again = tenure()
        .arg("ingest")
        .arg(&pattern)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{root}/exports/2026-01.ndjson.gz: already ingested"
        )),
        "{err}"
    );
    assert_eq!(count(), format!("n\n{}\n", lines.len()));

    let none = tenure()
        .arg("ingest")
        .arg(format!("{root}/exports/2030-*.ndjson.gz"))
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(err.contains("no objects match"), "{err}");
}

/// `--metrics` writes the run's counters in Prometheus text format; a failed
/// run leaves the file as it was.
#[test]
fn ingest_metrics_file_for_a_textfile_collector() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::write(
        &csv,
        "user_id,event,ts\nu1,signup,2026-01-01T00:00:00Z\nu2,signup,2026-01-02T00:00:00Z\nu2,oops,not-a-time\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let metrics = dir.path().join("ingest.prom");
    let st = tenure()
        .arg("ingest")
        .arg(&csv)
        .arg("--to")
        .arg(&store)
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let label = format!("{{store=\"{}\"}}", store.display());
    for (name, v) in [
        ("tenure_ingest_events_written", "2"),
        ("tenure_ingest_records_rejected", "1"),
        ("tenure_ingest_inputs", "1"),
        ("tenure_ingest_manifest_version", "1"),
    ] {
        let line = format!("{name}{label} {v}");
        assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
    }
    assert!(prom.contains("# TYPE tenure_ingest_last_success_timestamp_seconds gauge"));
    let failed = tenure()
        .arg("ingest")
        .arg(dir.path().join("missing.csv"))
        .arg("--to")
        .arg(&store)
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), prom);
}
