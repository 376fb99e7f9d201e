//! Test-only helpers shared by the tests of several crates (never published).
//!
//! [`FaultProxy`] is an HTTP/1.1 forwarding proxy on loopback that injects
//! faults into a share of the requests it forwards to an S3-compatible server:
//! dropped connections, lost responses, 500/503 answers, slow answers and
//! connections reset in the middle of a body. Tests point a store at it (an
//! `s3://bucket/prefix?endpoint=<proxy>` URL) to prove that ingest, the server's
//! flush and compaction either retry to success or fail with nothing partial
//! visible.
#![deny(missing_docs)]

mod proxy;

pub use proxy::{Fault, FaultPlan, FaultProxy, ProxyStats};

/// The S3-compatible test server `.ci/test` starts, as `(endpoint, bucket)`, or
/// `None` when `AWS_ENDPOINT` / `TENURE_TEST_S3_BUCKET` are unset (tests then
/// skip, except under `CI`, where a missing server is an error).
pub fn s3_test_server() -> Option<(String, String)> {
    match (
        std::env::var("AWS_ENDPOINT"),
        std::env::var("TENURE_TEST_S3_BUCKET"),
    ) {
        (Ok(endpoint), Ok(bucket)) => Some((endpoint, bucket)),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must provide an S3-compatible server (AWS_ENDPOINT, TENURE_TEST_S3_BUCKET)"
            );
            eprintln!(
                "skipped: set TENURE_TEST_S3_BUCKET and AWS_ENDPOINT to run against an S3 server"
            );
            None
        }
    }
}

/// A store prefix no other test run uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{nanos}-{}-{n}", std::process::id())
}
