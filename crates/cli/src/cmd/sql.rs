//! `tenure sql`: SQL over the committed events, with Tenure's table functions.

use clap::Args;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::cmd::common::AnalysisArgs;
use crate::output::OutputFormat;

/// Run a SQL query over the store's committed events (table `events`).
///
/// Table functions return the rows of the matching subcommand (calendars in
/// UTC), so analyses compose with SQL: retention(period [, start_event [,
/// return_event [, mode]]]), funnel(steps, window [, by [, mode]]),
/// segment(expr [, as_of]), rfm([as_of]), ltv(period [, start_event]),
/// lifecycle(period), lifecycle_stages([as_of]), kpi(period),
/// stickiness(period [, event]) and abtest(metric [, by]). Arguments are
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
    let batches = rt.block_on(async {
        let events = args.common.open().await?;
        tenure_engine::sql::register_functions(&events);
        let df = events
            .ctx
            .sql(&args.query)
            .await
            .map_err(|e| crate::exit::BadInput(format!("{e}")))?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        // An empty result still has its columns.
        anyhow::Ok(match batches.is_empty() {
            true => vec![datafusion::arrow::record_batch::RecordBatch::new_empty(
                schema,
            )],
            false => batches,
        })
    })?;
    if let Some(url) = &args.common.out {
        crate::output::write_out(&crate::output::rows_from_batches(&batches)?, url)?;
    }
    let mut out: Vec<u8> = Vec::new();
    match args.common.format {
        OutputFormat::Table => {
            out.extend(pretty_format_batches(&batches)?.to_string().into_bytes())
        }
        OutputFormat::Csv => out.extend(crate::output::csv_of_batches(&batches)?.into_bytes()),
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Html => out.extend(
            crate::report::table_page(&args.query, &crate::output::rows_from_batches(&batches)?)
                .into_bytes(),
        ),
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    use std::io::Write;
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}
