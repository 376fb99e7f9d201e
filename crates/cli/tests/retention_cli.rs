//! `tenure retention` on the hand-checked fixture (fixtures/retention/README.md).

use std::path::{Path, PathBuf};
use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/retention")
        .join(name)
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = tenure()
        .arg("ingest")
        .arg(fixture("events.ndjson"))
        .arg("--to")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    dir
}

fn run(store: &Path, args: &[&str]) -> String {
    run_cmd("retention", store, args)
}

fn run_cmd(cmd: &str, store: &Path, args: &[&str]) -> String {
    let out = tenure()
        .args([cmd, "--data"])
        .arg(store)
        .args(args)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn fixture_results_match_the_hand_worked_tables() {
    let dir = store();
    let cases: &[(&str, &[&str])] = &[
        ("expected_week_utc.csv", &["--period", "week"]),
        (
            "expected_week_tokyo.csv",
            &["--period", "week", "--tz", "Asia/Tokyo"],
        ),
        ("expected_week_unbounded.csv", &["--mode", "unbounded"]),
        (
            "expected_week_bracket.csv",
            &["--mode", "bracket", "--brackets", "0,1-2"],
        ),
        ("expected_week_by_event.csv", &["--by", "event"]),
        (
            "expected_week_signup_purchase.csv",
            &["--start-event", "signup", "--return-event", "purchase"],
        ),
    ];
    for (file, args) in cases {
        let want = std::fs::read_to_string(fixture(file)).unwrap();
        assert_eq!(run(dir.path(), args), want, "{file}");
    }
}

#[test]
fn conditions_as_of_and_ranges() {
    let dir = store();
    // Only purchases over 10 count as returns: a3 (30) and c2 (12.5), not d2 (7).
    let csv = run(
        dir.path(),
        &[
            "--return-event",
            "purchase",
            "--return-where",
            "revenue > 10",
        ],
    );
    assert!(csv.contains("cohort,,2026-03-02,2,2,3,2,"), "{csv}");
    // As of the end of 03-22, W3 (ending 03-23) is complete but W4 is not.
    let csv = run(dir.path(), &["--as-of", "2026-03-22"]);
    assert!(
        csv.contains("cohort,,2026-03-02,2,2,3,2,0.6666666666666666,true"),
        "{csv}"
    );
    assert!(csv.contains("cohort,,2026-03-02,3,3,3,,,false"), "{csv}");
    // A range drops the weeks outside it entirely.
    let csv = run(dir.path(), &["--from", "2026-03-23"]);
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("cohort,,2026-03-23,0,0,2,2,"),
        "{csv}"
    );
    // Daily periods: a's first day holds one user (a), who returns a week later.
    let csv = run(dir.path(), &["--period", "day"]);
    assert!(csv.contains("cohort,,2026-03-02,7,7,1,1,1.0,true"), "{csv}");
}

#[test]
fn bad_requests_exit_2_with_a_reason() {
    let dir = store();
    for (args, want) in [
        (&["--period", "year"][..], "unknown period"),
        (&["--mode", "bracket"][..], "needs --brackets"),
        (
            &["--mode", "bracket", "--brackets", "3-1"][..],
            "ends before it starts",
        ),
        (&["--tz", "Mars/Olympus"][..], "unknown time zone"),
        (&["--return-where", "revenue >"][..], "bad condition"),
        (&["--from", "last week"][..], "not a date"),
        (
            &["--by", "nosuch"][..],
            "no event in range has a value for it",
        ),
        (&["--by", "ts"][..], "cannot break down by `ts`"),
        (
            &["--by", "variant,"][..],
            "property names separated by commas",
        ),
    ] {
        let out = tenure()
            .args(["retention", "--data"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn json_rows_and_triangle() {
    let dir = store();
    let out = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--format", "json"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["cohort"], "2026-03-02");
    assert_eq!(rows[0]["cohort_size"], 3);
    assert_eq!(rows[0]["complete"], true);
    let out = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2026-03-02"), "{text}");
    assert!(text.contains("33.3%"), "{text}");
    assert!(text.contains("average"), "{text}");
    // --out writes the same rows to a file.
    let out_file = dir.path().join("r.csv");
    let st = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--format", "csv", "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        String::from_utf8(st.stdout).unwrap()
    );
}

#[test]
fn ltv_lifecycle_and_kpis_match_the_hand_worked_tables() {
    let dir = store();
    let cases: &[(&str, &str, &[&str])] = &[
        ("ltv", "expected_ltv_week.csv", &[]),
        ("lifecycle", "expected_lifecycle_week.csv", &[]),
        ("lifecycle", "expected_stages.csv", &["--stages"]),
        ("kpi", "expected_kpi_week.csv", &["--period", "week"]),
    ];
    for (cmd, file, args) in cases {
        let want = std::fs::read_to_string(fixture(file)).unwrap();
        assert_eq!(run_cmd(cmd, dir.path(), args), want, "{cmd} {file}");
    }
    // As of the end of 03-16 only a and c have purchased... and nothing after counts.
    let csv = run_cmd(
        "lifecycle",
        dir.path(),
        &["--stages", "--as-of", "2026-03-16"],
    );
    assert!(csv.contains("activity,active,1,"), "{csv}");
    assert!(csv.contains("activity,none,2,"), "{csv}");
}

#[test]
fn retention_is_usable_from_sql() {
    let dir = store();
    let out = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .args([
            "--format",
            "csv",
            "SELECT cohort, period, users FROM retention('week', 'signup', 'purchase') WHERE kind = 'cohort' AND cohort_size > 0 AND complete ORDER BY cohort, period",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "cohort,period,users\n2026-03-02,0,0\n2026-03-02,1,0\n2026-03-02,2,2\n2026-03-02,3,0\n2026-03-23,0,0\n"
    );
    let out = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .args(["SELECT nope FROM events"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stickiness_matches_the_hand_worked_table_in_the_cli_sql_and_jobs() {
    let dir = store();
    // fixtures/retention/README.md: a on W1, W2, W3 (one day each); b W1; c W1,
    // W3; d W4, W5; e on two days of W4. W5 is not over at the default as-of.
    let want = std::fs::read_to_string(fixture("expected_stickiness_week.csv")).unwrap();
    assert_eq!(run_cmd("stickiness", dir.path(), &[]), want);
    let month = run_cmd("stickiness", dir.path(), &["--period", "month"]);
    // March: b on 1 day; c, d, e on 2; a on 3 (of 5 active); not over by 03-31.
    for row in [
        "2026-03-01,1,1,5,0.2,false",
        "2026-03-01,2,3,5,0.6,false",
        "2026-03-01,3,1,5,0.2,false",
        "2026-03-01,4,0,5,0.0,false",
    ] {
        assert!(month.contains(row), "{row} in {month}");
    }
    let purchases = run_cmd("stickiness", dir.path(), &["--event", "purchase"]);
    assert!(
        purchases.contains("2026-03-16,1,2,2,1.0,true"),
        "{purchases}"
    );
    assert!(purchases.contains("2026-03-09,1,0,0,,true"), "{purchases}");
    let out = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .args([
            "--format",
            "csv",
            "SELECT period, days, users, active_users FROM stickiness('week') WHERE users > 0 ORDER BY period, days",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "period,days,users,active_users\n2026-03-02,1,3,3\n2026-03-09,1,1,1\n2026-03-16,1,2,2\n2026-03-23,1,1,2\n2026-03-23,2,1,2\n2026-03-30,1,1,1\n"
    );
    // A day period is a bad request (exit 2), from the CLI and from SQL.
    let out = tenure()
        .args(["stickiness", "--data"])
        .arg(dir.path())
        .args(["--period", "day"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .args(["SELECT * FROM stickiness('day')"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Week-0 cohort sizes (`cohort,size`) of a retention run.
fn cohort_sizes(store: &Path, args: &[&str]) -> Vec<String> {
    run(store, args)
        .lines()
        .filter(|l| l.starts_with("cohort,"))
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[3] == "0")
        .map(|c| format!("{},{}", c[2], c[5]))
        .collect()
}

#[test]
fn segment_filter_reads_each_cohort_start_without_looking_ahead() {
    let dir = store();
    // Cohorts by first purchase: a and c in the week of 03-16, d in the week
    // of 03-30 (fixtures/retention/README.md).
    let all = ["2026-03-16,2", "2026-03-30,1"];
    let sizes = |segment: &str| {
        cohort_sizes(
            dir.path(),
            &["--start-event", "purchase", "--segment", segment],
        )
        .into_iter()
        .filter(|c| !c.ends_with(",0"))
        .collect::<Vec<_>>()
    };
    assert_eq!(
        cohort_sizes(dir.path(), &["--start-event", "purchase"])
            .into_iter()
            .filter(|c| !c.ends_with(",0"))
            .collect::<Vec<_>>(),
        all
    );
    // Before 03-16 00:00, a had viewed (03-09) and c had not; before 03-30
    // 00:00, d had only signed up.
    assert_eq!(sizes("did view"), ["2026-03-16,1"]);
    assert_eq!(sizes("did signup"), all);
    // Nobody had bought before their first purchase's week began: read at
    // the end of the data, everyone would be a buyer.
    assert!(sizes("F >= 1").is_empty());
    assert_eq!(sizes("not F >= 1"), all);
}

#[test]
fn weekly_cohorts_read_by_day() {
    let dir = store();
    let csv = run(dir.path(), &["--period", "week", "--read", "day"]);
    let cell = |cohort: &str, k: u32| -> String {
        csv.lines()
            .find(|l| l.starts_with(&format!("cohort,,{cohort},{k},")))
            .map(|l| l.split(',').skip(5).take(3).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    // Week of 03-02: a (03-02), b (03-03), c (03-08); a returns on day 7
    // (03-09) and day 20 (03-22), c on day 8 (03-16), each from their own
    // first day.
    assert_eq!(cell("2026-03-02", 0), "3,3,1.0");
    assert_eq!(cell("2026-03-02", 1), "3,0,0.0");
    assert_eq!(cell("2026-03-02", 7), "3,1,0.3333333333333333");
    assert_eq!(cell("2026-03-02", 8), "3,1,0.3333333333333333");
    assert_eq!(cell("2026-03-02", 20), "3,1,0.3333333333333333");
    // Week of 03-23: d and e (both 03-23); e is back on day 1. Day 2 is
    // complete once the week's last day plus 2 days (03-31) has ended,
    // after the data's end (a member starting 03-29 would not have had it):
    // incomplete, never a low number.
    assert_eq!(cell("2026-03-23", 1), "2,1,0.5");
    assert_eq!(cell("2026-03-23", 2), "2,,");
    let table = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--period", "week", "--read", "day"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&table.stdout);
    assert!(head.lines().next().unwrap().contains("D7"), "{head}");
    let bad = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--period", "week", "--read", "month"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("read by day"));
    let bad = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--period", "month", "--read", "week"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn revenue_per_cell_per_cohort_user_and_per_retained_user() {
    let dir = store();
    let csv = run(
        dir.path(),
        &["--start-event", "signup", "--value", "revenue"],
    );
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with("complete,revenue,revenue_per_user,revenue_per_retained_user"),
        "{header}"
    );
    let cell = |cohort: &str, k: u32| -> String {
        csv.lines()
            .find(|l| l.starts_with(&format!("cohort,,{cohort},{k},")))
            .map(|l| l.split(',').skip(5).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    // Signup week of 03-02 (a, b, c): in week 2 a paid 30.00 (03-22) and c
    // 12.50 (03-16); both came back then.
    assert_eq!(
        cell("2026-03-02", 2),
        "3,2,0.6666666666666666,true,42.50,14.166666666666666,21.25"
    );
    assert_eq!(
        cell("2026-03-02", 1),
        "3,1,0.3333333333333333,true,0.00,0.0,0.0"
    );
    // Nobody retained: no revenue per retained user.
    assert_eq!(cell("2026-03-02", 3), "3,0,0.0,true,0.00,0.0,");
    // d (03-23) paid 7.00 in week 1 (03-30), not over at the as-of.
    assert_eq!(cell("2026-03-23", 1), "1,,,false,,,");
    // The same numbers as a SQL reference over the events table.
    let reference = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg(
            "WITH c AS (SELECT user_id, date_trunc('week', min(ts)) AS w FROM events \
             WHERE event = 'signup' GROUP BY user_id) \
             SELECT sum(e.revenue) AS r FROM events e JOIN c ON e.user_id = c.user_id \
             WHERE c.w = TIMESTAMP '2026-03-02' AND date_trunc('week', e.ts) = c.w + INTERVAL '14 days'",
        )
        .output()
        .unwrap();
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&reference.stdout).trim(),
        "r\n42.50"
    );
    let bad = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--value", "revenue", "--mode", "unbounded"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = tenure()
        .args(["retention", "--data"])
        .arg(dir.path())
        .args(["--value", "money"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn breakdowns_on_undeclared_properties_and_several_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let rows = [
        // u1 changes country later: the value at the first start counts.
        r#"{"event_id":"1","user_id":"u1","event":"signup","ts":"2026-03-02T10:00:00Z","variant":"A","properties":{"country":"JP"}}"#,
        r#"{"event_id":"2","user_id":"u1","event":"view","ts":"2026-03-09T09:00:00Z","properties":{"country":"CN"}}"#,
        r#"{"event_id":"3","user_id":"u2","event":"signup","ts":"2026-03-03T10:00:00Z","variant":"B","properties":{"country":"US"}}"#,
        r#"{"event_id":"4","user_id":"u3","event":"signup","ts":"2026-03-04T10:00:00Z","variant":"B","properties":{"country":"JP"}}"#,
        r#"{"event_id":"5","user_id":"u3","event":"view","ts":"2026-03-10T10:00:00Z"}"#,
        r#"{"event_id":"6","user_id":"u4","event":"signup","ts":"2026-03-05T10:00:00Z","variant":"A"}"#,
        r#"{"event_id":"7","user_id":"u4","event":"view","ts":"2026-03-20T10:00:00Z"}"#,
    ];
    std::fs::write(&file, rows.join("\n")).unwrap();
    let store = dir.path().join("store");
    let st = tenure()
        .arg("ingest")
        .arg(&file)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // Week 1 (03-02) cohort per group: size and users back in week 1.
    let week1 = |by: &str| -> Vec<String> {
        run(&store, &["--by", by])
            .lines()
            .filter(|l| l.starts_with("cohort,") && l.contains(",2026-03-02,1,"))
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                format!("{}:{}/{}", c[1], c[6], c[5])
            })
            .collect()
    };
    assert_eq!(week1("country"), ["(none):0/1", "JP:2/2", "US:0/1"]);
    assert_eq!(
        week1("country,variant"),
        ["(none) / A:0/1", "JP / A:1/1", "JP / B:1/1", "US / B:0/1"]
    );
    // The same groups from SQL, with prop() on the first event.
    let sql = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(&store)
        .arg(
            "SELECT coalesce(prop(properties, 'country'), '(none)') AS g, count(*) AS n FROM events \
             WHERE event = 'signup' GROUP BY g ORDER BY g",
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sql.stdout).trim(),
        "g,n\n(none),1\nJP,2\nUS,1"
    );
    // Funnels break down the same way (value at step 1).
    let out = tenure()
        .args(["funnel", "--data"])
        .arg(&store)
        .args([
            "--steps",
            "signup,view",
            "--window",
            "7d",
            "--by",
            "country",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        got,
        [
            "(none),1,signup,1",
            "(none),2,view,0",
            "JP,1,signup,2",
            "JP,2,view,2",
            "US,1,signup,1",
            "US,2,view,0",
        ]
    );
}

#[test]
fn ltv_by_a_property_splits_cohorts_and_sums_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let made = tenure()
        .args([
            "gen", "--users", "3000", "--days", "40", "--seed", "5", "--to",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(made.status.success());
    // (cohort, period) -> (cohort size, cumulative revenue in cents).
    let cells = |args: &[&str]| -> std::collections::BTreeMap<(String, String), (u64, i64)> {
        let csv = run_cmd("ltv", &store, args);
        let mut lines = csv.lines();
        let head: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = |name: &str| head.iter().position(|h| *h == name).unwrap();
        let mut out = std::collections::BTreeMap::new();
        for l in lines {
            let c: Vec<&str> = l.split(',').collect();
            if c[at("kind")] != "cohort" || c[at("revenue")].is_empty() {
                continue;
            }
            let cents = (c[at("revenue")].parse::<f64>().unwrap() * 100.0).round() as i64;
            let e = out
                .entry((c[at("cohort")].to_string(), c[at("period")].to_string()))
                .or_insert((0, 0));
            e.0 += c[at("cohort_size")].parse::<u64>().unwrap();
            e.1 += cents;
        }
        out
    };
    let all = cells(&["--start-event", "signup"]);
    let split = cells(&["--start-event", "signup", "--by", "variant"]);
    assert!(all.len() > 20, "{all:?}");
    // Every user is in exactly one group: sizes and revenue add up.
    assert_eq!(split, all);
    let csv = run_cmd("ltv", &store, &["--by", "variant"]);
    assert!(csv.starts_with("kind,group,cohort,"), "{csv}");
    let groups: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["A", "B"]);
}

#[test]
fn kpis_by_a_property_add_up_to_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let made = tenure()
        .args([
            "gen", "--users", "3000", "--days", "40", "--seed", "9", "--to",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(made.status.success());
    type Cells = std::collections::BTreeMap<(String, String), (f64, f64)>;
    // (metric, period) -> (numerator, denominator), summed over groups.
    let kpis = |args: &[&str]| -> (Cells, std::collections::BTreeSet<String>) {
        let csv = run_cmd("kpi", &store, args);
        let mut lines = csv.lines();
        let head: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = |name: &str| head.iter().position(|h| *h == name).unwrap();
        let (mut out, mut groups) = (Cells::new(), std::collections::BTreeSet::new());
        for l in lines {
            let c: Vec<&str> = l.split(',').collect();
            if let Some(g) = head.iter().position(|h| *h == "group") {
                groups.insert(c[g].to_string());
            }
            let e = out
                .entry((c[at("metric")].to_string(), c[at("period")].to_string()))
                .or_insert((0.0, 0.0));
            e.0 += c[at("numerator")].parse::<f64>().unwrap();
            let den: f64 = c[at("denominator")].parse().unwrap();
            // Plain counts divide by 1 and `dau` by the period's days: the
            // same in every group, not sums.
            if ["dau", "active_users", "revenue", "orders", "purchasers"].contains(&c[at("metric")])
            {
                e.1 = den;
            } else {
                e.1 += den;
            }
        }
        (out, groups)
    };
    let (all, _) = kpis(&["--period", "week"]);
    let (split, groups) = kpis(&["--period", "week", "--by", "variant"]);
    assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(all.len(), split.len());
    assert!(all.len() > 40, "{all:?}");
    for (key, (n, d)) in &all {
        let (sn, sd) = split[key];
        assert!(
            (n - sn).abs() < 1e-6 * n.abs().max(1.0) && (d - sd).abs() < 1e-6 * d.abs().max(1.0),
            "{key:?}: whole {n}/{d}, groups {sn}/{sd}"
        );
    }
}
