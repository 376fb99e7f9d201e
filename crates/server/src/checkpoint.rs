//! Live checkpoints: the live state written to `<wal>/live/checkpoint.bin`
//! regularly and at shutdown, so a restart reads it back and folds only what
//! came after it, instead of the whole store.
//!
//! A checkpoint says exactly which events its state holds:
//! - the store's files and recorded inputs of the running server's start
//!   (every one of those files was folded, from the store or from the
//!   previous checkpoint);
//! - the WAL records applied since (*coverage*: per WAL writer, ranges of
//!   sequence numbers; records are applied once durable, so the ranges may
//!   have gaps at the instant of the checkpoint);
//! - the transition journal's length when it was taken: the membership sinks
//!   had heard of is the checkpoint's, then the journal's lines after it.
//!
//! At start, with a checkpoint of the same segments and property types:
//! - a file of the store that is not among the checkpoint's is read whole
//!   when another writer's ingest committed it; when the WAL flusher did, its
//!   events are those of WAL segments, kept in `<wal>/live/committed/` until
//!   a checkpoint covers them, and only the records the coverage lacks are
//!   read from those (a store file's rows do not say which record they came
//!   from);
//! - WAL segments not committed yet are read except for covered records;
//! - anything else (a checkpoint file gone from the store after a
//!   compaction, a kept segment missing or unreadable, a commit of WAL
//!   segments that wrote fewer events than it read, so dropped some the live
//!   state had applied, a corrupt checkpoint) falls back to folding the
//!   whole store, with the reason in the start-up notes. Never a state with
//!   an event missing or counted twice.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tenure_live::{Live, Plan};

use crate::live::{LiveApp, ToJournal};
use crate::wal::segment::Segment;

const MAGIC: &[u8; 24] = b"TENURE LIVE CHECKPOINT 2";

/// How long a checkpoint waits for the journal thread to reach its mark.
const MARK_WAIT: Duration = Duration::from_secs(120);

/// Per WAL writer, the record sequence numbers applied to the live state,
/// as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Coverage {
    ranges: HashMap<u128, Vec<(u64, u64)>>,
}

/// How much of a range a coverage holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Covered {
    All,
    Part,
    Nothing,
}

impl Coverage {
    /// Adds `lo..=hi` (nothing when `lo > hi`).
    pub fn add(&mut self, writer: u128, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        let v = self.ranges.entry(writer).or_default();
        // Mostly appended at the end, in order.
        let at = v.partition_point(|&(_, b)| b.saturating_add(1) < lo);
        let mut end = at;
        let (mut a, mut b) = (lo, hi);
        while end < v.len() && v[end].0 <= hi.saturating_add(1) {
            a = a.min(v[end].0);
            b = b.max(v[end].1);
            end += 1;
        }
        v.splice(at..end, [(a, b)]);
    }

    /// Is record `seq` of `writer` covered?
    pub fn contains(&self, writer: u128, seq: u64) -> bool {
        self.check(writer, seq, seq) == Covered::All
    }

    /// How much of `lo..=hi` is covered.
    pub fn check(&self, writer: u128, lo: u64, hi: u64) -> Covered {
        let Some(v) = self.ranges.get(&writer) else {
            return Covered::Nothing;
        };
        let at = v.partition_point(|&(_, b)| b < lo);
        match v.get(at) {
            Some(&(a, b)) if a <= lo && b >= hi => Covered::All,
            Some(&(a, _)) if a <= hi => Covered::Part,
            _ => Covered::Nothing,
        }
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&(self.ranges.len() as u64).to_le_bytes())?;
        let mut writers: Vec<_> = self.ranges.iter().collect();
        writers.sort_by_key(|(w, _)| **w);
        for (writer, ranges) in writers {
            w.write_all(&writer.to_le_bytes())?;
            w.write_all(&(ranges.len() as u64).to_le_bytes())?;
            for (a, b) in ranges {
                w.write_all(&a.to_le_bytes())?;
                w.write_all(&b.to_le_bytes())?;
            }
        }
        Ok(())
    }
}

/// The fingerprint of what a checkpoint's state means: the segment files'
/// names and text, the declared property types (and the format).
pub(crate) fn fingerprint(
    files: &[(String, String)],
    declared: &[tenure_schema::DeclaredProperty],
) -> [u8; 16] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(MAGIC);
    for (name, text) in files {
        for part in [name.as_bytes(), text.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    for d in declared {
        let t = format!("{}:{:?}", d.name, d.ty);
        h.update(&(t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.digest128().to_le_bytes()
}

/// What a running server's checkpoints record besides the state.
pub(crate) struct Context {
    /// `<wal>/live`.
    pub dir: PathBuf,
    pub fingerprint: [u8; 16],
    /// The store's files at start (all folded into the state).
    pub files: Vec<String>,
    /// The manifest sources at start: kept WAL segments among them are in
    /// those files, so no longer needed.
    pub sources: HashSet<String>,
    /// Checkpoint every this often (`None`: at shutdown only).
    pub every: Option<Duration>,
    /// Checkpoint early once the kept WAL segments grow by this many bytes
    /// (they wait for a checkpoint on the WAL's disk).
    pub kept_limit: u64,
}

impl Context {
    /// Where committed WAL segments wait for a checkpoint (beside `dir`).
    pub fn kept_dir(&self) -> PathBuf {
        self.dir.join(KEPT)
    }
}

/// Bytes of the kept segments in `dir`.
pub(crate) fn kept_bytes(dir: &Path) -> u64 {
    retained(dir).map_or(0, |v| v.iter().map(|s| s.bytes).sum())
}

/// Where committed WAL segments wait for a checkpoint.
pub(crate) fn retained_dir(wal_dir: &Path) -> PathBuf {
    wal_dir.join("live").join(KEPT)
}

/// The kept segments' directory, in `<wal>/live`.
const KEPT: &str = "committed";

/// A kept segment's file name: writer, first and last sequence number.
pub(crate) fn retained_name(seg: &Segment) -> String {
    format!(
        "{:032x}-{:020}-{:020}.wal",
        seg.writer, seg.first_seq, seg.last_seq
    )
}

/// The kept segments (named by [`retained_name`]).
pub(crate) fn retained(dir: &Path) -> Result<Vec<Segment>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let parts: Vec<&str> = stem.split('-').collect();
        if let [w, a, b] = parts[..]
            && let (Ok(writer), Ok(first_seq), Ok(last_seq)) = (
                u128::from_str_radix(w, 16),
                a.parse::<u64>(),
                b.parse::<u64>(),
            )
        {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.push(Segment {
                path,
                writer,
                first_seq,
                last_seq,
                bytes,
            });
        }
    }
    out.sort_by_key(|s| (s.writer, s.first_seq));
    Ok(out)
}

/// The (writer, first, last) of a manifest source the WAL flusher recorded
/// (`http:wal/<writer>/<first>-<last>`).
pub(crate) fn wal_source(name: &str) -> Option<(u128, u64, u64)> {
    let rest = name.strip_prefix("http:wal/")?;
    let (w, range) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        u128::from_str_radix(w, 16).ok()?,
        a.parse().ok()?,
        b.parse().ok()?,
    ))
}

struct Hashing<W: Write> {
    inner: W,
    hash: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What one checkpoint took.
#[derive(Debug)]
pub(crate) struct Written {
    pub users: usize,
    pub bytes: u64,
    /// How long the live state was locked (requests' events waited).
    pub locked: Duration,
    pub total: Duration,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Writes a checkpoint of `app`'s live state (atomically: a temporary file,
/// fsynced, renamed), then deletes the kept WAL segments it covers.
pub(crate) fn write(app: &LiveApp, ctx: &Context) -> Result<Written, String> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&ctx.dir).map_err(io_err(&ctx.dir))?;
    let tmp = ctx.dir.join("checkpoint.tmp");
    let path = ctx.dir.join("checkpoint.bin");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: xxhash_rust::xxh3::Xxh3::new(),
    };
    let header = |w: &mut Hashing<_>| -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&ctx.fingerprint)?;
        w.write_all(&crate::live::now_micros().to_le_bytes())?;
        w.write_all(&(ctx.files.len() as u64).to_le_bytes())?;
        for f in &ctx.files {
            w.write_all(&(f.len() as u64).to_le_bytes())?;
            w.write_all(f.as_bytes())?;
        }
        let mut sources: Vec<&String> = ctx.sources.iter().collect();
        sources.sort();
        w.write_all(&(sources.len() as u64).to_le_bytes())?;
        for h in sources {
            w.write_all(&(h.len() as u64).to_le_bytes())?;
            w.write_all(h.as_bytes())?;
        }
        Ok(())
    };
    header(&mut w).map_err(io_err(&tmp))?;
    let (mark_tx, mark_rx) = mpsc::sync_channel(1);
    let locked_at = std::time::Instant::now();
    let (users, coverage) = {
        let live = app.live.lock().expect("live state");
        let coverage = app.coverage.lock().expect("coverage").clone();
        coverage.write(&mut w).map_err(io_err(&tmp))?;
        live.write_state(&mut w).map_err(io_err(&tmp))?;
        // Marked under the lock: every transition made so far is before the
        // mark in the journal, every later one after it.
        if !app.mark(ToJournal::Mark(mark_tx)) {
            return Err("the transition journal is closed".into());
        }
        (live.users(), coverage)
    };
    let locked = locked_at.elapsed();
    let offset = match mark_rx.recv_timeout(MARK_WAIT) {
        Ok(Some(offset)) => offset,
        Ok(None) => {
            return Err(
                "the transition journal failed to write some transitions; no checkpoint until the next start"
                    .into(),
            );
        }
        Err(_) => return Err("the transition journal did not answer".into()),
    };
    w.write_all(&offset.to_le_bytes()).map_err(io_err(&tmp))?;
    let sum = w.hash.digest();
    let mut inner = w.inner;
    inner.write_all(&sum.to_le_bytes()).map_err(io_err(&tmp))?;
    let file = inner
        .into_inner()
        .map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    crate::wal::segment::sync_dir(&ctx.dir).map_err(io_err(&ctx.dir))?;
    // Kept segments the checkpoint holds (or that were in the store's files
    // at start) are no longer needed.
    // A failure here leaves segments for the next checkpoint to delete: the
    // checkpoint itself is in place.
    let kept = ctx.kept_dir();
    let prune = || -> Result<(), String> {
        let mut deleted = false;
        for seg in retained(&kept)? {
            let committed_before = ctx.sources.contains(&seg.source_hash());
            if committed_before
                || coverage.check(seg.writer, seg.first_seq, seg.last_seq) == Covered::All
            {
                std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
                deleted = true;
            }
        }
        if deleted {
            crate::wal::segment::sync_dir(&kept).map_err(io_err(&kept))?;
        }
        Ok(())
    };
    if let Err(e) = prune() {
        eprintln!(
            "tenure-server: live checkpoint written; deleting the WAL segments it holds failed: {e}"
        );
    }
    Ok(Written {
        users,
        bytes,
        locked,
        total: started.elapsed(),
    })
}

/// A checkpoint read back.
pub(crate) struct Restored {
    pub live: Live,
    pub files: HashSet<String>,
    /// The manifest's inputs (hashes) at the checkpoint's start.
    pub sources: HashSet<String>,
    pub coverage: Coverage,
    pub journal_offset: u64,
    /// When it was written (UTC microseconds).
    pub written_at: i64,
}

/// Reads the checkpoint in `dir`, if there is one. `Ok(None)`: none;
/// `Err`: one that cannot be used (why).
pub(crate) fn read(
    dir: &Path,
    fingerprint: &[u8; 16],
    plan: Plan,
) -> Result<Option<Restored>, String> {
    let path = dir.join("checkpoint.bin");
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let bad = |what: &str| format!("{} is not a usable checkpoint: {what}", path.display());
    if bytes.len() < MAGIC.len() + 16 + 16 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not a checkpoint of this version"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(bad("its checksum does not match (a torn or damaged file)"));
    }
    if &body[MAGIC.len()..MAGIC.len() + 16] != fingerprint {
        return Err("the checkpoint was written for other segment files or property types".into());
    }
    let mut at = MAGIC.len() + 16;
    let short = || bad("it ends early");
    let u64_at = |at: &mut usize| -> Result<u64, String> {
        let b = body.get(*at..*at + 8).ok_or_else(short)?;
        *at += 8;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let written_at = u64_at(&mut at)? as i64;
    let strings = |at: &mut usize, what: &str| -> Result<HashSet<String>, String> {
        let n = u64_at(at)?;
        let mut out = HashSet::new();
        for _ in 0..n {
            let len = u64_at(at)? as usize;
            let b = body.get(*at..at.saturating_add(len)).ok_or_else(short)?;
            *at += len;
            out.insert(String::from_utf8(b.to_vec()).map_err(|_| bad(what))?);
        }
        Ok(out)
    };
    let files = strings(&mut at, "a file name is not UTF-8")?;
    let sources = strings(&mut at, "an input hash is not UTF-8")?;
    let mut coverage = Coverage::default();
    let writers = u64_at(&mut at)?;
    for _ in 0..writers {
        let b = body.get(at..at + 16).ok_or_else(short)?;
        at += 16;
        let writer = u128::from_le_bytes(b.try_into().expect("16 bytes"));
        let k = u64_at(&mut at)?;
        for _ in 0..k {
            let (a, b) = (u64_at(&mut at)?, u64_at(&mut at)?);
            coverage.add(writer, a, b);
        }
    }
    let state_end = body.len() - 8;
    let state = body.get(at..state_end).ok_or_else(short)?;
    let (live, read) = Live::read_state(plan, state).map_err(|e| bad(&e))?;
    if read != state.len() {
        return Err(bad("bytes after the state"));
    }
    let mut at = state_end;
    let journal_offset = u64_at(&mut at)?;
    Ok(Some(Restored {
        live,
        files,
        sources,
        coverage,
        journal_offset,
        written_at,
    }))
}

/// What a restart from a checkpoint reads besides it.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Store files other writers committed (read whole).
    pub files: Vec<tenure_schema::FileEntry>,
    /// Kept WAL segments with records the checkpoint lacks.
    pub segments: Vec<Segment>,
}

/// Which files and kept segments hold the events of `snapshot` that the
/// checkpoint lacks; `Err` (why) when that cannot be told exactly. `kept`:
/// the segments kept for checkpoints, and those still in the WAL directory
/// (a crash between a commit and the move).
pub(crate) fn delta(
    snapshot: &tenure_schema::Snapshot,
    restored: &Restored,
    kept: &[Segment],
) -> Result<Delta, String> {
    let now: HashSet<&str> = snapshot.files.iter().map(|f| f.path.as_str()).collect();
    if let Some(gone) = restored.files.iter().find(|p| !now.contains(p.as_str())) {
        return Err(format!(
            "{gone} of the checkpoint left the store (compacted since?)"
        ));
    }
    // The transactions committed since the checkpoint's start: those of the
    // inputs it had not seen (every commit records its inputs, even one
    // that wrote nothing).
    let mut new_txns: HashMap<&str, Vec<&tenure_schema::SourceEntry>> = HashMap::new();
    for s in &snapshot.sources {
        if !restored.sources.contains(&s.hash) {
            new_txns.entry(s.txn.as_str()).or_default().push(s);
        }
    }
    let mut files_of: HashMap<&str, Vec<&tenure_schema::FileEntry>> = HashMap::new();
    for f in &snapshot.files {
        if !restored.files.contains(&f.path) {
            if !new_txns.contains_key(f.txn.as_str()) {
                return Err(format!(
                    "{} was written by a transaction with no new input (a compaction?)",
                    f.path
                ));
            }
            files_of.entry(f.txn.as_str()).or_default().push(f);
        }
    }
    let mut out = Delta::default();
    let mut wanted: HashSet<(u128, u64, u64)> = HashSet::new();
    let mut txns: Vec<_> = new_txns.into_iter().collect();
    txns.sort_by_key(|(t, _)| *t);
    for (txn, sources) in txns {
        let files = files_of.remove(txn).unwrap_or_default();
        let wal: Vec<_> = sources.iter().filter_map(|s| wal_source(&s.name)).collect();
        if wal.is_empty() {
            out.files.extend(files.into_iter().cloned());
            continue;
        }
        if wal.len() != sources.len() {
            return Err(format!(
                "transaction {txn} mixes WAL segments and other inputs"
            ));
        }
        // A commit of WAL segments that wrote fewer rows than it read
        // dropped some (an `event_id` the store already held, an event
        // refused at commit) that the live state applied when they were
        // acknowledged. Which ones is not recorded: fold the store.
        let read: u64 = sources.iter().map(|s| s.rows).sum();
        let wrote: u64 = files.iter().map(|f| f.rows).sum();
        if wrote != read {
            return Err(format!(
                "a commit of WAL segments wrote {wrote} of the {read} event(s) it read (duplicates of stored events or refused ones, which the live state had applied)"
            ));
        }
        for (w, a, b) in wal {
            if restored.coverage.check(w, a, b) != Covered::All {
                wanted.insert((w, a, b));
            }
        }
    }
    for (w, a, b) in &wanted {
        match kept
            .iter()
            .find(|s| s.writer == *w && s.first_seq == *a && s.last_seq == *b)
        {
            Some(s) => out.segments.push(s.clone()),
            None => {
                return Err(format!(
                    "WAL segment {w:032x} {a}-{b} is committed, not all of it is in the checkpoint, and it is no longer kept"
                ));
            }
        }
    }
    out.segments.sort_by_key(|s| (s.writer, s.first_seq));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_merges_ranges_and_tells_all_part_nothing() {
        let mut c = Coverage::default();
        c.add(1, 5, 7);
        c.add(1, 1, 2);
        c.add(1, 10, 12);
        assert_eq!(c.ranges[&1], vec![(1, 2), (5, 7), (10, 12)]);
        c.add(1, 3, 4);
        assert_eq!(c.ranges[&1], vec![(1, 7), (10, 12)]);
        c.add(1, 8, 9);
        assert_eq!(c.ranges[&1], vec![(1, 12)]);
        c.add(1, 20, 19);
        assert_eq!(c.ranges[&1], vec![(1, 12)]);
        c.add(1, 14, 20);
        assert_eq!(c.check(1, 2, 12), Covered::All);
        assert_eq!(c.check(1, 12, 14), Covered::Part);
        assert_eq!(c.check(1, 13, 13), Covered::Nothing);
        assert_eq!(c.check(1, 0, 0), Covered::Nothing);
        assert_eq!(c.check(1, 0, 1), Covered::Part);
        assert_eq!(c.check(1, 21, 30), Covered::Nothing);
        assert_eq!(c.check(2, 1, 1), Covered::Nothing);
        assert!(c.contains(1, 15) && !c.contains(1, 13));
    }

    #[test]
    fn wal_sources_parse_as_the_flusher_names_them() {
        let seg = Segment {
            path: PathBuf::new(),
            writer: 0xabc,
            first_seq: 3,
            last_seq: 9,
            bytes: 0,
        };
        assert_eq!(wal_source(&seg.source_name()), Some((0xabc, 3, 9)));
        assert_eq!(wal_source("events.ndjson"), None);
    }
}
