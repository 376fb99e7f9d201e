//! `tenure paths`: a hand-checked store (ties in time, sessions, both
//! directions, breakdowns) and generated data against a SQL reference
//! (window functions and `string_agg` in `tenure sql`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `depth,path,users,drop_off` rows of `tenure paths ... --format csv`.
fn paths(store: &Path, args: &[&str]) -> Vec<String> {
    ok(tenure()
        .args(["paths", "--data"])
        .arg(store)
        .args(args)
        .args(["--format", "csv"]))
    .lines()
    .skip(1)
    .map(|l| {
        let c: Vec<&str> = l.split(',').collect();
        format!("{}|{}|{}|{}|{}", c[0], c[1], c[2], c[3], c[5])
    })
    .collect()
}

fn hand_store(dir: &Path) -> std::path::PathBuf {
    let rows = [
        // u1: cart and view tie at 10:05 (ordered by name: cart first);
        // buy comes 1 h 55 min later.
        ("1", "u1", "view", "2026-03-02T10:00:00Z", "A"),
        ("2", "u1", "view", "2026-03-02T10:05:00Z", "A"),
        ("3", "u1", "cart", "2026-03-02T10:05:00Z", "A"),
        ("4", "u1", "buy", "2026-03-02T12:00:00Z", "A"),
        ("5", "u2", "home", "2026-03-02T09:00:00Z", "B"),
        ("6", "u2", "view", "2026-03-02T09:10:00Z", "B"),
        ("7", "u2", "view", "2026-03-02T09:20:00Z", "B"),
        ("8", "u2", "cart", "2026-03-02T09:25:00Z", "B"),
        ("9", "u3", "home", "2026-03-02T08:00:00Z", "B"),
        ("10", "u4", "view", "2026-03-02T07:00:00Z", "A"),
    ];
    let text: Vec<String> = rows
        .iter()
        .map(|(id, u, e, ts, v)| {
            format!(
                r#"{{"event_id":"{id}","user_id":"{u}","event":"{e}","ts":"{ts}","variant":"{v}"}}"#
            )
        })
        .collect();
    let file = dir.join("events.ndjson");
    std::fs::write(&file, text.join("\n")).unwrap();
    let store = dir.join("store");
    ok(tenure().arg("ingest").arg(&file).arg("--to").arg(&store));
    store
}

#[test]
fn hand_worked_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = hand_store(dir.path());
    // u1: cart > view > buy; u2: view > cart (ends before depth 3); u4:
    // nothing after its view; u3 never views.
    assert_eq!(
        paths(&store, &["--after", "view", "--depth", "3"]),
        [
            "|0||3|1",
            "|1|cart|1|0",
            "|1|view|1|0",
            "|2|cart > view|1|0",
            "|2|view > cart|1|1",
            "|3|cart > view > buy|1|0",
        ]
    );
    // Sessions of 30 minutes: u1's buy comes after a longer gap.
    assert_eq!(
        paths(
            &store,
            &["--after", "view", "--depth", "3", "--session", "30m"]
        ),
        [
            "|0||3|1",
            "|1|cart|1|0",
            "|1|view|1|0",
            "|2|cart > view|1|1",
            "|2|view > cart|1|1",
        ]
    );
    // Before the first cart: u1 only viewed at 10:00 (its 10:05 view sorts
    // after the cart), u2 viewed twice; paths read in time order.
    assert_eq!(
        paths(&store, &["--before", "cart", "--depth", "2"]),
        ["|0||2|0", "|1|view|2|1", "|2|view > view|1|0"]
    );
    let csv = ok(tenure()
        .args(["paths", "--data"])
        .arg(&store)
        .args(["--before", "cart", "--format", "csv"]));
    assert!(csv.lines().next().unwrap().ends_with(",direction"), "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",before")), "{csv}");
    // --top keeps the paths with the most users, under kept parents.
    assert_eq!(
        paths(&store, &["--after", "view", "--depth", "3", "--top", "1"]),
        [
            "|0||3|1",
            "|1|cart|1|0",
            "|2|cart > view|1|0",
            "|3|cart > view > buy|1|0"
        ]
    );
    // By variant at the anchor: u1 and u4 are A, u2 is B.
    let by = paths(
        &store,
        &["--after", "view", "--depth", "1", "--by", "variant"],
    );
    assert_eq!(by, ["A|0||2|1", "A|1|cart|1|0", "B|0||1|0", "B|1|view|1|0"]);
    // The table function answers the same.
    let sql = ok(tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(&store)
        .arg("SELECT depth, path, users FROM paths('cart', 2, 'before') ORDER BY depth, path"));
    assert_eq!(
        sql.trim(),
        "depth,path,users\n0,,2\n1,view,2\n2,view > view,1"
    );
    for (args, says) in [
        (&["--after", "veiw"][..], "did you mean `view`?"),
        (&["--after", "view", "--depth", "0"][..], "--depth 0"),
        (&["--after", "view", "--session", "30"][..], "--session"),
        (
            &["--after", "view", "--by", "colour"][..],
            "no event in range",
        ),
    ] {
        let out = tenure()
            .args(["paths", "--data"])
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = tenure()
        .args(["paths", "--data"])
        .arg(&store)
        .args(["--after", "view", "--before", "cart"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Full paths per user from SQL: the `depth` events after (or before) each
/// user's first `anchor` in (time, name) order, joined by ` > ` in time
/// order; users with nothing on that side have the empty path.
fn sql_paths(store: &Path, anchor: &str, depth: u32, after: bool) -> BTreeMap<String, u64> {
    let (side, order) = if after {
        (format!("r.k > a.k0 AND r.k <= a.k0 + {depth}"), "n.d")
    } else {
        (format!("r.k < a.k0 AND r.k >= a.k0 - {depth}"), "n.d")
    };
    let query = format!(
        "WITH r AS (SELECT user_id, CAST(event AS VARCHAR) AS event, \
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, CAST(event AS VARCHAR)) AS k \
           FROM events), \
         a AS (SELECT user_id, min(k) AS k0 FROM r WHERE event = '{anchor}' GROUP BY user_id), \
         n AS (SELECT r.user_id, r.event, r.k AS d FROM r JOIN a ON r.user_id = a.user_id \
           WHERE {side}), \
         p AS (SELECT a.user_id, string_agg(n.event, ' > ' ORDER BY {order}) AS path \
           FROM a LEFT JOIN n ON a.user_id = n.user_id GROUP BY a.user_id) \
         SELECT coalesce(path, '') AS path, count(*) AS users FROM p GROUP BY path"
    );
    ok(tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(store)
        .arg(query))
    .lines()
    .skip(1)
    .map(|l| {
        let (p, n) = l.rsplit_once(',').unwrap();
        (p.to_string(), n.parse().unwrap())
    })
    .collect()
}

#[test]
fn generated_paths_equal_a_sql_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(tenure()
        .args([
            "gen", "--users", "2000", "--days", "30", "--seed", "11", "--to",
        ])
        .arg(&store));
    for (anchor, after) in [
        ("add_to_cart", true),
        ("purchase", false),
        ("view_item", true),
    ] {
        let depth = 3;
        let full = sql_paths(&store, anchor, depth, after);
        // Every prefix (nearest the anchor first) and where paths end.
        let mut want: BTreeMap<(usize, String), (u64, u64)> = BTreeMap::new();
        for (path, &n) in &full {
            let mut parts: Vec<&str> = if path.is_empty() {
                Vec::new()
            } else {
                path.split(" > ").collect()
            };
            if !after {
                parts.reverse();
            }
            for d in 0..=parts.len() {
                let mut prefix = parts[..d].to_vec();
                if !after {
                    prefix.reverse();
                }
                let node = want.entry((d, prefix.join(" > "))).or_insert((0, 0));
                node.0 += n;
                if d == parts.len() && d < depth as usize {
                    node.1 += n;
                }
            }
        }
        let flag = if after { "--after" } else { "--before" };
        let got: BTreeMap<(usize, String), (u64, u64)> =
            paths(&store, &[flag, anchor, "--depth", "3", "--top", "100000"])
                .iter()
                .map(|l| {
                    let c: Vec<&str> = l.split('|').collect();
                    (
                        (c[1].parse().unwrap(), c[2].to_string()),
                        (c[3].parse().unwrap(), c[4].parse().unwrap()),
                    )
                })
                .collect();
        assert!(
            want.len() >= 4,
            "{anchor}: too few paths to compare: {want:?}"
        );
        assert_eq!(got, want, "{anchor} {flag}");
    }
}
