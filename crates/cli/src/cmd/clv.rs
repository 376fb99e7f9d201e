//! `tenure clv`: predictive customer lifetime value (BG/NBD and Gamma-Gamma).

use clap::Args;
pub use tenure_engine::request::ClvOptions;

use crate::cmd::common::AnalysisArgs;
use crate::exit::BadInput;
use crate::output::{self, Rows};
use crate::report::Kind;

/// Predictive customer lifetime value: who is still alive, how often they
/// will buy and what they will be worth.
///
/// Fits the BG/NBD model of repeat purchases (Fader, Hardie and Lee, 2005)
/// and the Gamma-Gamma model of spend (Fader and Hardie) by maximum
/// likelihood over every buyer's purchase days (purchases on one day, in
/// --tz, count once): repeat days x, recency t_x (first to last purchase) and
/// age T (first purchase to the end of the calibration period), in weeks
/// (--period week, the papers' unit) or days. Gamma-Gamma uses each repeat
/// buyer's average value of their repeat days.
///
/// Prints the fitted parameters and log-likelihoods (columns: model,
/// parameter, value). --users lists every customer instead (user_id,
/// frequency, recency, t, monetary_value, p_alive, expected_purchases in
/// --horizon, expected_value, clv, holdout_purchases). With --calibration-end the models see only
/// purchases up to it, and --validation compares, per calibration frequency,
/// the actual mean number of purchase days after it (up to --as-of) with the
/// model's prediction (columns: frequency, customers, actual, predicted).
///
/// Examples:
///
///   tenure clv --data ./store
///
///   tenure clv --data ./store --users --horizon 90d --out clv.parquet
///
///   tenure clv --data ./store --calibration-end 1997-09-30 --as-of 1998-06-30 --validation
///
///   In SQL: SELECT * FROM clv('52w') WHERE p_alive < 0.3 ORDER BY clv DESC
#[derive(Args)]
pub struct ClvArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: ClvOptions,
    /// End of the history (a date, inclusive, or an instant; default: the
    /// newest event's day).
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    /// List every customer with their predictions.
    #[arg(long, conflicts_with = "validation")]
    pub users: bool,
    /// Print the holdout check (needs --calibration-end).
    #[arg(long)]
    pub validation: bool,
}

/// Runs the command.
pub fn run(args: ClvArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(args.as_of.as_deref())?;
    if args.common.from.is_some() || args.common.to.is_some() {
        return Err(BadInput(
            "tenure clv reads each customer's whole history: use --as-of and --calibration-end, not --from/--to"
                .into(),
        )
        .into());
    }
    if args.validation && args.opts.calibration_end.is_none() {
        return Err(BadInput("--validation needs --calibration-end".into()).into());
    }
    args.opts.validate()?;
    if args.users {
        let file = match &args.common.out {
            Some(url) => Some(output::FileFormat::of_name(url).ok_or_else(|| {
                BadInput(format!(
                    "--out {url}: name the file .json, .csv or .parquet"
                ))
            })?),
            None => None,
        };
        let written = rt.block_on(async {
            let (events, result) = args.opts.fit(&scope).await?;
            warn_unconverged(&result);
            let batches = tenure_engine::clv::customers_batches(&events, &result).await?;
            let schema = tenure_engine::clv::customers_schema();
            let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(batches.into_iter().map(Ok)),
            );
            output::print_stream(Box::pin(stream), args.common.format, "clv customers", file).await
        })?;
        if let (Some(url), Some((bytes, rows))) = (&args.common.out, written) {
            output::put(url, bytes)?;
            eprintln!("wrote {rows} rows to {url}");
        }
        return Ok(());
    }
    let (_, fit) = rt.block_on(args.opts.fit(&scope))?;
    warn_unconverged(&fit);
    let answer = ClvOptions::answer(&fit)?;
    let model = output::rows_of(&answer.table)?;
    let summary = answer.extra.as_ref().map(output::rows_of).transpose()?;
    let validation = match &fit.validation {
        Some(v) => Some(output::rows_of(&tenure_engine::analysis::Table::new(
            tenure_engine::clv::validation_schema(),
            vec![tenure_engine::clv::validation_batch(v)?],
        ))?),
        None => None,
    };
    let shown = match (&validation, args.validation) {
        (Some(v), true) => v,
        _ => &model,
    };
    if let Some(out) = &args.common.out {
        output::write_out(shown, out)?;
    }
    let unit = args.opts.period.clone();
    // The page shows the models with their charts; other formats what was asked.
    let printed = if args.common.format == output::OutputFormat::Html {
        &model
    } else {
        shown
    };
    output::print_analysis(Kind::Clv, printed, summary, args.common.format, || {
        if args.validation {
            output::table(shown)
        } else {
            human(&model, validation.as_ref(), &unit)
        }
    })
}

/// A fit that stopped at the optimiser's limit is said on stderr: its
/// parameters are the last ones reached (few customers can make the
/// likelihood flat in some direction, e.g. the Poisson limit of BG/NBD).
fn warn_unconverged(fit: &tenure_engine::clv::ClvResult) {
    if !fit.bgnbd.converged {
        eprintln!(
            "warning: BG/NBD did not converge in {} iterations ({} customers); the parameters are the last reached",
            fit.bgnbd.iterations, fit.bgnbd.customers
        );
    }
    if let Some(g) = fit.gamma_gamma.as_ref().filter(|g| !g.converged) {
        eprintln!(
            "warning: Gamma-Gamma did not converge in {} iterations ({} repeat buyers); the parameters are the last reached",
            g.iterations, g.customers
        );
    }
}

/// The models in two lines, then the holdout check.
fn human(model: &Rows, validation: Option<&Rows>, unit: &str) -> String {
    let mut out = String::new();
    let value = |m: &str, p: &str| {
        model
            .rows
            .iter()
            .find(|r| r[0].as_str() == Some(m) && r[1].as_str() == Some(p))
            .and_then(|r| r[2].as_f64())
    };
    let f = |m: &str, p: &str| value(m, p).map_or("-".into(), |v| format!("{v:.4}"));
    out.push_str(&format!(
        "BG/NBD       {:>9} customers   r {}  alpha {}  a {}  b {}   log-likelihood {:.2}  (time in {unit}s)\n",
        value("bg_nbd", "customers").unwrap_or(0.0),
        f("bg_nbd", "r"),
        f("bg_nbd", "alpha"),
        f("bg_nbd", "a"),
        f("bg_nbd", "b"),
        value("bg_nbd", "log_likelihood").unwrap_or(f64::NAN),
    ));
    match value("gamma_gamma", "customers") {
        Some(n) => out.push_str(&format!(
            "Gamma-Gamma  {n:>9} repeat buyers   p {}  q {}  gamma {}   log-likelihood {:.2}\n",
            f("gamma_gamma", "p"),
            f("gamma_gamma", "q"),
            f("gamma_gamma", "gamma"),
            value("gamma_gamma", "log_likelihood").unwrap_or(f64::NAN),
        )),
        None => out.push_str(
            "Gamma-Gamma  not fitted (no revenue column, or fewer than two repeat buyers with revenue)\n",
        ),
    }
    if let Some(v) = validation {
        out.push_str(
            "\nHoldout: actual vs predicted purchase days per customer, by calibration frequency\n",
        );
        out.push_str(&output::table(v));
    }
    out.push_str("(--users lists every customer's p_alive, expected purchases and CLV)\n");
    out
}
