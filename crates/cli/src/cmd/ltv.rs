//! `tenure ltv`: cumulative lifetime value per cohort.

use clap::Args;
use tenure_engine::retention::{Mode, RetentionSpec};

use crate::cmd::common::{AnalysisArgs, parse_when};
use crate::cmd::retention::condition;
use crate::output;

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
    /// Cohort period: day, week or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Event that puts a user in a cohort (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub start_event: Option<String>,
    /// Extra SQL condition on start events.
    #[arg(long, value_name = "SQL")]
    pub start_where: Option<String>,
    /// Cells ending after this date (inclusive) or instant are incomplete.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// Runs the command.
pub fn run(args: LtvArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let rows = rt.block_on(async {
        let tz = args.common.tz()?;
        let events = args.common.open().await?;
        let spec = RetentionSpec {
            period: args.period.parse()?,
            tz,
            start: condition(
                &events,
                args.start_event.as_deref(),
                args.start_where.as_deref(),
            )
            .await?,
            ret: None,
            mode: Mode::NDay,
            as_of: args
                .as_of
                .as_deref()
                .map(|s| parse_when(s, tz, true))
                .transpose()?,
            by: None,
        };
        anyhow::Ok(tenure_engine::ltv::ltv(&events, &spec).await?)
    })?;
    let table = output::to_rows(
        &[
            "kind",
            "cohort",
            "period",
            "cohort_size",
            "revenue",
            "ltv",
            "complete",
        ],
        &rows,
    )?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print(&table, args.common.format, || {
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
