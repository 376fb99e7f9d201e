//! `tenure ltv`: cumulative lifetime value per cohort.

use clap::Args;
use tenure_engine::retention::{Mode, RetentionSpec};

use tenure_engine::ltv::LtvRow;

use crate::cmd::common::{AnalysisArgs, Scope};
use crate::cmd::retention::condition;
use crate::output::{self, Rows};
use crate::report::Kind;

/// Cumulative revenue per cohort user, period by period.
///
/// Cohorts are as in `tenure retention` (the period of each user's first start
/// event); every event with revenue counts. Sums are exact to the cent.
///
/// Columns (csv/json): kind (cohort|average), cohort, period, cohort_size,
/// revenue (cumulative, exact decimal), ltv (revenue per cohort user), complete.
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

/// What to compute: the flags of `tenure ltv`, and the keys of a
/// `kind = "ltv"` analysis in a job file.
#[derive(Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtvOptions {
    /// Cohort period: day, week or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Event that puts a user in a cohort (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub start_event: Option<String>,
    /// Extra SQL condition on start events.
    #[arg(long, value_name = "SQL")]
    pub start_where: Option<String>,
}

impl Default for LtvOptions {
    fn default() -> Self {
        crate::cmd::common::clap_defaults()
    }
}

impl LtvOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> anyhow::Result<()> {
        let _: tenure_engine::calendar::Period = self.period.parse()?;
        Ok(())
    }
}

/// Computes cumulative LTV per cohort over `scope`.
pub async fn compute(scope: &Scope, opts: &LtvOptions) -> anyhow::Result<Vec<LtvRow>> {
    let events = scope.open().await?;
    let spec = RetentionSpec {
        period: opts.period.parse()?,
        tz: scope.tz,
        start: condition(
            &events,
            opts.start_event.as_deref(),
            opts.start_where.as_deref(),
        )
        .await?,
        ret: None,
        mode: Mode::NDay,
        as_of: scope.as_of,
        by: None,
    };
    Ok(tenure_engine::ltv::ltv(&events, &spec).await?)
}

/// LTV as tidy rows.
pub async fn compute_rows(scope: &Scope, opts: &LtvOptions) -> anyhow::Result<Rows> {
    output::typed_rows(tenure_engine::ltv::schema(), &compute(scope, opts).await?)
}

/// Runs the command.
pub fn run(args: LtvArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let rows = rt.block_on(compute(&scope, &args.opts))?;
    let table = output::typed_rows(tenure_engine::ltv::schema(), &rows)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Ltv, &table, None, args.common.format, || {
        let mut s = String::new();
        let mut current = None;
        for r in &rows {
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
