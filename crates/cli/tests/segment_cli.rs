//! `tenure segment` and `tenure rfm` on the hand-checked retention fixture
//! (fixtures/retention/README.md; as of the newest event, 2026-03-30 09:00 UTC).

use std::path::{Path, PathBuf};
use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = tenure()
        .arg("ingest")
        .arg(root().join("fixtures/retention/events.ndjson"))
        .arg("--to")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    dir
}

fn count(store: &Path, expr: &str) -> String {
    count_with(store, expr, &[])
}

/// `tenure segment EXPR --count` with more flags.
fn count_with(store: &Path, expr: &str, flags: &[&str]) -> String {
    let out = tenure()
        .args(["segment", "--data"])
        .arg(store)
        .args([expr, "--count"])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn counts_match_the_hand_worked_users() {
    let dir = store();
    for (expr, want) in [
        // R: a 7 days, c 13, d 0; b and e never bought.
        ("R < 30d and F >= 1", "3"),
        ("R < 10d", "2"),
        ("not did purchase", "2"),
        ("did view >= 1 times", "2"),
        // e's view on 03-24 10:00 is within the 7 days up to 03-30 09:00; a's is not.
        ("did view within 7d", "1"),
        ("M >= 12.5", "2"),
        // d and e were first seen 7 days (and 7 days 4 hours) before: both "new".
        ("lifecycle = new", "2"),
        // Only d's first event is within the last 7 days (the bound is inclusive).
        ("first_seen within 7d", "1"),
        ("lifecycle = growing or F = 0", "4"),
    ] {
        assert_eq!(count(dir.path(), expr), want, "{expr}");
    }
}

#[test]
fn counts_as_of_a_past_date_count_the_users_seen_then() {
    let dir = store();
    let count = |expr: &str| count_with(dir.path(), expr, &["--as-of", "2026-03-20"]);
    // By the end of 03-20: a, b and c were seen (d and e first come on
    // 03-23); only c bought (03-16 12:00, 4.5 days before); a's purchase on
    // 03-22 is after the date and does not count.
    for (expr, want) in [
        ("F >= 1", "1"),
        ("F = 0", "2"),
        ("R < 5d", "1"),
        ("R < 4d", "0"),
        ("F = 0 or R < 5d", "3"),
    ] {
        assert_eq!(count(expr), want, "{expr}");
    }
}

#[test]
fn users_listing_names_users_and_features() {
    let dir = store();
    let out = tenure()
        .args(["segment", "--data"])
        .arg(dir.path())
        .args(["R < 30d", "--users", "--format", "csv"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "user_key,user_id,recency\n0,a,7\n2,c,13\n3,d,0\n"
    );
}

/// `--out` with a listing: the file holds the rows as printed (CSV, JSON),
/// or typed as computed (Parquet); a name without a known extension is bad
/// input before anything is read.
#[test]
fn users_listing_writes_its_file() {
    let dir = store();
    let listing = |format: &str, out: Option<&Path>| {
        let mut cmd = tenure();
        cmd.args(["segment", "--data"]).arg(dir.path()).args([
            "R < 30d and first_seen within 90d",
            "--users",
            "--format",
            format,
        ]);
        if let Some(out) = out {
            cmd.arg("--out").arg(out);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for (format, name) in [("csv", "u.csv"), ("json", "u.json")] {
        let file = dir.path().join(name);
        let printed = listing(format, Some(&file));
        assert_eq!(printed, listing(format, None));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), printed, "{format}");
    }
    let file = dir.path().join("u.parquet");
    let printed = listing("csv", Some(&file));
    let bytes = bytes::Bytes::from(std::fs::read(&file).unwrap());
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let schema = reader.schema().clone();
    for (name, t) in [
        ("user_key", DataType::UInt32),
        ("user_id", DataType::Utf8),
        ("recency", DataType::Int64),
        (
            "first_seen",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
    ] {
        assert_eq!(
            schema.field_with_name(name).unwrap().data_type(),
            &t,
            "{name}"
        );
    }
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, printed.lines().count() - 1);
    assert!(rows > 0);
    let bad = tenure()
        .args(["segment", "--data"])
        .arg(dir.path())
        .args(["R < 30d", "--users", "--out"])
        .arg(dir.path().join("u.txt"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".parquet"));
}

#[test]
fn errors_point_at_the_input_and_exit_2() {
    let dir = store();
    for (expr, want) in [
        ("Freq > 2", "did you mean `F`"),
        ("R == 3", "use `=`"),
        ("F < 30d", ""),
    ] {
        let out = tenure()
            .args(["segment", "--data"])
            .arg(dir.path())
            .args([expr, "--count"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{expr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains('^'), "{expr}: caret in {err}");
        assert!(err.contains(want), "{expr}: {err}");
    }
}

#[test]
fn reference_fan_out_is_refused_and_bounded_references_count() {
    // fixtures/jobs/fan_out.seg: 16 segments, each ORing 8 copies of the one
    // before (8^15 conditions expanded; it reached 11.8 GB before).
    let file = root().join("fixtures/jobs/fan_out.seg");
    let dir = store();
    let segment = |args: &[&str]| {
        tenure()
            .arg("segment")
            .arg("--segments")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    let data = dir.path().to_str().unwrap();
    for args in [
        &["@s15", "--count", "--data", data][..],
        &["@s15", "--users", "--data", data][..],
        &["--explain", "@s1"][..],
    ] {
        let out = segment(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("with `@s4` this expression stands for more than 10000 conditions")
                && err.contains("fan_out.seg:6:28")
                && err.contains("each `@name` is a full copy of its definition"),
            "{args:?}: {err}"
        );
    }
    // The first five segments are within bounds: `@s4` (4,681 nodes) counts
    // the users with a purchase, as `F >= 1` does.
    let head: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .take(5)
        .map(|l| format!("{l}\n"))
        .collect();
    let small = dir.path().join("fan_head.seg");
    std::fs::write(&small, head).unwrap();
    let out = tenure()
        .args(["segment", "--data", data, "--segments"])
        .arg(&small)
        .args(["@s4 or @s4", "--count"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        count(dir.path(), "F >= 1")
    );
}

#[test]
fn explain_needs_no_data() {
    let out = tenure()
        .args(["segment", "--explain", "R < 30d and F >= 3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("recency < Int64(30) AND frequency >= Int64(3)"),
        "{text}"
    );
    assert!(text.contains("physical_plan"), "{text}");
}

#[test]
fn rfm_partitions_customers_into_the_english_set() {
    let dir = store();
    let out = tenure()
        .args(["rfm", "--data"])
        .arg(dir.path())
        .arg("--segments")
        .arg(root().join("queries/rfm_segments.seg"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let customers = rows.iter().find(|r| r["segment"] == "(customers)").unwrap()["users"]
        .as_u64()
        .unwrap();
    assert_eq!(customers, 3, "a, c and d bought");
    let in_segments: u64 = rows
        .iter()
        .filter(|r| r["segment"] != "(customers)")
        .map(|r| r["users"].as_u64().unwrap())
        .sum();
    assert_eq!(
        in_segments, customers,
        "each customer is in exactly one segment: {rows:?}"
    );
}

/// `tenure rfm` with these flags: users per segment, by name.
fn rfm_users(store: &Path, flags: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let out = tenure()
        .args(["rfm", "--data"])
        .arg(store)
        .args(["--format", "json"])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["segment"].as_str().unwrap().to_string(),
                r["users"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rfm_fixed_thresholds_and_lookback_windows() {
    let dir = store();
    // Quintiles of three customers: R a 7 days, c 13, d 0 (cuts at ranks
    // 1, 2, 2, 3: c 1, a 2, d 4); F is 1 for all (score 1).
    let q = rfm_users(dir.path(), &[]);
    assert_eq!((q["lost"], q["hibernating"], q["promising"]), (1, 1, 1));
    // Fixed thresholds: d (R 0) scores 5, a (R 7) 4, c (R 13) 2; F 1 > 0
    // scores 2: two potential loyalists and one hibernating.
    let t = rfm_users(
        dir.path(),
        &[
            "--r-thresholds",
            "0,7,10,20",
            "--f-thresholds",
            "0,1,2,3",
            "--m-thresholds",
            "7,12.5,20,30",
        ],
    );
    assert_eq!((t["potential_loyalist"], t["hibernating"]), (2, 1), "{t:?}");
    assert_eq!(t["(customers)"], 3);
    // A lookback of 10 days before 03-30 09:00: c's purchase (03-16) is out.
    assert_eq!(
        rfm_users(dir.path(), &["--lookback", "10d"])["(customers)"],
        2
    );
    assert_eq!(
        rfm_users(dir.path(), &["--from", "2026-03-20"])["(customers)"],
        2
    );
    assert_eq!(
        rfm_users(dir.path(), &["--from", "2026-03-23"])["(customers)"],
        1
    );
    for (flags, says) in [
        (&["--r-thresholds", "7,30,90"][..], "3 values"),
        (&["--f-thresholds", "1,3,2,5"][..], "not strictly ascending"),
        (
            &["--m-thresholds", "1,2,3,4.005"][..],
            "`4.005` is not a number",
        ),
        (
            &["--lookback", "10d", "--from", "2026-03-01"][..],
            "give one",
        ),
        (&["--lookback", "10"][..], "--lookback"),
    ] {
        let out = tenure()
            .args(["rfm", "--data"])
            .arg(dir.path())
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}

#[test]
fn every_rfm_segment_occurs_on_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let st = tenure()
        .args([
            "gen", "--users", "5000", "--days", "90", "--seed", "7", "--to",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for set in ["queries/rfm_segments.seg", "queries/rfm_classic.seg"] {
        let file = root().join(set);
        let users = rfm_users(dir.path(), &["--segments", file.to_str().unwrap()]);
        assert_eq!(
            users.len(),
            if set.ends_with("classic.seg") { 9 } else { 12 }
        );
        for (segment, n) in &users {
            assert!(*n > 0, "{set}: {segment} is empty: {users:?}");
        }
    }
}

#[test]
fn did_where_and_property_totals_on_typed_and_json_properties() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        [
            r#"{"event_id":"1","user_id":"u1","event":"view","ts":"2026-03-01T10:00:00Z","properties":{"page":"home","ms":120}}"#,
            r#"{"event_id":"2","user_id":"u1","event":"view","ts":"2026-03-02T10:00:00Z","properties":{"page":"cart"}}"#,
            r#"{"event_id":"3","user_id":"u1","event":"purchase","ts":"2026-03-03T10:00:00Z","revenue":150,"properties":{"coupon":"X"}}"#,
            r#"{"event_id":"4","user_id":"u1","event":"purchase","ts":"2026-03-04T10:00:00Z","revenue":50}"#,
            r#"{"event_id":"5","user_id":"u2","event":"view","ts":"2026-03-05T10:00:00Z","properties":{"page":"home","ms":80}}"#,
            r#"{"event_id":"6","user_id":"u2","event":"purchase","ts":"2026-03-06T10:00:00Z","revenue":120}"#,
            r#"{"event_id":"7","user_id":"u2","event":"purchase","ts":"2026-03-07T10:00:00Z","revenue":130}"#,
            r#"{"event_id":"8","user_id":"u3","event":"view","ts":"2026-01-01T10:00:00Z"}"#,
            r#"{"event_id":"9","user_id":"u3","event":"purchase","ts":"2026-01-02T10:00:00Z","revenue":20}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let store = dir.path().join("store");
    let st = tenure()
        .arg("ingest")
        .arg(&events)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for (expr, want) in [
        // JSON keys: text, and numbers read as numbers.
        (r#"did view where page = "home""#, "2"),
        ("did view where ms > 100", "1"),
        // u1's cart view has no `ms`: unknown, so it does not count, also
        // under `not`; u2's home view has ms 80.
        (
            r#"did view where (page in ("home", "cart") and not ms < 100)"#,
            "1",
        ),
        (r#"did purchase where coupon = "X""#, "1"),
        // Typed revenue, exactly: u1 bought 150 and 50, u2 120 and 130.
        ("did purchase where revenue > 100 >= 2 times", "1"),
        (
            "did purchase where revenue between 50 and 120 = 1 times",
            "2",
        ),
        // Within 30 days of the newest event (03-07): u3's purchase is out.
        ("did purchase where revenue < 100 within 30d", "1"),
        ("sum(revenue) >= 200", "2"),
        ("sum(revenue) within 30d < 100", "1"),
        ("avg(revenue) > 100", "1"),
        ("avg(revenue) within 4d >= 120", "1"),
        // No purchase in the window: a sum of 0, a mean of nothing (NULL).
        ("sum(revenue) within 2d = 0", "2"),
        (
            "avg(revenue) within 2d > 0 or avg(revenue) within 2d <= 0",
            "1",
        ),
    ] {
        assert_eq!(count(&store, expr), want, "{expr}");
    }
    // The same function in SQL.
    let out = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(&store)
        .arg("SELECT count(DISTINCT user_id) AS n FROM events WHERE prop(properties, 'page') = 'home'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n\n2");
    // A misspelt event is an error with a suggestion, not a count of 0.
    for (expr, says) in [
        ("did purchse >= 1 times", "did you mean `purchase`?"),
        (
            r#"did purchase where revenue = "a lot""#,
            "compare it with a number",
        ),
        ("sum(ms) >= 1", "not a numeric column"),
    ] {
        let out = tenure()
            .args(["segment", "--data"])
            .arg(&store)
            .args([expr, "--count"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{expr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{expr}: {err}");
    }
}
