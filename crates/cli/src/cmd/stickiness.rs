//! `tenure stickiness`: users by number of active days per week or month.

use clap::Args;
pub use tenure_engine::request::StickinessOptions;

use crate::cmd::common::AnalysisArgs;
use crate::output::{self, Rows};
use crate::report::Kind;

/// Stickiness: of the users active in each week (or month), how many were
/// active on exactly 1, 2, ... days of it.
///
/// A user is active on a day (in --tz) with any event, or with an event
/// matching --event/--where. Periods not over by --as-of (default: the end of
/// the day of the newest event) are marked incomplete.
///
/// Columns (csv/json): period (start date), days, users, active_users,
/// share (users / active_users), complete.
///
/// Examples:
///
///   tenure stickiness --data ./store --period week
///
///   tenure stickiness --data ./store --period month --event purchase --format csv
///
///   In SQL: SELECT * FROM stickiness('week') WHERE days >= 5
#[derive(Args)]
pub struct StickinessArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: StickinessOptions,
    /// Periods ending after this date (inclusive) or instant are incomplete.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// Runs the command.
pub fn run(args: StickinessArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let table = output::rows_of(&rt.block_on(args.opts.compute(&scope))?.table)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Stickiness, &table, None, args.common.format, || {
        human(&table)
    })
}

/// One line per period: its active users and the share per number of days.
fn human(table: &Rows) -> String {
    let col = |name: &str| table.columns.iter().position(|c| c == name);
    let (Some(p), Some(d), Some(a), Some(s), Some(c)) = (
        col("period"),
        col("days"),
        col("active_users"),
        col("share"),
        col("complete"),
    ) else {
        return String::new();
    };
    let mut out = String::new();
    let mut current: Option<String> = None;
    for r in &table.rows {
        let period = r[p].as_str().unwrap_or_default().to_string();
        if current.as_ref() != Some(&period) {
            if current.is_some() {
                out.push('\n');
            }
            let mark = if r[c].as_bool() == Some(true) {
                " "
            } else {
                "…"
            };
            out.push_str(&format!("{period}{mark} {:>9} |", r[a]));
            current = Some(period);
        }
        let share = r[s].as_f64().map(|v| format!("{:>5.1}%", v * 100.0));
        out.push_str(&format!(
            " {}d {}",
            r[d],
            share.unwrap_or_else(|| "    -".into())
        ));
    }
    out.push_str(
        "\n(active users per period, then the share active on k days; … = not over yet)\n",
    );
    out
}
