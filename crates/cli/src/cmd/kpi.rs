//! `tenure kpi`: active users, stickiness, revenue metrics, churn.

use clap::Args;
pub use tenure_engine::request::KpiOptions;

use crate::cmd::common::AnalysisArgs;
use crate::output;
use crate::report::Kind;

/// Key metrics per week or month, and over the whole range.
///
/// Per period: active_users (WAU or MAU), dau (mean daily active users),
/// stickiness (dau / active_users), revenue, orders, purchasers, arpu, arppu,
/// aov, churn_rate, reactivation_rate. Over the range: repurchase_rate and
/// first_order_conversion_<N>d (of users whose first --signup-event came at
/// least N days before the data's end, the share whose first purchase came
/// within N days after it). Each row carries its numerator and denominator.
///
/// Columns: metric, period (ISO date or `all`), value, numerator, denominator, complete.
///
/// Examples:
///
///   tenure kpi --data ./store --period month
///
///   tenure kpi --data ./store --period week --conversion-days 7 --format json
#[derive(Args)]
pub struct KpiArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: KpiOptions,
}

/// Runs the command.
pub fn run(args: KpiArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(None)?;
    let table = output::rows_of(&rt.block_on(args.opts.compute(&scope))?.table)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Kpi, &table, None, args.common.format, || {
        output::table(&table)
    })
}
