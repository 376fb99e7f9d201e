//! `tenure abtest`: GrowthBook's published figures through --from-summary, the
//! hand-checked fixture (fixtures/abtest/README.md), bad input, and per-arm
//! statistics from random events against a naive computation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ingest(file: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = tenure()
        .arg("ingest")
        .arg(file)
        .arg("--to")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn fixture_store() -> tempfile::TempDir {
    ingest(&root().join("fixtures/abtest/events.ndjson"))
}

fn run(args: &[&str]) -> Output {
    tenure().arg("abtest").args(args).output().unwrap()
}

fn json_rows(args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

fn row<'a>(rows: &'a [Value], metric: &str, arm: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["metric"] == metric && r["arm"] == arm)
        .unwrap_or_else(|| panic!("no row {metric}/{arm} in {rows:?}"))
}

/// A number rounded to `decimals`, as printed in the issue.
fn fixed(v: &Value, decimals: usize) -> String {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    format!("{x:.decimals$}")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const PROPORTIONS_CSV: &str = "arm,users,conversions\nA,28,14\nB,30,16\n";
const PROPORTIONS_JSON: &str = r#"[{"arm": "A", "users": 28, "conversions": 14},
 {"arm": "B", "users": 30, "conversions": 16}]"#;
const MEANS_CSV: &str =
    "arm,users,sum,sum_squares\nA,3407,1396.87,52377.9767\nB,3461,2422.7,134698.29\n";
const MEANS_JSON: &str = r#"[{"arm": "A", "users": 3407, "sum": 1396.87, "sum_squares": 52377.9767},
 {"arm": "B", "users": 3461, "sum": 2422.7, "sum_squares": 134698.29}]"#;

#[test]
fn growthbook_figures_through_from_summary() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("p.csv", PROPORTIONS_CSV), ("p.json", PROPORTIONS_JSON)] {
        let file = write(dir.path(), name, text);
        let rows = json_rows(&["--from-summary", &file]);
        let b = row(&rows, &file, "B");
        assert_eq!(fixed(&b["lift"], 5), "0.06667", "{name}");
        assert_eq!(fixed(&b["ci_lower"], 5), "-0.47767", "{name}");
        assert_eq!(fixed(&b["ci_upper"], 5), "0.61101", "{name}");
        assert_eq!(fixed(&b["p_value"], 5), "0.80707", "{name}");
        assert_eq!(b["kind"], "proportion");
        assert_eq!(b["conversions"], 16);
        assert_eq!(row(&rows, &file, "A")["is_control"], true);
        assert_eq!(b["multi_arm_users"], Value::Null);
    }
    for (name, text) in [("m.csv", MEANS_CSV), ("m.json", MEANS_JSON)] {
        let file = write(dir.path(), name, text);
        let rows = json_rows(&["--from-summary", &file]);
        let b = row(&rows, &file, "B");
        assert_eq!(fixed(&b["lift"], 5), "0.70732", "{name}");
        assert_eq!(fixed(&b["ci_lower"], 5), "-0.03526", "{name}");
        assert_eq!(fixed(&b["ci_upper"], 5), "1.44989", "{name}");
        assert_eq!(fixed(&b["p_value"], 5), "0.06191", "{name}");
        assert_eq!(b["difference"], "relative");

        let rows = json_rows(&["--from-summary", &file, "--difference", "absolute"]);
        let b = row(&rows, &file, "B");
        assert_eq!(fixed(&b["lift"], 5), "0.29000", "{name}");
        assert_eq!(fixed(&b["ci_lower"], 5), "0.04538", "{name}");
        assert_eq!(fixed(&b["ci_upper"], 5), "0.53462", "{name}");
        assert_eq!(fixed(&b["p_value"], 5), "0.02016", "{name}");
        assert_eq!(b["significant"], true);
    }
}

#[test]
fn sample_ratio_mismatch_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("srm.csv", "arm,users,conversions\nA,1000,100\nB,1200,130\n"),
        (
            "srm.json",
            r#"[{"arm":"A","users":1000,"conversions":100},{"arm":"B","users":1200,"conversions":130}]"#,
        ),
    ] {
        let file = write(dir.path(), name, text);
        let rows = json_rows(&["--from-summary", &file, "--split", "50:50"]);
        for r in &rows {
            assert_eq!(fixed(&r["srm_p_value"], 9), "0.000020079", "{name}");
            assert_eq!(r["srm_status"], "mismatch");
        }
        let b = row(&rows, &file, "B");
        assert!(
            b["verdict"]
                .as_str()
                .unwrap()
                .ends_with("do not trust this result"),
            "{b}"
        );
        let table = run(&["--from-summary", &file]);
        let text = String::from_utf8(table.stdout).unwrap();
        assert!(
            text.contains("Sample ratio mismatch: 1000 vs 1200 users is not a 50:50 split"),
            "{text}"
        );
    }
    // The same users at the split they were assigned with are fine.
    let file = write(
        dir.path(),
        "uneven.csv",
        "arm,users,conversions\nA,1000,100\nB,1200,130\n",
    );
    let rows = json_rows(&["--from-summary", &file, "--split", "5:6"]);
    assert_eq!(rows[0]["srm_status"], "ok");
}

#[test]
fn fixture_statistics_match_the_hand_work() {
    let store = fixture_store();
    let data = store.path().to_str().unwrap();
    let rows = json_rows(&[
        "--data",
        data,
        "--metric",
        "count:purchase",
        "--metric",
        "sum:revenue",
        "--metric",
        "segment:F >= 2",
        "--metric",
        "segment:did purchase",
        "--metric",
        "funnel:view>purchase within 1d",
        "--metric",
        "funnel:view > purchase where (revenue > 5) within 3d",
        "--metric",
        "funnel:view > purchase within 20m within 1d",
        "--metric",
        "funnel:view > purchase after 20m within 1d",
    ]);
    assert_eq!(rows.len(), 16);
    let stats = |metric: &str, arm: &str| {
        let r = row(&rows, metric, arm);
        (
            r["users"].as_u64().unwrap(),
            r["sum"].as_f64(),
            r["sum_squares"].as_f64(),
            r["conversions"].as_u64(),
        )
    };
    assert_eq!(
        stats("count:purchase", "A"),
        (3, Some(3.0), Some(5.0), None)
    );
    assert_eq!(
        stats("count:purchase", "B"),
        (3, Some(4.0), Some(10.0), None)
    );
    assert_eq!(
        stats("sum:revenue", "A"),
        (3, Some(18.75), Some(250.8125), None)
    );
    assert_eq!(
        stats("sum:revenue", "B"),
        (3, Some(15.0), Some(113.0), None)
    );
    assert_eq!(stats("segment:F >= 2", "A"), (3, None, None, Some(1)));
    assert_eq!(stats("segment:F >= 2", "B"), (3, None, None, Some(1)));
    assert_eq!(stats("segment:did purchase", "A"), (3, None, None, Some(2)));
    assert_eq!(stats("segment:did purchase", "B"), (3, None, None, Some(2)));
    let funnel = "funnel:view>purchase within 1d";
    assert_eq!(stats(funnel, "A"), (3, None, None, Some(2)));
    assert_eq!(stats(funnel, "B"), (3, None, None, Some(1)));
    let big = "funnel:view > purchase where (revenue > 5) within 3d";
    assert_eq!(stats(big, "A"), (3, None, None, Some(1)));
    assert_eq!(stats(big, "B"), (3, None, None, Some(1)));
    // A step's own limit; the last `within` is the window.
    let quick = "funnel:view > purchase within 20m within 1d";
    assert_eq!(stats(quick, "A"), (3, None, None, Some(1)));
    assert_eq!(stats(quick, "B"), (3, None, None, Some(1)));
    let slow = "funnel:view > purchase after 20m within 1d";
    assert_eq!(stats(slow, "A"), (3, None, None, Some(1)));
    assert_eq!(stats(slow, "B"), (3, None, None, Some(0)));
    let b = row(&rows, funnel, "B");
    assert_eq!(fixed(&b["lift"], 5), "-0.50000");
    assert_eq!(fixed(&b["std_error"], 6), "0.456435");
    assert_eq!(fixed(&b["p_value"], 5), "0.33485");
    assert_eq!(fixed(&b["ci_lower"], 5), "-1.76727");
    assert_eq!(fixed(&b["ci_upper"], 5), "0.76727");
    for r in &rows {
        assert_eq!(r["multi_arm_users"], 1);
        assert_eq!(r["srm_status"], "not_enough_traffic");
    }
    let b = row(&rows, "count:purchase", "B");
    assert_eq!(fixed(&b["lift"], 5), "0.33333");
    assert_eq!(fixed(&b["std_error"], 6), "1.170628");
    assert_eq!(fixed(&b["p_value"], 5), "0.79210");
    assert_eq!(fixed(&b["ci_lower"], 5), "-3.13258");
    assert_eq!(fixed(&b["ci_upper"], 5), "3.79925");

    let rows = json_rows(&[
        "--data",
        data,
        "--metric",
        "sum:revenue",
        "--difference",
        "absolute",
        "--control",
        "A",
    ]);
    let b = row(&rows, "sum:revenue", "B");
    assert_eq!(fixed(&b["lift"], 5), "-1.25000");
    assert_eq!(fixed(&b["std_error"], 6), "5.348286");
    assert_eq!(fixed(&b["p_value"], 5), "0.83000");
    assert_eq!(fixed(&b["ci_lower"], 5), "-18.10651");
    assert_eq!(fixed(&b["ci_upper"], 5), "15.60651");

    // B as control turns the lift around; the table names who is excluded.
    let out = run(&[
        "--data",
        data,
        "--metric",
        "count:purchase",
        "--control",
        "B",
        "--bayesian",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "Arms from `variant`: A 3 users, B 3 users; 1 user saw more than one arm \
             (excluded); 1 user has no `variant` (not in the test)"
        ),
        "{text}"
    );
    assert!(text.contains("B (control)"), "{text}");
    assert!(text.contains("chance to win"), "{text}");
    assert!(text.contains("Treatment A is worse: -25.0 %"), "{text}");
}

/// A ratio metric from events (fixtures/abtest/README.md, "ratio"): revenue
/// per purchase, A 18.75 / 3 = 6.25, B 15 / 4 = 3.75, lift -0.4, standard
/// error 0.279907 by the delta method.
#[test]
fn ratio_metric_from_events_matches_the_hand_work() {
    let store = fixture_store();
    let data = store.path().to_str().unwrap();
    let metric = "ratio:sum:revenue/count:purchase";
    let rows = json_rows(&["--data", data, "--metric", metric]);
    let (a, b) = (row(&rows, metric, "A"), row(&rows, metric, "B"));
    assert_eq!(a["kind"], "ratio");
    assert_eq!(fixed(&a["value"], 6), "6.250000");
    assert_eq!(fixed(&b["value"], 6), "3.750000");
    assert_eq!(a["users"], 3);
    assert_eq!(fixed(&b["lift"], 6), "-0.400000");
    assert_eq!(fixed(&b["std_error"], 6), "0.279907");
    // The numerator's sums are reported as a mean metric's are.
    assert_eq!(fixed(&a["sum"], 4), "18.7500");
    assert_eq!(fixed(&a["sum_squares"], 4), "250.8125");
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "ratio:sum:revenue/segment:did view",
        ],
        "the denominator must be count:<event> or sum:<column>",
    );
}

/// CUPED from events (fixtures/abtest/README.md, "CUPED"): u3's purchase on
/// 03-31, before its exposure, is the only pre-exposure value; the pooled
/// theta is -0.2 and the lift moves from 0.33333 to 0.26667.
#[test]
fn cuped_from_events_matches_the_hand_work() {
    let store = fixture_store();
    let data = store.path().to_str().unwrap();
    let rows = json_rows(&[
        "--data",
        data,
        "--metric",
        "count:purchase",
        "--metric",
        "segment:did purchase",
        "--cuped",
        "7",
    ]);
    let b = row(&rows, "count:purchase", "B");
    assert_eq!(fixed(&b["lift"], 6), "0.266667");
    assert_eq!(fixed(&b["std_error"], 6), "1.172525");
    // The value and sums shown are the metric's own, unadjusted.
    assert_eq!(
        fixed(&row(&rows, "count:purchase", "A")["value"], 6),
        "1.000000"
    );
    assert_eq!(row(&rows, "count:purchase", "A")["sum"], 3.0);
    // A segment metric is read unadjusted.
    let plain = json_rows(&["--data", data, "--metric", "segment:did purchase"]);
    assert_eq!(
        row(&rows, "segment:did purchase", "B")["lift"],
        row(&plain, "segment:did purchase", "B")["lift"]
    );
    // One day before exposure holds no event of anyone: theta is 0 and the
    // readout is the unadjusted one (gbstats' fallback).
    let one_day = json_rows(&["--data", data, "--metric", "count:purchase", "--cuped", "1"]);
    assert_eq!(
        fixed(&row(&one_day, "count:purchase", "B")["lift"], 5),
        "0.33333"
    );
    fails_with(
        &["--data", data, "--metric", "count:purchase", "--cuped", "0"],
        "--cuped 0",
    );
}

/// With --to 2026-04-01 only u1, u2, u7 (A, its B events come later) and u4,
/// u5 (B) are exposed; u7's purchase 24h05m after its view misses a 1d window,
/// u5's converts (fixtures/abtest/README.md).
#[test]
fn ranges_limit_exposure_and_funnel_entry() {
    let store = fixture_store();
    let rows = json_rows(&[
        "--data",
        store.path().to_str().unwrap(),
        "--to",
        "2026-04-01",
        "--metric",
        "funnel:view>purchase within 1d",
        "--metric",
        "count:purchase",
    ]);
    let funnel = "funnel:view>purchase within 1d";
    assert_eq!(row(&rows, funnel, "A")["users"], 3);
    assert_eq!(row(&rows, funnel, "A")["conversions"], 1);
    assert_eq!(row(&rows, funnel, "B")["users"], 2);
    assert_eq!(row(&rows, funnel, "B")["conversions"], 1);
    assert_eq!(row(&rows, funnel, "B")["multi_arm_users"], 0);
    // Purchases by the end of 04-01: u1 1 (A); u5 1 (B).
    assert_eq!(row(&rows, "count:purchase", "A")["sum"], 1.0);
    assert_eq!(row(&rows, "count:purchase", "B")["sum"], 1.0);
}

#[test]
fn csv_and_out_files_carry_the_documented_columns() {
    let store = fixture_store();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("readout.csv");
    let out = run(&[
        "--data",
        store.path().to_str().unwrap(),
        "--metric",
        "count:purchase",
        "--format",
        "csv",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let header = "metric,kind,arm,is_control,users,conversions,sum,sum_squares,value,difference,\
                  lift,std_error,ci_lower,ci_upper,p_value,p_value_adjusted,significant,\
                  chance_to_win,risk_control,risk_treatment,no_result,verdict,srm_status,\
                  srm_p_value,srm_verdict,alpha,sided,sequential,correction,multi_arm_users,\
                  dimension";
    assert_eq!(stdout.lines().next(), Some(header));
    assert_eq!(stdout.lines().count(), 3);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), stdout);
}

/// GrowthBook's informative prior on the relative lift, N(0.1, 0.1)
/// (`test_bayesian_gaussian_ab_test_informative`), through --from-summary:
/// --prior-stddev is the square root of gbstats' prior variance.
#[test]
fn informative_prior_gives_growthbooks_posterior() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "m.csv",
        "arm,users,sum,sum_squares\nA,10,100,1002.25\nB,10,105,1111.5\n",
    );
    let sd = 0.1f64.sqrt().to_string();
    let rows = json_rows(&[
        "--from-summary",
        &file,
        "--prior-mean",
        "0.1",
        "--prior-stddev",
        &sd,
    ]);
    let b = row(&rows, &file, "B");
    assert_eq!(fixed(&b["chance_to_win"], 5), "0.92315");
    assert_eq!(fixed(&b["risk_control"], 5), "0.05186");
    assert_eq!(fixed(&b["risk_treatment"], 5), "0.00123");
    // The frequentist columns do not move; the flat prior gives gbstats'
    // uninformative figures.
    assert_eq!(fixed(&b["lift"], 5), "0.05000");
    let flat = json_rows(&["--from-summary", &file, "--bayesian"]);
    assert_eq!(
        fixed(&row(&flat, &file, "B")["chance_to_win"], 5),
        "0.91923"
    );
    assert_eq!(
        flat[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        rows[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        "the same columns"
    );
    fails_with(
        &["--from-summary", &file, "--prior-mean", "0"],
        "--prior-stddev",
    );
    fails_with(
        &[
            "--from-summary",
            &file,
            "--prior-mean",
            "0",
            "--prior-stddev",
            "0",
        ],
        "--prior-stddev 0: expected a positive number",
    );
}

/// CUPED and ratio summaries through --from-summary give gbstats' published
/// figures (`test_analyze_metric_df_ra`, `..._ra_proportion`,
/// `test_get_metric_dfs_frequentist_ratio`; 9 decimals), in CSV and JSON.
#[test]
fn cuped_and_ratio_summaries_give_growthbooks_figures() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "mean_cuped.csv",
            "arm,users,sum,sum_squares,pre_sum,pre_sum_squares,post_pre_sum_products\n\
             zero,3001,300,600,210,415,-20\none,3000,222,555,120,405,-10\n",
            "mean",
            "-0.281707154",
            "0.003732549",
        ),
        (
            "proportion_cuped.csv",
            "arm,users,conversions,pre_conversions,post_pre_sum_products\n\
             zero,3001,300,210,-20\none,3000,222,120,-10\n",
            "proportion",
            "-0.316202160",
            "0.000000353",
        ),
        (
            "ratio.csv",
            "arm,users,num_sum,num_sum_squares,den_sum,den_sum_squares,num_den_sum_products\n\
             zero,100,270,848.79,510,810,-900\none,120,300,869,500,800,-905\n",
            "ratio",
            "0.133333333",
            "0.610663339",
        ),
        (
            "ratio.json",
            r#"[{"arm": "zero", "users": 100, "num_sum": 270, "num_sum_squares": 848.79,
                 "den_sum": 510, "den_sum_squares": 810, "num_den_sum_products": -900},
                {"arm": "one", "users": 120, "num_sum": 300, "num_sum_squares": 869,
                 "den_sum": 500, "den_sum_squares": 800, "num_den_sum_products": -905}]"#,
            "ratio",
            "0.133333333",
            "0.610663339",
        ),
    ];
    for (name, text, kind, lift, p) in cases {
        let file = write(dir.path(), name, text);
        let rows = json_rows(&["--from-summary", &file]);
        let b = row(&rows, &file, "one");
        assert_eq!(b["kind"], kind, "{name}");
        assert_eq!(fixed(&b["lift"], 9), lift, "{name}");
        assert_eq!(fixed(&b["p_value"], 9), p, "{name}");
    }
    // A CUPED column set that is not complete is refused with the headers.
    let bad = write(
        dir.path(),
        "bad.csv",
        "arm,users,sum,sum_squares,pre_sum\nzero,3,1,1,1\none,3,1,1,1\n",
    );
    fails_with(&["--from-summary", &bad], "post_pre_sum_products");
}

fn fails_with(args: &[&str], want: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected `{want}` in {err}");
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let store = fixture_store();
    let data = store.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.csv", PROPORTIONS_CSV);

    fails_with(
        &["--data", data, "--metric", "cout:purchase"],
        "unknown metric kind `cout`; did you mean `count:`?",
    );
    fails_with(
        &["--data", data, "--metric", "revenue"],
        "a metric is kind:argument",
    );
    fails_with(
        &["--from-summary", &good, "--split", "50-50"],
        "invalid split 50-50",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "count:purchase",
            "--split",
            "1:1:1",
        ],
        "--split has 3 weights but count:purchase has 2 arms (A, B)",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "count:purchase",
            "--control",
            "C",
        ],
        "--control `C` is not an arm of count:purchase; its arms are A, B",
    );
    fails_with(
        &["--from-summary", &good, "--control", "Z"],
        "is not an arm",
    );
    let empty = write(
        dir.path(),
        "empty.csv",
        "arm,users,conversions\nA,28,14\nB,0,0\n",
    );
    fails_with(&["--from-summary", &empty], "arm `B` has no users");
    let malformed = write(
        dir.path(),
        "bad.csv",
        "arm,users,conversions\nA,28,14\nB,thirty,16\n",
    );
    fails_with(
        &["--from-summary", &malformed],
        "line 3, column 3: `users` must be a whole number",
    );
    let malformed = write(dir.path(), "bad.json", "[{\"arm\": \"A\", \"user\": 3}]");
    fails_with(&["--from-summary", &malformed], "did you mean `users`?");
    let one_arm = write(dir.path(), "one.csv", "arm,users,conversions\nA,28,14\n");
    fails_with(&["--from-summary", &one_arm], "at least two arms");
    fails_with(
        &["--data", data, "--metric", "count:purchas"],
        "no `purchas` events in range; did you mean `purchase`?",
    );
    fails_with(
        &["--data", data, "--metric", "sum:event"],
        "cannot sum `event`: not a numeric column",
    );
    fails_with(
        &["--data", data, "--metric", "segment:Freq > 2"],
        "did you mean `F`",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "count:purchase",
            "--by",
            "colour",
        ],
        "cannot read arms from `colour`",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "count:purchase",
            "--sided",
            "both",
        ],
        "invalid sided both",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            "count:purchase",
            "--alpha",
            "0.7",
        ],
        "invalid alpha",
    );
    fails_with(
        &["--data", data, "--metric", "funnel:view>purchase within 1x"],
        "unknown unit `x`",
    );
    fails_with(&["--metric", "count:purchase"], "--data");
    fails_with(
        &["--data", data, "--from-summary", &good],
        "cannot be used with",
    );
    // A test where only one arm has users.
    let single = write(
        dir.path(),
        "single.ndjson",
        "{\"event_id\":\"1\",\"user_id\":\"x\",\"event\":\"view\",\"ts\":\"2026-04-01T00:00:00Z\",\"variant\":\"A\"}\n",
    );
    let single_store = ingest(Path::new(&single));
    fails_with(
        &[
            "--data",
            single_store.path().to_str().unwrap(),
            "--metric",
            "count:view",
        ],
        "every user with a `variant` value is in arm `A`",
    );
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Event {
    user: u64,
    event: &'static str,
    ts: u64,
    variant: Option<&'static str>,
    cents: Option<i128>,
}

/// Exact cents as the decimal text a float is read from.
fn cents_text(c: i128, scale: usize) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let digits = format!("{:0>width$}", c.unsigned_abs(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Per-arm statistics from random events equal a naive computation: arms by the
/// distinct variants of each user, exposure as the earliest variant event,
/// metrics over events from the exposure on, users with nothing counted as 0.
#[test]
fn per_arm_statistics_match_a_naive_computation() {
    for seed in [1u64, 7, 42, 2026] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let users = 30 + rng.below(30);
        let mut events = Vec::new();
        for user in 0..users {
            for _ in 0..1 + rng.below(8) {
                let variant = match rng.below(10) {
                    0..=3 => None,
                    4..=6 => Some("A"),
                    7..=8 => Some(if user % 3 == 0 { "C" } else { "A" }),
                    _ => Some("B"),
                };
                // Most users keep one arm: B users see only B; mixing comes from
                // A/C users and the occasional B.
                let variant = if user % 2 == 1 && variant.is_some() {
                    Some("B")
                } else {
                    variant
                };
                let event = ["view", "add_to_cart", "purchase"][rng.below(3) as usize];
                let cents =
                    (event == "purchase" && rng.below(4) > 0).then(|| rng.below(100_000) as i128);
                events.push(Event {
                    user,
                    event,
                    // Few distinct minutes, so ties with the exposure happen.
                    ts: 1_775_000_000 + 60 * rng.below(40),
                    variant,
                    cents,
                });
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (i, e) in events.iter().enumerate() {
            let mut obj = serde_json::json!({
                "event_id": format!("e{i}"),
                "user_id": format!("u{}", e.user),
                "event": e.event,
                "ts": e.ts,
            });
            if let Some(v) = e.variant {
                obj["variant"] = v.into();
            }
            if let Some(c) = e.cents {
                obj["revenue"] = serde_json::from_str(&cents_text(c, 2)).unwrap();
            }
            text.push_str(&obj.to_string());
            text.push('\n');
        }
        let file = write(dir.path(), "events.ndjson", &text);
        let store = ingest(Path::new(&file));

        // The naive computation.
        let mut arms_of: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
        let mut exposed: BTreeMap<u64, u64> = BTreeMap::new();
        for e in &events {
            if let Some(v) = e.variant {
                arms_of.entry(e.user).or_default().insert(v);
                let t = exposed.entry(e.user).or_insert(e.ts);
                *t = (*t).min(e.ts);
            }
        }
        let arm = |u: u64| {
            arms_of
                .get(&u)
                .filter(|s| s.len() == 1)
                .map(|s| *s.iter().next().unwrap())
        };
        let multiple = arms_of.values().filter(|s| s.len() > 1).count() as u64;
        // arm -> (users, purchases sum, squares, cents sum, squares, users with >= 2)
        let mut want: BTreeMap<&str, (u64, i128, i128, i128, i128, u64)> = BTreeMap::new();
        for u in 0..users {
            let Some(a) = arm(u) else { continue };
            let since = exposed[&u];
            let mine = events.iter().filter(|e| e.user == u && e.ts >= since);
            let (mut count, mut cents) = (0i128, 0i128);
            for e in mine {
                if e.event == "purchase" {
                    count += 1;
                }
                cents += e.cents.unwrap_or(0);
            }
            let w = want.entry(a).or_default();
            w.0 += 1;
            w.1 += count;
            w.2 += count * count;
            w.3 += cents;
            w.4 += cents * cents;
            w.5 += u64::from(count >= 2);
        }
        if want.len() < 2 {
            continue;
        }

        let rows = json_rows(&[
            "--data",
            store.path().to_str().unwrap(),
            "--metric",
            "count:purchase",
            "--metric",
            "sum:revenue",
            "--metric",
            "segment:did purchase >= 2 times",
        ]);
        assert_eq!(rows.len(), 3 * want.len(), "seed {seed}");
        for (a, w) in &want {
            let count = row(&rows, "count:purchase", a);
            assert_eq!(count["users"], w.0, "seed {seed} arm {a}");
            assert_eq!(count["sum"].as_f64(), Some(w.1 as f64), "seed {seed}");
            assert_eq!(
                count["sum_squares"].as_f64(),
                Some(w.2 as f64),
                "seed {seed}"
            );
            assert_eq!(count["multi_arm_users"], multiple, "seed {seed}");
            let sum = row(&rows, "sum:revenue", a);
            assert_eq!(sum["users"], w.0, "seed {seed} arm {a}");
            let exact = |c: i128, scale| cents_text(c, scale).parse::<f64>().unwrap();
            assert_eq!(
                sum["sum"].as_f64(),
                Some(exact(w.3, 2)),
                "seed {seed} arm {a}"
            );
            assert_eq!(
                sum["sum_squares"].as_f64(),
                Some(exact(w.4, 4)),
                "seed {seed} arm {a}"
            );
            let seg = row(&rows, "segment:did purchase >= 2 times", a);
            assert_eq!(seg["users"], w.0, "seed {seed} arm {a}");
            assert_eq!(seg["conversions"], w.5, "seed {seed} arm {a}");
        }
    }
}

/// The test settings reach the readout: one-sided p is half the two-sided p
/// (the lift is positive), a sequential CI is wider than the fixed one, and a
/// correction adjusts every treatment p-value across metrics.
#[test]
fn test_settings_reach_the_readout() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.csv", PROPORTIONS_CSV);
    let m = write(dir.path(), "m.csv", MEANS_CSV);
    let two = json_rows(&["--from-summary", &p]);
    let greater = json_rows(&["--from-summary", &p, "--sided", "greater"]);
    let (two, greater) = (row(&two, &p, "B"), row(&greater, &p, "B"));
    let half = two["p_value"].as_f64().unwrap() / 2.0;
    assert!((greater["p_value"].as_f64().unwrap() - half).abs() < 1e-9);
    assert_eq!(greater["ci_upper"], Value::Null);
    assert_eq!(greater["sided"], "greater");

    let seq = json_rows(&["--from-summary", &p, "--sequential"]);
    let seq = row(&seq, &p, "B");
    assert_eq!(seq["sequential"], 5000.0);
    assert!(seq["ci_lower"].as_f64().unwrap() < two["ci_lower"].as_f64().unwrap());
    assert!(seq["ci_upper"].as_f64().unwrap() > two["ci_upper"].as_f64().unwrap());

    let rows = json_rows(&[
        "--from-summary",
        &p,
        "--from-summary",
        &m,
        "--correction",
        "holm",
    ]);
    assert_eq!(rows.len(), 4);
    let (a, b) = (row(&rows, &p, "B"), row(&rows, &m, "B"));
    // Holm with two p-values: the smaller doubled, the larger kept (monotone).
    let (pa, pb) = (
        a["p_value"].as_f64().unwrap(),
        b["p_value"].as_f64().unwrap(),
    );
    assert!((b["p_value_adjusted"].as_f64().unwrap() - 2.0 * pb).abs() < 1e-12);
    assert!((a["p_value_adjusted"].as_f64().unwrap() - pa.max(2.0 * pb)).abs() < 1e-12);
    assert_eq!(a["correction"], "holm");
    assert_eq!(row(&rows, &p, "A")["p_value_adjusted"], Value::Null);
}

/// `--by-dimension`: one readout per value of a column, each with its own
/// sample-ratio check; the values' users and sums add up to the overall
/// readout's, and each value's users per arm are the distinct users SQL
/// counts for it (every generated user has one country and one variant).
#[test]
fn by_dimension_reads_each_value_with_its_own_srm() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let generated = tenure()
        .args(["gen", "--users", "3000", "--days", "30", "--to"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let data = store.to_str().unwrap();
    let metric = "count:purchase";
    let overall = json_rows(&["--data", data, "--metric", metric]);
    let split = json_rows(&[
        "--data",
        data,
        "--metric",
        metric,
        "--by-dimension",
        "country",
    ]);
    assert!(overall.iter().all(|r| r["dimension"].is_null()));
    let dims: std::collections::BTreeSet<String> = split
        .iter()
        .map(|r| r["dimension"].as_str().expect("a dimension").to_string())
        .collect();
    assert!(dims.len() >= 3, "{dims:?}");
    assert!(!dims.contains("(several)"), "{dims:?}");
    for arm in ["A", "B"] {
        let mine: Vec<&Value> = split.iter().filter(|r| r["arm"] == arm).collect();
        let users: u64 = mine.iter().map(|r| r["users"].as_u64().unwrap()).sum();
        let sum: f64 = mine.iter().map(|r| r["sum"].as_f64().unwrap()).sum();
        let all = row(&overall, metric, arm);
        assert_eq!(users, all["users"].as_u64().unwrap(), "{arm}");
        assert_eq!(sum, all["sum"].as_f64().unwrap(), "{arm}");
    }
    for r in &split {
        assert!(r["srm_p_value"].as_f64().is_some(), "{r}");
    }
    // Users per value and arm, as SQL counts them.
    let out = tenure()
        .args(["sql", "--format", "json", "--data", data])
        .arg("SELECT country, variant, count(DISTINCT user_id) AS users FROM events WHERE variant IS NOT NULL GROUP BY country, variant")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counted: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for c in &counted {
        let dim = c["country"].as_str().unwrap_or("(none)");
        let r = split
            .iter()
            .find(|r| r["dimension"] == dim && r["arm"] == c["variant"])
            .unwrap_or_else(|| panic!("no row for {c}"));
        assert_eq!(r["users"], c["users"], "{c}");
    }
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            metric,
            "--by-dimension",
            "variant",
        ],
        "that is the arm column",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            metric,
            "--by-dimension",
            "planet",
        ],
        "cannot split by `planet`",
    );
}

/// `--population`: the segment is read on each user's events before their
/// exposure (fixtures/abtest/README.md): u3 bought on 03-31, before its
/// exposure, so `not did purchase` leaves A with u1 and u2.
#[test]
fn population_is_read_as_of_each_exposure() {
    let store = fixture_store();
    let data = store.path().to_str().unwrap();
    let metric = "count:purchase";
    let rows = json_rows(&[
        "--data",
        data,
        "--metric",
        metric,
        "--population",
        "not did purchase",
    ]);
    let a = row(&rows, metric, "A");
    assert_eq!(a["users"], 2);
    assert_eq!(a["sum"], 2.0);
    assert_eq!(a["sum_squares"], 4.0);
    assert_eq!(row(&rows, metric, "B")["users"], 3);
    let out = run(&[
        "--data",
        data,
        "--metric",
        metric,
        "--population",
        "not did purchase",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("1 user outside the population (left out)"),
        "{text}"
    );
    // Only u3 bought before its exposure: B is left without users.
    fails_with(
        &["--data", data, "--metric", metric, "--population", "F >= 1"],
        "arm `B` has no users",
    );
    // Windows end at each user's exposure: u3 bought exactly 2 days before its
    // exposure (03-31 09:00, exposed 04-02 09:00).
    let users_a = |population: &str| {
        let rows = json_rows(&[
            "--data",
            data,
            "--metric",
            metric,
            "--population",
            population,
        ]);
        row(&rows, metric, "A")["users"].as_u64().unwrap()
    };
    assert_eq!(users_a("not did purchase within 2d"), 2);
    assert_eq!(users_a("not did purchase within 1d"), 3);
    // R at the exposure: 1 whole day for u3; nobody else has bought.
    assert_eq!(users_a("R >= 1 or F = 0"), 3);
    assert_eq!(users_a("R > 1 or F = 0"), 2);
    // u3 was first seen 3 days before its exposure: `new`; the others have
    // no history then.
    assert_eq!(users_a("not lifecycle = new"), 2);
    // `within` ends at the exposure too: u3 was first seen 3 days before it.
    assert_eq!(users_a("first_seen within 3d or F = 0"), 3);
    assert_eq!(users_a("first_seen within 2d or F = 0"), 2);
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            metric,
            "--population",
            "first_seen < \"2026-04-01\"",
        ],
        "`first_seen` compared with a date cannot be read as of each user's own instant",
    );
    fails_with(
        &[
            "--data",
            data,
            "--metric",
            metric,
            "--population",
            "r_score >= 4",
        ],
        "`r_score` cannot be read as of each user's own instant",
    );
}
