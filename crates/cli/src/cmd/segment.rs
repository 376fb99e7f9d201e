//! `tenure segment` and `tenure rfm`: segments in Tenure's language over the
//! per-user feature table.

use clap::Args;
use datafusion::logical_expr::lit;
use datafusion::prelude::SessionContext;
use tenure_dsl::{CompileContext, DslError, Resolver, Segment};
pub use tenure_engine::analysis::{catalog_of, library};
use tenure_engine::features::{feature_table, matching_users};
pub use tenure_engine::request::{RfmOptions, SegmentOptions};

use crate::cmd::common::{AnalysisArgs, Scope, parse_when};
use crate::exit::BadInput;
use crate::output;
use crate::report::Kind;

/// Count, list or explain the users matching a segment expression.
///
/// Atoms: R / recency (whole days since the last purchase), F / frequency
/// (purchases), M / monetary (purchase revenue), first_seen, last_seen,
/// lifecycle, r_score / f_score / m_score (quintiles 1-5), mean(R|F|M), user
/// properties (latest value), `did <event> [>= N times] [within 30d]`, and
/// `@name` for segments from --segments files. Operators: and, or, not, = != <
/// <= > >=, in (...), between ... and .... Durations: h, d, w.
///
/// Examples:
///
///   tenure segment --data ./store 'R < 30d and F >= 3' --count
///
///   tenure segment --data ./store 'did purchase >= 2 times within 30d' --users --format csv
///
///   tenure segment --explain 'lifecycle = silent or (R between 31d and 90d and F >= 2)'
#[derive(Args)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub opts: SegmentOptions,
    /// Store URL (not needed with --explain).
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Print the number of matching users.
    #[arg(long, conflicts_with = "users")]
    pub count: bool,
    /// List the matching users (user_key, user_id and the features used).
    #[arg(long)]
    pub users: bool,
    /// Show the resolved tree, the features it needs and the DataFusion plan.
    #[arg(long)]
    pub explain: bool,
    /// Evaluate as of this date (inclusive) or instant; default: the newest event.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::output::OutputFormat,
    /// Also write the rows to this file or URL (.json, .csv or .parquet);
    /// a listing's file holds the rows as printed, typed as computed.
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Time zone for dates given as YYYY-MM-DD.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Worker threads.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run on a Ballista cluster: its scheduler's address (df://host:port,
    /// see `tenure cluster`). The store must be reachable by the same --data
    /// URL from the scheduler and every executor.
    #[arg(long, value_name = "df://HOST:PORT", env = "TENURE_CLUSTER")]
    pub cluster: Option<String>,
}

/// Why a segment expression or its files were rejected before any data was read.
#[derive(Debug)]
pub enum CheckError {
    /// The expression itself: the error points into it.
    Expr(DslError),
    /// A segment file (its error names the file) or anything else.
    Other(anyhow::Error),
}

/// Parses and resolves a segment expression and its files without data (any
/// property name is accepted until the store says which exist).
pub fn check(expr: &str, files: &[String]) -> Result<(), CheckError> {
    let catalog = catalog_of(None);
    let lib = library(files, &catalog).map_err(|e| CheckError::Other(e.into()))?;
    Segment::new(
        expr,
        &Resolver::new(&catalog).with_library(&lib),
        &CompileContext::new(0),
    )
    .map(|_| ())
    .map_err(CheckError::Expr)
}

/// Runs `tenure segment`.
pub fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let tz = tenure_engine::calendar::parse_tz(&args.tz)?;
    let as_of = args
        .as_of
        .as_deref()
        .map(|s| parse_when(s, tz, true))
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tenure_engine::table::thread_count(args.threads))
        .enable_all()
        .build()?;
    let opts = &args.opts;
    if args.explain && args.data.is_none() {
        let catalog = catalog_of(None);
        let lib = library(&opts.segments, &catalog)?;
        let seg = Segment::new(
            &opts.expr,
            &Resolver::new(&catalog).with_library(&lib),
            &CompileContext::new(as_of.unwrap_or(0)),
        )
        .map_err(|e| tenure_engine::EngineError::from_dsl(e, &opts.expr))?;
        return rt.block_on(explain(&seg, None));
    }
    let data = args
        .data
        .clone()
        .ok_or_else(|| BadInput("--data is required (except with --explain)".into()))?;
    let scope = Scope {
        data,
        threads: args.threads,
        from: None,
        to: None,
        tz,
        as_of,
        remote: crate::cmd::common::remote_of(args.cluster.as_deref())?,
    };
    if !args.users && !args.explain {
        let rows = output::rows_of(&rt.block_on(opts.compute(&scope))?.table)?;
        if let Some(out) = &args.out {
            output::write_out(&rows, out)?;
        }
        return if args.count && args.format == output::OutputFormat::Table {
            println!("{}", rows.rows[0][1]);
            Ok(())
        } else {
            output::print_analysis(Kind::Segment, &rows, None, args.format, || {
                output::table(&rows)
            })
        };
    }
    // A listing's file: its format checked before anything is read.
    let file = match (&args.out, args.explain) {
        (Some(url), false) => Some(output::FileFormat::of_name(url).ok_or_else(|| {
            BadInput(format!(
                "--out {url}: name the file .json, .csv or .parquet"
            ))
        })?),
        _ => None,
    };
    let written = rt.block_on(async {
        let (events, as_of) = scope.open_as_of().await?;
        let (seg, spec) = opts.compile(&events, as_of)?;
        if args.explain {
            let table = feature_table(&events, &seg.features, &spec).await?;
            explain(&seg, Some(table)).await?;
            return Ok(None);
        }
        let users = matching_users(&events, &seg.features, Some(&seg.expr), &spec).await?;
        output::print_stream(users, args.format, "segment users", file).await
    })?;
    // Written outside the runtime: writing blocks on one of its own.
    if let (Some(url), Some((bytes, rows))) = (&args.out, written) {
        output::put(url, bytes)?;
        eprintln!("wrote {rows} rows to {url}");
    }
    Ok(())
}

async fn explain(
    seg: &Segment,
    table: Option<datafusion::arrow::record_batch::RecordBatch>,
) -> anyhow::Result<()> {
    println!("resolved:\n  {}", seg.resolved);
    println!("features:");
    for f in &seg.features {
        println!("  {} ({})", f.column_name(), f.data_type());
    }
    println!("filter:\n  {}", seg.expr);
    let schema = std::sync::Arc::new(tenure_dsl::feature_schema(seg.features.iter()));
    let table =
        table.unwrap_or_else(|| datafusion::arrow::record_batch::RecordBatch::new_empty(schema));
    let ctx = SessionContext::new();
    ctx.register_batch("features", table)?;
    let plan = ctx
        .table("features")
        .await?
        .filter(seg.expr.clone())?
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::count::count(lit(1)).alias("users")],
        )?;
    let explained = plan.explain(false, false)?.collect().await?;
    println!(
        "{}",
        datafusion::arrow::util::pretty::pretty_format_batches(&explained)?
    );
    Ok(())
}

/// RFM scores and the distribution of users over a segment set.
///
/// R = whole days since the last purchase, F = purchases, M = purchase revenue,
/// as of --as-of (default: the newest event); scores 1-5 by quintiles among
/// buyers (R: more recent scores higher), or by fixed thresholds
/// (--r-thresholds, --f-thresholds, --m-thresholds). Each segment of the set
/// (one `segment name = ...` per line of the files) gets its user count and
/// share.
///
/// Quintiles rank buyers with ties sharing a score: the top of score k is
/// the value at rank ceil(k n / 5), moved past the score below where needed,
/// so that with five or more distinct values every score 1-5 occurs (a
/// frequency of 1 for most buyers does not leave scores 2 and 3 empty).
///
/// The population is customers: users with at least one purchase by --as-of,
/// or within the window when --lookback 365d (or --from DATE) limits the
/// purchases read.
///
/// Columns: segment, users, share (of customers).
///
/// Examples:
///
///   tenure rfm --data ./store
///
///   tenure rfm --data ./store --segments queries/rfm_classic.seg --format csv
///
///   tenure rfm --data ./store --lookback 365d --r-thresholds 7,30,90,180
#[derive(Args)]
pub struct RfmArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: RfmOptions,
    /// As of this date (inclusive) or instant.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
}

/// Runs `tenure rfm`.
pub fn run_rfm(args: RfmArgs) -> anyhow::Result<()> {
    let scope = args.common.scope(args.as_of.as_deref())?;
    let rt = args.common.runtime()?;
    let answer = rt.block_on(args.opts.compute(&scope))?;
    let segments = output::rows_of(&answer.table)?;
    let grid = answer.extra.as_ref().map(output::rows_of).transpose()?;
    if let Some(out) = &args.common.out {
        output::write_out(&segments, out)?;
    }
    output::print_analysis(Kind::Rfm, &segments, grid, args.common.format, || {
        output::table(&segments)
    })
}
