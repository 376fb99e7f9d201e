//! `tenure kpi`: active users, stickiness, revenue metrics, churn.

use clap::Args;
use tenure_engine::kpi::{KpiSpec, kpis};
use tenure_engine::userstats::PurchaseSpec;

use crate::cmd::common::AnalysisArgs;
use crate::output;

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
    /// Reporting period: week or month (or day).
    #[arg(long, default_value = "month")]
    pub period: String,
    /// Window of first-order conversion (first event to first purchase), in days.
    #[arg(long, default_value_t = 7)]
    pub conversion_days: i64,
    /// Name of the purchase event.
    #[arg(long, default_value = "purchase")]
    pub purchase_event: String,
}

/// Runs the command.
pub fn run(args: KpiArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let rows = rt.block_on(async {
        let events = args.common.open().await?;
        let spec = KpiSpec {
            period: args.period.parse()?,
            tz: args.common.tz()?,
            purchase: PurchaseSpec {
                event: args.purchase_event.clone(),
            },
            conversion_days: args.conversion_days.max(0),
        };
        anyhow::Ok(kpis(&events, &spec).await?)
    })?;
    let table = output::to_rows(
        &[
            "metric",
            "period",
            "value",
            "numerator",
            "denominator",
            "complete",
        ],
        &rows,
    )?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print(&table, args.common.format, || output::table(&table))
}
