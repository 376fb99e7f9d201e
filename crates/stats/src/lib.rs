//! A/B test statistics for Tenure: the numbers behind `tenure abtest`.
//!
//! The formulas follow GrowthBook's published stats engine (gbstats), so its
//! published test figures are a check on this crate, and an experiment read in
//! Tenure gives the same answer as in GrowthBook:
//!
//! - [`t_test`]: Welch's unpooled t-test on the relative lift (delta-method
//!   variance) or the absolute difference, two- or one-sided;
//! - [`sequential_test`]: asymptotic confidence sequences, valid under peeking;
//! - [`bayesian`]: normal posterior of the effect, chance to win and risk;
//! - [`check_srm`]: sample-ratio mismatch by chi-square against the configured split;
//! - [`adjust_p_values`]: Holm–Bonferroni and Benjamini–Hochberg;
//! - [`readout`]: all of the above per metric and arm, with a sentence per row;
//! - [`parse_summary`]: the `--from-summary` CSV and JSON forms;
//! - [`clv`]: predictive customer lifetime value (BG/NBD and Gamma-Gamma).
//!
//! The crate is pure Rust with no engine dependency, so it builds and tests in
//! seconds. Nothing it returns is NaN or infinite: an arm where a test is undefined
//! (no users, one user, zero variance, zero control mean) yields a typed
//! [`NoResult`] with the reason.

#![deny(missing_docs)]

mod bayesian;
pub mod clv;
mod config;
mod correction;
mod dist;
mod effect;
mod error;
mod frequentist;
mod json;
mod parse;
mod readout;
mod sequential;
mod srm;
mod summary;
mod verdict;

pub use bayesian::{BayesianEstimate, GaussianPrior, bayesian};
pub use config::{Alpha, Difference, Sided, TuningParameter, parse_split};
pub use correction::{Correction, adjust_p_values};
pub use effect::{Estimate, Interval, NoResult, Role};
pub use error::{ParseError, StatsError};
pub use frequentist::t_test;
pub use parse::{parse_summary, parse_summary_csv, parse_summary_json};
pub use readout::{ArmReadout, MetricReadout, MetricSummary, ReadoutConfig, readout};
pub use sequential::sequential_test;
pub use srm::{SRM_MIN_USERS, SRM_THRESHOLD, SrmCheck, SrmStatus, check_srm};
pub use summary::{ArmData, ArmSummary, MetricKind};
