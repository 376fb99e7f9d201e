//! Inputs shared by the DSL's timing test (tests/perf.rs) and its criterion
//! bench (benches/dsl.rs).

/// Realistic clauses joined until the text is at least 1 KB.
pub fn one_kb_expression() -> String {
    let parts = [
        "R < 30d and F >= 3",
        "M >= 500 and country in (\"CN\", \"JP\")",
        "lifecycle = silent or (R between 31d and 90d and F >= 2)",
        "did purchase >= 2 times within 30d and not did add_to_cart within 7d",
        "first_seen within 7d",
    ];
    let mut out = String::new();
    let mut i = 0;
    while out.len() < 1024 {
        if !out.is_empty() {
            out.push_str(if i % 2 == 0 { " or " } else { " and " });
        }
        out.push('(');
        out.push_str(parts[i % parts.len()]);
        out.push(')');
        i += 1;
    }
    out
}
