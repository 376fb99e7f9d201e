//! Exit codes and error reporting: the cause chain, then a hint where one helps.

use std::io::ErrorKind;

/// Errors that mean "the input or the arguments are wrong" (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Prints an error and returns the process exit code.
pub fn report(result: anyhow::Result<()>) -> i32 {
    let Err(err) = result else { return 0 };
    // A closed pipe (`tenure ... | head`) is a normal way to stop reading.
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
    }) {
        return 0;
    }
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if is_bad_input(&err) { 2 } else { 1 }
}

fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<BadInput>().is_some()
            || c.downcast_ref::<tenure_ingest::IngestError>()
                .is_some_and(|e| e.is_bad_input())
            || c.downcast_ref::<tenure_schema::ConfigError>().is_some()
            || c.downcast_ref::<tenure_stats::StatsError>().is_some()
            || c.downcast_ref::<tenure_engine::EngineError>()
                .is_some_and(|e| e.is_bad_request())
            || c.downcast_ref::<tenure_server::ServerError>()
                .is_some_and(|e| e.is_bad_input())
            || c.downcast_ref::<tenure_store::StoreError>()
                .is_some_and(|e| matches!(e, tenure_store::StoreError::BadUrl { .. }))
            // DataFusion's kind, also when a planning error surfaces while a
            // query runs (a table function's request checked against data).
            || c.downcast_ref::<datafusion::error::DataFusionError>()
                .is_some_and(|e| {
                    matches!(
                        e.find_root(),
                        datafusion::error::DataFusionError::Plan(_)
                            | datafusion::error::DataFusionError::SchemaError(..)
                    )
                })
    })
}
