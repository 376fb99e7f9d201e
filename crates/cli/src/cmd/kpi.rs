//! `tenure kpi`: active users, stickiness, revenue metrics, churn.

use clap::Args;
use tenure_engine::kpi::kpis;
pub use tenure_engine::request::KpiOptions;

use crate::cmd::common::{AnalysisArgs, Scope};
use crate::output::{self, Rows};
use crate::report::Kind;

/// Key metrics per week or month, and over the whole range.
///
/// Per period: active_users (WAU or MAU), dau (mean daily active users),
/// stickiness (dau / active_users), revenue, orders, purchasers, arpu, arppu,
/// aov, churn_rate, reactivation_rate. Over the range: repurchase_rate and
/// first_order_conversion_<N>d. Each row carries its numerator and denominator.
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

/// KPIs over `scope`, as tidy rows.
pub async fn compute_rows(scope: &Scope, opts: &KpiOptions) -> anyhow::Result<Rows> {
    let events = scope.open().await?;
    let spec = opts.spec(scope.tz)?;
    output::typed_rows(tenure_engine::kpi::schema(), &kpis(&events, &spec).await?)
}

/// Runs the command.
pub fn run(args: KpiArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(None)?;
    let table = rt.block_on(compute_rows(&scope, &args.opts))?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Kpi, &table, None, args.common.format, || {
        output::table(&table)
    })
}
