//! `tenure lifecycle`: per-period lifecycle counts, or per-user stages.

use clap::Args;
use tenure_engine::lifecycle::{self, Thresholds};
use tenure_engine::userstats::{self, PurchaseSpec};
use tenure_engine::{Events, OpenOptions};

use crate::cmd::common::{AnalysisArgs, parse_when};
use crate::output;

/// Lifecycle: PostHog-style counts per period (new, returning, resurrecting,
/// dormant), or with --stages the number of users in each stage as of a date.
///
/// Stages: by days since first seen, new (0-7), growing (8-30), mature (31-90),
/// veteran (over 90); by days since last purchase, active (0-30), cooling
/// (31-90), silent (91-180), churned (over 180), or none. Thresholds are
/// configurable. "As of" defaults to the newest event.
///
/// Columns: period, status, users, complete; with --stages: axis, stage, users, share.
///
/// Examples:
///
///   tenure lifecycle --data ./store --period week
///
///   tenure lifecycle --data ./store --stages --as-of 2026-03-31
#[derive(Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    /// Period of the counts: day, week or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Count users per stage instead of per period.
    #[arg(long)]
    pub stages: bool,
    /// Stages as of this date (inclusive) or instant (default: the newest event).
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    /// Tenure stage bounds in days (new, growing, mature).
    #[arg(long, default_value = "7,30,90")]
    pub tenure_days: String,
    /// Activity stage bounds in days since last purchase (active, cooling, silent).
    #[arg(long, default_value = "30,90,180")]
    pub activity_days: String,
    /// Name of the purchase event.
    #[arg(long, default_value = "purchase")]
    pub purchase_event: String,
}

/// Runs the command.
pub fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let tz = args.common.tz()?;
    let table = if args.stages {
        let thresholds = Thresholds {
            tenure: Thresholds::parse_axis(&args.tenure_days)?,
            activity: Thresholds::parse_axis(&args.activity_days)?,
        };
        let rows = rt.block_on(async {
            let mut events = args.common.open().await?;
            // "As of T" ignores what happened after T.
            if let Some(s) = &args.as_of {
                let t = parse_when(s, tz, true)?;
                let mut opts = events.options.clone();
                opts.to = Some(opts.to.map_or(t, |x| x.min(t)));
                events = Events::open(&args.common.data, OpenOptions { ..opts }).await?;
            }
            let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
            let as_of = match &args.as_of {
                Some(s) => parse_when(s, tz, true)? - 1,
                None => max_ts,
            };
            let stats = userstats::scan(
                &events,
                &PurchaseSpec {
                    event: args.purchase_event.clone(),
                },
            )
            .await?;
            anyhow::Ok(lifecycle::stage_counts(&stats, as_of, &thresholds))
        })?;
        output::to_rows(&["axis", "stage", "users", "share"], &rows)?
    } else {
        let rows = rt.block_on(async {
            let mut common = args.common.clone();
            // Lifecycle needs the history before --from to tell new from resurrecting.
            let from = common
                .from
                .take()
                .map(|s| parse_when(&s, tz, false))
                .transpose()?;
            let events = common.open().await?;
            anyhow::Ok(lifecycle::periods(&events, args.period.parse()?, tz, from).await?)
        })?;
        output::to_rows(&["period", "status", "users", "complete"], &rows)?
    };
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print(&table, args.common.format, || output::table(&table))
}
