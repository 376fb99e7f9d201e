//! The lease of a running transaction on its staging prefix.
//!
//! A transaction writes `_tenure/staging/<txn>/_lease` before it stages anything
//! and a background thread rewrites it every [`LEASE_REFRESH`] while the
//! transaction is open, however long its input takes to read or its uploads
//! take to finish. Recovery (see [`crate::recover`]) removes a transaction's
//! uncommitted staging only once its lease is older than [`LEASE_EXPIRY`], so
//! it never deletes the files of a live writer. Should a writer be stopped
//! longer than that (a suspended process), its commit still finds out: it checks
//! that every staged file it lists exists before it writes the manifest.

use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use tenure_schema::STAGING_PREFIX;

use crate::IngestError;
use crate::io::Io;

/// How often a running transaction rewrites its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(60);

/// Age after which a lease is expired: its transaction is gone (crashed or
/// killed) and recovery may remove its staging.
pub const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// File name of the lease inside a transaction's staging prefix.
pub const LEASE_FILE: &str = "_lease";

/// Where transaction `txn` keeps its lease.
pub fn lease_path(txn: &str) -> String {
    format!("{STAGING_PREFIX}/{txn}/{LEASE_FILE}")
}

/// A held lease: refreshed until dropped or [`Lease::release`]d.
pub struct Lease {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease of `txn` (one synchronous write, so it exists before any
    /// staged file does) and starts refreshing it every `refresh`.
    pub fn take(io: &Io, txn: &str, refresh: Duration) -> Result<Self, IngestError> {
        let path = lease_path(txn);
        io.put(&path, content())?;
        let (stop, stopped) = channel::<()>();
        let io = io.clone();
        let thread = std::thread::Builder::new()
            .name("tenure-lease".into())
            .spawn(move || {
                // Disconnection (the sender dropped) is the signal to stop.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(refresh)
                {
                    // A failed refresh is retried at the next tick; the expiry
                    // is many ticks long.
                    let _ = io.put(&path, content());
                }
            })
            .map_err(|e| IngestError::Staging(format!("cannot start the lease thread: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops refreshing (the lease file is left for whoever removes the
    /// staging prefix). Waits for a refresh in flight, so none lands later.
    pub fn release(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

fn content() -> Vec<u8> {
    format!(
        "{{\"refreshed_at\":\"{}\",\"pid\":{}}}\n",
        chrono::Utc::now().to_rfc3339(),
        std::process::id()
    )
    .into_bytes()
}
