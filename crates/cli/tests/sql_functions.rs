//! Golden tests of Tenure's SQL table functions: `fixtures/sql/*.slt` holds
//! queries and their expected rows (sqllogictest style) over the hand-checked
//! retention fixture (fixtures/retention/README.md).
//!
//! Format: a `query` line, the SQL (one or more lines), a `----` line, the
//! expected CSV output (header included), then a blank line. Lines starting
//! with `#` between blocks are comments; a first line `# fixture: <file>`
//! runs the file's queries over that fixture's events instead. `statement error <text>` instead of
//! `query` expects exit 2 with `<text>` in the error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A store of a fixture's events.
fn store(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = tenure()
        .arg("ingest")
        .arg(fixtures().join(fixture))
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

struct Case {
    line: usize,
    sql: String,
    want: Result<String, String>,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, l)) = lines.next() {
        let l = l.trim_end();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let error = l.strip_prefix("statement error ").map(str::to_string);
        assert!(
            l == "query" || error.is_some(),
            "line {}: expected `query` or `statement error`, got `{l}`",
            i + 1
        );
        let mut sql = Vec::new();
        let mut want = Vec::new();
        let mut in_rows = false;
        for (_, l) in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
            if l == "----" {
                in_rows = true;
            } else if in_rows {
                want.push(l);
            } else {
                sql.push(l);
            }
        }
        cases.push(Case {
            line: i + 1,
            sql: sql.join("\n"),
            want: match error {
                Some(e) => Err(e),
                None => Ok(want.iter().map(|l| format!("{l}\n")).collect()),
            },
        });
    }
    cases
}

#[test]
fn table_functions_match_the_golden_files() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // `# fixture: abtest/events.ndjson` on the first line picks the
        // events; the retention fixture otherwise.
        let fixture = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# fixture: "))
            .unwrap_or("retention/events.ndjson");
        let dir = store(fixture.trim());
        for case in parse(&text) {
            let out = tenure()
                .args(["sql", "--format", "csv", "--data"])
                .arg(dir.path())
                .arg(&case.sql)
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
            let ok = match &case.want {
                Ok(rows) => out.status.success() && &stdout == rows,
                Err(text) => out.status.code() == Some(2) && stderr.contains(text.as_str()),
            };
            if !ok {
                failures.push(format!(
                    "{}:{}: {}\nwant: {:?}\ngot (exit {:?}):\n{stdout}{stderr}",
                    file.display(),
                    case.line,
                    case.sql,
                    case.want,
                    out.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn sql_out_writes_the_result_typed_by_the_query() {
    let dir = store("retention/events.ndjson");
    let query = "SELECT cohort, period, users, rate, complete FROM retention('week') \
                 WHERE kind = 'cohort' ORDER BY cohort, period";
    let stdout = |format: &str| {
        let out = tenure()
            .args(["sql", "--format", format, "--data"])
            .arg(dir.path())
            .arg(query)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let rows = stdout("csv").lines().count() - 1;
    assert!(rows > 3);
    let target = dir.path().join("out/result.parquet");
    let st = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&target)
        .arg(query)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let bytes = bytes::Bytes::from(std::fs::read(&target).unwrap());
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let schema = reader.schema().clone();
    use datafusion::arrow::datatypes::DataType;
    for (name, t) in [
        ("period", DataType::UInt32),
        ("users", DataType::UInt64),
        ("rate", DataType::Float64),
        ("complete", DataType::Boolean),
    ] {
        assert_eq!(
            schema.field_with_name(name).unwrap().data_type(),
            &t,
            "{name}"
        );
    }
    let n: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, rows);
    // JSON and CSV too; an empty result still writes its columns.
    let csv = dir.path().join("empty.csv");
    let st = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&csv)
        .arg("SELECT event, ts FROM events WHERE event = 'nothing'")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap().trim(), "event,ts");
    // A CSV file holds what --format csv prints (decimals keep their scale).
    let money = "SELECT user_id, monetary FROM rfm() ORDER BY user_key";
    let file = dir.path().join("money.csv");
    let st = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&file)
        .arg(money)
        .output()
        .unwrap();
    assert!(st.status.success());
    let printed = String::from_utf8(st.stdout).unwrap();
    assert!(
        printed.contains(".00") || printed.contains(".50"),
        "{printed}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed);
    let json = dir.path().join("r.json");
    let st = tenure()
        .args(["sql", "--data"])
        .arg(dir.path())
        .arg("--out")
        .arg(&json)
        .arg(query)
        .output()
        .unwrap();
    assert!(st.status.success());
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v.len(), rows);
}

/// `tenure sql` writes CSV with the writer every command uses: a carriage
/// return, a comma or a quote quotes the field (quotes doubled), null is an
/// empty field, a decimal keeps its scale (as `tenure segment --format csv`,
/// which goes through the same writer).
#[test]
fn sql_csv_is_the_one_csv_of_every_command() {
    let dir = store("retention/events.ndjson");
    let out = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir.path())
        .arg(
            "SELECT concat('a', chr(13), 'b') AS cr, 'c,d' AS comma, 'say \"hi\"' AS quote, \
             CAST(NULL AS VARCHAR) AS nothing, CAST(1.5 AS DECIMAL(5,2)) AS money",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "cr,comma,quote,nothing,money\n\"a\rb\",\"c,d\",\"say \"\"hi\"\"\",,1.50\n"
    );
}
