//! `tenure-server`: the HTTP ingest service as a standalone process (the same
//! library `tenure serve` calls). Prints `listening on http://ADDR` once bound;
//! SIGTERM or Ctrl-C stop it gracefully (flush and commit).

use std::process::ExitCode;

use clap::Parser;
use tenure_server::serve_cmd::{ServeArgs, run};

/// Segment-compatible HTTP ingest into a Tenure store (same as `tenure serve`).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
    /// Log format on stderr (one line per request; `RUST_LOG` filters, `info`
    /// by default).
    #[arg(long, value_enum, default_value = "text")]
    log_format: tenure_server::logs::LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tenure_server::logs::init(cli.log_format, "info");
    match run(cli.args) {
        Ok(r) => {
            eprintln!(
                "tenure-server: stopped; received {}, acknowledged {}, rejected {}, duplicates {}, committed {}",
                r.received, r.acked, r.rejected, r.duplicates, r.flushed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tenure-server: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
