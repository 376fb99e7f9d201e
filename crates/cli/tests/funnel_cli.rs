//! `tenure funnel` on the hand-worked fixture (fixtures/funnel/README.md), and
//! its answers to bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/funnel")
        .join(name)
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ingest(&fixture("events.ndjson"), dir.path());
    dir
}

/// Ingests `file` (with the fixture's declared properties) into `store`.
fn ingest(file: &Path, store: &Path) {
    let st = tenure()
        .arg("ingest")
        .arg(file)
        .arg("--config")
        .arg(fixture("config.toml"))
        .arg("--to")
        .arg(store)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn funnel(dir: &Path, extra: &[&str]) -> std::process::Output {
    tenure()
        .arg("funnel")
        .arg("--data")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

const STEPS: &[&str] = &[
    "--steps",
    "view_item,add_to_cart,purchase",
    "--window",
    "1h",
    "--format",
    "csv",
];

#[test]
fn every_mode_matches_the_hand_worked_fixture() {
    let dir = store();
    let cases: &[(&str, &[&str])] = &[
        ("expected_default_by_variant.csv", &["--by", "variant"]),
        ("expected_strict_order.csv", &["--mode", "strict_order"]),
        (
            "expected_strict_increase.csv",
            &["--mode", "strict_increase"],
        ),
        (
            "expected_strict_deduplication.csv",
            &["--mode", "strict_deduplication"],
        ),
        ("expected_first_touch.csv", &["--mode", "first-touch"]),
        (
            "expected_exclude.csv",
            &["--exclude", "remove_from_cart:2-3"],
        ),
        ("expected_hold.csv", &["--hold", "item_id"]),
        (
            "expected_range.csv",
            &["--from", "2026-03-02", "--to", "2026-03-02"],
        ),
    ];
    for (file, extra) in cases {
        let mut args = STEPS.to_vec();
        args.extend_from_slice(extra);
        let out = funnel(dir.path(), &args);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(fixture(file)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{file} ({extra:?})"
        );
    }
}

#[test]
fn shared_step_names_and_histogram() {
    let dir = store();
    let out = funnel(
        dir.path(),
        &[
            "--steps",
            "view_item,view_item",
            "--window",
            "1h",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(fixture("expected_shared_name.csv")).unwrap()
    );
    let mut args = STEPS.to_vec();
    args.extend_from_slice(&["--by", "variant", "--histogram"]);
    let out = funnel(dir.path(), &args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let nonempty: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || !l.ends_with(",0"))
        .map(|(_, l)| l)
        .collect();
    let want = std::fs::read_to_string(fixture("expected_histogram.csv")).unwrap();
    assert_eq!(nonempty, want.lines().collect::<Vec<_>>());
}

#[test]
fn conditions_json_and_table_views() {
    let dir = store();
    // Only u14's purchase is after 00:15 on D+1: a condition on the step.
    let out = funnel(
        dir.path(),
        &[
            "--steps",
            "view_item, purchase where ts > '2026-03-03T00:15:00Z'",
            "--window",
            "1h",
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["users"], 1);
    assert_eq!(
        rows[1]["event"],
        "purchase where ts > '2026-03-03T00:15:00Z'"
    );
    assert_eq!(rows[1]["median_seconds_to_convert"], 3000.0);
    let out = funnel(
        dir.path(),
        &[
            "--steps",
            "view_item,add_to_cart,purchase",
            "--window",
            "1h",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("█"), "{text}");
    assert!(text.contains("73.3%"), "{text}"); // 11 of 15
}

#[test]
fn breakdown_by_segment() {
    // Read as of each user's entry, over the events before it: nobody in
    // the fixture bought before viewing (README), so everyone who entered
    // is "not in" (evaluated at the end of the range, as before, the
    // buyers the funnel itself made were "in" and converted 100 %).
    let dir = store();
    let mut args = STEPS.to_vec();
    args.extend_from_slice(&["--by-segment", "F >= 1"]);
    let out = funnel(dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let got: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        got,
        [
            "not in: F >= 1,1,view_item,15",
            "not in: F >= 1,2,add_to_cart,15",
            "not in: F >= 1,3,purchase,11",
        ]
    );
    let mut args = STEPS.to_vec();
    args.extend_from_slice(&["--by-segment", "F >= 1 &&"]);
    let out = funnel(dir.path(), &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains('^'));
}

#[test]
fn segment_breakdown_never_looks_ahead() {
    // a: first purchase right after entering (not a buyer at entry);
    // b: bought before, enters, buys again; c: enters, never buys;
    // d: bought before, enters, does not buy.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let rows = [
        ("a1", "a", "view_item", "2026-03-01T10:00:00Z"),
        ("a2", "a", "purchase", "2026-03-01T11:00:00Z"),
        ("b1", "b", "purchase", "2026-02-20T10:00:00Z"),
        ("b2", "b", "view_item", "2026-03-02T10:00:00Z"),
        ("b3", "b", "purchase", "2026-03-02T12:00:00Z"),
        ("c1", "c", "view_item", "2026-03-03T10:00:00Z"),
        ("d1", "d", "purchase", "2026-02-25T10:00:00Z"),
        ("d2", "d", "view_item", "2026-03-04T10:00:00Z"),
    ];
    let text: Vec<String> = rows
        .iter()
        .map(|(id, u, e, ts)| {
            format!(
                r#"{{"event_id":"{id}","user_id":"{u}","event":"{e}","ts":"{ts}","revenue":1}}"#
            )
        })
        .collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let store = dir.path().join("store");
    let st = tenure()
        .arg("ingest")
        .arg(&file)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(st.status.success());
    for range in [&[][..], &["--from", "2026-03-01"][..]] {
        let mut args = vec![
            "--steps",
            "view_item,purchase",
            "--window",
            "1d",
            "--format",
            "csv",
            "--by-segment",
            "F >= 1",
        ];
        args.extend_from_slice(range);
        let out = funnel(&store, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
            .collect();
        assert_eq!(
            got,
            [
                "in: F >= 1,1,view_item,2",
                "in: F >= 1,2,purchase,1",
                "not in: F >= 1,1,view_item,2",
                "not in: F >= 1,2,purchase,1",
            ],
            "{range:?}"
        );
    }
    // Scores rank the whole population at one instant: read as of --from
    // (03-01, before every entry: b and d had bought), refused without it.
    let scores = [
        "--steps",
        "view_item,purchase",
        "--window",
        "1d",
        "--format",
        "csv",
        "--by-segment",
        "f_score >= 1",
    ];
    let mut args = scores.to_vec();
    args.extend_from_slice(&["--from", "2026-03-01"]);
    let out = funnel(&store, &args);
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
            "in: f_score >= 1,1,view_item,2",
            "in: f_score >= 1,2,purchase,1",
            "not in: f_score >= 1,1,view_item,2",
            "not in: f_score >= 1,2,purchase,1",
        ]
    );
    let out = funnel(&store, &scores);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}

#[test]
fn bad_input_is_exit_2_with_a_reason() {
    let dir = store();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--steps", "view_item,purchase", "--window", "7"],
            "needs a unit",
        ),
        (
            &["--steps", "view_item,purchase", "--window", "7y"],
            "unknown unit",
        ),
        (
            &["--steps", "view_item,purchase", "--window", "0d"],
            "must be positive",
        ),
        (
            &["--steps", "view_item,purchase", "--mode", "strict"],
            "unknown funnel mode",
        ),
        (
            &["--steps", "view_item,purchase", "--by", "colour"],
            "not a column",
        ),
        (
            &["--steps", "view_item,purchase", "--exclude", "x:3-1"],
            "need 1 <= from < to",
        ),
        (
            &["--steps", "view_item,purchase", "--exclude", "x:a-b"],
            "EVENT:FROM-TO",
        ),
        (&["--steps", "view_item,,purchase"], "empty funnel step"),
        (
            &["--steps", "view_item,purchase where revenue >"],
            "bad condition",
        ),
        (&["--steps", "view item,purchase"], "expected `event`"),
    ];
    for (args, want) in cases {
        let out = funnel(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let many = vec!["e"; 33].join(",");
    let out = funnel(dir.path(), &["--steps", &many]);
    assert_eq!(out.status.code(), Some(2));
}

/// Pseudo-random events with many ties (equal times within a user, a
/// breakdown value and a held value that change from event to event), as
/// NDJSON lines.
fn tied_events() -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let events = ["view_item", "add_to_cart", "purchase", "other"];
    let variants = ["\"A\"", "\"B\"", "\"C\"", "null"];
    let items = ["1", "2", "10", "null"];
    (0..4000)
        .map(|i| {
            let (user, minute) = (next(150), next(300) * 20);
            format!(
                r#"{{"event_id": "e{i}", "user_id": "u{user}", "event": "{}", "ts": "2026-03-{:02}T{:02}:{:02}:00Z", "variant": {}, "item_id": {}}}"#,
                events[next(4) as usize],
                2 + minute / 1440,
                minute % 1440 / 60,
                minute % 60,
                variants[next(4) as usize],
                items[next(4) as usize],
            )
        })
        .collect()
}

#[test]
fn breakdown_and_held_values_do_not_depend_on_files_batches_or_threads() {
    let lines = tied_events();
    let write_and_ingest = |dir: &Path, name: &str, lines: &[&String]| {
        let file = dir.join(name);
        let text: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
        std::fs::write(&file, text.join("\n") + "\n").unwrap();
        ingest(&file, &dir.join("store"));
    };
    // One store from one ingest; another from two, every other line each, so
    // a day has two files and values are met in another order.
    let one = tempfile::tempdir().unwrap();
    write_and_ingest(one.path(), "all.ndjson", &lines.iter().collect::<Vec<_>>());
    let two = tempfile::tempdir().unwrap();
    let (even, odd): (Vec<_>, Vec<_>) = lines.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    write_and_ingest(
        two.path(),
        "even.ndjson",
        &even.into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
    );
    write_and_ingest(
        two.path(),
        "odd.ndjson",
        &odd.into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
    );
    for extra in [
        &["--by", "variant"][..],
        &["--by", "variant", "--hold", "item_id"],
    ] {
        let mut outputs = Vec::new();
        for dir in [one.path(), two.path()] {
            for threads in ["1", "3"] {
                let out = funnel(
                    &dir.join("store"),
                    &[
                        &[
                            "--steps",
                            "view_item,add_to_cart,purchase",
                            "--window",
                            "2h",
                        ][..],
                        extra,
                        &["--threads", threads, "--format", "json"],
                    ]
                    .concat(),
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                outputs.push(String::from_utf8(out.stdout).unwrap());
            }
        }
        assert!(outputs[0].contains("\"B\""), "no breakdown: {}", outputs[0]);
        for o in &outputs[1..] {
            assert_eq!(o, &outputs[0], "{extra:?}");
        }
    }
}

/// Per-step windows and gaps, an optional step and an any-order group on
/// their hand-worked fixture (fixtures/funnel_steps/README.md), through the
/// CLI, a job-file list of steps and the SQL table function; and their
/// errors.
#[test]
fn step_windows_optional_steps_and_groups_match_the_hand_worked_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/funnel_steps");
    ingest(&here.join("events.ndjson"), dir.path());
    let cases = [
        (
            "expected_gaps.csv",
            "view_item, add_to_cart within 1h, checkout after 1m within 30m, purchase",
        ),
        (
            "expected_optional.csv",
            "search, add_to_wishlist?, purchase within 10m",
        ),
        (
            "expected_group.csv",
            "page_view, {add_to_cart, add_to_wishlist} within 1h, purchase",
        ),
    ];
    for (file, steps) in cases {
        let out = funnel(
            dir.path(),
            &["--steps", steps, "--window", "1d", "--format", "csv"],
        );
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(here.join(file)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{steps}");
    }
    // `?` after a condition or at the very end, and no-op limits, change
    // nothing.
    for steps in [
        "search, add_to_wishlist? where true, purchase within 10m",
        "search, add_to_wishlist within 1d?, purchase within 10m",
    ] {
        let out = funnel(
            dir.path(),
            &["--steps", steps, "--window", "1d", "--format", "csv"],
        );
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        let want = std::fs::read_to_string(here.join("expected_optional.csv")).unwrap();
        // Every column but the step's label.
        let numbers = |csv: &str| -> Vec<String> {
            csv.lines()
                .skip(1)
                .map(|l| l.rsplitn(7, ',').take(6).collect::<Vec<_>>().join(","))
                .collect()
        };
        assert_eq!(numbers(&got), numbers(&want), "{steps}");
    }
    // The modifiers in the other order mean the same.
    let out = funnel(
        dir.path(),
        &[
            "--steps",
            "view_item, add_to_cart within 1h, checkout within 30m after 1m, purchase",
            "--window",
            "1d",
            "--format",
            "csv",
        ],
    );
    let gaps = std::fs::read_to_string(here.join("expected_gaps.csv")).unwrap();
    let users = |csv: &str| -> Vec<String> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(3).unwrap().to_string())
            .collect()
    };
    assert_eq!(users(&String::from_utf8_lossy(&out.stdout)), users(&gaps));

    // A job file lists the steps, braces and all.
    let job = dir.path().join("job.toml");
    let outdir = dir.path().join("out");
    std::fs::write(
        &job,
        format!(
            "name = \"steps\"\ndata = {:?}\nout = {:?}\nformats = [\"csv\"]\n\n[[analysis]]\nname = \"group\"\nkind = \"funnel\"\nsteps = [\"page_view\", \"{{add_to_cart, add_to_wishlist}} within 1h\", \"purchase\"]\nwindow = \"1d\"\n",
            dir.path().to_str().unwrap(),
            outdir.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = tenure().arg("run").arg(&job).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let part = std::fs::read_dir(outdir.join("steps/group"))
        .unwrap()
        .next()
        .expect("an as_of= folder")
        .unwrap()
        .path()
        .join("part.csv");
    let got = std::fs::read_to_string(part).unwrap();
    assert_eq!(
        users(&got),
        users(&std::fs::read_to_string(here.join("expected_group.csv")).unwrap())
    );

    // The SQL table function takes the same steps.
    let out = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .arg("select step, users from funnel('search, add_to_wishlist?, purchase within 10m', '1d') order by step")
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "step,users\n1,4\n2,2\n3,2\n"
    );

    for (steps, mode, why) in [
        (
            "view_item?, purchase",
            "default",
            "step 1 `view_item?` starts the funnel",
        ),
        (
            "view_item, purchase?",
            "default",
            "the last step `purchase?` cannot be optional",
        ),
        (
            "view_item, {purchase}",
            "default",
            "needs two or more events",
        ),
        ("view_item, {a, {b, c}}", "default", "groups do not nest"),
        (
            "view_item, {a within 1h, b}",
            "default",
            "apply to the whole group",
        ),
        ("view_item, {a, b", "default", "a closing brace is missing"),
        (
            "view_item, purchase after 2h within 1h",
            "default",
            "`after` is longer than `within`",
        ),
        (
            "view_item, purchase within 1y",
            "default",
            "unknown unit `y`",
        ),
        (
            "view_item, purchase within 1h within 2h",
            "default",
            "given twice",
        ),
        (
            "view_item, wish??, purchase",
            "default",
            "`?` is given twice",
        ),
        (
            "view_item, {a, a}, purchase",
            "default",
            "listed twice in the group",
        ),
        (
            "view_item, {a, b within 1h}",
            "default",
            "apply to the whole group",
        ),
        (
            "view_item, purchase within 1h",
            "strict_order",
            "no per-step windows",
        ),
        (
            "view_item, {a, b}",
            "strict_deduplication",
            "no per-step windows",
        ),
    ] {
        let out = funnel(dir.path(), &["--steps", steps, "--mode", mode]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{steps}: {err}");
        assert!(err.contains(why), "{steps}: {err}");
    }
    let out = funnel(
        dir.path(),
        &["--steps", "view_item, purchase", "--exclude", "x within 1h"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("an exclusion is one event"));
}
