//! `tenure sql-server` with real Postgres clients: psql (Debian's
//! postgresql-client) and psycopg (from PyPI, in the test environment of
//! `.ci/test`). Answers equal `tenure sql`'s; the server is read-only; the
//! `pg_catalog` lists the tables; a login with a password is checked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

/// A store of the retention fixture in `dir`.
fn fixture_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let events =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/retention/events.ndjson");
    let out = tenure()
        .arg("ingest")
        .arg(&events)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    store
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(store: &Path, extra: &[&str]) -> Server {
    let mut child = tenure()
        .arg("sql-server")
        .arg("--data")
        .arg(store)
        .args(["--listen", "127.0.0.1:0", "--threads", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on postgres://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/tenure"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Server { child, port }
}

/// psql, or `None` outside CI when it is not installed.
fn psql_path() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("psql"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide psql (postgresql-client)"
        );
        eprintln!("skipped: psql not found");
    }
    found
}

/// Runs `sql` in psql as `analyst` (unaligned, tuples only, `,` between
/// fields); stdout or the error text.
fn psql(
    psql: &Path,
    port: u16,
    db: &str,
    sql: &str,
    password: Option<&str>,
) -> Result<String, String> {
    psql_as(psql, port, db, "analyst", sql, password)
}

/// [`psql`] as `user`.
fn psql_as(
    psql: &Path,
    port: u16,
    db: &str,
    user: &str,
    sql: &str,
    password: Option<&str>,
) -> Result<String, String> {
    let mut cmd = Command::new(psql);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        db,
    ])
    .args([
        "-X",
        "-A",
        "-t",
        "-F",
        ",",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ])
    .env_remove("PGPASSWORD")
    .env("PGCONNECT_TIMEOUT", "10");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.arg("-w"),
    };
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `tenure sql` of the same query, as CSV without its header.
fn tenure_sql(store: &Path, sql: &str) -> String {
    let out = tenure()
        .arg("sql")
        .arg("--data")
        .arg(store)
        .args(["--format", "csv", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_once('\n')
        .map(|(_, rows)| rows.to_string())
        .unwrap_or_default()
}

#[test]
fn psql_queries_the_store_and_its_table_functions_read_only() {
    let Some(psql_bin) = psql_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = fixture_store(dir.path());
    let server = serve(&store, &[]);
    let run = |sql: &str| psql(&psql_bin, server.port, "tenure", sql, None);
    // Answers equal tenure sql's, the table functions included.
    for sql in [
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
        "SELECT cohort, period, users FROM retention('week') ORDER BY cohort, period",
        "SELECT step, event, users FROM funnel('signup, purchase', '30d') ORDER BY step",
        "SELECT user_id, frequency FROM rfm() ORDER BY user_key",
        "SELECT count(*) FROM segment('F >= 1')",
    ] {
        let got = run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(got, tenure_sql(&store, sql), "{sql}");
        assert!(!got.is_empty(), "{sql}");
    }
    // Timestamps in Postgres' text form, as chrono writes it.
    let got = run("SELECT ts FROM events ORDER BY ts, user_id LIMIT 40").unwrap();
    let want = tenure_sql(
        &store,
        "SELECT to_char(ts, '%Y-%m-%d %H:%M:%S%.6f') || '+00' FROM events ORDER BY ts, user_id LIMIT 40",
    );
    assert_eq!(got, want);
    assert!(got.lines().count() >= 5, "{got}");
    // The catalog BI tools read at connect: psql's \dt lists `events`.
    let tables = run("\\dt").unwrap();
    assert!(tables.contains("events"), "{tables}");
    let db = run("SELECT current_database()").unwrap();
    assert_eq!(db.trim(), "tenure");
    let columns = run(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'events' ORDER BY column_name",
    )
    .unwrap();
    assert!(columns.lines().any(|c| c == "user_id"), "{columns}");
    // Read-only: no DDL, no writes, no COPY; the store is unchanged.
    let before = tenure_sql(&store, "SELECT count(*) FROM events");
    let copy_to = dir.path().join("copied.csv");
    for sql in [
        "CREATE TABLE t (a INT)".to_string(),
        "INSERT INTO events (event) VALUES ('x')".to_string(),
        "DROP TABLE events".to_string(),
        format!("COPY (SELECT 1) TO '{}'", copy_to.display()),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "SELECT * INTO copied FROM events".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ] {
        let err = run(&sql).expect_err(&sql);
        assert!(err.contains("read-only"), "{sql}: {err}");
    }
    assert!(!copy_to.exists());
    assert_eq!(tenure_sql(&store, "SELECT count(*) FROM events"), before);
    assert!(run("SELECT * FROM copied").is_err());
    // Client settings are not DataFusion's.
    let set = run("SET application_name = 'tenure-test'; SELECT 1").unwrap();
    assert_eq!(set.lines().last(), Some("1"), "{set}");
    // A bad query is an error, and the connection's next query still runs.
    let err = run("SELECT nope FROM events").unwrap_err();
    assert!(err.contains("nope"), "{err}");
    // A commit after the server started: the next connection sees it.
    let extra = dir.path().join("extra.csv");
    std::fs::write(
        &extra,
        "user_id,event,ts\nlate,signup,2026-03-20T00:00:00Z\n",
    )
    .unwrap();
    let st = tenure()
        .arg("ingest")
        .arg(&extra)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let after = run("SELECT count(*) FROM events").unwrap();
    assert_eq!(after, tenure_sql(&store, "SELECT count(*) FROM events"));
    assert_eq!(
        after.trim().parse::<u64>().unwrap(),
        before.trim().parse::<u64>().unwrap() + 1
    );
    // Only the database `tenure` exists.
    let err = psql(&psql_bin, server.port, "postgres", "SELECT 1", None).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_password_is_required_when_a_user_is_set() {
    let Some(psql_bin) = psql_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = fixture_store(dir.path());
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let server = serve(
        &store,
        &[
            "--user",
            "analyst",
            "--password-file",
            secret.to_str().unwrap(),
        ],
    );
    let ok = psql(
        &psql_bin,
        server.port,
        "tenure",
        "SELECT count(*) FROM events",
        Some("s3cret"),
    );
    assert_eq!(
        ok.unwrap(),
        tenure_sql(&store, "SELECT count(*) FROM events")
    );
    // Another user with the password is refused as a wrong password is.
    let err = psql_as(
        &psql_bin,
        server.port,
        "tenure",
        "intruder",
        "SELECT 1",
        Some("s3cret"),
    )
    .unwrap_err();
    assert!(err.to_lowercase().contains("password"), "{err}");
    for wrong in [Some("wrong"), None] {
        let err = psql(&psql_bin, server.port, "tenure", "SELECT 1", wrong).unwrap_err();
        assert!(err.to_lowercase().contains("password"), "{err}");
    }
    // A missing password file is bad input (exit 2).
    let out = tenure()
        .arg("sql-server")
        .arg("--data")
        .arg(&store)
        .args(["--listen", "127.0.0.1:0", "--user", "a", "--password-file"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn psycopg_runs_parameterised_queries_and_lists_the_catalog() {
    let Ok(python) = std::env::var("TENURE_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide psycopg (TENURE_TEST_PYTHON)"
        );
        eprintln!("skipped: set TENURE_TEST_PYTHON to a python with psycopg");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = fixture_store(dir.path());
    let server = serve(&store, &[]);
    let script = r#"
import sys, psycopg
port = int(sys.argv[1])
with psycopg.connect(host="127.0.0.1", port=port, dbname="tenure", user="analyst") as conn:
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM events WHERE event = %s", ("purchase",))
    print(cur.fetchone()[0])
    cur.execute("SELECT users FROM retention('week') WHERE period = %s ORDER BY cohort LIMIT 1", (1,))
    print(cur.fetchone()[0])
    cur.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' ORDER BY c.relname")
    print(",".join(r[0] for r in cur.fetchall()))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(server.port.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        tenure_sql(
            &store,
            "SELECT count(*) FROM events WHERE event = 'purchase'"
        )
        .trim()
    );
    assert_eq!(
        lines[1],
        tenure_sql(
            &store,
            "SELECT users FROM retention('week') WHERE period = 1 ORDER BY cohort LIMIT 1"
        )
        .trim()
    );
    assert!(lines[2].split(',').any(|t| t == "events"), "{text}");
}
