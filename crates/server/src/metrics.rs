//! Counters and gauges served at `GET /metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Flush latency histogram bucket bounds, seconds.
const FLUSH_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Acknowledgement latency bucket bounds, seconds.
const ACK_BUCKETS: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0];

/// A fixed-bucket histogram of seconds.
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add((secs * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Everything the server counts. Counters only grow; gauges are set.
pub(crate) struct Metrics {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    pub flushed: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub queue_bytes: AtomicU64,
    /// Responses by status: see [`STATUSES`].
    pub responses: [AtomicU64; STATUSES.len()],
    /// Commits that failed since the last one that succeeded.
    pub flush_failing: AtomicU64,
    /// The error of the last failed commit, cleared by a successful one.
    pub last_flush_error: Mutex<Option<String>>,
    pub flush_latency: Histogram,
    pub ack_latency: Histogram,
}

/// The statuses counted apart; every other one is `other`.
const STATUSES: [&str; 11] = [
    "200", "400", "401", "404", "405", "408", "413", "429", "503", "507", "other",
];

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            responses: Default::default(),
            flush_failing: AtomicU64::new(0),
            last_flush_error: Mutex::new(None),
            flush_latency: Histogram::new(&FLUSH_BUCKETS),
            ack_latency: Histogram::new(&ACK_BUCKETS),
        }
    }

    pub(crate) fn response(&self, status: u16) {
        let s = status.to_string();
        let i = STATUSES
            .iter()
            .position(|&k| k == s)
            .unwrap_or(STATUSES.len() - 1);
        self.responses[i].fetch_add(1, Relaxed);
    }

    /// Records how a commit ended, for `/health` and `/metrics`.
    pub(crate) fn flush_outcome(&self, result: Result<(), &str>) {
        let mut last = self
            .last_flush_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                self.flush_failing.store(0, Relaxed);
                *last = None;
            }
            Err(e) => {
                self.flush_failing.fetch_add(1, Relaxed);
                *last = Some(e.to_string());
            }
        }
    }

    /// The last commit error, once commits have failed `times` times in a row.
    pub(crate) fn flush_failing(&self, times: u64) -> Option<String> {
        if self.flush_failing.load(Relaxed) < times {
            return None;
        }
        self.last_flush_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut out,
            "tenure_events_received_total",
            "Messages received in requests with a valid write key.",
            &self.received,
        );
        counter(
            &mut out,
            "tenure_events_acked_total",
            "Messages acknowledged after their WAL fsync (duplicates included).",
            &self.acked,
        );
        counter(
            &mut out,
            "tenure_events_rejected_total",
            "Messages rejected as invalid.",
            &self.rejected,
        );
        counter(
            &mut out,
            "tenure_events_duplicate_total",
            "Messages dropped because their messageId was seen within the dedup window.",
            &self.duplicates,
        );
        counter(
            &mut out,
            "tenure_events_flushed_total",
            "Events committed to the store.",
            &self.flushed,
        );
        counter(
            &mut out,
            "tenure_flushes_total",
            "Commits of WAL segments to the store.",
            &self.flushes,
        );
        counter(
            &mut out,
            "tenure_flush_failures_total",
            "Commits that failed (retried; the WAL keeps the events).",
            &self.flush_failures,
        );
        counter(
            &mut out,
            "tenure_wal_fsyncs_total",
            "WAL fsyncs (each acknowledges a group of requests).",
            &self.wal_fsyncs,
        );
        gauge(
            &mut out,
            "tenure_wal_bytes",
            "WAL bytes on disk not yet committed to the store.",
            &self.wal_bytes,
        );
        gauge(
            &mut out,
            "tenure_flush_failing",
            "Commits failed in a row since the last successful one (0 when healthy).",
            &self.flush_failing,
        );
        gauge(
            &mut out,
            "tenure_queue_bytes",
            "Accepted bytes waiting for the WAL writer.",
            &self.queue_bytes,
        );
        let _ = writeln!(
            out,
            "# HELP tenure_http_responses_total HTTP responses by status.\n# TYPE tenure_http_responses_total counter"
        );
        for (s, v) in STATUSES.iter().zip(&self.responses) {
            let _ = writeln!(
                out,
                "tenure_http_responses_total{{status=\"{s}\"}} {}",
                v.load(Relaxed)
            );
        }
        self.flush_latency.render(
            "tenure_flush_seconds",
            "Time to commit a group of WAL segments.",
            &mut out,
        );
        self.ack_latency.render(
            "tenure_ack_seconds",
            "Time from a request's arrival to its acknowledgement.",
            &mut out,
        );
        out
    }
}
