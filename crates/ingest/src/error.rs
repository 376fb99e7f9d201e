//! Errors of the ingest crate.

/// What can go wrong while ingesting, committing or compacting.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] tenure_store::StoreError),
    /// An input could not be read.
    #[error("cannot read {input}: {source}")]
    Input {
        /// The input's name.
        input: String,
        /// Why.
        source: std::io::Error,
    },
    /// The input (or the arguments) are wrong as a whole, not just one record.
    #[error("{0}")]
    BadInput(String),
    /// More records were rejected than `--max-bad` allows.
    #[error(
        "{rejected} records rejected, more than --max-bad {max_bad}; nothing was committed (see {dead_letter})"
    )]
    TooManyBad {
        /// Rejected records.
        rejected: u64,
        /// The limit.
        max_bad: u64,
        /// Where the rejects were written.
        dead_letter: String,
    },
    /// The store holds something Tenure cannot read.
    #[error("corrupt store {url}: {message}")]
    Corrupt {
        /// The store.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Reading or writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The event ids seen in this run could not be spilled to (or read back
    /// from) a temporary file.
    #[error(
        "cannot spill event ids to a temporary file (set TMPDIR to a directory with room): {0}"
    )]
    Spill(std::io::Error),
    /// Another writer committed the same input at the same time.
    #[error("{0}")]
    Conflict(String),
    /// This transaction's staging could not be kept: a staged file is gone
    /// before the commit, or the lease thread could not start.
    #[error("{0}")]
    Staging(String),
}

impl IngestError {
    /// True when the user's input or arguments are at fault (exit code 2), false
    /// for runtime failures (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Store(tenure_store::StoreError::BadUrl { .. })
                | Self::Input { .. }
                | Self::BadInput(_)
                | Self::TooManyBad { .. }
        )
    }
}
