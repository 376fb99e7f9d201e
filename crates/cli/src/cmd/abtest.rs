//! `tenure abtest`: A/B readouts, from events (`--data` and `--metric`) or from
//! per-arm numbers in a report (`--from-summary`).
//!
//! The arguments become a validated plan (metric specs, split, control, test
//! settings) before any data is read; the engine computes the per-arm statistics
//! (`tenure_engine::abtest`), `tenure_stats::readout` does the statistics, and
//! this module renders the rows.

mod render;

use anyhow::Context;
use clap::Args;
use tenure_engine::analysis::Readout;
pub use tenure_engine::request::AbtestOptions;
use tenure_stats::MetricSummary;

use crate::cmd::common::AnalysisArgs;
use crate::exit::BadInput;
use crate::output::{self, OutputFormat};
use crate::report::Kind;

/// Read an A/B test: per metric and arm, users, value, lift with its confidence
/// interval, p-value, a sample-ratio check and a verdict in plain words.
///
/// Arms. A user's arm is the value of the --by column (default: variant) on
/// their events in range; their exposure is the earliest event carrying it.
/// Users whose events carry more than one arm are reported and excluded from
/// every metric; users with no value are not in the test. Metrics count only a
/// user's events from their exposure on, and every user of an arm is in its
/// denominator (a count or sum of 0 when they did nothing). Arms are sorted by
/// name; --split gives one weight per arm in that order; the control is the
/// first arm unless --control names another.
///
/// Metrics (repeat --metric for several):
///
///   count:<event>        events per user (a mean metric)
///
///   sum:<column>         per-user sum of a numeric column, e.g. sum:revenue
///                        (a mean metric; decimal columns are summed exactly)
///
///   segment:<expr>       share of the arm's users matching a segment
///                        expression (see tenure segment), as of the newest
///                        event in range, over events since exposure
///
///   funnel:a>b>c within 7d   share of the arm's users who complete the funnel
///                        (tenure funnel's default windowFunnel mode; users
///                        enter in range, from their exposure on; a step may
///                        carry a condition: purchase where (revenue > 100),
///                        and tenure funnel's step limits, `?` and groups:
///                        a>b within 1h>c within 7d; the last `within` is the
///                        metric's window)
///
///   ratio:<num>/<den>    a ratio of per-user sums, num and den each
///                        count:<event> or sum:<column>, read with the delta
///                        method: ratio:sum:revenue/count:purchase is the
///                        average order value (sum and sum_squares are the
///                        numerator's)
///
/// --from-summary FILE reads per-arm numbers instead of events, one metric per
/// file (CSV with the header arm,users,conversions or arm,users,sum,sum_squares,
/// or a JSON array of objects with those keys); the first arm is the control
/// unless --control says otherwise. Use - for stdin. CUPED (regression
/// adjustment on the same metric before exposure, GrowthBook's pooled theta):
/// arm,users,sum,sum_squares,pre_sum,pre_sum_squares,post_pre_sum_products or
/// arm,users,conversions,pre_conversions,post_pre_sum_products. A ratio metric
/// (delta method, e.g. revenue per order):
/// arm,users,num_sum,num_sum_squares,den_sum,den_sum_squares,num_den_sum_products.
///
/// The default test is GrowthBook's: unpooled Welch t-test on the relative lift
/// (delta method), two-sided, alpha 0.05. The sample-ratio check is a
/// chi-square test against --split, flagged at p < 0.001 ("not enough traffic"
/// under 8 users per arm).
///
/// Columns (csv/json), one row per metric and arm: metric, kind
/// (proportion|mean), arm, is_control, users, conversions (proportions), sum and
/// sum_squares (means), value (conversion rate or mean), difference
/// (relative|absolute), lift (relative lift as a fraction, or absolute
/// difference; null on the control row), std_error, ci_lower and ci_upper (null
/// when unbounded), p_value, p_value_adjusted (with --correction),
/// significant, chance_to_win, risk_control and risk_treatment (with
/// --bayesian; --prior-mean M --prior-stddev S give the posterior an
/// informative Gaussian prior N(M, S²) on the lift, GrowthBook's proper prior),
/// no_result (why a treatment has no result: empty_arm,
/// too_few_users, all_or_nothing, zero_variance, zero_control_mean, overflow),
/// verdict, srm_status (ok|mismatch|not_enough_traffic), srm_p_value,
/// srm_verdict, alpha, sided, sequential (N*, or null), correction,
/// multi_arm_users (users excluded for seeing several arms; null with
/// --from-summary), dimension (the --by-dimension value of the row; null
/// without).
///
/// Examples:
///
///   tenure abtest --data ./store --metric count:purchase --metric sum:revenue
///
///   tenure abtest --data ./store --metric 'segment:did purchase >= 2 times' --bayesian
///
///   tenure abtest --data ./store --by variant --control A --split 50:50 --metric sum:revenue --difference absolute --format json
///
///   tenure abtest --from-summary signup.csv --sequential 10000
///
///   tenure abtest --from-summary signup.csv --prior-mean 0 --prior-stddev 0.1
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct AbtestArgs {
    /// Store URL (a local directory, file://, memory://, s3://, gs://, az://).
    #[arg(long, value_name = "URL", required_unless_present = "from_summary")]
    pub data: Option<String>,
    #[command(flatten)]
    pub opts: AbtestOptions,
    /// Per-arm numbers (CSV or JSON) instead of events; one metric per file
    /// (repeatable; - for stdin).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data", "metrics"])]
    pub from_summary: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Also write the rows to this file or URL (.json, .csv or .parquet).
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Only events from this date or instant on (YYYY-MM-DD in --tz, or RFC 3339).
    #[arg(long, value_name = "WHEN")]
    pub from: Option<String>,
    /// Only events up to this date (inclusive) or before this instant.
    #[arg(long, value_name = "WHEN")]
    pub to: Option<String>,
    /// Time zone of --from and --to dates (IANA name).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Worker threads (default: TENURE_THREADS, else all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run on a Ballista cluster: its scheduler's address (df://host:port,
    /// see `tenure cluster`). The store must be reachable by the same --data
    /// URL from the scheduler and every executor (not used with
    /// --from-summary).
    #[arg(long, value_name = "df://HOST:PORT", env = "TENURE_CLUSTER")]
    pub cluster: Option<String>,
}

/// Runs `tenure abtest`.
pub fn run(args: AbtestArgs) -> anyhow::Result<()> {
    let readout = if args.from_summary.is_empty() {
        let common = AnalysisArgs {
            data: args.data.clone().unwrap_or_default(),
            format: args.format,
            out: args.out.clone(),
            from: args.from.clone(),
            to: args.to.clone(),
            tz: args.tz.clone(),
            threads: args.threads,
            cluster: args.cluster.clone(),
        };
        let scope = common.scope(None)?;
        common.runtime()?.block_on(args.opts.readout(&scope))?
    } else {
        let config = args.opts.readout_config()?;
        Readout::of(read_summaries(&args.from_summary)?, None, &config)?
    };
    let rows = output::rows_of(&readout.table()?)?;
    if let Some(out) = &args.out {
        output::write_out(&rows, out)?;
    }
    output::print_analysis(Kind::Abtest, &rows, None, args.format, || {
        render::table(
            &readout.readouts,
            &readout.summaries,
            readout.exposures.as_ref(),
            &readout.dimensions,
        )
    })
}

/// Reads `--from-summary` files; each is one metric named by its path.
fn read_summaries(files: &[String]) -> anyhow::Result<Vec<MetricSummary>> {
    let mut out = Vec::new();
    for file in files {
        let text = if file == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read the summary on stdin")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        };
        let arms = tenure_stats::parse_summary(&text)
            .map_err(|e| BadInput(format!("--from-summary {file}: {e}")))?;
        out.push(MetricSummary {
            name: file.clone(),
            arms,
        });
    }
    Ok(out)
}
