//! Golden tests: parse trees, resolved trees, compiled expressions and error
//! renderings, kept in `tests/golden/*.golden` and reviewed as diffs.
//!
//! Each file is a list of cases:
//!
//! ```text
//! case <name> [properties=a,b]
//! <input, one or more lines>
//! ----
//! <expected output>
//! ```
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the outputs from the current code
//! (like sqllogictest's `--complete`), then review the diff.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use tenure_dsl::{Catalog, CompileContext, Resolver, SegmentLibrary, compile, features, parse};

struct Case {
    header: String,
    input: String,
    output: String,
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn read_cases(text: &str) -> (String, Vec<Case>) {
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_output = false;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("case ") {
            cases.push(Case {
                header: header.to_owned(),
                input: String::new(),
                output: String::new(),
            });
            in_output = false;
            continue;
        }
        let Some(case) = cases.last_mut() else {
            preamble.push_str(line);
            preamble.push('\n');
            continue;
        };
        if !in_output && line == "----" {
            in_output = true;
        } else if in_output {
            case.output.push_str(line);
            case.output.push('\n');
        } else {
            case.input.push_str(line);
            case.input.push('\n');
        }
    }
    for case in &mut cases {
        case.input = case.input.trim_end_matches('\n').to_owned();
        case.output = case.output.trim_end().to_owned();
    }
    (preamble, cases)
}

/// The catalog for a case: events known (so event typos are caught), and
/// properties closed if the header says `[properties=...]`.
fn catalog(header: &str) -> Catalog {
    let events = [
        "purchase",
        "add_to_cart",
        "signup",
        "page_view",
        "Order Completed",
    ];
    let properties = header
        .split_once("[properties=")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .map(|list| list.split(',').map(str::to_owned).collect::<BTreeSet<_>>());
    Catalog {
        properties,
        events: Some(events.iter().map(|e| (*e).to_owned()).collect()),
    }
}

fn library(catalog: &Catalog) -> SegmentLibrary {
    let text = "segment champions = r_score >= 4 and f_score >= 4\n\
                segment loyal = F >= 5 # repeat buyers\n\
                segment big_loyal = @loyal and M >= 1000\n\
                segment wide1 = @loyal or @loyal or @loyal or @loyal or @loyal or @loyal or @loyal or @loyal\n\
                segment wide2 = @wide1 or @wide1 or @wide1 or @wide1 or @wide1 or @wide1 or @wide1 or @wide1\n\
                segment wide3 = @wide2 or @wide2 or @wide2 or @wide2 or @wide2 or @wide2 or @wide2 or @wide2\n\
                segment wide4 = @wide3 or @wide3 or @wide3 or @wide3 or @wide3 or @wide3 or @wide3 or @wide3\n";
    SegmentLibrary::from_sources([("golden.seg", text)], catalog).expect("golden library")
}

/// 2024-03-01T00:00:00Z: relative windows in the goldens end here.
const AS_OF: i64 = 1_709_251_200_000_000;

/// Everything the pipeline says about `input`: each stage's output, or the
/// rendered error of the first stage that fails.
fn describe(header: &str, input: &str) -> String {
    let catalog = catalog(header);
    let library = library(&catalog);
    let resolver = Resolver::new(&catalog).with_library(&library);
    let ctx = CompileContext::new(AS_OF);
    let mut out = String::new();
    let ast = match parse(input) {
        Ok(ast) => ast,
        Err(e) => return e.render(input),
    };
    let _ = writeln!(out, "ast: {ast}");
    let resolved = match resolver.resolve(&ast) {
        Ok(r) => r,
        Err(e) => return out + &e.render(input),
    };
    let _ = writeln!(out, "resolved: {resolved}");
    let columns: Vec<String> = features(&resolved)
        .iter()
        .map(|f| format!("{} {}", f.column_name(), f.data_type()))
        .collect();
    let _ = writeln!(out, "features: {}", columns.join(", "));
    match compile(&resolved, &ctx) {
        Ok(expr) => {
            let _ = writeln!(out, "expr: {expr}");
        }
        Err(e) => out.push_str(&e.render(input)),
    }
    out
}

fn run_golden(file: &str, expect_error: bool) {
    let path = golden_path(file);
    let text = std::fs::read_to_string(&path).expect("golden file");
    let (preamble, cases) = read_cases(&text);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut rewritten = preamble;
    let mut failures = Vec::new();
    for case in &cases {
        let actual = describe(&case.header, &case.input);
        let actual = actual.trim_end();
        let is_error = actual.contains("error: ");
        if is_error != expect_error {
            failures.push(format!(
                "case {}: expected {}, got:\n{actual}",
                case.header,
                if expect_error { "an error" } else { "success" }
            ));
        }
        if actual != case.output {
            failures.push(format!(
                "case {}\n--- expected\n{}\n+++ actual\n{actual}",
                case.header, case.output
            ));
        }
        let _ = write!(
            rewritten,
            "case {}\n{}\n----\n{actual}\n\n",
            case.header, case.input
        );
    }
    if update {
        std::fs::write(&path, rewritten.trim_end().to_owned() + "\n").expect("write golden");
        return;
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) in {file} (rerun with UPDATE_GOLDEN=1 to accept):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn parse_trees() {
    run_golden("parse.golden", false);
}

#[test]
fn error_messages() {
    run_golden("errors.golden", true);
}
