//! The `tenure` command: a thin layer that parses arguments, validates them into
//! a plan, calls the library crates and maps their errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).

mod cmd;
mod exit;
mod job;
mod output;
mod progress;
mod report;

use clap::{Parser, Subcommand};

/// Tenure: retention analytics on a bucket of Parquet.
///
/// Ingest events into date-partitioned Parquet on object storage, then ask who
/// came back, where buyers drop out, and who your best customers are.
///
/// Quick start:
///
///   tenure gen --users 10000 --days 60 --to ./store
///
///   tenure ingest events.ndjson --to ./store
#[derive(Parser)]
#[command(name = "tenure", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Ingest(cmd::ingest::IngestArgs),
    Compact(cmd::compact::CompactArgs),
    Repair(cmd::repair::RepairArgs),
    Gen(cmd::generate::GenArgs),
    Retention(Box<cmd::retention::RetentionArgs>),
    Ltv(Box<cmd::ltv::LtvArgs>),
    Stickiness(Box<cmd::stickiness::StickinessArgs>),
    Lifecycle(Box<cmd::lifecycle::LifecycleArgs>),
    Kpi(Box<cmd::kpi::KpiArgs>),
    Funnel(Box<cmd::funnel::FunnelArgs>),
    Sql(Box<cmd::sql::SqlArgs>),
    Segment(Box<cmd::segment::SegmentArgs>),
    Rfm(Box<cmd::segment::RfmArgs>),
    Abtest(Box<cmd::abtest::AbtestArgs>),
    Serve(Box<tenure_server::serve_cmd::ServeArgs>),
    Run(Box<cmd::run::RunArgs>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(a) => cmd::ingest::run(a),
        Command::Compact(a) => cmd::compact::run(a),
        Command::Repair(a) => cmd::repair::run(a),
        Command::Gen(a) => cmd::generate::run(a),
        Command::Retention(a) => cmd::retention::run(*a),
        Command::Ltv(a) => cmd::ltv::run(*a),
        Command::Stickiness(a) => cmd::stickiness::run(*a),
        Command::Lifecycle(a) => cmd::lifecycle::run(*a),
        Command::Kpi(a) => cmd::kpi::run(*a),
        Command::Funnel(a) => cmd::funnel::run(*a),
        Command::Sql(a) => cmd::sql::run(*a),
        Command::Segment(a) => cmd::segment::run(*a),
        Command::Rfm(a) => cmd::segment::run_rfm(*a),
        Command::Abtest(a) => cmd::abtest::run(*a),
        Command::Run(a) => cmd::run::run(*a),
        Command::Serve(a) => tenure_server::serve_cmd::run(*a)
            .map(|r| {
                eprintln!(
                    "stopped; received {}, acknowledged {}, rejected {}, duplicates {}, committed {}",
                    r.received, r.acked, r.rejected, r.duplicates, r.flushed
                )
            })
            .map_err(Into::into),
    };
    std::process::exit(exit::report(result));
}
