//! `tenure ltv`: cumulative lifetime value per cohort.

use clap::Args;
pub use tenure_engine::request::LtvOptions;

use tenure_engine::ltv::LtvRow;

use crate::cmd::common::AnalysisArgs;
use crate::output;
use crate::report::Kind;

/// Cumulative revenue per cohort user, period by period.
///
/// Cohorts are as in `tenure retention` (the period of each user's first start
/// event); every event with revenue counts. Sums are exact to the cent.
///
/// Columns (csv/json): kind (cohort|average), group (with --by), cohort,
/// period, cohort_size, revenue (cumulative, exact decimal), ltv (revenue per
/// cohort user), complete.
///
/// Examples:
///
///   tenure ltv --data ./store --period month
///
///   tenure ltv --data ./store --period week --start-event signup --format csv
#[derive(Args)]
pub struct LtvArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: LtvOptions,
    /// Cells ending after this date (inclusive) or instant are incomplete.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// Runs the command.
pub fn run(args: LtvArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let answer = rt.block_on(args.opts.compute(&scope))?;
    let table = output::rows_of(&answer.table)?;
    let rows: Vec<LtvRow> = answer
        .table
        .batches
        .iter()
        .flat_map(tenure_engine::ltv::rows_of_batch)
        .collect();
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Ltv, &table, None, args.common.format, || {
        let mut s = String::new();
        let mut current = None;
        let mut group = None;
        for r in &rows {
            if r.group.is_some() && r.group != group {
                if current.is_some() {
                    s.push('\n');
                }
                s.push_str(&format!("== {}\n", r.group.as_deref().unwrap_or("")));
                group = r.group.clone();
                current = None;
            }
            let key = r.cohort.clone().unwrap_or_else(|| "average".into());
            if current.as_ref() != Some(&key) {
                if current.is_some() {
                    s.push('\n');
                }
                s.push_str(&format!(
                    "{key:<12} {:>8}",
                    if r.kind == "average" {
                        String::new()
                    } else {
                        r.cohort_size.to_string()
                    }
                ));
                current = Some(key);
            }
            s.push_str(&match r.ltv {
                Some(v) => format!(" {v:>8.2}"),
                None if r.complete => format!(" {:>8}", "-"),
                None => format!(" {:>8}", "…"),
            });
        }
        s.push_str("\n(cumulative revenue per cohort user; … = not complete yet)\n");
        s
    })
}
