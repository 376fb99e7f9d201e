//! The flusher: commits closed WAL segments to the store through the normal
//! ingest path (one `Ingest` transaction per group of segments), records their
//! `messageId`s for the dedup window, then deletes them.
//!
//! Each segment is recorded in the manifest as a synthetic source named by its
//! (writer, sequence range). A crash after the commit but before the deletion
//! replays the segment at the next start; the manifest already knows it, so
//! nothing is committed twice.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tenure_ingest::decode::{Location, Scalar};
use tenure_ingest::validate::PropertyNames;
use tenure_ingest::{Ingest, IngestOptions, Store};

use crate::dedup::DedupFiles;
use crate::metrics::Metrics;
use crate::wal::Wal;
use crate::wal::record::{RecordChunks, SEGMENT_HEADER, events};
use crate::wal::segment::{Segment, sync_dir};

/// Failed commits are retried this many times once the server is stopping;
/// after that the segments stay in the WAL for the next start.
const RETRIES_AT_SHUTDOWN: u32 = 3;

/// A commit reads its segments this many bytes at a time: the memory a commit
/// takes for WAL data, whatever the segment size.
const READ_CHUNK: usize = 4 << 20;

pub(crate) struct Flusher {
    pub store: Store,
    pub opts: IngestOptions,
    pub wal: Arc<Wal>,
    pub metrics: Arc<Metrics>,
    pub dedup_files: DedupFiles,
    /// A commit takes segments up to about this many bytes.
    pub group_bytes: u64,
    pub max_record: usize,
    /// With live segments: committed segments are moved here, not deleted,
    /// until a live checkpoint holds their events (a restart from the
    /// checkpoint reads the events it lacks from them, not the store's
    /// files, whose rows do not say which record they came from).
    pub retain: Option<std::path::PathBuf>,
}

/// What the flusher left behind when it stopped.
#[derive(Debug, Default)]
pub(crate) struct FlushEnd {
    pub left: usize,
    pub last_error: Option<String>,
}

impl Flusher {
    /// Runs until the writer hangs up and everything is committed (or commits
    /// keep failing at shutdown).
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Segment>) -> FlushEnd {
        let mut pending: VecDeque<Segment> = VecDeque::new();
        let mut hung_up = false;
        let mut failures = 0u32;
        loop {
            if pending.is_empty() {
                if hung_up {
                    return FlushEnd::default();
                }
                match rx.recv() {
                    Ok(s) => pending.push_back(s),
                    Err(_) => hung_up = true,
                }
                continue;
            }
            loop {
                match rx.try_recv() {
                    Ok(s) => pending.push_back(s),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        hung_up = true;
                        break;
                    }
                }
            }
            let mut group = Vec::new();
            let mut bytes = 0;
            while let Some(s) = pending.front() {
                if !group.is_empty() && bytes + s.bytes > self.group_bytes {
                    break;
                }
                bytes += s.bytes;
                group.push(pending.pop_front().expect("front exists"));
            }
            let result = self.flush(&group);
            self.metrics
                .flush_outcome(result.as_ref().map(|_| ()).map_err(String::as_str));
            match result {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    self.metrics.flush_failures.fetch_add(1, Relaxed);
                    eprintln!(
                        "tenure-server: commit of {} WAL segment(s) failed (attempt {failures}), will retry: {e}",
                        group.len()
                    );
                    for s in group.into_iter().rev() {
                        pending.push_front(s);
                    }
                    if hung_up && failures >= RETRIES_AT_SHUTDOWN {
                        return FlushEnd {
                            left: pending.len(),
                            last_error: Some(e),
                        };
                    }
                    let backoff = Duration::from_millis(100 << failures.min(7));
                    match rx.recv_timeout(backoff) {
                        Ok(s) => pending.push_back(s),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => hung_up = true,
                    }
                }
            }
        }
    }

    fn flush(&mut self, group: &[Segment]) -> Result<(), String> {
        let started = Instant::now();
        let mut ingest =
            Ingest::begin(self.store.clone(), self.opts.clone()).map_err(|e| e.to_string())?;
        let names = PropertyNames::from_declared(ingest.declared());
        let mut ids = Vec::new();
        let mut skipped = 0u64;
        for seg in group {
            let cannot_read =
                |e: std::io::Error| format!("cannot read {}: {e}", seg.path.display());
            let hash = seg.source_hash();
            let known = ingest.has_source(&hash);
            let name = seg.source_name();
            let mut file = match std::fs::File::open(&seg.path) {
                // Committed and deleted by an attempt that failed later on.
                Err(e) if known && e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.map_err(cannot_read)?,
            };
            file.seek(SeekFrom::Start(SEGMENT_HEADER as u64))
                .map_err(cannot_read)?;
            let mut chunks = RecordChunks::new(file, READ_CHUNK, self.max_record);
            let mut rows = 0u64;
            let mut read_to = None;
            while let Some(records) = chunks.next_records().map_err(cannot_read)? {
                for rec in records.iter().filter(|r| r.seq <= seg.last_seq) {
                    read_to = Some(rec.seq);
                    for ev in events(rec.payload).map_err(|e| format!("{name}: {e}"))? {
                        if !ev.generated {
                            ids.push(xxhash_rust::xxh3::xxh3_64(ev.id.as_bytes()));
                        }
                        if known {
                            continue;
                        }
                        // Checked when received; a failure here means the store's
                        // declared properties changed under a running server.
                        let mut raw = match ev.raw(&names) {
                            Ok(r) => r,
                            Err(reason) => {
                                eprintln!("tenure-server: {name} seq {}: {reason}", rec.seq);
                                skipped += 1;
                                continue;
                            }
                        };
                        raw.event_id = Some(Scalar::Str(Cow::Borrowed(ev.id)));
                        ingest.push(
                            &raw,
                            Location {
                                input: &name,
                                line: rec.seq,
                            },
                        );
                        rows += 1;
                    }
                }
            }
            // Every record up to the last acknowledged one must have been read:
            // stopping early (a record the reader refuses, a corrupt byte)
            // would commit part of the segment and then delete the rest.
            if read_to != Some(seg.last_seq) {
                return Err(format!(
                    "{}: its records could be read only up to sequence {} of {}..={}; the segment is kept and nothing of it is committed",
                    seg.path.display(),
                    read_to.map_or_else(|| "(none)".to_string(), |s| s.to_string()),
                    seg.first_seq,
                    seg.last_seq
                ));
            }
            if !known {
                ingest.add_synthetic_source(hash, name, rows);
            }
        }
        let summary = ingest.commit().map_err(|e| e.to_string())?;
        if summary.counters.rejected > 0 || skipped > 0 {
            eprintln!(
                "tenure-server: {} event(s) refused at commit (see {})",
                summary.counters.rejected + skipped,
                summary.dead_letter.as_deref().unwrap_or("the log above")
            );
        }
        let now = chrono::Utc::now().timestamp();
        let first = &group[0];
        let ids_name = format!("{:032x}-{:020}", first.writer, first.first_seq);
        match self.dedup_files.record(&ids_name, &ids, now) {
            Ok(()) => self.delete(group)?,
            // The WAL's disk is full, of WAL most likely: the space to record
            // the ids is what deleting the committed segments frees. Recording
            // them first would wedge the server for good. The ids stay in
            // memory; only a crash in between loses them for the next start.
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                self.delete(group)?;
                if let Err(e) = self.dedup_files.record(&ids_name, &ids, now) {
                    // Committed and deleted: nothing to retry. Said aloud, as
                    // a client retrying these after a restart is not caught.
                    eprintln!(
                        "tenure-server: committed {ids_name}, but cannot record its {} message ids for the dedup window across restarts: {e}",
                        ids.len()
                    );
                }
            }
            Err(e) => return Err(format!("cannot record committed message ids: {e}")),
        }
        self.metrics
            .flushed
            .fetch_add(summary.counters.written, Relaxed);
        self.metrics.flushes.fetch_add(1, Relaxed);
        self.metrics
            .flush_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Deletes committed segments (or moves them to [`Flusher::retain`]).
    fn delete(&self, group: &[Segment]) -> Result<(), String> {
        if let Some(dir) = &self.retain {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        for seg in group {
            let gone = match &self.retain {
                None => std::fs::remove_file(&seg.path),
                Some(dir) => {
                    std::fs::rename(&seg.path, dir.join(crate::checkpoint::retained_name(seg)))
                }
            };
            // Released only by the attempt that deletes it, so a retry after a
            // partial deletion does not count a segment twice.
            match gone {
                Ok(()) => self.wal.release(seg.bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", seg.path.display())),
            }
        }
        if let Some(dir) = &self.retain {
            let _ = sync_dir(dir);
        }
        if let Some(dir) = group[0].path.parent() {
            let _ = sync_dir(dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::dedup::Dedup;
    use crate::message::Accepted;
    use crate::wal::Limits;
    use crate::wal::record::{encode_records, max_record_len, seal};

    /// Issue 16 item 1: a segment whose records stop before its last
    /// acknowledged sequence number is neither committed in part nor deleted.
    #[test]
    fn a_segment_read_short_of_its_last_sequence_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        let (mut f, path) = crate::wal::segment::create(&wal_dir, 7, 1).unwrap();
        for seq in 1..=2u64 {
            let ev = Accepted {
                ts: 1_767_607_200_000_000,
                id: Cow::Owned(format!("e{seq}")),
                dedup: None,
                kind: 1,
                json: r#"{"userId":"u","event":"e"}"#,
                live: None,
            };
            let (mut buf, ranges) = encode_records(&[ev], None);
            seal(&mut buf[ranges[0].clone()], seq);
            f.write_all(&buf).unwrap();
        }
        drop(f);
        let bytes = std::fs::metadata(&path).unwrap().len();
        let store = Store::open(&dir.path().join("store").display().to_string()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let max_record = max_record_len(1 << 20, 32 << 10);
        let limits = Limits {
            flush_bytes: 1 << 20,
            flush_age: Duration::from_secs(60),
            max_wal_bytes: 1 << 30,
            max_queue_bytes: 1 << 30,
        };
        let wal = Arc::new(Wal::new(
            wal_dir.clone(),
            limits,
            max_record,
            Dedup::new(60, 100),
            bytes,
            metrics.clone(),
        ));
        let mut seen = Dedup::new(60, 100);
        let dedup_files = DedupFiles::load(wal_dir.join("dedup"), 60, 100, 0, &mut seen).unwrap();
        let mut flusher = Flusher {
            store: store.clone(),
            opts: IngestOptions {
                config: Default::default(),
                max_bad: None,
                format: None,
            },
            wal,
            metrics,
            dedup_files,
            group_bytes: 1 << 20,
            max_record,
            retain: None,
        };
        let seg = |last_seq| Segment {
            path: path.clone(),
            writer: 7,
            first_seq: 1,
            last_seq,
            bytes,
        };
        let version = || {
            tenure_ingest::io::block_on(tenure_store::load_latest(&store))
                .unwrap()
                .version
        };
        let err = flusher.flush(&[seg(3)]).unwrap_err();
        assert!(err.contains("only up to sequence 2"), "{err}");
        assert!(path.exists(), "the segment was deleted");
        assert_eq!(version(), 0, "part of the segment was committed");
        // Read through to its last sequence, it is committed and deleted.
        flusher.flush(&[seg(2)]).unwrap();
        assert!(!path.exists());
        assert_eq!(version(), 1);
    }
}
