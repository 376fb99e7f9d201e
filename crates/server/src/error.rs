//! Errors of the server crate (start-up and shutdown; request errors are HTTP
//! responses, not values of this type).

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot work.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] tenure_store::StoreError),
    /// The ingest path refused to start (for example declared properties that
    /// differ from the store's).
    #[error(transparent)]
    Ingest(#[from] tenure_ingest::IngestError),
    /// The write-ahead log directory could not be used.
    #[error("write-ahead log {path}: {source}")]
    Wal {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Events acknowledged before shutdown could not be committed; they stay in
    /// the WAL and are committed at the next start.
    #[error(
        "shut down with {segments} WAL segment(s) not committed (kept for the next start): {message}"
    )]
    Uncommitted {
        /// Segments left.
        segments: usize,
        /// The last commit error.
        message: String,
    },
}

impl ServerError {
    /// True when the user's configuration is at fault (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Config(_))
            || matches!(self, Self::Ingest(e) if e.is_bad_input())
            || matches!(self, Self::Store(tenure_store::StoreError::BadUrl { .. }))
    }
}
