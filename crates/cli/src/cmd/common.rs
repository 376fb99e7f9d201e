//! Arguments every analysis shares, and turning them into engine options.

use chrono::TimeZone;
use chrono_tz::Tz;
use clap::Args;
use tenure_engine::Events;

use crate::exit::BadInput;
use crate::output::OutputFormat;

/// Where the data is, which part of it, and how to print the answer.
#[derive(Args, Debug, Clone)]
pub struct AnalysisArgs {
    /// Store URL (a local directory, file://, memory://, s3://, gs://, az://).
    #[arg(long, value_name = "URL")]
    pub data: String,
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
    /// Time zone of days, weeks and months (IANA name).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Worker threads (default: TENURE_THREADS, else all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run on a Ballista cluster: its scheduler's address (df://host:port,
    /// see `tenure cluster`). The store must be reachable by the same --data
    /// URL from the scheduler and every executor.
    #[arg(long, value_name = "df://HOST:PORT", env = "TENURE_CLUSTER")]
    pub cluster: Option<String>,
}

/// Parses a date (local midnight in `tz`, or the next midnight when `end_of_day`)
/// or an RFC 3339 instant, to UTC microseconds.
pub fn parse_when(s: &str, tz: Tz, end_of_day: bool) -> anyhow::Result<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end_of_day {
            d + chrono::Duration::days(1)
        } else {
            d
        };
        let t = tz
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .ok_or_else(|| BadInput(format!("{s} has no midnight in {tz}")))?;
        return Ok(t.timestamp_micros());
    }
    tenure_ingest::timestamp::parse_text(s).ok_or_else(|| {
        BadInput(format!(
            "`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 instant"
        ))
        .into()
    })
}

pub use tenure_engine::analysis::Scope;

/// The cluster at `cluster` (a `--cluster` address), if any; a malformed
/// address is bad input.
pub fn remote_of(cluster: Option<&str>) -> anyhow::Result<Option<tenure_engine::remote::Remote>> {
    let Some(c) = cluster else {
        return Ok(None);
    };
    let remote = tenure_cluster::remote(c).map_err(|e| BadInput(e.to_string()))?;
    if let Ok(limit) = std::env::var(CLUSTER_TIMEOUT) {
        deadline(c, &limit)?;
    }
    Ok(Some(remote))
}

/// The environment variable that bounds how long a command that runs on a
/// cluster may take in all: a duration (`90s`, `30m`, `2h`). A cluster that
/// lost an executor can keep a job waiting; past the limit the command
/// stops with an error (exit code 1) instead of waiting on. It bounds the
/// whole command, so set it above the longest query expected.
pub const CLUSTER_TIMEOUT: &str = "TENURE_CLUSTER_TIMEOUT";

/// Starts the watch that ends the process once `limit` has passed (once per
/// process, however many times a cluster is named).
fn deadline(cluster: &str, limit: &str) -> anyhow::Result<()> {
    let micros = tenure_engine::funnel::syntax::parse_window(limit)
        .ok()
        .filter(|&m| m > 0)
        .ok_or_else(|| {
            BadInput(format!(
                "{CLUSTER_TIMEOUT}={limit}: expected a duration such as 90s, 30m or 2h"
            ))
        })?;
    static STARTED: std::sync::Once = std::sync::Once::new();
    let (cluster, limit) = (cluster.to_string(), limit.to_string());
    STARTED.call_once(move || {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_micros(micros as u64));
            eprintln!(
                "error: the command on the cluster at {cluster} did not finish within \
                 {limit} ({CLUSTER_TIMEOUT}; output so far is incomplete): a job may \
                 be waiting on a lost executor (see the scheduler's log), or the query \
                 needs a higher limit"
            );
            std::process::exit(1);
        });
    });
    Ok(())
}

impl AnalysisArgs {
    /// The scope of these arguments, with an `--as-of` (a date, inclusive, or
    /// an instant).
    pub fn scope(&self, as_of: Option<&str>) -> anyhow::Result<Scope> {
        let tz = self.tz()?;
        let (from, to) = self.range(tz)?;
        Ok(Scope {
            data: self.data.clone(),
            threads: self.threads,
            from,
            to,
            tz,
            as_of: as_of.map(|s| parse_when(s, tz, true)).transpose()?,
            remote: self.remote()?,
        })
    }

    fn range(&self, tz: Tz) -> anyhow::Result<(Option<i64>, Option<i64>)> {
        let from = self
            .from
            .as_deref()
            .map(|s| parse_when(s, tz, false))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|s| parse_when(s, tz, true))
            .transpose()?;
        if let (Some(a), Some(b)) = (from, to)
            && b <= a
        {
            return Err(BadInput("--to is not after --from".into()).into());
        }
        Ok((from, to))
    }

    /// The cluster the plans run on (`--cluster`), if any.
    pub fn remote(&self) -> anyhow::Result<Option<tenure_engine::remote::Remote>> {
        remote_of(self.cluster.as_deref())
    }

    /// The time zone.
    pub fn tz(&self) -> anyhow::Result<Tz> {
        Ok(tenure_engine::calendar::parse_tz(&self.tz)?)
    }

    /// Opens the store with the range and threads asked for.
    pub async fn open(&self) -> anyhow::Result<Events> {
        Ok(self.scope(None)?.open().await?)
    }

    /// A tokio runtime sized for the analysis.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(tenure_engine::table::thread_count(self.threads))
            .enable_all()
            .build()?)
    }
}
