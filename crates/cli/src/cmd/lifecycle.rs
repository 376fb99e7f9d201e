//! `tenure lifecycle`: per-period lifecycle counts, or per-user stages.

use clap::Args;
pub use tenure_engine::request::LifecycleOptions;

use crate::cmd::common::AnalysisArgs;
use crate::output;
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

/// Runs the command.
pub fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    let table = output::rows_of(&rt.block_on(args.opts.compute(&scope))?.table)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(kind(&args.opts), &table, None, args.common.format, || {
        output::table(&table)
    })
}
