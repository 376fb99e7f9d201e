//! Errors for bad input: malformed summary files and impossible configurations.
//!
//! These are the user's mistakes (the CLI maps them to exit code 2). A valid input
//! that simply has no statistical answer, such as an arm where nobody converted, is
//! not an error: it is a [`NoResult`](crate::NoResult) inside a normal readout, so one
//! empty arm never hides the other metrics.

/// Everything that can be wrong with the input to this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A `--from-summary` file could not be read; carries the position.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A setting is outside the range where the statistics mean anything.
    #[error("invalid {setting} {value}: {expected}")]
    InvalidSetting {
        /// Which setting (for example `alpha` or `split`).
        setting: &'static str,
        /// The value as the user gave it.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A metric whose arms cannot be compared (too few, duplicated, mixed shapes).
    #[error("metric `{metric}`: {problem}")]
    InvalidMetric {
        /// The metric's name.
        metric: String,
        /// What is wrong with its arms.
        problem: String,
    },
    /// Per-arm statistics that cannot describe real data.
    #[error("arm `{arm}`: {problem}")]
    InvalidArm {
        /// The arm's name.
        arm: String,
        /// What is impossible about it.
        problem: String,
    },
}

/// A summary file that is not in one of the accepted forms, with the 1-based line
/// and column where reading stopped so the user can jump straight to it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters) where the offending field or token starts.
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            column,
            message: message.into(),
        }
    }
}
