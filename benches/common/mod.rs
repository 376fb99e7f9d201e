//! Shared by the engine's criterion benches: a generated store in memory,
//! opened with 2 threads.

use tenure_engine::{Events, OpenOptions};
use tenure_ingest::generator::GenSpec;
use tenure_ingest::generator_write::ingest_generated;
use tenure_ingest::{IngestOptions, Store};

/// `tenure gen --users N --days 90 --seed 5` ingested into `url` (a
/// `memory://` store), a 2-thread runtime, the opened events and the number
/// of events written.
pub fn memory_store(url: &str, users: u64) -> (tokio::runtime::Runtime, Events, u64) {
    let spec = GenSpec {
        users,
        days: 90,
        seed: 5,
        start_day: GenSpec::DEFAULT_START,
    };
    let summary = ingest_generated(
        &spec,
        Store::open(url).unwrap(),
        IngestOptions::default(),
        None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events = rt
        .block_on(Events::open(
            url,
            OpenOptions {
                threads: 2,
                ..Default::default()
            },
        ))
        .unwrap();
    (rt, events, summary.counters.written)
}
