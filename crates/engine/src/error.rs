//! Errors of the engine.

/// What can go wrong while planning or running an analysis.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (unknown event, bad range, bad option).
    #[error("{0}")]
    BadRequest(String),
    /// The store's committed data cannot be read or contradicts itself (an
    /// unreadable file, a key beyond the users dictionary): a runtime failure
    /// (exit code 1), never a smaller answer.
    #[error("{0}")]
    Unreadable(String),
    /// A worker task failed (our bug, or the process is shutting down).
    #[error("{0}")]
    Internal(String),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] tenure_store::StoreError),
    /// DataFusion failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A readout's test settings or numbers are wrong (alpha, split,
    /// control, an arm without users).
    #[error(transparent)]
    Stats(#[from] tenure_stats::StatsError),
    /// Arrow failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl EngineError {
    /// True when the user's request is at fault (exit code 2): a bad request,
    /// a bad store URL, or a DataFusion planning or schema error (looked for
    /// under DataFusion's context and sharing wrappers). Execution errors (a
    /// corrupt or unreadable store) and internal errors are not (exit code 1).
    pub fn is_bad_request(&self) -> bool {
        use datafusion::error::DataFusionError;
        match self {
            Self::BadRequest(_)
            | Self::Stats(_)
            | Self::Store(tenure_store::StoreError::BadUrl { .. }) => true,
            Self::DataFusion(e) => matches!(
                e.find_root(),
                DataFusionError::Plan(_) | DataFusionError::SchemaError(..)
            ),
            _ => false,
        }
    }
}

impl EngineError {
    /// A segment-language error, rendered against its `source` (the caret
    /// under the offending part, the hint), as a bad request.
    pub fn from_dsl(e: tenure_dsl::DslError, source: &str) -> Self {
        let text = e.render(source);
        Self::BadRequest(
            text.strip_prefix("error: ")
                .unwrap_or(&text)
                .trim_end()
                .to_string(),
        )
    }
}

/// Result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
