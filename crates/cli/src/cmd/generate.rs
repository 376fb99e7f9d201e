//! `tenure gen`: deterministic e-commerce events.

use std::fs::File;

use anyhow::Context;
use clap::Args;
use tenure_ingest::generator::GenSpec;
use tenure_ingest::generator_write::{ingest_generated, write_csv, write_ndjson, write_parquet};
use tenure_ingest::{IngestOptions, Store};

use crate::exit::BadInput;
use crate::progress::count_bar;

/// Generate realistic e-commerce events (signup, view_item, add_to_cart,
/// checkout, purchase with revenue; an A/B `variant` with a small true effect;
/// a `country`), with decaying return rates. The output depends only on the
/// arguments.
///
/// A store URL (a directory, s3://, ...) gets a ready, ingested store through the
/// normal ingest path; a file name ending in .ndjson, .csv or .parquet, or `-`
/// (NDJSON on stdout), gets raw events.
///
/// Examples:
///
///   tenure gen --users 100000 --days 90 --to ./store
///
///   tenure gen --users 1000000 --days 90 --seed 7 --to events.ndjson
#[derive(Args)]
pub struct GenArgs {
    /// Number of users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Number of days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day (YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-01")]
    pub start: String,
    /// Output: store URL, or a .ndjson/.csv/.parquet file, or `-`.
    #[arg(long, value_name = "URL|FILE")]
    pub to: String,
}

/// Runs the command.
pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let start = tenure_ingest::timestamp::parse_text(&args.start)
        .filter(|t| t % tenure_ingest::timestamp::DAY_MICROS == 0)
        .ok_or_else(|| {
            BadInput(format!(
                "--start must be a date (YYYY-MM-DD), got {}",
                args.start
            ))
        })?;
    if args.days == 0 || args.users == 0 {
        return Err(BadInput("--users and --days must be at least 1".into()).into());
    }
    if args.users > u32::MAX as u64 {
        return Err(BadInput("--users must fit in 32 bits".into()).into());
    }
    let spec = GenSpec {
        users: args.users,
        days: args.days,
        seed: args.seed,
        start_day: start / tenure_ingest::timestamp::DAY_MICROS,
    };
    let end = (spec.start_day + spec.days as i64 + 1) * tenure_ingest::timestamp::DAY_MICROS;
    if end > chrono::Utc::now().timestamp_micros() + tenure_ingest::timestamp::DAY_MICROS {
        return Err(BadInput(format!(
            "{} days from {} reach into the future; ingest rejects future events, so pass an earlier --start",
            args.days, args.start
        ))
        .into());
    }
    let lower = args.to.to_ascii_lowercase();
    let started = std::time::Instant::now();
    let n = if args.to == "-" {
        write_ndjson(&spec, std::io::stdout().lock())?
    } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") || lower.ends_with(".json") {
        write_ndjson(
            &spec,
            File::create(&args.to).with_context(|| format!("cannot create {}", args.to))?,
        )?
    } else if lower.ends_with(".csv") {
        write_csv(
            &spec,
            File::create(&args.to).with_context(|| format!("cannot create {}", args.to))?,
        )?
    } else if lower.ends_with(".parquet") {
        write_parquet(
            &spec,
            File::create(&args.to).with_context(|| format!("cannot create {}", args.to))?,
        )?
    } else {
        let store = Store::open(&args.to)?;
        // About eleven events per user over 90 days; the bar is a guide, not a promise.
        let bar = count_bar(args.users * 11 * args.days.min(90) as u64 / 90, "gen");
        let b = bar.clone();
        let summary = ingest_generated(
            &spec,
            store,
            IngestOptions::default(),
            Some(Box::new(move |n| b.inc(n))),
        );
        bar.finish_and_clear();
        let summary = summary?;
        crate::cmd::ingest::print_summary(&summary, false)?;
        return Ok(());
    };
    eprintln!(
        "generated {n} events for {} users over {} days in {:.2}s -> {}",
        args.users,
        args.days,
        started.elapsed().as_secs_f64(),
        args.to
    );
    Ok(())
}
