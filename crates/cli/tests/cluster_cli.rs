//! `tenure cluster`: a Ballista scheduler and two executors started as
//! separate processes on loopback. Analyses and SQL given `--cluster` print
//! exactly what they print locally, over a local store and over the
//! S3-compatible test server, and over a store with identity merges read at
//! query time; an executor killed in the middle of a query
//! leaves a correct answer or a clear error, never another number.

mod common;

use common::files;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port free now, with the next one free too (an executor listens on both).
fn free_ports() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The processes of a cluster, killed when dropped.
struct Cluster {
    url: String,
    scheduler: Child,
    executors: Vec<Child>,
    _work: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn start(executors: usize) -> Self {
        let work = tempfile::tempdir().unwrap();
        let port = free_ports();
        let log = std::fs::File::create(work.path().join("scheduler.log")).unwrap();
        let scheduler = tenure()
            .args(["cluster", "scheduler", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut cluster = Self {
            url: format!("df://127.0.0.1:{port}"),
            scheduler,
            executors: Vec::new(),
            _work: work,
        };
        for i in 0..executors {
            let dir = cluster._work.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let bind = free_ports();
            let log = std::fs::File::create(cluster._work.path().join(format!("executor-{i}.log")))
                .unwrap();
            let child = tenure()
                .args(["cluster", "executor", "--tasks", "2", "--scheduler"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--bind")
                .arg(format!("127.0.0.1:{bind}"))
                .arg("--work-dir")
                .arg(&dir)
                .env("RUST_LOG", "warn,tenure_engine=debug")
                // Partial results in many small chunks, as a large one is.
                .env("TENURE_FOLD_CHUNK", "4096")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            cluster.executors.push(child);
        }
        cluster
    }

    /// Jobs the scheduler reports finished (its log).
    fn jobs_done(&self) -> usize {
        std::fs::read_to_string(self._work.path().join("scheduler.log"))
            .unwrap_or_default()
            .matches("Job finished successfully")
            .count()
    }

    /// The partial results executor `i` has sent, as (fold, key range) in
    /// the order of its log.
    fn parts_sent(&self, i: usize) -> Vec<(String, usize)> {
        let log = std::fs::read_to_string(self._work.path().join(format!("executor-{i}.log")))
            .unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let rest = &l[l.find("fold ")? + 5..];
                let (fold, rest) = rest.split_once(": key range ")?;
                let (range, rest) = rest.split_once(' ')?;
                if !rest.contains(" sends ") {
                    return None;
                }
                Some((fold.to_string(), range.parse().ok()?))
            })
            .collect()
    }

    /// Waits until the scheduler has logged `n` finished jobs.
    fn wait_jobs(&self, n: usize) -> usize {
        let start = Instant::now();
        while self.jobs_done() < n && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.jobs_done()
    }

    /// Waits until every executor has registered and a query over `data`
    /// runs on the cluster.
    fn ready(&self, data: &str) {
        let start = Instant::now();
        let log = self._work.path().join("scheduler.log");
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("Received register executor request")
            .count()
            < self.executors.len()
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the executors did not register"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let out = timed(
                tenure()
                    .args(["sql", "--format", "csv", "--data", data, "--cluster"])
                    .arg(&self.url)
                    .arg("SELECT count(*) AS n FROM events"),
                Duration::from_secs(60),
            );
            if out.as_ref().is_some_and(|o| o.status.success()) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "the cluster did not answer: {}",
                out.map(|o| stderr(&o)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Runs `cmd`, killing it after `limit` (`None` then).
fn timed(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generate(store: &str, users: u32, days: u32) {
    let out = tenure()
        .args([
            "gen",
            "--users",
            &users.to_string(),
            "--days",
            &days.to_string(),
        ])
        .args(["--seed", "3", "--to", store])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// What the cluster is compared on: folds, breakdowns and SQL over the
/// events, Tenure's function and the table functions (joined).
const CASES: &[&[&str]] = &[
    &["retention", "--period", "week"],
    &["retention", "--period", "week", "--by", "country"],
    &[
        "retention",
        "--period",
        "week",
        "--start-event",
        "view_item",
        "--return-event",
        "purchase",
        "--return-where",
        "revenue > 50",
    ],
    &["kpi", "--period", "month"],
    &["stickiness", "--period", "week"],
    &["ltv", "--period", "week"],
    &["lifecycle", "--period", "week"],
    &["paths", "--after", "view_item", "--depth", "3"],
    // Analyses built on partial results (per-user levels, features, arms)
    // that come back from the cluster as bytes.
    &[
        "funnel",
        "--steps",
        "view_item,add_to_cart,purchase where revenue > 20",
        "--window",
        "7d",
        "--by",
        "variant",
    ],
    &["segment", "R<30d and F>=2", "--count"],
    &["segment", "did purchase >= 2 times within 30d", "--users"],
    &["rfm"],
    &[
        "abtest",
        "--by",
        "variant",
        "--metric",
        "count:purchase",
        "--metric",
        "sum:revenue",
        "--metric",
        "funnel:view_item>purchase within 7d",
    ],
    &["clv"],
    &["sql", "SELECT count(*) AS n FROM events"],
    &[
        "sql",
        "SELECT variant, count(DISTINCT user_id) AS users, count(prop(properties, 'x')) AS x \
         FROM events GROUP BY variant ORDER BY variant",
    ],
    &[
        "sql",
        "SELECT r.cohort, r.period, r.users FROM retention('week') r \
         JOIN (SELECT cohort FROM retention('week') GROUP BY cohort HAVING max(users) > 10) c \
         ON r.cohort = c.cohort ORDER BY 1, 2",
    ],
    &[
        "sql",
        "SELECT * FROM funnel('view_item,add_to_cart,purchase', '7d', 'variant') ORDER BY 1, 2",
    ],
    &[
        "sql",
        "SELECT r.r_score, count(*) AS users, sum(s.frequency) AS orders \
         FROM rfm() r JOIN segment('F >= 2') s ON r.user_key = s.user_key \
         GROUP BY r.r_score ORDER BY 1",
    ],
    &[
        "sql",
        "SELECT k.period, k.metric, k.numerator, k.denominator FROM kpi('month') k \
         WHERE k.metric IN ('active_users', 'revenue') ORDER BY 1, 2",
    ],
];

fn run(args: &[&str], data: &str, cluster: Option<&str>) -> Output {
    let mut cmd = tenure();
    // More key ranges than one task takes: a fold's ranges spread over
    // tasks and executors.
    cmd.args(args)
        .args(["--format", "json", "--threads", "5", "--data", data]);
    if let Some(c) = cluster {
        cmd.arg("--cluster").arg(c);
    }
    timed(&mut cmd, Duration::from_secs(120)).unwrap_or_else(|| {
        panic!(
            "{args:?} {} took over two minutes",
            cluster.map_or("locally", |_| "on the cluster")
        )
    })
}

/// `args` print on the cluster exactly what they print locally, and ran
/// there (the scheduler finished a job), not in this process.
fn same_output(args: &[&str], data: &str, cluster: &Cluster) {
    let jobs = cluster.jobs_done();
    let local = run(args, data, None);
    assert!(local.status.success(), "{args:?}: {}", stderr(&local));
    let remote = run(args, data, Some(&cluster.url));
    assert!(
        remote.status.success(),
        "{args:?} on the cluster: {}",
        stderr(&remote)
    );
    assert!(!local.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout),
        String::from_utf8_lossy(&local.stdout),
        "{args:?} over {data}"
    );
    assert!(
        cluster.wait_jobs(jobs + 1) > jobs,
        "{args:?}: the scheduler finished no job"
    );
}

fn same_on_the_cluster(data: &str, cluster: &Cluster) {
    // A fold's key ranges are tasks of their own: each of the five ranges
    // sends its partial result exactly once.
    let before: Vec<usize> = (0..2).map(|i| cluster.parts_sent(i).len()).collect();
    let out = run(&["retention", "--period", "week"], data, Some(&cluster.url));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut sent: Vec<usize> = (0..2)
        .flat_map(|i| cluster.parts_sent(i).split_off(before[i]))
        .filter(|(fold, _)| fold == "retention")
        .map(|(_, r)| r)
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [0, 1, 2, 3, 4],
        "the key ranges folded on the executors"
    );
    for args in CASES {
        same_output(args, data, cluster);
    }
    // Both executors folded key ranges.
    for i in 0..cluster.executors.len() {
        assert!(
            !cluster.parts_sent(i).is_empty(),
            "executor {i} folded no key range"
        );
    }
}

/// A scheduled job (`tenure run`) with a `cluster` writes exactly the files
/// it writes locally, and its analyses ran on the cluster.
fn same_job_output(dir: &std::path::Path, data: &str, cluster: &Cluster) {
    let job = |cluster: Option<&str>| {
        let path = dir.join(format!("job-{}.toml", cluster.is_some()));
        let key = cluster.map_or(String::new(), |c| format!("cluster = \"{c}\""));
        std::fs::write(&path, JOB.replace("# cluster", &key)).unwrap();
        path
    };
    let run_job = |out: &std::path::Path, cluster: Option<&str>| {
        let mut cmd = tenure();
        cmd.arg("run")
            .arg(job(cluster))
            .args(["--data", data, "--out"])
            .arg(out)
            .env_remove("TENURE_CLUSTER");
        let out = timed(&mut cmd, Duration::from_secs(300)).expect("the job took over 5 minutes");
        assert!(out.status.success(), "tenure run: {}", stderr(&out));
    };
    let (here, there) = (dir.join("job-local"), dir.join("job-cluster"));
    run_job(&here, None);
    let jobs = cluster.jobs_done();
    run_job(&there, Some(&cluster.url));
    let (want, got) = (files(&here), files(&there));
    // Four analyses in two formats.
    assert_eq!(want.len(), 8, "{:?}", want.keys().collect::<Vec<_>>());
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for ((name, w), g) in want.iter().zip(got.values()) {
        assert!(w == g, "{name} differs on the cluster");
    }
    assert!(
        cluster.wait_jobs(jobs + 4) >= jobs + 4,
        "the job's analyses did not run on the cluster"
    );
    // --cluster overrides the job's; an address that is not one is bad
    // input, and nothing runs.
    let bad = tenure()
        .arg("run")
        .arg(job(Some(&cluster.url)))
        .args(["--data", data, "--dry-run", "--cluster", "df://nowhere"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("df://host:port"), "{}", stderr(&bad));
}

/// The job of [`same_job_output`]; `# cluster` is replaced by its key.
const JOB: &str = r#"
name = "on_cluster"
formats = ["csv", "json"]
range = "all"
as_of = "latest"
threads = 5
# cluster

[[analysis]]
kind = "retention"
period = "week"

[[analysis]]
kind = "funnel"
steps = ["view_item", "add_to_cart", "purchase"]
window = "7d"
by = "variant"

[[analysis]]
kind = "kpi"
period = "month"

[[analysis]]
name = "repeat_buyers"
kind = "segment"
expr = "F >= 2"
"#;

#[test]
fn analyses_and_sql_on_a_cluster_print_what_they_print_locally() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = store.to_str().unwrap();
    generate(data, 3000, 45);
    let cluster = Cluster::start(2);
    cluster.ready(data);
    same_on_the_cluster(data, &cluster);
    same_job_output(dir.path(), data, &cluster);

    // A store with identity merges not folded into its files: merged
    // persons are read under virtual keys, in key ranges of their own.
    let people = dir.path().join("people");
    let identity = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/identity");
    for file in ["events.ndjson", "late.ndjson"] {
        let out = tenure()
            .arg("ingest")
            .arg(identity.join(file))
            .arg("--to")
            .arg(&people)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let people = people.to_str().unwrap();
    for args in [
        &["retention", "--period", "day"][..],
        &["funnel", "--steps", "view_item,purchase", "--window", "7d"],
        &["segment", "F >= 1 and M > 0", "--users"],
        &["paths", "--after", "view_item", "--depth", "3"],
        &["kpi", "--period", "week"],
    ] {
        same_output(args, people, &cluster);
    }

    // A cluster address that is not one.
    let bad = run(&["kpi", "--period", "week"], data, Some("df://nowhere"));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("df://host:port"), "{}", stderr(&bad));
    // A store only this process can read.
    let memory = run(
        &["kpi", "--period", "week"],
        "memory://cluster-test",
        Some(&cluster.url),
    );
    assert_ne!(memory.status.code(), Some(0), "{}", stderr(&memory));
    // A relative directory is sent as an absolute one.
    let relative = {
        let mut cmd = tenure();
        cmd.current_dir(dir.path())
            .args(["kpi", "--period", "month", "--format", "json"])
            .args(["--data", "store", "--cluster"])
            .arg(&cluster.url);
        timed(&mut cmd, Duration::from_secs(120)).unwrap()
    };
    assert!(relative.status.success(), "{}", stderr(&relative));
    assert_eq!(
        relative.stdout,
        run(&["kpi", "--period", "month"], data, None).stdout
    );
    // An executor cannot announce 0.0.0.0 to the others.
    let unspecified = tenure()
        .args(["cluster", "executor", "--scheduler", "127.0.0.1:1"])
        .args(["--bind", "0.0.0.0:50051"])
        .output()
        .unwrap();
    assert_ne!(unspecified.status.code(), Some(0));
    assert!(
        stderr(&unspecified).contains("machine's address"),
        "{}",
        stderr(&unspecified)
    );
}

#[test]
fn analyses_on_a_cluster_read_a_store_in_a_bucket() {
    let Some((_endpoint, bucket)) = tenure_testkit::s3_test_server() else {
        return;
    };
    let data = format!("s3://{bucket}/{}", tenure_testkit::unique_prefix("cluster"));
    generate(&data, 1500, 30);
    // The executors find the bucket through the environment they inherit.
    let cluster = Cluster::start(2);
    cluster.ready(&data);
    same_on_the_cluster(&data, &cluster);
}

/// An executor killed while a query that needs both runs (a self-join,
/// shuffled between stages): the answer is the local one or an error;
/// repeated, so that the kill lands at different points.
#[test]
fn an_executor_killed_mid_query_leaves_a_correct_answer_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = store.to_str().unwrap();
    generate(data, 20000, 30);
    let query = "SELECT count(*) AS n, sum(CASE WHEN a.ts = b.ts THEN 1 ELSE 0 END) AS same \
                 FROM events a JOIN events b ON a.user_id = b.user_id";
    let local = run(&["sql", query], data, None);
    assert!(local.status.success(), "{}", stderr(&local));
    // The kill lands at fractions of the time the query takes on a cluster.
    let took = {
        let cluster = Cluster::start(2);
        cluster.ready(data);
        let start = Instant::now();
        let out = run(&["sql", query], data, Some(&cluster.url));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, local.stdout);
        start.elapsed()
    };
    for (round, share) in [0.2, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let delay_ms = (took.as_millis() as f64 * share) as u64;
        let mut cluster = Cluster::start(2);
        cluster.ready(data);
        let mut cmd = tenure();
        cmd.args([
            "sql",
            query,
            "--format",
            "json",
            "--data",
            data,
            "--cluster",
        ])
        .arg(&cluster.url)
        // Ballista may keep a job whose executor died waiting; the client's
        // deadline turns that into an error.
        .env("TENURE_CLUSTER_TIMEOUT", "60s");
        let query_run = std::thread::spawn(move || timed(&mut cmd, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let victim = &mut cluster.executors[round % 2];
        victim.kill().unwrap();
        victim.wait().unwrap();
        let out = query_run
            .join()
            .unwrap()
            .expect("the query neither finished nor failed within two minutes");
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&local.stdout),
                "round {round}: another answer after an executor was killed"
            );
        } else {
            assert!(!stderr(&out).trim().is_empty(), "round {round}: no error");
            assert!(out.stdout.is_empty(), "round {round}: rows and an error");
        }
    }
}

/// A cluster that takes connections and never answers: with
/// TENURE_CLUSTER_TIMEOUT the command stops with an error once the limit
/// has passed, not hangs; a limit that is not a duration is a bad request.
#[test]
fn a_silent_cluster_ends_in_an_error_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = store.to_str().unwrap();
    generate(data, 200, 10);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("df://{}", silent.local_addr().unwrap());
    // Connections are taken and held open, unanswered.
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in silent.incoming().take(16) {
            open.push(c);
        }
    });
    let start = Instant::now();
    let mut cmd = tenure();
    cmd.args(["retention", "--data", data, "--cluster", &url])
        .env("TENURE_CLUSTER_TIMEOUT", "3s");
    let out = timed(&mut cmd, Duration::from_secs(60)).expect("no deadline: still waiting");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not finish within 3s"),
        "{}",
        stderr(&out)
    );
    assert!(start.elapsed() >= Duration::from_secs(3));
    let mut cmd = tenure();
    cmd.args(["retention", "--data", data, "--cluster", &url])
        .env("TENURE_CLUSTER_TIMEOUT", "soon");
    let out = timed(&mut cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TENURE_CLUSTER_TIMEOUT=soon"),
        "{}",
        stderr(&out)
    );
    drop(held);
}
