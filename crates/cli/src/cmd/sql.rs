//! `tenure sql`: SQL over the committed events, with Tenure's table functions.

use clap::Args;

use crate::cmd::common::AnalysisArgs;

/// Run a SQL query over the store's committed events (table `events`).
///
/// Table functions return the rows of the matching subcommand (calendars in
/// UTC), so analyses compose with SQL: retention(period [, start_event [,
/// return_event [, mode]]]), funnel(steps, window [, by [, mode]]),
/// segment(expr [, as_of]), rfm([as_of]), ltv(period [, start_event]),
/// lifecycle(period), lifecycle_stages([as_of]), kpi(period),
/// stickiness(period [, event]), abtest(metric [, by]) and clv([horizon [,
/// calibration_end [, as_of]]]). Arguments are
/// string literals (NULL for a default). --from/--to limit the events every
/// table sees. --out also writes the result to a file or URL (.json, .csv or
/// .parquet, typed by the query's schema).
///
/// Examples:
///
///   tenure sql --data ./store "SELECT event, count(*) FROM events GROUP BY event"
///
///   tenure sql --data ./store "SELECT cohort, rate FROM retention('week') WHERE period = 1"
///
///   tenure sql --data ./store --format csv "SELECT * FROM retention('month', 'signup', 'purchase')"
///
///   tenure sql --data ./store "SELECT arm, users, value, p_value FROM abtest('count:purchase')"
#[derive(Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    /// The query.
    pub query: String,
}

/// Runs the command.
pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let df = rt.block_on(async {
        let events = args.common.open().await?;
        tenure_engine::sql::register_functions(&events);
        anyhow::Ok(
            events
                .ctx
                .sql(&args.query)
                .await
                .map_err(|e| crate::exit::BadInput(format!("{e}")))?,
        )
    })?;
    let format = args.common.format;
    // The file (if any) holds the rows as printed, typed as computed; its
    // format is checked before the query runs.
    let file = args
        .common
        .out
        .as_deref()
        .map(|url| {
            crate::output::FileFormat::of_name(url).ok_or_else(|| {
                crate::exit::BadInput(format!(
                    "--out {url}: name the file .json, .csv or .parquet"
                ))
            })
        })
        .transpose()?;
    let written = rt.block_on(async {
        crate::output::print_stream(df.execute_stream().await?, format, &args.query, file).await
    })?;
    // Written outside the runtime: writing blocks on one of its own.
    if let (Some(url), Some((bytes, rows))) = (&args.common.out, written) {
        crate::output::put(url, bytes)?;
        eprintln!("wrote {rows} rows to {url}");
    }
    Ok(())
}
