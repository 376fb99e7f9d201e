//! Tenure's analytics engine on DataFusion.
//!
//! The events table is registered from the committed manifest ([`Events`]); the
//! per-user analyses (retention, lifecycle, KPIs) share one kernel
//! ([`activity`]) that folds a single scan into bitmaps indexed by the dense
//! integer `user_key`, instead of a hash `GROUP BY` on users.
#![deny(missing_docs)]

pub mod abtest;
pub mod activity;
pub mod breakdown;
pub mod calendar;
mod error;
pub mod features;
pub mod fold;
pub mod funnel;
pub mod kpi;
pub mod lifecycle;
pub mod ltv;
mod par;
pub mod retention;
pub mod sql;
pub mod stickiness;
mod stored;
pub mod table;
pub mod userstats;

pub use error::{EngineError, Result};
pub use table::{Events, OpenOptions};
