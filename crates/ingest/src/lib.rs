//! Tenure's ingest: decode events from NDJSON, CSV, Parquet or Segment-style
//! messages into Arrow, validate them, and commit them as date-partitioned,
//! sorted, zstd Parquet on any object store.
//!
//! A run is one transaction ([`Ingest`]): files are staged under
//! `_tenure/staging/<txn>/`, then one manifest version lists them (a conditional
//! put, so concurrent writers never lose a commit), then they move to
//! `events/date=YYYY-MM-DD/`. A crash at any point leaves nothing visible that was
//! not committed; the next run finishes or removes what is left ([`recover`]).
//! Inputs are recorded by content hash, so ingesting the same input twice adds
//! nothing.
#![deny(missing_docs)]

mod columns;
mod commit;
pub mod compact;
mod deadletter;
pub mod decimal;
pub mod decode;
mod error;
pub mod generator;
pub mod generator_write;
pub mod ids;
pub mod io;
pub mod lease;
pub mod manifest;
mod parallel;
mod parquet_out;
pub mod recover;
mod seen;
mod session;
pub mod timestamp;
pub mod users;
pub mod validate;
mod writer;

pub use commit::fault_point;
pub use compact::{CompactSummary, compact, compact_retaining};
pub use error::IngestError;
pub use parquet_out::{sort_batch, writer_properties};
pub use session::{Counters, Format, Ingest, IngestOptions, Progress, Summary, hash_file};
pub use tenure_store::Store;
