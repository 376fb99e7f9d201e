//! The process's logs on stderr, for `tenure` (every command) and
//! `tenure-server`: `--log-format text|json`, and `RUST_LOG` choosing what is
//! logged (`info`, `warn,tenure_server=debug`, ...; tracing's target syntax).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// How logs are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with key=value fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`).
    Json,
}

/// What is logged: `RUST_LOG` when set and valid, else `default` (a bad
/// `RUST_LOG` is reported and the default used).
pub fn filter(rust_log: Option<&str>, default: &str) -> (Targets, Option<String>) {
    let fallback = || default.parse::<Targets>().expect("a valid default");
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (fallback(), None),
        Some(spec) => match spec.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                fallback(),
                Some(format!(
                    "RUST_LOG={spec} is not a filter ({e}); logging `{default}` (examples: info, warn,tenure_server=debug)"
                )),
            ),
        },
    }
}

/// Installs the log subscriber (once per process; later calls do nothing).
pub fn init(format: LogFormat, default: &str) {
    let (targets, warning) = filter(std::env::var("RUST_LOG").ok().as_deref(), default);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(targets))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(targets))
            .try_init(),
    };
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn rust_log_chooses_levels_per_target_and_a_bad_one_falls_back() {
        let (t, w) = filter(Some("warn,tenure_server=debug"), "info");
        assert!(w.is_none());
        assert!(t.would_enable("tenure_server::http", &tracing::Level::DEBUG));
        assert!(!t.would_enable("tenure_engine", &tracing::Level::INFO));
        let (t, w) = filter(None, "info");
        assert!(w.is_none() && t.would_enable("x", &tracing::Level::INFO));
        let (t, w) = filter(Some("info,tenure=loudest"), "warn");
        assert!(w.unwrap().contains("RUST_LOG"));
        assert_eq!(t.default_level(), Some(LevelFilter::WARN));
    }
}
