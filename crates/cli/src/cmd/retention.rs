//! `tenure retention`: cohort retention.

use std::fmt::Write as _;

use clap::Args;
pub use tenure_engine::request::RetentionOptions;
use tenure_engine::retention::RetentionRow;

use crate::cmd::common::AnalysisArgs;
use crate::output::{self, OutputFormat};
use crate::report::Kind;

/// Cohort retention: of the users whose first start event fell in a period,
/// how many did a return event k periods later.
///
/// Cells that have not fully elapsed by --as-of (default: the end of the day of
/// the newest event) are marked incomplete and left out of the averages, never
/// shown as low numbers. Averages weight cohorts by size.
///
/// Columns (csv/json): kind (cohort|average), group (the --by value, else
/// empty), cohort (period start, ISO date),
/// period (k), period_label, cohort_size, users, rate, complete.
///
/// Examples:
///
///   tenure retention --data ./store --period week
///
///   tenure retention --data ./store --period day --start-event signup --return-event purchase
///
///   tenure retention --data s3://bucket/t --period month --mode bracket --brackets 0,1-3,4-6 --format csv
#[derive(Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: RetentionOptions,
    /// Cells ending after this date (inclusive) or instant are incomplete.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// Runs the command.
pub fn run(args: RetentionArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let answer = rt.block_on(args.opts.compute(&scope))?;
    let rows = output::rows_of(&answer.table)?;
    let mut result = Vec::new();
    for b in &answer.table.batches {
        result.extend(tenure_engine::retention::rows_of_batch(b)?);
    }
    let period = tenure_engine::retention::period_name(args.opts.period.parse()?);
    // Columns are read periods (`D3` with --read day).
    let read = match &args.opts.read {
        Some(r) => tenure_engine::retention::period_name(r.parse()?),
        None => period,
    };
    if let Some(out) = &args.common.out {
        output::write_out(&rows, out)?;
    }
    output::print_analysis(Kind::Retention, &rows, None, args.common.format, || {
        triangle(&result, period, read)
    })?;
    if args.common.format == OutputFormat::Table && result.iter().all(|r| r.cohort_size == 0) {
        eprintln!(
            "hint: no user has a start event in the range; check --start-event and --from/--to"
        );
    }
    Ok(())
}

/// The familiar retention triangle: one line per cohort, one column per
/// period; one triangle per group with --by.
fn triangle(rows: &[RetentionRow], period: &str, read: &str) -> String {
    let mut groups: Vec<Option<&str>> = Vec::new();
    for row in rows {
        if !groups.contains(&row.group.as_deref()) {
            groups.push(row.group.as_deref());
        }
    }
    let mut out = String::new();
    for g in groups {
        let in_group: Vec<_> = rows
            .iter()
            .filter(|row| row.group.as_deref() == g)
            .collect();
        if let Some(g) = g {
            let _ = writeln!(out, "== {g}");
        }
        one_triangle(&in_group, period, read, &mut out);
    }
    if rows.iter().any(|r| r.revenue_cents.is_some()) {
        out.push_str("(cells: revenue per cohort user; --format csv adds per retained user)\n");
    }
    out.push_str("(… = period not complete yet)\n");
    out
}

fn one_triangle(rows: &[&RetentionRow], period: &str, read: &str, out: &mut String) {
    let labels: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "average")
        .map(|r| r.period_label.as_str())
        .collect();
    let _ = write!(out, "{:<12} {:>9}", format!("{period} of"), "users");
    for l in &labels {
        let _ = write!(out, " {:>7}", format!("{}{l}", &read[..1].to_uppercase()));
    }
    out.push('\n');
    let mut current: Option<&str> = None;
    for row in rows {
        let key = row.cohort.as_deref().unwrap_or("average");
        if current != Some(key) {
            if current.is_some() {
                out.push('\n');
            }
            current = Some(key);
            let size = if row.kind == "average" {
                String::new()
            } else {
                row.cohort_size.to_string()
            };
            let _ = write!(out, "{key:<12} {size:>9}");
        }
        let cell = match (row.complete, row.rate) {
            // --value revenue: revenue per cohort user.
            (true, Some(_)) if row.revenue_cents.is_some() => {
                let cents = row.revenue_cents.unwrap_or(0) as f64;
                format!("{:.2}", cents / 100.0 / row.cohort_size as f64)
            }
            (true, Some(rate)) => format!("{:.1}%", rate * 100.0),
            (true, None) => "-".into(),
            (false, _) => "…".into(),
        };
        let _ = write!(out, " {cell:>7}");
    }
    out.push('\n');
}
