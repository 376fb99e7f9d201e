//! Tenure's analytics engine on DataFusion.
//!
//! # The path of a query
//!
//! ```text
//! tenure retention --period week          SELECT * FROM retention('week') r JOIN ...
//!   cli: parse flags into                    sql: RetentionFunction parses the arguments
//!   request::RetentionOptions (the struct             │
//!   job files share) and analysis::Scope;             │
//!   opts.compute(&scope): open the store,             │
//!   .spec(&events, tz, as_of)                         │
//!         ▼                                           ▼
//!   RetentionSpec ───────────────────► RetentionFold::new(events, spec)
//!                                              │  fold::plan
//!                                              ▼
//!   FoldExec<RetentionFold>   1 partition: merges the key ranges' partial results,
//!         │                   emits RecordBatches of retention::schema()
//!   KeyScanExec               N partitions = user-key ranges; reads the committed
//!                             Parquet pages of its range, time range and conditions
//!                             pushed down (table::Events, fold::scan)
//!         │
//!         ▼
//!   analysis::Answer: the batches with their declared schema; the cli prints
//!   them as a table/CSV/JSON, writes Parquet from them, draws charts from
//!   their typed columns; sql: DataFusion filters, joins, aggregates on top
//!   (the table function's scan returns the plan, lazily)
//! ```
//!
//! [`Events`] opens the store's newest committed manifest (never a directory
//! listing) and registers its files as the table `events`. Each per-user
//! analysis is one [`fold::UserFold`] implementation plus one request type:
//! retention ([`retention::RetentionFold`]), LTV, lifecycle counts and stages,
//! KPIs (one pass), stickiness, funnels ([`funnel::FunnelFold`], reading users
//! users whole: [`fold::FoldInput::grouped`]) and the buyers' and per-user
//! facts behind segments ([`userstats`]), the other segment features (latest
//! property values, event counts in a window: [`features`]) and A/B
//! assignment and metrics ([`abtest`]) run on it. `KeyScanExec` is the only
//! direct reader of the stored files; an A/B readout's restriction to exposed
//! users is an input of it ([`Events::since`]), not a function in the session.
//!
//! What each analysis is asked is one struct in [`request`] (`RetentionOptions`,
//! `FunnelOptions`, ...): the flags of its subcommand (clap), the keys of its
//! table in a job file (serde), the checks that need no data, and the spec
//! the analysis runs with. Its `compute` ([`analysis`]) runs it over a
//! [`analysis::Scope`] (store, range, zone, as-of) and answers record batches
//! of a declared schema: the subcommand, `tenure run` and the report all call
//! it, so the CLI only parses arguments and prints.
//!
//! A/B readouts ([`abtest::AbtestRequest`]: arms, exposure, per-metric
//! statistics, readout rows as a batch of [`abtest::readout::schema`]) and
//! RFM segments ([`rfm::RfmRequest`]) are typed requests of the engine too;
//! `segment()`, `rfm()` and `abtest()` in SQL are one plan node holding their
//! request (`sql::FeatureRowsExec`), run when the query runs.
//!
//! Plans travel: every Tenure node encodes into DataFusion's protobuf plan
//! with [`codec::TenureCodec`] (what it is made of: files, conditions as
//! protobuf expressions, fold parameters, key ranges; never process-local
//! state), and decodes in any session that has the store registered, with
//! identical results (tests in `codec.rs`).
//!
//! Errors: a request the user got wrong is [`EngineError::BadRequest`] (or a
//! DataFusion planning error, exit code 2); a store that cannot be read or
//! contradicts itself is an execution error (exit code 1).
#![deny(missing_docs)]

pub mod abtest;
pub mod activity;
pub mod analysis;
pub mod breakdown;
pub mod calendar;
pub mod clv;
pub mod codec;
mod error;
pub mod features;
pub mod fold;
pub mod funnel;
pub mod identity;
pub mod json;
pub mod kpi;
pub mod lifecycle;
pub mod ltv;
mod par;
pub mod paths;
pub mod remote;
pub mod request;
pub mod retention;
pub mod rfm;
pub mod sql;
pub mod stickiness;
mod stored;
pub mod table;
pub mod user_ids;
pub mod userstats;

#[cfg(test)]
mod test_store;

pub use error::{EngineError, Result};
pub use table::{Events, OpenOptions};
