//! `tenure kpi`: active users, stickiness, revenue metrics, churn.

use clap::Args;
use tenure_engine::kpi::{KpiSpec, kpis};
use tenure_engine::userstats::PurchaseSpec;

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

/// What to compute: the flags of `tenure kpi`, and the keys of a
/// `kind = "kpi"` analysis in a job file.
#[derive(Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiOptions {
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

impl Default for KpiOptions {
    fn default() -> Self {
        crate::cmd::common::clap_defaults()
    }
}

impl KpiOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> anyhow::Result<()> {
        let _: tenure_engine::calendar::Period = self.period.parse()?;
        Ok(())
    }
}

/// KPIs over `scope`, as tidy rows.
pub async fn compute_rows(scope: &Scope, opts: &KpiOptions) -> anyhow::Result<Rows> {
    let events = scope.open().await?;
    let spec = KpiSpec {
        period: opts.period.parse()?,
        tz: scope.tz,
        purchase: PurchaseSpec {
            event: opts.purchase_event.clone(),
        },
        conversion_days: opts.conversion_days.max(0),
    };
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
