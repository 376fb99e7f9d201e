//! `tenure run`: a batch job file, its analyses written under deterministic
//! names, an optional HTML report, structured logs and a run summary.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tracing::{error, info, info_span, warn};

use crate::cmd::common::Scope;
use crate::exit::BadInput;
use crate::job::{self, AsOf, Job, RangeSpec};
use crate::output;
use crate::report::{self, Section};

/// Run a batch job: the analyses of a TOML job file over one store and time
/// range, each written as Parquet, CSV or JSON to
/// `<out>/<job name>/<analysis name>/as_of=<YYYY-MM-DD>/part.<ext>` (one put
/// per file, so a rerun replaces its own outputs and never duplicates them;
/// DuckDB, Polars and Spark reading the analysis folder hive-style get the
/// date as an `as_of` column).
///
/// A failed analysis is logged and reported, and the others still run; the
/// exit code is then 1. A bad job file (unknown keys, bad ranges or
/// durations, bad segment expressions) is reported with file, line, column
/// and a hint, and nothing runs (exit code 2).
///
/// Job file keys: name, data, out, formats (["parquet", "csv", "json"]),
/// range ("last 12 weeks", "last 90 days", "last 3 months", "all") or
/// from / to (dates), as_of ("now", the default; "latest", the end of the
/// data; or a date), tz, threads, cluster (a scheduler's df://host:port: every
/// analysis runs there, see `tenure cluster`); then one [[analysis]] table per analysis with
/// `kind` (retention, ltv, lifecycle, kpi, funnel, abtest, rfm, segment, stickiness, clv), an
/// optional `name`
/// and the options of the subcommand of that name (`start_event` for
/// --start-event, `metrics = [...]` for abtest's --metric, ...). See
/// queries/*.toml.
///
/// Examples:
///
///   tenure run queries/weekly_growth.toml --dry-run
///
///   tenure run queries/weekly_growth.toml --data ./tenure-data --out ./tenure-out --report weekly.html
///
///   tenure run jobs/rfm.toml --as-of 2026-03-31 --out s3://bucket/reports
#[derive(Args)]
pub struct RunArgs {
    /// The job file (TOML).
    pub job: String,
    /// As of this date (inclusive) or instant, `now` or `latest` (the end of
    /// the data); overrides the job's `as_of`.
    #[arg(long, value_name = "WHEN")]
    pub as_of: Option<String>,
    /// Read events from this store instead of the job's `data`.
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Write outputs under this URL instead of the job's `out`.
    #[arg(long, value_name = "URL")]
    pub out: Option<String>,
    /// Validate the job file and print the plan; read and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run every analysis on a Ballista cluster: its scheduler's address
    /// (df://host:port, see `tenure cluster`); overrides the job's
    /// `cluster`. The store must be reachable by the same URL from the
    /// scheduler and every executor; outputs are written from here.
    #[arg(long, value_name = "df://HOST:PORT", env = "TENURE_CLUSTER")]
    pub cluster: Option<String>,
    /// Also write an HTML report of every analysis to this file or URL.
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Write the run's metrics (per analysis: success, seconds, rows; the
    /// job's failures and time) to this file in Prometheus text format,
    /// replacing it whole, failed analyses included.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<std::path::PathBuf>,
}

/// How one analysis went.
struct Outcome {
    name: String,
    kind: &'static str,
    seconds: f64,
    result: Result<(output::Rows, Option<output::Rows>), String>,
    written: Vec<String>,
}

/// Runs the command.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.job)
        .map_err(|e| BadInput(format!("cannot read job file {}: {e}", args.job)))?;
    let mut job = job::parse(&args.job, &text).map_err(|e| {
        BadInput(format!(
            "{} in job file {}:\n{}",
            if e.count == 1 {
                "1 error".to_string()
            } else {
                format!("{} errors", e.count)
            },
            e.file,
            e.text.trim_end()
        ))
    })?;
    if let Some(a) = &args.as_of {
        job.as_of = AsOf::parse(a);
        if let AsOf::At(s) = &job.as_of {
            crate::cmd::common::parse_when(s, job.tz, true).map_err(|_| {
                BadInput(format!(
                    "--as-of `{s}`: expected now, latest, a date YYYY-MM-DD or an RFC 3339 instant"
                ))
            })?;
        }
    }
    if args.data.is_some() {
        job.data = args.data.clone();
    }
    if args.out.is_some() {
        job.out = args.out.clone();
    }
    if args.cluster.is_some() {
        job.cluster = args.cluster.clone();
    }
    let data = job.data.clone().ok_or_else(|| {
        BadInput(format!(
            "job {} names no `data`: add `data = \"<url>\"` or pass --data",
            args.job
        ))
    })?;
    let now = chrono::Utc::now().timestamp_micros();

    if args.dry_run {
        let times = match job.as_of {
            AsOf::Latest => None,
            _ => Some(job::resolve_times(
                &job.range, &job.as_of, job.tz, now, None,
            )?),
        };
        // A malformed cluster address is a mistake of the job, found here.
        crate::cmd::common::remote_of(job.cluster.as_deref())?;
        print!("{}", plan(&job, &data, times));
        println!("dry run: the job file is valid; nothing was read or written");
        return Ok(());
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tenure_engine::table::thread_count(job.threads))
        .enable_all()
        .build()?;
    let max_ts = if job.as_of == AsOf::Latest {
        let events = rt
            .block_on(tenure_engine::Events::open(&data, Default::default()))
            .with_context(|| format!("cannot open {data} to find its latest event"))?;
        events.ts_range.map(|r| r.1)
    } else {
        None
    };
    let (from, to, as_of) = job::resolve_times(&job.range, &job.as_of, job.tz, now, max_ts)?;
    let scope = Scope {
        data: data.clone(),
        threads: job.threads,
        from,
        to,
        tz: job.tz,
        as_of: Some(as_of),
        remote: crate::cmd::common::remote_of(job.cluster.as_deref())?,
    };
    let date = job::local_date(as_of - 1, job.tz).to_string();
    info!(
        job = %job.name,
        data = %data,
        from = %when(from, job.tz),
        to = %when(to, job.tz),
        as_of = %date,
        analyses = job.analyses.len(),
        "job started"
    );
    if job.out.is_none() {
        warn!(
            "the job names no `out` and no --out was given: results go to the report and summary only"
        );
    }

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for a in &job.analyses {
        let span = info_span!("analysis", name = %a.name, kind = a.spec.kind());
        let _enter = span.enter();
        let t0 = Instant::now();
        let mut outcome = Outcome {
            name: a.name.clone(),
            kind: a.spec.kind(),
            seconds: 0.0,
            result: Err(String::new()),
            written: Vec::new(),
        };
        let result = rt.block_on(a.spec.compute(&scope)).and_then(|c| {
            if let Some(out) = &job.out {
                for f in &job.formats {
                    let url = output_url(out, &job.name, &a.name, &date, f.ext());
                    output::put(&url, output::encode(&c.rows, *f)?)?;
                    info!(rows = c.rows.len(), url = %url, "wrote");
                    outcome.written.push(url);
                }
            }
            Ok((c.rows, c.extra))
        });
        outcome.seconds = t0.elapsed().as_secs_f64();
        outcome.result = match result {
            Ok(r) => {
                info!(rows = r.0.len(), seconds = outcome.seconds, "done");
                Ok(r)
            }
            Err(e) => {
                let message = format!("{e:#}");
                error!(error = %message, seconds = outcome.seconds, "failed");
                Err(message)
            }
        };
        outcomes.push(outcome);
    }

    if let Some(p) = &args.metrics {
        let analyses: Vec<crate::metrics::Analysis<'_>> = outcomes
            .iter()
            .map(|o| crate::metrics::Analysis {
                name: &o.name,
                kind: o.kind,
                seconds: o.seconds,
                rows: o.result.as_ref().ok().map(|r| r.0.len()),
            })
            .collect();
        let text = crate::metrics::job(&job.name, &analyses, started.elapsed().as_secs_f64());
        crate::metrics::write(p, &text)?;
    }
    if let Some(url) = &args.report {
        let sections: Vec<Section> = job
            .analyses
            .iter()
            .zip(&outcomes)
            .map(|(a, o)| Section {
                name: a.name.clone(),
                kind: a.spec.report_kind(),
                detail: a.spec.detail(),
                result: o.result.as_ref().map(|r| r.0.clone()).map_err(Clone::clone),
                extra: o.result.as_ref().ok().and_then(|r| r.1.clone()),
            })
            .collect();
        let meta = vec![
            ("job".to_string(), job.name.clone()),
            ("data".to_string(), data.clone()),
            (
                "range".to_string(),
                range_text(&job.range, from, to, job.tz),
            ),
            ("as of".to_string(), date.clone()),
            (
                "generated".to_string(),
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            ),
        ];
        let html = report::page(&format!("{} — {date}", job.name), &meta, &sections);
        match output::put(url, html.into_bytes()) {
            Ok(()) => info!(url = %url, "report written"),
            Err(e) => {
                error!(error = %format!("{e:#}"), "report failed");
                print!(
                    "{}",
                    summary(&job, &outcomes, started.elapsed().as_secs_f64())
                );
                return Err(e.context(format!("cannot write the report to {url}")));
            }
        }
    }

    print!(
        "{}",
        summary(&job, &outcomes, started.elapsed().as_secs_f64())
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name.as_str())
        .collect();
    if !failed.is_empty() {
        // A runtime failure (exit 1) whatever the cause: the job file was valid.
        anyhow::bail!(
            "{} of {} analyses failed: {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// `<out>/<job>/<analysis>/as_of=<as-of date>/part.<ext>`.
pub fn output_url(out: &str, job: &str, analysis: &str, date: &str, ext: &str) -> String {
    format!(
        "{}/{job}/{analysis}/as_of={date}/part.{ext}",
        out.trim_end_matches('/')
    )
}

fn when(t: Option<i64>, tz: chrono_tz::Tz) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            use chrono::TimeZone;
            tz.timestamp_micros(t)
                .single()
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
                .unwrap_or_default()
        }
    }
}

fn range_text(range: &RangeSpec, from: Option<i64>, to: Option<i64>, tz: chrono_tz::Tz) -> String {
    let named = match range {
        RangeSpec::All => "all data".to_string(),
        RangeSpec::Last { n, unit } => format!("last {n} {unit:?}s").to_lowercase(),
        RangeSpec::Between { .. } => "from/to".to_string(),
    };
    let first = from.map(|t| job::local_date(t, tz).to_string());
    let last = to.map(|t| job::local_date(t - 1, tz).to_string());
    format!(
        "{named} ({} .. {})",
        first.as_deref().unwrap_or("start of data"),
        last.as_deref().unwrap_or("end of data")
    )
}

/// The plan: what will be read, computed and written.
fn plan(job: &Job, data: &str, times: Option<(Option<i64>, Option<i64>, i64)>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "job {}", job.name);
    let _ = writeln!(s, "  data     {data}");
    if let Some(c) = &job.cluster {
        let _ = writeln!(s, "  cluster  {c}");
    }
    let date = match times {
        Some((from, to, as_of)) => {
            let _ = writeln!(s, "  range    {}", range_text(&job.range, from, to, job.tz));
            let date = job::local_date(as_of - 1, job.tz).to_string();
            let _ = writeln!(s, "  as of    {date} ({})", job.tz);
            date
        }
        None => {
            let _ = writeln!(
                s,
                "  range    {}",
                match &job.range {
                    RangeSpec::All => "all data".to_string(),
                    RangeSpec::Last { n, unit } => format!("last {n} {unit:?}s").to_lowercase(),
                    RangeSpec::Between { from, to } => format!(
                        "{} .. {}",
                        from.as_deref().unwrap_or("start of data"),
                        to.as_deref().unwrap_or("end of data")
                    ),
                }
            );
            let _ = writeln!(
                s,
                "  as of    latest: the day of the newest event ({})",
                job.tz
            );
            "<as-of date>".to_string()
        }
    };
    let formats: Vec<&str> = job.formats.iter().map(|f| f.ext()).collect();
    let _ = writeln!(
        s,
        "  outputs  {}",
        match &job.out {
            Some(out) => format!("{} under {out}", formats.join(", ")),
            None => "none (no `out`; pass --out)".to_string(),
        }
    );
    let _ = writeln!(s, "  analyses {}", job.analyses.len());
    for (i, a) in job.analyses.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {}. {} ({}) {}",
            i + 1,
            a.name,
            a.spec.kind(),
            a.spec.detail()
        );
        if let Some(out) = &job.out {
            for f in &formats {
                let _ = writeln!(
                    s,
                    "       -> {}",
                    output_url(out, &job.name, &a.name, &date, f)
                );
            }
        }
    }
    s
}

fn summary(job: &Job, outcomes: &[Outcome], seconds: f64) -> String {
    let ok = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let files: usize = outcomes.iter().map(|o| o.written.len()).sum();
    let mut s = format!(
        "job {}: {} analyses, {ok} ok, {} failed, {files} files written, {seconds:.2}s\n",
        job.name,
        outcomes.len(),
        outcomes.len() - ok
    );
    let w = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for o in outcomes {
        match &o.result {
            Ok((rows, _)) => {
                let _ = writeln!(
                    s,
                    "  {:<w$}  {:<9}  ok      {:>7} rows  {:>6.2}s",
                    o.name,
                    o.kind,
                    rows.len(),
                    o.seconds
                );
            }
            Err(e) => {
                let first = e.lines().next().unwrap_or_default();
                let _ = writeln!(s, "  {:<w$}  {:<9}  FAILED  {first}", o.name, o.kind);
            }
        }
    }
    s
}
