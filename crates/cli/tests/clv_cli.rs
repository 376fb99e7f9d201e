//! `tenure clv`: the hand-checked fixture (fixtures/clv/README.md), the
//! published CDNOW figures of the BG/NBD and Gamma-Gamma papers, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/clv")
        .join(name)
}

fn ingest(input: &Path, store: &Path) {
    let out = tenure()
        .arg("ingest")
        .arg(input)
        .arg("--to")
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn clv(store: &Path, args: &[&str]) -> Output {
    tenure()
        .args(["clv", "--data"])
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(text).unwrap()
}

fn fixture_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ingest(&fixture("events.ndjson"), dir.path());
    dir
}

/// Compares the listing's facts with an expected CSV (recency and t in days).
fn check_facts(listing: &str, expected: &str) {
    let rows = json(listing);
    let want: Vec<Vec<String>> = std::fs::read_to_string(fixture(expected))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), want.len(), "{listing}");
    for (r, w) in rows.iter().zip(&want) {
        let num = |k: &str| r[k].as_f64().unwrap();
        let close = |a: f64, b: &str| (a - b.parse::<f64>().unwrap()).abs() < 1e-5;
        assert_eq!(r["user_id"], w[0].as_str(), "{r}");
        assert_eq!(r["frequency"].as_u64().unwrap().to_string(), w[1], "{r}");
        assert!(close(num("recency") * 7.0, &w[2]), "recency {r} vs {w:?}");
        assert!(close(num("t") * 7.0, &w[3]), "t {r} vs {w:?}");
        assert!(close(num("monetary_value"), &w[4]), "monetary {r} vs {w:?}");
        assert_eq!(
            r["holdout_purchases"].as_u64().unwrap().to_string(),
            w[5],
            "{r}"
        );
        let p = num("p_alive");
        assert!((0.0..=1.0).contains(&p), "{r}");
    }
}

#[test]
fn fixture_facts_are_the_hand_checked_ones() {
    let store = fixture_store();
    let args = [
        "--calibration-end",
        "2026-03-31",
        "--as-of",
        "2026-04-30",
        "--users",
        "--format",
        "json",
    ];
    check_facts(&ok(clv(store.path(), &args)), "expected_users.csv");
    let mut tokyo = args.to_vec();
    tokyo.extend(["--tz", "Asia/Tokyo"]);
    check_facts(&ok(clv(store.path(), &tokyo)), "expected_users_tokyo.csv");
}

#[test]
fn predictions_follow_the_printed_model() {
    // The listing's p_alive and expected purchases are the BG/NBD formulas
    // at the parameters the model table prints.
    let store = fixture_store();
    let model = json(&ok(clv(store.path(), &["--format", "json"])));
    let param = |m: &str, p: &str| {
        model
            .iter()
            .find(|r| r["model"] == m && r["parameter"] == p)
            .unwrap_or_else(|| panic!("{m}.{p} in {model:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    let bg = tenure_stats::clv::BgNbd {
        r: param("bg_nbd", "r"),
        alpha: param("bg_nbd", "alpha"),
        a: param("bg_nbd", "a"),
        b: param("bg_nbd", "b"),
    };
    assert_eq!(param("bg_nbd", "customers"), 5.0); // u5 buys too, without a calibration end
    // The page charts the p_alive distribution and the CLV deciles.
    let page = ok(clv(store.path(), &["--format", "html"]));
    for part in ["p_alive 0.9-1.0", "decile 10", "<svg", "bg_nbd"] {
        assert!(page.contains(part), "{part} not in the page");
    }
    let users = json(&ok(clv(
        store.path(),
        &["--users", "--format", "json", "--horizon", "10w"],
    )));
    assert_eq!(users.len(), 5);
    for u in &users {
        let c = tenure_stats::clv::Customer {
            x: u["frequency"].as_u64().unwrap() as u32,
            t_x: u["recency"].as_f64().unwrap(),
            t: u["t"].as_f64().unwrap(),
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
        assert!(close(u["p_alive"].as_f64().unwrap(), bg.p_alive(&c)), "{u}");
        assert!(
            close(
                u["expected_purchases"].as_f64().unwrap(),
                bg.expected_purchases(&c, 10.0)
            ),
            "{u}"
        );
        assert!(u["holdout_purchases"].is_null(), "{u}");
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let store = fixture_store();
    for (args, says) in [
        (vec!["--validation"], "--validation needs --calibration-end"),
        (vec!["--horizon", "12m"], "expected weeks or days"),
        (vec!["--period", "month"], "week or day"),
        (vec!["--discount=-0.1"], "--discount"),
        (
            vec!["--calibration-end", "2026-05-10", "--as-of", "2026-04-30"],
            "ends after the as-of",
        ),
        (
            vec!["--calibration-end", "2026-01-01"],
            "before the first event",
        ),
        (vec!["--from", "2026-03-01"], "whole history"),
        (vec!["--to", "2026-03-31"], "not --from/--to"),
        (vec!["--purchase-event", "order"], "no `order` event"),
        (vec!["--calibration-end", "yesterday"], "not a date"),
    ] {
        let out = clv(store.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The CDNOW sample of the BG/NBD paper, as it ships in the `lifetimes`
/// package (PyPI): `TENURE_TEST_CDNOW`, set by .ci/test.
fn cdnow() -> Option<PathBuf> {
    match std::env::var("TENURE_TEST_CDNOW") {
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must provide the CDNOW sample (TENURE_TEST_CDNOW)"
            );
            eprintln!("skipped: set TENURE_TEST_CDNOW to lifetimes' datasets/CDNOW_sample.txt");
            None
        }
    }
}

#[test]
fn cdnow_gives_the_published_parameters_and_holdout_check() {
    let Some(sample) = cdnow() else { return };
    // Lines: master id, sample id, date (YYYYMMDD), CDs, dollar value.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cdnow.ndjson");
    let mut lines = String::new();
    for (i, l) in std::fs::read_to_string(&sample)
        .unwrap()
        .lines()
        .enumerate()
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        let d = f[2];
        lines.push_str(&format!(
            "{{\"event_id\":\"e{i}\",\"user_id\":\"{}\",\"event\":\"purchase\",\"ts\":\"{}-{}-{}T12:00:00Z\",\"revenue\":{}}}\n",
            f[1], &d[..4], &d[4..6], &d[6..], f[4]
        ));
    }
    assert_eq!(lines.lines().count(), 6919);
    std::fs::write(&input, lines).unwrap();
    let store = dir.path().join("store");
    ingest(&input, &store);
    let base = [
        "--calibration-end",
        "1997-09-30",
        "--as-of",
        "1998-06-30",
        "--format",
        "json",
    ];
    let model = json(&ok(clv(&store, &base)));
    let param = |m: &str, p: &str| {
        model
            .iter()
            .find(|r| r["model"] == m && r["parameter"] == p)
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    // Fader, Hardie and Lee (2005); Fader and Hardie, the Gamma-Gamma note.
    for (m, p, want, tol) in [
        ("bg_nbd", "r", 0.243, 0.01),
        ("bg_nbd", "alpha", 4.414, 0.01),
        ("bg_nbd", "a", 0.793, 0.01),
        ("bg_nbd", "b", 2.426, 0.01),
        ("bg_nbd", "log_likelihood", -9582.4, 0.1),
        ("bg_nbd", "customers", 2357.0, 0.0),
        ("gamma_gamma", "p", 6.25, 0.01),
        ("gamma_gamma", "q", 3.74, 0.01),
        ("gamma_gamma", "gamma", 15.44, 0.01),
        ("gamma_gamma", "customers", 946.0, 0.0),
    ] {
        let got = param(m, p);
        assert!(
            (got - want).abs() <= tol,
            "{m}.{p} = {got}, published {want}"
        );
    }
    // The holdout check (39 weeks): actual means from the data, predictions
    // as lifetimes 0.11.3 computes them at its fit.
    let mut args = base.to_vec();
    args.push("--validation");
    let check = json(&ok(clv(&store, &args)));
    let want = [
        ("0", 1411, 0.236_711_552, 0.225_087_338),
        ("1", 439, 0.697_038_724, 0.523_131_130),
        ("2", 214, 1.392_523_364, 1.044_134_101),
        ("3", 100, 1.56, 1.520_279_529),
        ("4", 62, 2.532_258_065, 2.163_865_854),
        ("5", 38, 2.947_368_421, 2.653_845_980),
        ("6", 29, 3.862_068_966, 3.504_042_458),
        ("7+", 64, 6.359_375, 6.157_190_822),
    ];
    assert_eq!(check.len(), want.len(), "{check:?}");
    for (row, (x, n, actual, predicted)) in check.iter().zip(want) {
        assert_eq!(row["frequency"], x);
        assert_eq!(row["customers"], n);
        assert!(
            (row["actual"].as_f64().unwrap() - actual).abs() < 1e-8,
            "{row}"
        );
        assert!(
            (row["predicted"].as_f64().unwrap() - predicted).abs() < 1e-4,
            "{row}"
        );
    }
    // The first customer of the paper's data: x = 2, t_x = 30.43, T = 38.86,
    // repeat average (29.73 + 14.96) / 2.
    let mut args = base.to_vec();
    args.push("--users");
    let users = json(&ok(clv(&store, &args)));
    assert_eq!(users.len(), 2357);
    let first = &users[0];
    assert_eq!(first["user_id"], "0001");
    assert_eq!(first["frequency"], 2);
    assert!((first["recency"].as_f64().unwrap() - 30.43).abs() < 0.005);
    assert!((first["t"].as_f64().unwrap() - 38.86).abs() < 0.005);
    assert!((first["monetary_value"].as_f64().unwrap() - 22.345).abs() < 1e-9);
    assert!((first["p_alive"].as_f64().unwrap() - 0.7266).abs() < 1e-3);
}

#[test]
fn the_table_function_lists_what_the_subcommand_lists() {
    let store = fixture_store();
    let sql = |q: &str| {
        tenure()
            .args(["sql", "--format", "json", "--data"])
            .arg(store.path())
            .arg(q)
            .output()
            .unwrap()
    };
    let listed = ok(clv(
        store.path(),
        &[
            "--users",
            "--format",
            "json",
            "--horizon",
            "10w",
            "--calibration-end",
            "2026-03-31",
            "--as-of",
            "2026-04-30",
        ],
    ));
    let queried = ok(sql("SELECT * FROM clv('10w', '2026-03-31', '2026-04-30')"));
    assert_eq!(json(&queried), json(&listed));
    // Composes with SQL: the likely churned among the customers.
    let few = json(&ok(sql(
        "SELECT user_id FROM clv() WHERE frequency >= 1 ORDER BY user_id",
    )));
    let ids: Vec<&str> = few.iter().map(|r| r["user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["u1", "u3", "u6"]);
    let bad = sql("SELECT * FROM clv('12m')");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected weeks or days"));
}

#[test]
fn segments_use_the_predictions() {
    let store = fixture_store();
    let segment = |expr: &str, extra: &[&str]| {
        ok(tenure()
            .args(["segment", expr, "--data"])
            .arg(store.path())
            .args(extra)
            .output()
            .unwrap())
    };
    let as_of = ["--as-of", "2026-04-15"];
    let mut listing_args = vec!["--users", "--format", "json", "--horizon", "10w"];
    listing_args.extend(as_of);
    let customers = json(&ok(clv(store.path(), &listing_args)));
    // Users who never bought have no prediction: `p_alive >= 0` lists the
    // customers, with the same values as `tenure clv --users`.
    let mut args = vec!["--users", "--format", "json"];
    args.extend(as_of);
    let listed = json(&segment(
        "p_alive >= 0 and expected_purchases(10w) >= 0",
        &args,
    ));
    assert_eq!(listed.len(), customers.len(), "{listed:?}");
    for (s, c) in listed.iter().zip(&customers) {
        assert_eq!(s["user_id"], c["user_id"]);
        assert_eq!(s["p_alive"], c["p_alive"], "{s} vs {c}");
        assert_eq!(
            s["expected_purchases_10w"], c["expected_purchases"],
            "{s} vs {c}"
        );
    }
    // A threshold between two customers' values splits them as the values do
    // (`clv` is over 52 weeks, the listing's default horizon).
    let mut args = vec!["--users", "--format", "json"];
    args.extend(as_of);
    let yearly = json(&ok(clv(store.path(), &args)));
    let mut values: Vec<f64> = yearly.iter().map(|c| c["clv"].as_f64().unwrap()).collect();
    values.sort_by(f64::total_cmp);
    let cut = (values[1] + values[2]) / 2.0;
    let mut count_args = vec!["--count"];
    count_args.extend(as_of);
    let above = segment(&format!("clv > {cut:.6} and M >= 0"), &count_args);
    assert_eq!(above.trim(), (values.len() - 2).to_string());
}
