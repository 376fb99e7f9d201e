//! Tenure's event model, shared by every crate that reads or writes events.
//!
//! The column names and types here are a contract: ingest writes them, the engine
//! reads them, and DuckDB or Spark users read the same Parquet files directly. The
//! manifest format (which files are committed) lives here for the same reason.
#![deny(missing_docs)]

mod config;
mod event;
pub mod identity;
mod manifest;

pub use config::{Config, ConfigError, IngestConfig, Moment, PropertyType};
pub use event::{
    DICTIONARY_COLUMNS, DeclaredProperty, REVENUE_PRECISION, REVENUE_SCALE, columns,
    dictionary_type, event_schema, stored_schema,
};
pub use manifest::{
    CACHE_PREFIX, CHECKPOINT_INTERVAL, CheckpointHint, Delta, FileEntry, IdentityEntry, IdsEntry,
    LogEntry, MANIFEST_PREFIX, RETIRED_PREFIX, RetiredFile, STAGING_PREFIX, Snapshot, SourceEntry,
    StoreLayout, USERS_PREFIX, UsersEntry, apply_deltas, apply_patch,
};
