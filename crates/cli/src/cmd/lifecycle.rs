//! `tenure lifecycle`: per-period lifecycle counts, or per-user stages.

use clap::Args;
use tenure_engine::lifecycle;
pub use tenure_engine::request::LifecycleOptions;
use tenure_engine::userstats::PurchaseSpec;

use crate::cmd::common::{AnalysisArgs, Scope};
use crate::output::{self, Rows};
use crate::report::Kind;

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
    #[command(flatten)]
    pub opts: LifecycleOptions,
    /// Stages as of this date (inclusive) or instant (default: the newest event).
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// The report section a lifecycle request's output is drawn as.
pub fn kind(opts: &LifecycleOptions) -> Kind {
    if opts.stages {
        Kind::LifecycleStages
    } else {
        Kind::Lifecycle
    }
}

/// Lifecycle over `scope` as tidy rows: per-period counts (columns period,
/// status, users, complete), or with `stages` users per stage (axis, stage,
/// users, share).
pub async fn compute_rows(scope: &Scope, opts: &LifecycleOptions) -> anyhow::Result<Rows> {
    if opts.stages {
        let thresholds = opts.thresholds()?;
        // "As of T" ignores what happened after T.
        let to = match (scope.to, scope.as_of) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let events = scope.open_range(scope.from, to).await?;
        let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
        let as_of = scope.as_of.map_or(max_ts, |t| t - 1);
        let rows = lifecycle::stages(
            &events,
            as_of,
            &thresholds,
            &PurchaseSpec {
                event: opts.purchase_event.clone(),
            },
        )
        .await?;
        output::typed_rows(lifecycle::stages_schema(), &rows)
    } else {
        // Lifecycle needs the history before `from` to tell new from resurrecting.
        let events = scope.open_range(None, scope.to).await?;
        let rows = lifecycle::periods(&events, opts.period.parse()?, scope.tz, scope.from).await?;
        output::typed_rows(lifecycle::periods_schema(), &rows)
    }
}

/// Runs the command.
pub fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let table = rt.block_on(compute_rows(&scope, &args.opts))?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(kind(&args.opts), &table, None, args.common.format, || {
        output::table(&table)
    })
}
