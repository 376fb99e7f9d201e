//! The write-ahead log: requests queue their accepted events here, one writer
//! thread appends whatever is queued, fsyncs once for the whole group, and only
//! then answers every request of the group. Segments roll by size or age and
//! go to the flusher, which commits them and deletes them.

pub(crate) mod record;
pub(crate) mod segment;

use std::fs::File;
use std::io::{IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::dedup::Dedup;
use crate::message::Accepted;
use crate::metrics::Metrics;
use record::{RECORD_HEADER, SEGMENT_HEADER, encode_event, seal};
use segment::Segment;

/// Why a request could not be queued.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The server is shutting down (503).
    ShuttingDown,
    /// Too many uncommitted WAL bytes: the store is behind or down (503).
    WalFull,
    /// Too many bytes waiting for the writer (429).
    QueueFull,
    /// The WAL cannot be written (503).
    Broken(String),
}

/// A queued request's answer, once its group is fsynced.
pub(crate) struct Ticket {
    rx: oneshot::Receiver<Result<(), String>>,
    /// Messages dropped as duplicates.
    pub duplicates: usize,
}

impl Ticket {
    /// Waits until the events are durable (Ok) or could not be written.
    pub(crate) async fn durable(self) -> Result<(), String> {
        self.rx
            .await
            .unwrap_or_else(|_| Err("the WAL writer stopped".into()))
    }
}

struct Pending {
    /// A sealed record, or empty when every message was a duplicate (the entry
    /// still waits for the group fsync, which covers the earlier copies).
    record: Vec<u8>,
    seq: u64,
    hashes: Vec<u64>,
    done: oneshot::Sender<Result<(), String>>,
}

struct State {
    queue: Vec<Pending>,
    queue_bytes: usize,
    next_seq: u64,
    dedup: Dedup,
    /// Bytes of segments on disk not yet committed and deleted.
    wal_bytes: u64,
    closing: bool,
    roll: bool,
    /// The writer is waiting for work (so a submit must wake it; while it is
    /// writing it takes the whole queue when done, unwoken).
    writer_waiting: bool,
    broken: Option<String>,
}

/// Limits the WAL enforces.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub flush_bytes: u64,
    pub flush_age: Duration,
    pub max_wal_bytes: u64,
    pub max_queue_bytes: usize,
}

/// The shared WAL: a queue, a writer thread, counters.
pub(crate) struct Wal {
    state: Mutex<State>,
    wake: Condvar,
    dir: PathBuf,
    writer: u128,
    limits: Limits,
    metrics: Arc<Metrics>,
}

struct Open {
    file: File,
    seg: Segment,
    opened: Instant,
}

impl Wal {
    pub(crate) fn new(
        dir: PathBuf,
        limits: Limits,
        dedup: Dedup,
        recovered_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.wal_bytes.store(recovered_bytes, Relaxed);
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                queue_bytes: 0,
                next_seq: 1,
                dedup,
                wal_bytes: recovered_bytes,
                closing: false,
                roll: false,
                writer_waiting: false,
                broken: None,
            }),
            wake: Condvar::new(),
            dir,
            // A fresh id per process: sequence numbers restart at 1, and
            // (writer, range) still names each segment's content uniquely.
            writer: uuid::Uuid::now_v7().as_u128(),
            limits,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated in a
        // way that loses acknowledged data (acks follow fsyncs), so go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request's accepted events (dropping duplicates of recently seen
    /// `messageId`s) and returns a ticket that resolves once they are fsynced.
    pub(crate) fn submit(&self, events: &[Accepted<'_>], now_secs: i64) -> Result<Ticket, Refused> {
        let mut buf = Vec::with_capacity(
            RECORD_HEADER + events.iter().map(|e| e.json.len() + 64).sum::<usize>(),
        );
        buf.resize(RECORD_HEADER, 0);
        let mut ends = Vec::with_capacity(events.len());
        for ev in events {
            encode_event(ev, &mut buf);
            ends.push(buf.len());
        }
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if st.closing {
            return Err(Refused::ShuttingDown);
        }
        if let Some(e) = &st.broken {
            return Err(Refused::Broken(e.clone()));
        }
        if st.wal_bytes >= self.limits.max_wal_bytes {
            return Err(Refused::WalFull);
        }
        if st.queue_bytes >= self.limits.max_queue_bytes {
            return Err(Refused::QueueFull);
        }
        let mut hashes = Vec::with_capacity(events.len());
        let mut keep: Option<Vec<bool>> = None;
        st.dedup.warm(events.iter().filter_map(|e| e.dedup));
        for (i, ev) in events.iter().enumerate() {
            if let Some(h) = ev.dedup {
                if st.dedup.insert_if_new(h, now_secs) {
                    hashes.push(h);
                } else {
                    keep.get_or_insert_with(|| vec![true; events.len()])[i] = false;
                }
            }
        }
        let duplicates = keep
            .as_ref()
            .map_or(0, |k| k.iter().filter(|&&k| !k).count());
        if let Some(keep) = &keep {
            let mut kept = Vec::with_capacity(buf.len());
            kept.extend_from_slice(&buf[..RECORD_HEADER]);
            let mut start = RECORD_HEADER;
            for (i, &end) in ends.iter().enumerate() {
                if keep[i] {
                    kept.extend_from_slice(&buf[start..end]);
                }
                start = end;
            }
            buf = kept;
        }
        let (record, seq) = if buf.len() == RECORD_HEADER {
            (Vec::new(), 0)
        } else {
            let seq = st.next_seq;
            st.next_seq += 1;
            seal(&mut buf, seq);
            (buf, seq)
        };
        st.queue_bytes += record.len();
        self.metrics
            .queue_bytes
            .store(st.queue_bytes as u64, Relaxed);
        st.queue.push(Pending {
            record,
            seq,
            hashes,
            done: tx,
        });
        let wake = st.writer_waiting;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(Ticket { rx, duplicates })
    }

    /// Stops taking requests; the writer drains the queue, closes its segment and exits.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_all();
    }

    /// Is the WAL refusing writes for good?
    pub(crate) fn broken(&self) -> Option<String> {
        self.lock().broken.clone()
    }

    /// Called by the flusher once a segment is committed and deleted.
    pub(crate) fn release(&self, bytes: u64) {
        let mut st = self.lock();
        st.wal_bytes = st.wal_bytes.saturating_sub(bytes);
        self.metrics.wal_bytes.store(st.wal_bytes, Relaxed);
    }

    /// Marks recovered `messageId`s as seen.
    pub(crate) fn seed_dedup(&self, ids: &[u64], now_secs: i64) {
        let mut st = self.lock();
        for &h in ids {
            st.dedup.insert_if_new(h, now_secs);
        }
    }

    /// The writer thread's loop. Closed segments are sent to `segments`.
    pub(crate) fn run_writer(&self, segments: mpsc::Sender<Segment>) {
        let mut open: Option<Open> = None;
        loop {
            let (batch, closing, roll) = {
                let mut st = self.lock();
                loop {
                    if !st.queue.is_empty() || st.closing || st.roll {
                        break;
                    }
                    let wait = match &open {
                        Some(o) => match self.limits.flush_age.checked_sub(o.opened.elapsed()) {
                            Some(left) => left,
                            None => break,
                        },
                        None => Duration::from_secs(3600),
                    };
                    st.writer_waiting = true;
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    st.writer_waiting = false;
                }
                let batch = std::mem::take(&mut st.queue);
                (batch, st.closing, std::mem::take(&mut st.roll))
            };
            if !batch.is_empty() {
                self.write_group(&mut open, batch, &segments);
            }
            let due = open.as_ref().is_some_and(|o| {
                o.seg.bytes >= self.limits.flush_bytes
                    || o.opened.elapsed() >= self.limits.flush_age
            });
            if (due || roll || closing)
                && let Some(o) = open.take()
            {
                let _ = segments.send(o.seg);
            }
            if closing && self.lock().queue.is_empty() {
                return;
            }
        }
    }

    fn write_group(
        &self,
        open: &mut Option<Open>,
        batch: Vec<Pending>,
        segments: &mpsc::Sender<Segment>,
    ) {
        let bytes: usize = batch.iter().map(|p| p.record.len()).sum();
        let result = if bytes == 0 {
            Ok(0)
        } else {
            self.append(open, &batch, bytes)
        };
        let mut st = self.lock();
        st.queue_bytes -= bytes;
        self.metrics
            .queue_bytes
            .store(st.queue_bytes as u64, Relaxed);
        match result {
            Ok(added) => {
                st.wal_bytes += added;
                self.metrics.wal_bytes.store(st.wal_bytes, Relaxed);
                drop(st);
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) => {
                let msg = format!("cannot write the WAL in {}: {e}", self.dir.display());
                eprintln!("tenure-server: {msg}");
                for p in &batch {
                    for &h in &p.hashes {
                        st.dedup.forget(h);
                    }
                }
                // After a failed write or fsync the file's state is unknown: cut
                // it back to its last durable length and start a new segment.
                if let Some(o) = open.take() {
                    let cut = o.file.set_len(o.seg.bytes).and_then(|()| o.file.sync_all());
                    match cut {
                        Ok(()) if o.seg.last_seq >= o.seg.first_seq => {
                            let _ = segments.send(o.seg);
                        }
                        // Created by this very group: never counted, holds nothing.
                        Ok(()) => {
                            let _ = std::fs::remove_file(&o.seg.path);
                        }
                        Err(e2) => {
                            st.broken = Some(format!(
                                "{msg}; and cannot truncate {}: {e2}",
                                o.seg.path.display()
                            ));
                        }
                    }
                }
                drop(st);
                for p in batch {
                    let _ = p.done.send(Err(msg.clone()));
                }
            }
        }
    }

    /// Writes the group's records and fsyncs; returns the bytes the WAL grew by.
    fn append(
        &self,
        open: &mut Option<Open>,
        batch: &[Pending],
        bytes: usize,
    ) -> std::io::Result<u64> {
        let mut grown = 0u64;
        if open.is_none() {
            let first = batch
                .iter()
                .find(|p| !p.record.is_empty())
                .map(|p| p.seq)
                .expect("a group with bytes has a record");
            let (file, path) = segment::create(&self.dir, self.writer, first)?;
            grown += SEGMENT_HEADER as u64;
            *open = Some(Open {
                file,
                seg: Segment {
                    path,
                    writer: self.writer,
                    first_seq: first,
                    last_seq: first - 1,
                    bytes: SEGMENT_HEADER as u64,
                },
                opened: Instant::now(),
            });
        }
        let o = open.as_mut().expect("segment opened above");
        let mut last = o.seg.last_seq;
        let mut slices = Vec::with_capacity(batch.len());
        for p in batch.iter().filter(|p| !p.record.is_empty()) {
            slices.push(IoSlice::new(&p.record));
            last = p.seq;
        }
        // The group's records in as few writev calls as the kernel allows,
        // without copying them into one buffer first.
        write_all_vectored(&mut o.file, &mut slices)?;
        o.file.sync_data()?;
        self.metrics.wal_fsyncs.fetch_add(1, Relaxed);
        o.seg.bytes += bytes as u64;
        o.seg.last_seq = last;
        Ok(grown + bytes as u64)
    }
}

/// `write_all` for a list of buffers (std's is not stable yet).
fn write_all_vectored(f: &mut File, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
