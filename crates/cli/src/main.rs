//! The `tenure` command: a thin layer that parses arguments, validates them into
//! a plan, calls the library crates and maps their errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).

mod cmd;
mod exit;
mod job;
mod metrics;
mod output;
mod progress;
mod report;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Log format on stderr: text, or one JSON object per line. `RUST_LOG`
    /// chooses what is logged (`info`, `warn,tenure_server=debug`); by default
    /// `info` for `run` and `serve` (one line per analysis or request), `warn`
    /// for the others.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: tenure_server::logs::LogFormat,
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
    Clv(Box<cmd::clv::ClvArgs>),
    Funnel(Box<cmd::funnel::FunnelArgs>),
    Paths(Box<cmd::paths::PathsArgs>),
    Sql(Box<cmd::sql::SqlArgs>),
    SqlServer(Box<cmd::sql_server::SqlServerArgs>),
    Segment(Box<cmd::segment::SegmentArgs>),
    Rfm(Box<cmd::segment::RfmArgs>),
    Abtest(Box<cmd::abtest::AbtestArgs>),
    Serve(Box<tenure_server::serve_cmd::ServeArgs>),
    Run(Box<cmd::run::RunArgs>),
    Cluster(cmd::cluster::ClusterArgs),
    Completions(cmd::completions::CompletionsArgs),
    Man(cmd::completions::ManArgs),
}

/// glibc's malloc hands memory back to the kernel as soon as the top of a
/// heap is free, and grows it again a few pages at a time: an analysis,
/// which allocates and frees batch-sized buffers on every thread, then pays
/// for page faults and cross-CPU TLB flushes each time. A 16 MiB pad keeps
/// the heaps' tops (measured on 9.6M events: segment count -12 %, retention
/// -9 %; on 96M, segment count 1.28-1.75 s -> 0.93 s with peak RSS 286 ->
/// 290-303 MB; 64 MiB was no faster and held 200 MB more). Not for `serve` or `sql-server`,
/// which runs for weeks.
///
/// Setting any of these parameters also turns off glibc's sliding mmap
/// threshold, so buffers over 128 KiB (a funnel's blocks, decoded pages)
/// would each be a fresh `mmap` faulted in page by page and unmapped on
/// free; a 32 MiB threshold (glibc's ceiling for the sliding one) serves
/// them from the heaps instead (funnel by variant on 9.6M events: page
/// faults 83K -> 54K, system time 0.28 -> 0.12 s, -16 % wall time).
fn keep_heap_tops() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a parameter of the allocator; it is called
    // before any other thread exists, and a refusal (return 0) is harmless.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::SqlServer(_) | Command::Cluster(_)
    ) {
        keep_heap_tops();
    }
    let default_logs = match cli.command {
        Command::Run(_) | Command::Serve(_) | Command::SqlServer(_) | Command::Cluster(_) => "info",
        _ => "warn",
    };
    tenure_server::logs::init(cli.log_format, default_logs);
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
        Command::Clv(a) => cmd::clv::run(*a),
        Command::Funnel(a) => cmd::funnel::run(*a),
        Command::Paths(a) => cmd::paths::run(*a),
        Command::Sql(a) => cmd::sql::run(*a),
        Command::SqlServer(a) => cmd::sql_server::run(*a),
        Command::Segment(a) => cmd::segment::run(*a),
        Command::Rfm(a) => cmd::segment::run_rfm(*a),
        Command::Abtest(a) => cmd::abtest::run(*a),
        Command::Run(a) => cmd::run::run(*a),
        Command::Cluster(a) => cmd::cluster::run(a),
        Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        Command::Man(a) => cmd::completions::man(a, Cli::command()),
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
