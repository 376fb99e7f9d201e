//! `tenure run`: job files and their errors (golden files under fixtures/jobs),
//! a whole job over generated data whose outputs match the subcommands, reruns
//! that replace outputs, a failing analysis beside working ones, and the HTML
//! report opened in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{chromium, files, headless};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small generated store (2026-01-01 .. 2026-02-19).
fn store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    run_ok(
        tenure()
            .args([
                "gen", "--users", "400", "--days", "50", "--seed", "3", "--to",
            ])
            .arg(&store),
    );
    store
}

#[test]
fn job_files_golden() {
    let bless = std::env::var_os("TENURE_BLESS").is_some();
    let dir = root().join("fixtures/jobs");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "fixtures/jobs holds the cases");
    let mut failures = Vec::new();
    for case in cases {
        let rel = case.strip_prefix(root()).unwrap().display().to_string();
        let out = tenure()
            .current_dir(root())
            .args(["run", "--dry-run", &rel])
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let body = if code == 0 { &out.stdout } else { &out.stderr };
        let got = format!("exit: {code}\n{}", String::from_utf8_lossy(body));
        let expected_path = case.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with TENURE_BLESS=1",
                expected_path.display()
            )
        });
        if got != want {
            failures.push(format!("--- {rel}\nwant:\n{want}\ngot:\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The job's analyses and the subcommand arguments that must give the same rows.
const RANGE: [&str; 4] = ["--from", "2026-01-05", "--to", "2026-02-15"];

fn e2e_job(store: &Path, out: &Path) -> String {
    format!(
        r#"name = "e2e"
data = "{store}"
out = "{out}"
formats = ["parquet", "csv", "json"]
from = "2026-01-05"
to = "2026-02-15"
as_of = "2026-02-15"

[[analysis]]
name = "retention"
kind = "retention"
period = "week"
start_event = "signup"
return_event = "purchase"

[[analysis]]
name = "retention_by_country"
kind = "retention"
by = "country"

[[analysis]]
name = "ltv"
kind = "ltv"
period = "week"

[[analysis]]
name = "kpi"
kind = "kpi"
period = "week"

[[analysis]]
name = "lifecycle"
kind = "lifecycle"
period = "week"

[[analysis]]
name = "stages"
kind = "lifecycle"
stages = true

[[analysis]]
name = "funnel"
kind = "funnel"
steps = ["view_item", "add_to_cart", "purchase"]
window = "2d"
by = "variant"

[[analysis]]
name = "abtest"
kind = "abtest"
metrics = ["count:purchase", "sum:revenue", "funnel:view_item>purchase within 2d"]
bayesian = true

[[analysis]]
name = "rfm"
kind = "rfm"
segments = ["{rfm}"]

[[analysis]]
name = "repeat"
kind = "segment"
expr = "F >= 2 and R < 30d"

[[analysis]]
name = "clv"
kind = "clv"
horizon = "4w"
"#,
        store = store.display(),
        out = out.display(),
        rfm = root().join("queries/rfm_classic.seg").display(),
    )
}

fn subcommand(store: &Path, name: &str, format: &str) -> String {
    let mut c = tenure();
    let as_of = ["--as-of", "2026-02-15"];
    match name {
        "retention" => c.arg("retention").args(RANGE).args(as_of).args([
            "--start-event",
            "signup",
            "--return-event",
            "purchase",
        ]),
        "retention_by_country" => c
            .arg("retention")
            .args(RANGE)
            .args(as_of)
            .args(["--by", "country"]),
        "ltv" => c.arg("ltv").args(RANGE).args(as_of),
        "kpi" => c.arg("kpi").args(RANGE).args(["--period", "week"]),
        "lifecycle" => c.arg("lifecycle").args(RANGE),
        "stages" => c.arg("lifecycle").args(RANGE).args(as_of).arg("--stages"),
        "funnel" => c.arg("funnel").args(RANGE).args([
            "--steps",
            "view_item,add_to_cart,purchase",
            "--window",
            "2d",
            "--by",
            "variant",
        ]),
        "abtest" => c.arg("abtest").args(RANGE).args([
            "--metric",
            "count:purchase",
            "--metric",
            "sum:revenue",
            "--metric",
            "funnel:view_item>purchase within 2d",
            "--bayesian",
        ]),
        "rfm" => c
            .arg("rfm")
            .args(as_of)
            .arg("--segments")
            .arg(root().join("queries/rfm_classic.seg")),
        "repeat" => c.args(["segment", "F >= 2 and R < 30d"]).args(as_of),
        "clv" => c.arg("clv").args(as_of).args(["--horizon", "4w"]),
        other => panic!("no subcommand for {other}"),
    };
    c.arg("--data").arg(store).args(["--format", format]);
    String::from_utf8(run_ok(&mut c).stdout).unwrap()
}

/// Parquet rows as JSON objects (nulls left out, as Arrow's JSON writer does).
fn parquet_objects(bytes: Vec<u8>) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut buf = Vec::new();
    let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
    for b in reader {
        w.write(&b.unwrap()).unwrap();
    }
    w.finish().unwrap();
    if buf.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&buf).unwrap()
}

#[test]
fn job_outputs_match_the_subcommands_and_reruns_replace_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let out = dir.path().join("out");
    let job = dir.path().join("e2e.toml");
    std::fs::write(&job, e2e_job(&store, &out)).unwrap();
    let run = run_ok(tenure().arg("run").arg(&job));
    let summary = String::from_utf8(run.stdout).unwrap();
    assert!(
        summary.starts_with("job e2e: 11 analyses, 11 ok, 0 failed, 33 files written"),
        "{summary}"
    );

    let names = [
        "retention",
        "retention_by_country",
        "ltv",
        "kpi",
        "lifecycle",
        "stages",
        "funnel",
        "abtest",
        "rfm",
        "repeat",
        "clv",
    ];
    let first = files(&out);
    let expected_files: Vec<String> = names
        .iter()
        .flat_map(|n| {
            ["csv", "json", "parquet"].map(|e| format!("e2e/{n}/as_of=2026-02-15/part.{e}"))
        })
        .collect();
    let mut listed: Vec<String> = first.keys().cloned().collect();
    let mut want = expected_files.clone();
    listed.sort();
    want.sort();
    assert_eq!(
        listed, want,
        "one file per analysis and format, named by the as-of date"
    );

    for n in names {
        let json = String::from_utf8(first[&format!("e2e/{n}/as_of=2026-02-15/part.json")].clone())
            .unwrap();
        assert_eq!(
            json,
            subcommand(&store, n, "json"),
            "{n}: job JSON = `tenure {n} --format json`"
        );
        let csv = String::from_utf8(first[&format!("e2e/{n}/as_of=2026-02-15/part.csv")].clone())
            .unwrap();
        assert_eq!(
            csv,
            subcommand(&store, n, "csv"),
            "{n}: job CSV = `tenure {n} --format csv`"
        );
        let objects: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&json).unwrap();
        assert!(!objects.is_empty(), "{n} has rows");
        let from_parquet =
            parquet_objects(first[&format!("e2e/{n}/as_of=2026-02-15/part.parquet")].clone());
        assert_eq!(from_parquet.len(), objects.len(), "{n}: parquet rows");
        for (p, j) in from_parquet.iter().zip(&objects) {
            for (k, v) in j {
                let pv = p.get(k).unwrap_or(&serde_json::Value::Null);
                let same =
                    pv == v || matches!((pv.as_f64(), v.as_f64()), (Some(a), Some(b)) if a == b);
                assert!(same, "{n}: column {k}: parquet {pv} vs json {v}");
            }
        }
    }

    // Parquet outputs carry each analysis's declared types, not types guessed
    // from JSON values (a column of nulls, integers for a float rate).
    let types = |n: &str| {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
            first[&format!("e2e/{n}/as_of=2026-02-15/part.parquet")].clone(),
        ))
        .unwrap()
        .schema()
        .clone()
    };
    use datafusion::arrow::datatypes::DataType;
    for n in names {
        let schema = types(n);
        assert!(
            schema
                .fields()
                .iter()
                .all(|f| f.data_type() != &DataType::Null),
            "{n}: {schema:?}"
        );
    }
    for (n, column, t) in [
        ("retention", "period", DataType::UInt32),
        ("retention", "cohort_size", DataType::UInt64),
        ("retention", "rate", DataType::Float64),
        ("retention", "complete", DataType::Boolean),
        ("ltv", "revenue", DataType::Utf8),
        ("kpi", "numerator", DataType::Float64),
        ("stages", "share", DataType::Float64),
        ("funnel", "step", DataType::UInt32),
        ("funnel", "median_seconds_to_convert", DataType::Float64),
        ("abtest", "is_control", DataType::Boolean),
        ("abtest", "p_value", DataType::Float64),
        ("abtest", "multi_arm_users", DataType::UInt64),
        ("rfm", "share", DataType::Float64),
        ("repeat", "total_users", DataType::UInt64),
    ] {
        let schema = types(n);
        assert_eq!(
            schema.field_with_name(column).unwrap().data_type(),
            &t,
            "{n}.{column}"
        );
    }

    // A rerun for the same as-of writes the same names: nothing is added, and a
    // damaged output is replaced whole.
    let damaged = out.join("e2e/kpi/as_of=2026-02-15/part.csv");
    std::fs::write(&damaged, "half a file").unwrap();
    run_ok(tenure().arg("run").arg(&job));
    let second = files(&out);
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "a rerun adds no files"
    );
    assert_eq!(
        second, first,
        "a rerun replaces each output with the same bytes"
    );

    // --out and --as-of override the job: another date, another file set.
    let other = dir.path().join("other");
    run_ok(
        tenure()
            .arg("run")
            .arg(&job)
            .arg("--out")
            .arg(&other)
            .args(["--as-of", "2026-02-08"]),
    );
    assert!(other.join("e2e/ltv/as_of=2026-02-08/part.parquet").exists());
}

#[test]
fn a_failing_analysis_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let out = dir.path().join("out");
    let job = dir.path().join("partly.toml");
    std::fs::write(
        &job,
        format!(
            r#"name = "partly"
data = "{}"
out = "{}"
formats = ["json"]
as_of = "latest"

[[analysis]]
name = "retention"
kind = "retention"

[[analysis]]
name = "pro_users"
kind = "segment"
# No event carries a `plan` property: known only once the store is read.
expr = 'plan = "pro"'

[[analysis]]
name = "kpi"
kind = "kpi"
"#,
            store.display(),
            out.display()
        ),
    )
    .unwrap();
    // The file itself is valid.
    run_ok(tenure().args(["run", "--dry-run"]).arg(&job));

    let report = dir.path().join("report.html");
    let metrics = dir.path().join("tenure_job.prom");
    let run = tenure()
        .arg("run")
        .arg(&job)
        .arg("--report")
        .arg(&report)
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .unwrap();
    // Prometheus text for a textfile collector, the failure included.
    let prom = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        "# TYPE tenure_job_analysis_success gauge",
        "tenure_job_analysis_success{job=\"partly\",analysis=\"retention\",kind=\"retention\"} 1",
        "tenure_job_analysis_success{job=\"partly\",analysis=\"pro_users\",kind=\"segment\"} 0",
        "tenure_job_analyses{job=\"partly\"} 3",
        "tenure_job_analyses_failed{job=\"partly\"} 1",
    ] {
        assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
    }
    assert!(
        prom.contains("tenure_job_analysis_rows{job=\"partly\",analysis=\"kpi\",kind=\"kpi\"} "),
        "{prom}"
    );
    assert_eq!(
        run.status.code(),
        Some(1),
        "a failed analysis fails the run"
    );
    let summary = String::from_utf8(run.stdout).unwrap();
    let logs = String::from_utf8(run.stderr).unwrap();
    assert!(summary.contains("3 analyses, 2 ok, 1 failed"), "{summary}");
    assert!(
        summary.contains("pro_users") && summary.contains("FAILED"),
        "{summary}"
    );
    assert!(logs.contains("failed") && logs.contains("plan"), "{logs}");
    assert!(logs.contains("1 of 3 analyses failed: pro_users"), "{logs}");
    assert!(
        out.join("partly/retention/as_of=2026-02-19/part.json")
            .exists()
    );
    assert!(out.join("partly/kpi/as_of=2026-02-19/part.json").exists());
    assert!(!out.join("partly/pro_users").exists());
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("class=\"error\">failed:"),
        "the report shows the failure"
    );
    assert_eq!(html.matches("<section").count(), 3);
}

#[test]
fn html_of_a_single_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let out = run_ok(
        tenure()
            .args(["retention", "--format", "html", "--data"])
            .arg(&store),
    );
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg") && html.contains("<table>"));
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        if std::env::var_os("TENURE_TEST_CHROMIUM_REQUIRED").is_some() {
            panic!("chromium is required (TENURE_TEST_CHROMIUM_REQUIRED is set) but not found");
        }
        eprintln!(
            "SKIPPED report_renders_in_headless_chromium: chromium not found (apt-get install chromium)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // Markup in event names and property values must reach the page as text.
    let evil = dir.path().join("evil.ndjson");
    std::fs::write(
        &evil,
        concat!(
            r#"{"user_id":"evil","event":"signup","ts":"2026-01-06T10:00:00Z","country":"<img src=x onerror=alert(1)>"}"#,
            "\n",
            r#"{"user_id":"evil","event":"<script>alert(2)</script>","ts":"2026-01-14T10:00:00Z","country":"<img src=x onerror=alert(1)>"}"#,
            "\n",
        ),
    )
    .unwrap();
    run_ok(tenure().arg("ingest").arg(&evil).arg("--to").arg(&store));
    let job = dir.path().join("report.toml");
    std::fs::write(
        &job,
        format!(
            r#"name = "report"
data = "{}"
as_of = "latest"
range = "last 8 weeks"

[[analysis]]
name = "retention"
kind = "retention"

[[analysis]]
name = "retention_by_country"
kind = "retention"
by = "country"

[[analysis]]
name = "scripted_return"
kind = "retention"
return_event = "<script>alert(2)</script>"

[[analysis]]
name = "ltv"
kind = "ltv"

[[analysis]]
name = "kpi"
kind = "kpi"
period = "week"

[[analysis]]
name = "lifecycle"
kind = "lifecycle"

[[analysis]]
name = "stages"
kind = "lifecycle"
stages = true

[[analysis]]
name = "funnel"
kind = "funnel"
steps = ["view_item", "add_to_cart", "checkout", "purchase"]
by = "country"

[[analysis]]
name = "ab"
kind = "abtest"
metrics = ["count:purchase", "sum:revenue"]
bayesian = true

[[analysis]]
name = "rfm"
kind = "rfm"
segments = ["{}"]

[[analysis]]
name = "segment"
kind = "segment"
expr = 'country = "<img src=x onerror=alert(1)>"'

[[analysis]]
name = "paths"
kind = "paths"
after = "signup"
depth = 3
by = "country"

[[analysis]]
name = "broken"
kind = "segment"
expr = 'plan = "<b>pro</b>"'
"#,
            store.display(),
            root().join("queries/rfm_segments.seg").display()
        ),
    )
    .unwrap();
    let report = dir.path().join("report.html");
    let run = tenure()
        .arg("run")
        .arg(&job)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "only `broken` fails: {}",
        String::from_utf8_lossy(&run.stdout)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("<img") && !html.contains("<script") && !html.contains("<b>pro"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Self-contained: no scripts, no fetched assets.
    for needle in ["src=\"http", "href=\"http", "url(", "@import", "<link"] {
        assert!(!html.contains(needle), "report references {needle}");
    }

    let url = format!("file://{}", report.display());
    let profile = dir.path().join("profile");
    let png = dir.path().join("shot.png");
    let shot = headless(&chromium, &profile)
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2000",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&shot.stderr);
    assert!(png.exists(), "no screenshot: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 2000));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 200))
        .count();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        inked > pixels.len() / 50,
        "the screenshot is nearly blank: {inked} of {} pixels inked",
        pixels.len()
    );
    assert!(
        colours.len() > 50,
        "only {} colours: no charts?",
        colours.len()
    );

    // The DOM Chromium built: every section, its charts and tables, and the
    // markup from data still text.
    let dom = headless(&chromium, &profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<section").count(), 13, "{dom}");
    assert!(dom.matches("<svg").count() >= 12, "charts rendered");
    assert!(dom.matches("<table").count() >= 13, "numbers rendered");
    // The paths section draws its Sankey: nodes and bands.
    let paths = &dom[dom.find("paths from the anchor event").expect("the Sankey")..];
    assert!(
        paths.contains("<path d=\"M") && paths.contains("<rect"),
        "{paths}"
    );
    assert!(!dom.contains("<img"), "data became markup");
    assert!(dom.contains("failed: "), "the failed analysis is shown");
}

/// Outputs to a bucket: against the S3-compatible server `.ci/test` starts.
#[test]
fn outputs_to_s3_are_replaced_on_rerun() {
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
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = format!("s3://{bucket}/jobs-{nanos}");
    let job = dir.path().join("s3.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"s3\"\ndata = \"{}\"\nout = \"{out}\"\nformats = [\"json\", \"parquet\"]\nas_of = \"2026-02-15\"\n\n[[analysis]]\nkind = \"retention\"\n",
            store.display()
        ),
    )
    .unwrap();
    let io = tenure_ingest::io::Io::new(tenure_store::Store::open(&out).unwrap());
    let listing = || {
        let mut names: Vec<String> = io.list("").unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    };
    run_ok(tenure().arg("run").arg(&job));
    let first = listing();
    assert_eq!(
        first,
        [
            "s3/retention/as_of=2026-02-15/part.json",
            "s3/retention/as_of=2026-02-15/part.parquet"
        ]
    );
    let json = io.get("s3/retention/as_of=2026-02-15/part.json").unwrap();
    assert_eq!(
        String::from_utf8(json.to_vec()).unwrap(),
        subcommand_retention_all(&store)
    );
    run_ok(tenure().arg("run").arg(&job));
    assert_eq!(listing(), first, "a rerun adds nothing");
}

fn subcommand_retention_all(store: &Path) -> String {
    let out = run_ok(
        tenure()
            .args([
                "retention",
                "--as-of",
                "2026-02-15",
                "--to",
                "2026-02-15",
                "--format",
                "json",
                "--data",
            ])
            .arg(store),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polars (from PyPI) reads the store's `events/` and a job's outputs as they
/// are, hive-style: the events keep their `date`, the outputs of two runs
/// their `as_of`, and the numbers are Tenure's.
#[test]
fn polars_reads_the_store_and_the_job_outputs_as_is() {
    let Ok(python) = std::env::var("TENURE_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide Polars (TENURE_TEST_PYTHON)"
        );
        eprintln!("skipped: set TENURE_TEST_PYTHON to a python with polars");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let out = dir.path().join("out");
    let job = dir.path().join("daily.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"daily\"\ndata = \"{}\"\nout = \"{}\"\nformats = [\"parquet\"]\n\n[[analysis]]\nname = \"kpi\"\nkind = \"kpi\"\nperiod = \"week\"\n",
            store.display(),
            out.display()
        ),
    )
    .unwrap();
    for day in ["2026-02-08", "2026-02-15"] {
        run_ok(tenure().arg("run").arg(&job).args(["--as-of", day]));
    }
    let events = String::from_utf8(
        run_ok(tenure().arg("sql").arg("--data").arg(&store).args([
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT user_key) AS u FROM events",
        ]))
        .stdout,
    )
    .unwrap();
    let want = events.lines().nth(1).unwrap().to_string();
    let script = r#"
import sys, polars as pl
store, out = sys.argv[1], sys.argv[2]
ev = pl.read_parquet(f"{store}/events/**/*.parquet", hive_partitioning=True)
assert "date" in ev.columns, ev.columns
print(f"events {ev.height},{ev['user_key'].n_unique()} days {ev['date'].n_unique()}")
k = pl.read_parquet(f"{out}/daily/kpi/**/*.parquet", hive_partitioning=True)
print("as_of", ",".join(str(d) for d in sorted(k["as_of"].unique().to_list())))
print("rows", ",".join(str(n) for n in k.group_by("as_of").len().sort("as_of")["len"].to_list()))
"#;
    let run = Command::new(python)
        .args(["-c", script])
        .arg(&store)
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        text.contains(&format!("events {want} days 50")),
        "{text} (want {want})"
    );
    assert!(text.contains("as_of 2026-02-08,2026-02-15"), "{text}");
    // Rows per week up to each date: the later run has more.
    let rows: Vec<usize> = text
        .lines()
        .find_map(|l| l.strip_prefix("rows "))
        .unwrap()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0] > 0 && rows[1] > rows[0], "{text}");
}
