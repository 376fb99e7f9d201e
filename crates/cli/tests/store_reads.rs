//! What the read commands do with the store they are pointed at: every
//! committed file is read wherever it is (its path, its staged path, or
//! retired by a compaction), a committed file that is nowhere is an error
//! naming it (exit 1, never a smaller number), a `--data` directory that does
//! not exist is bad input (exit 2) and is not created, and results can be
//! written to any absolute local path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tenure_schema::{Snapshot, StoreLayout};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/retention")
        .join(name)
}

fn ingest(input: &Path, to: &Path) {
    let out = tenure()
        .arg("ingest")
        .arg(input)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ingest(&fixture("events.ndjson"), dir.path());
    dir
}

fn snapshot(dir: &Path) -> Snapshot {
    let store = tenure_store::Store::open(dir.to_str().unwrap()).unwrap();
    tenure_ingest::io::block_on(tenure_store::load_latest(&store)).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One command of each kind that reads the events: SQL, KPIs, retention, a
/// segment count, a funnel, and a user listing (which also reads the users
/// dictionary).
const READS: &[&[&str]] = &[
    &["sql", "--format", "csv", "select count(*) as n from events"],
    &["kpi", "--period", "week", "--format", "csv"],
    &["retention", "--period", "week", "--format", "csv"],
    &["segment", "did view or did purchase", "--count"],
    &[
        "funnel",
        "--steps",
        "signup,purchase",
        "--window",
        "30d",
        "--format",
        "csv",
    ],
    &["segment", "F >= 0", "--users", "--format", "csv"],
];

fn read(dir: &Path, args: &[&str]) -> Output {
    let (cmd, rest) = args.split_first().unwrap();
    tenure()
        .arg(cmd)
        .arg("--data")
        .arg(dir)
        .args(rest)
        .output()
        .unwrap()
}

fn answers(dir: &Path) -> Vec<String> {
    READS
        .iter()
        .map(|args| {
            let out = read(dir, args);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            String::from_utf8(out.stdout).unwrap()
        })
        .collect()
}

fn move_file(dir: &Path, from: &str, to: &str) {
    let to = dir.join(to);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(dir.join(from), to).unwrap();
}

#[test]
fn committed_files_are_read_where_a_commit_or_compaction_left_them() {
    let dir = store();
    let want = answers(dir.path());
    assert_eq!(want[0], "n\n10\n");
    let snap = snapshot(dir.path());
    // A file of the purchases' day, so every answer depends on it.
    let f = snap.files.iter().find(|f| f.date == "2026-03-16").unwrap();
    let retired = StoreLayout::retired_file(&f.path);
    move_file(dir.path(), &f.path, &retired);
    assert_eq!(answers(dir.path()), want, "file under {retired}");
    move_file(dir.path(), &retired, &f.staged);
    assert_eq!(answers(dir.path()), want, "file at {}", f.staged);
    move_file(dir.path(), &f.staged, &f.path);
    // The users dictionary, retired by a merge of its segments.
    let seg = &snap.users.segments[0];
    move_file(dir.path(), seg, &StoreLayout::retired_file(seg));
    assert_eq!(answers(dir.path()), want, "users segment retired");
}

#[test]
fn a_missing_committed_file_is_an_error_naming_it() {
    let dir = store();
    answers(dir.path());
    let snap = snapshot(dir.path());
    for f in [&snap.files[0], &snap.files[4]] {
        let saved = std::fs::read(dir.path().join(&f.path)).unwrap();
        std::fs::remove_file(dir.path().join(&f.path)).unwrap();
        for args in READS {
            let out = read(dir.path(), args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} without {}: {}\n{}",
                f.path,
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
            assert!(stderr(&out).contains(&f.path), "{args:?}: {}", stderr(&out));
            assert!(out.stdout.is_empty(), "{args:?} printed a partial answer");
        }
        std::fs::write(dir.path().join(&f.path), saved).unwrap();
    }
    // A users dictionary segment: the listing of users fails naming it.
    let seg = &snap.users.segments[0];
    std::fs::remove_file(dir.path().join(seg)).unwrap();
    let out = read(dir.path(), READS[5]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(seg.as_str()), "{}", stderr(&out));
}

#[test]
fn reading_a_store_that_does_not_exist_is_bad_input_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("stroe");
    for args in READS.iter().copied().chain([
        &["ltv", "--period", "week"][..],
        &["lifecycle", "--period", "week"][..],
        &["rfm"][..],
        &["abtest", "--metric", "funnel:signup>purchase within 7d"][..],
        // Maintenance works on an existing store only, too.
        &["compact"][..],
        &["repair"][..],
    ]) {
        let out = read(&typo, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("no such directory {}", typo.display())),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    // A file where the store should be.
    std::fs::write(&typo, "").unwrap();
    let out = read(&typo, READS[0]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    // Writers still create their store.
    let new = dir.path().join("new/store");
    ingest(&fixture("events.ndjson"), &new);
    assert_eq!(answers(&new)[0], "n\n10\n");
}

#[test]
fn results_go_to_absolute_local_paths() {
    let dir = store();
    let want = read(
        dir.path(),
        &["retention", "--period", "week", "--format", "csv"],
    )
    .stdout;
    let out_dir = tempfile::tempdir().unwrap();
    let nested = out_dir.path().join("a/b/retention.csv");
    let at_root = PathBuf::from(format!("/tenure-out-test-{}.csv", std::process::id()));
    let mut targets = vec![nested];
    // A file at the root of the file system ("empty path" before): only
    // where the test may write there.
    match std::fs::write(&at_root, "") {
        Ok(()) => targets.push(at_root.clone()),
        Err(e) => eprintln!("skipping {}: {e}", at_root.display()),
    }
    for target in &targets {
        let out = read(
            dir.path(),
            &[
                "retention",
                "--period",
                "week",
                "--format",
                "csv",
                "--out",
                target.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            target.display(),
            stderr(&out)
        );
        assert_eq!(std::fs::read(target).unwrap(), want, "{}", target.display());
    }
    let _ = std::fs::remove_file(&at_root);
}

#[test]
fn listing_users_that_match_nobody_or_never_bought() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("no_purchases.ndjson");
    std::fs::write(
        &input,
        "{\"event_id\":\"1\",\"user_id\":\"a\",\"event\":\"signup\",\"ts\":\"2026-03-02T10:00:00Z\"}\n\
         {\"event_id\":\"2\",\"user_id\":\"b\",\"event\":\"view\",\"ts\":\"2026-03-03T10:00:00Z\"}\n\
         {\"event_id\":\"3\",\"user_id\":\"a\",\"event\":\"view\",\"ts\":\"2026-03-04T10:00:00Z\"}\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    ingest(&input, &store);
    let list = |expr: &str| {
        let out = read(&store, &["segment", expr, "--users", "--format", "csv"]);
        assert!(out.status.success(), "{expr}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    // Nobody has a recency without a purchase: the header, no rows.
    assert_eq!(list("R < 30"), "user_key,user_id,recency\n");
    assert_eq!(
        list("r_score >= 1 or R > 1"),
        "user_key,user_id,recency,r_score\n"
    );
    // Every user, with zero purchases and revenue and no recency.
    assert_eq!(
        list("F = 0 and M = 0 or R < 1"),
        "user_key,user_id,recency,frequency,monetary\n0,a,,0,0.00\n1,b,,0,0.00\n"
    );
    let out = read(
        &store,
        &["segment", "R < 30", "--users", "--format", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
}
