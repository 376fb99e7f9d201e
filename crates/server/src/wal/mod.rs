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

use tokio::sync::watch;

use crate::dedup::Dedup;
use crate::message::Accepted;
use crate::metrics::Metrics;
use record::{RECORD_HEADER, SEGMENT_HEADER, encode_records, seal};
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
    /// A record would be longer than the reader accepts (413); cannot happen
    /// with messages within `max_event_bytes`, checked so that nothing the
    /// flusher would refuse is ever acknowledged.
    TooLarge(usize),
}

/// Why a queued request was not made durable.
#[derive(Debug, Clone)]
pub(crate) struct Failed {
    pub message: String,
    /// The WAL's disk is full (507 rather than 503).
    pub storage_full: bool,
}

type Outcome = Option<Result<(), Failed>>;

/// A queued request's answer, once its group is fsynced.
pub(crate) struct Ticket {
    own: watch::Receiver<Outcome>,
    /// The groups of earlier copies of this request's duplicates that were not
    /// durable yet when it was queued: it is answered only after them.
    earlier: Vec<watch::Receiver<Outcome>>,
    /// Messages dropped as duplicates.
    pub duplicates: usize,
    /// Which messages were kept (`None`: all of them).
    pub keep: Option<Vec<bool>>,
    /// The sequence numbers of its records (`first > last`: none, every
    /// message was a duplicate).
    pub seqs: (u64, u64),
}

impl Ticket {
    /// Waits until the events are durable (Ok) or could not be written. A
    /// duplicate counts as durable only once its first copy is: if that copy's
    /// group failed, so does this request (the client retries, and the retry
    /// is written, the failed copy having been forgotten).
    pub(crate) async fn durable(self) -> Result<(), Failed> {
        async fn outcome(mut rx: watch::Receiver<Outcome>) -> Result<(), Failed> {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().expect("waited for a value"),
                Err(_) => Err(Failed {
                    message: "the WAL writer stopped".into(),
                    storage_full: false,
                }),
            }
        }
        outcome(self.own).await?;
        for rx in self.earlier {
            outcome(rx).await.map_err(|f| Failed {
                message: format!(
                    "an earlier copy of a message of this request (same messageId) could not be written: {}",
                    f.message
                ),
                ..f
            })?;
        }
        Ok(())
    }
}

/// What other requests may need to know of a queued one: the `messageId`
/// hashes it holds the first copy of, and how its group ends.
struct Shared {
    hashes: Vec<u64>,
    outcome: watch::Sender<Outcome>,
}

struct Pending {
    /// Sealed records, or empty when every message was a duplicate (the entry
    /// still waits for the group fsync, which covers the earlier copies).
    record: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    shared: Arc<Shared>,
}

struct State {
    queue: Vec<Pending>,
    queue_bytes: usize,
    next_seq: u64,
    dedup: Dedup,
    /// The group the writer is writing now (taken from `queue`).
    writing: Vec<Arc<Shared>>,
    /// Bytes of segments on disk not yet committed and deleted.
    wal_bytes: u64,
    closing: bool,
    roll: bool,
    /// The writer is waiting for work (so a submit must wake it; while it is
    /// writing it takes the whole queue when done, unwoken).
    writer_waiting: bool,
    broken: Option<String>,
}

impl State {
    /// The queued or being-written request holding the first copy of `h`.
    /// Only asked for duplicates, and the requests not yet durable are few
    /// (one group and the queue behind it).
    fn in_flight(&self, h: u64) -> Option<Arc<Shared>> {
        self.writing
            .iter()
            .chain(self.queue.iter().map(|p| &p.shared))
            .find(|s| s.hashes.contains(&h))
            .cloned()
    }
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
    /// The reader's record bound: no longer record is ever acknowledged.
    max_record: usize,
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
        max_record: usize,
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
                writing: Vec::new(),
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
            max_record,
            metrics,
        }
    }

    /// This process's writer id (segments and their sources are named by it).
    pub(crate) fn writer(&self) -> u128 {
        self.writer
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated in a
        // way that loses acknowledged data (acks follow fsyncs), so go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request's accepted events (dropping duplicates of recently seen
    /// `messageId`s) and returns a ticket that resolves once they are fsynced.
    pub(crate) fn submit(&self, events: &[Accepted<'_>], now_secs: i64) -> Result<Ticket, Refused> {
        // Encoded outside the lock; re-encoded under it only when duplicates
        // are dropped (a client retrying).
        let (mut buf, mut ranges) = encode_records(events, None);
        if let Some(r) = ranges
            .iter()
            .find(|r| r.len() - RECORD_HEADER > self.max_record)
        {
            return Err(Refused::TooLarge(r.len()));
        }
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
        let mut earlier: Vec<Arc<Shared>> = Vec::new();
        st.dedup.warm(events.iter().filter_map(|e| e.dedup));
        for (i, ev) in events.iter().enumerate() {
            if let Some(h) = ev.dedup {
                if st.dedup.insert_if_new(h, now_secs) {
                    hashes.push(h);
                } else {
                    keep.get_or_insert_with(|| vec![true; events.len()])[i] = false;
                    // Is the first copy still on its way to the disk?
                    if let Some(first) = st.in_flight(h)
                        && !earlier.iter().any(|e| Arc::ptr_eq(e, &first))
                    {
                        earlier.push(first);
                    }
                }
            }
        }
        let duplicates = keep
            .as_ref()
            .map_or(0, |k| k.iter().filter(|&&k| !k).count());
        if let Some(keep) = &keep {
            (buf, ranges) = encode_records(events, Some(keep));
        }
        let first_seq = st.next_seq;
        for r in &ranges {
            seal(&mut buf[r.clone()], st.next_seq);
            st.next_seq += 1;
        }
        let last_seq = st.next_seq - 1;
        st.queue_bytes += buf.len();
        self.metrics
            .queue_bytes
            .store(st.queue_bytes as u64, Relaxed);
        let (tx, rx) = watch::channel(None);
        let earlier = earlier.iter().map(|s| s.outcome.subscribe()).collect();
        st.queue.push(Pending {
            record: buf,
            first_seq,
            last_seq,
            shared: Arc::new(Shared {
                hashes,
                outcome: tx,
            }),
        });
        let wake = st.writer_waiting;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(Ticket {
            own: rx,
            earlier,
            duplicates,
            keep,
            seqs: (first_seq, last_seq),
        })
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
                let batch = Self::take_group(&mut st);
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

    /// Takes the whole queue as the next group, marked as being written
    /// until [`Self::write_group`] ends it.
    fn take_group(st: &mut State) -> Vec<Pending> {
        let batch = std::mem::take(&mut st.queue);
        st.writing = batch.iter().map(|p| p.shared.clone()).collect();
        batch
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
        st.writing.clear();
        self.metrics
            .queue_bytes
            .store(st.queue_bytes as u64, Relaxed);
        match result {
            Ok(added) => {
                st.wal_bytes += added;
                self.metrics.wal_bytes.store(st.wal_bytes, Relaxed);
                drop(st);
                for p in batch {
                    p.shared.outcome.send_replace(Some(Ok(())));
                }
            }
            Err(e) => {
                let storage_full = e.kind() == std::io::ErrorKind::StorageFull;
                let msg = format!("cannot write the WAL in {}: {e}", self.dir.display());
                eprintln!("tenure-server: {msg}");
                // Forgotten under the same lock that ends the group, so a copy
                // arriving from now on is written as new.
                for p in &batch {
                    for &h in &p.shared.hashes {
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
                let failed = Failed {
                    message: msg,
                    storage_full,
                };
                for p in batch {
                    p.shared.outcome.send_replace(Some(Err(failed.clone())));
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
                .map(|p| p.first_seq)
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
            last = p.last_seq;
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

#[cfg(test)]
#[path = "../../tests/common/tmpfs.rs"]
mod tmpfs;

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn ev(id: &'static str) -> Accepted<'static> {
        Accepted {
            ts: 1,
            id: Cow::Borrowed(id),
            dedup: Some(xxhash_rust::xxh3::xxh3_64(id.as_bytes())),
            kind: 1,
            json: "{}",
            live: None,
        }
    }

    fn wait(t: Ticket) -> Result<(), Failed> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(t.durable())
    }

    /// Issue 16 item 9: a duplicate that arrives while its first copy's group
    /// is being written is answered with that group's outcome. The group fails
    /// for real: the WAL is on a full tmpfs.
    #[test]
    fn a_duplicate_is_not_acknowledged_when_its_first_copy_fails() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let Some(fs) = tmpfs::mount(
            &wal_dir,
            1 << 20,
            "wal::tests::a_duplicate_is_not_acknowledged_when_its_first_copy_fails",
        ) else {
            return;
        };
        let limits = Limits {
            flush_bytes: 1 << 20,
            flush_age: Duration::from_secs(3600),
            max_wal_bytes: 1 << 30,
            max_queue_bytes: 1 << 30,
        };
        let metrics = Arc::new(Metrics::new());
        let wal = Wal::new(wal_dir, limits, 1 << 21, Dedup::new(3600, 1000), 0, metrics);
        let (segments, _rx) = mpsc::channel();
        let mut open = None;
        // The writer's steps, one by one: take a group, write it.
        let write_next = |open: &mut Option<Open>| {
            let group = Wal::take_group(&mut wal.lock());
            wal.write_group(open, group, &segments);
        };

        // A duplicate of a copy being written, which succeeds: acknowledged.
        let first = wal.submit(&[ev("a1")], 100).unwrap();
        let group = Wal::take_group(&mut wal.lock());
        let dup = wal.submit(&[ev("a1")], 100).unwrap();
        assert_eq!(dup.duplicates, 1);
        wal.write_group(&mut open, group, &segments);
        write_next(&mut open);
        wait(first).unwrap();
        wait(dup).unwrap();
        // The segment rolls, so the next group needs a new file.
        drop(open.take());

        let filler = fs.fill("filler");
        let first = wal.submit(&[ev("m1"), ev("m2")], 100).unwrap();
        let group = Wal::take_group(&mut wal.lock());
        // The client's retry arrives while the first copy is being written.
        let dup = wal.submit(&[ev("m1")], 100).unwrap();
        assert_eq!(dup.duplicates, 1);
        wal.write_group(&mut open, group, &segments);
        let f = wait(first).unwrap_err();
        assert!(f.storage_full, "{}", f.message);
        write_next(&mut open);
        let f = wait(dup).expect_err("a duplicate of a failed write was acknowledged");
        assert!(f.storage_full, "{}", f.message);
        assert!(f.message.contains("earlier copy"), "{}", f.message);

        // Space returns: the copy sent again is written, not taken for a duplicate.
        std::fs::remove_file(filler).unwrap();
        let again = wal.submit(&[ev("m1"), ev("m2"), ev("m3")], 100).unwrap();
        assert_eq!(again.duplicates, 0);
        write_next(&mut open);
        wait(again).unwrap();
        let dup = wal.submit(&[ev("m1")], 100).unwrap();
        assert_eq!(dup.duplicates, 1);
        write_next(&mut open);
        wait(dup).unwrap();
        drop(open);
    }

    /// Issue 16 item 1: however a request's events encode, no record the
    /// writer produces is longer than the reader's bound.
    #[test]
    fn records_are_split_within_the_readers_bound() {
        let tiny = r#"{"userId":"u","event":"e"}"#;
        let big = "x".repeat(32 << 10);
        let mut events: Vec<Accepted<'_>> = (0..45_000)
            .map(|_| Accepted {
                ts: 1,
                id: Cow::Owned(uuid::Uuid::now_v7().hyphenated().to_string()),
                dedup: None,
                kind: 1,
                json: tiny,
                live: None,
            })
            .collect();
        events.insert(
            100,
            Accepted {
                ts: 1,
                id: Cow::Owned("i".repeat(32 << 10)),
                dedup: None,
                kind: 1,
                json: &big,
                live: None,
            },
        );
        let bound = record::max_record_len(1 << 20, 32 << 10);
        let (mut buf, ranges) = record::encode_records(&events, None);
        assert!(ranges.len() > 2, "{}", ranges.len());
        for (i, r) in ranges.iter().enumerate() {
            assert!(r.len() - RECORD_HEADER <= bound);
            seal(&mut buf[r.clone()], i as u64 + 1);
        }
        let (read, tail) = record::read_records(&buf, bound);
        assert_eq!(tail, record::Tail::Clean);
        let n: usize = read
            .iter()
            .map(|r| record::events(r.payload).unwrap().len())
            .sum();
        assert_eq!(n, events.len());
    }
}
