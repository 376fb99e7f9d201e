//! An ingest transaction: decode inputs, validate, buffer by date partition,
//! stage files, then commit them all in one manifest version.

use std::io::Read;
use std::path::Path;
use std::time::{Instant, UNIX_EPOCH};

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{RecordBatch, StringArray, UInt32Array};
use arrow_schema::SchemaRef;
use tenure_schema::{
    Config, DeclaredProperty, IngestConfig, Snapshot, SourceEntry, columns, event_schema,
};
use xxhash_rust::xxh3::Xxh3;

use crate::columns::EventColumns;
use crate::deadletter::DeadLetters;
use crate::decode::{self, Location, RawEvent, Sink};
use crate::ids::CommittedIds;
use crate::io::Io;
use crate::lease::{LEASE_REFRESH, Lease};
use crate::manifest;
use crate::parallel::{self, DecodeContext, Decoded};
use crate::parquet_out::writer_properties;
use crate::seen::SeenIds;
use crate::timestamp::{DAY_MICROS, date_string};
use crate::users::UserDict;
use crate::validate::{PropertyNames, TimeBounds, validate};
use crate::writer::{Job, Writer};
use crate::{IngestError, Store, recover};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (flat events or Segment messages).
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Guesses the format from a file name.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let lower = Compression::strip_suffix(&lower);
        if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") || lower.ends_with(".json") {
            Some(Self::Ndjson)
        } else if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(Self::Parquet)
        } else {
            None
        }
    }
}

/// Options of one ingest run.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Project configuration (declared properties, limits).
    pub config: Config,
    /// Fail (and commit nothing) when more records than this are rejected.
    pub max_bad: Option<u64>,
    /// Input format when it cannot be guessed from the name (stdin).
    pub format: Option<Format>,
}

/// Counters reported at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Records read (accepted, rejected and duplicates).
    pub read: u64,
    /// Events written.
    pub written: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records dropped because their `event_id` was seen before: earlier in
    /// this run, or already stored (see the `ids` module for the scope).
    pub duplicates: u64,
    /// Inputs read.
    pub inputs: u64,
    /// Inputs skipped because they were ingested before.
    pub skipped_inputs: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Parquet files written.
    pub files: u64,
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Counters.
    pub counters: Counters,
    /// Manifest version committed, if anything was committed.
    pub version: Option<u64>,
    /// Where rejected records went, if any.
    pub dead_letter: Option<String>,
    /// Notes for the user (skipped inputs, empty files, recovery).
    pub notes: Vec<String>,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
}

impl Summary {
    /// Events written per second.
    pub fn events_per_sec(&self) -> f64 {
        self.counters.written as f64 / self.elapsed_secs.max(1e-9)
    }
}

/// Called with the number of input bytes consumed, for progress bars.
pub type Progress = Box<dyn FnMut(u64) + Send>;

/// An open ingest transaction.
pub struct Ingest {
    pub(crate) io: Io,
    pub(crate) txn: String,
    pub(crate) base: Snapshot,
    pub(crate) declared: Vec<DeclaredProperty>,
    names: PropertyNames,
    schema: SchemaRef,
    cfg: IngestConfig,
    max_bad: Option<u64>,
    default_format: Option<Format>,
    pub(crate) users: UserDict,
    /// Identity merges met, by key, in input order.
    pub(crate) merges: Vec<tenure_schema::identity::Merge>,
    seen: SeenIds,
    /// Ids the store already holds, by date partition.
    committed: CommittedIds,
    // A fast hash: this map is looked up once per event.
    bufs: hashbrown::HashMap<i64, DayBuf, foldhash::fast::FixedState>,
    buffered: usize,
    writer: Writer,
    bounds: TimeBounds,
    ingested_at: i64,
    pub(crate) counters: Counters,
    pub(crate) dead: DeadLetters,
    pub(crate) sources: Vec<SourceEntry>,
    pub(crate) notes: Vec<String>,
    /// Set when a streamed input turned out to be ingested already: commit nothing.
    pub(crate) discard: bool,
    file_seq: u32,
    progress: Option<Progress>,
    /// A write failure met while decoding; surfaced after the current input.
    pending_error: Option<IngestError>,
    pub(crate) started: Instant,
    /// Keeps recovery in other processes off this transaction's staging.
    pub(crate) lease: Lease,
    /// Test hook run after each rebase of the commit loop.
    pub(crate) rebase_hook: Option<Box<dyn FnMut() + Send>>,
}

impl Ingest {
    /// Opens a transaction on `store`: recovers what an earlier crash left, loads
    /// the newest snapshot and the users dictionary.
    pub fn begin(store: Store, opts: IngestOptions) -> Result<Self, IngestError> {
        let started = Instant::now();
        let io = Io::new(store);
        let mut notes = recover::recover(&io)?;
        let base = manifest::load_latest(&io)?;
        let declared = if base.version == 0 {
            opts.config.properties.clone()
        } else {
            if !opts.config.properties.is_empty() && opts.config.properties != base.properties {
                return Err(IngestError::BadInput(format!(
                    "the store's declared properties are {} but the config declares {}; a store keeps the properties of its first ingest",
                    describe(&base.properties),
                    describe(&opts.config.properties)
                )));
            }
            base.properties.clone()
        };
        let segments = base
            .users
            .segments
            .iter()
            .map(|s| io.get(s))
            .collect::<Result<Vec<_>, _>>()?;
        let users = UserDict::from_segments(&segments, base.users.count)?;
        let schema = event_schema(&declared);
        let txn = uuid::Uuid::now_v7().simple().to_string();
        let lease = Lease::take(&io, &txn, LEASE_REFRESH)?;
        let writer = Writer::start(
            io.clone(),
            txn.clone(),
            writer_properties(&opts.config.ingest, &schema),
        );
        if !notes.is_empty() {
            notes.insert(0, "recovered from an interrupted run:".into());
        }
        Ok(Self {
            names: PropertyNames::from_declared(&declared),
            schema,
            cfg: opts.config.ingest.clone(),
            max_bad: opts.max_bad,
            default_format: opts.format,
            users,
            merges: Vec::new(),
            seen: SeenIds::with_limit(opts.config.ingest.seen_ids_in_memory),
            committed: CommittedIds::new(
                io.clone(),
                &base,
                opts.config.ingest.seen_ids_in_memory.max(1 << 20),
            ),
            bufs: Default::default(),
            buffered: 0,
            writer,
            bounds: TimeBounds::new(&opts.config.ingest),
            ingested_at: chrono::Utc::now().timestamp_micros(),
            counters: Counters::default(),
            dead: DeadLetters::default(),
            sources: Vec::new(),
            notes,
            discard: false,
            file_seq: 0,
            progress: None,
            pending_error: None,
            io,
            txn,
            base,
            declared,
            started,
            rebase_hook: None,
            lease,
        })
    }

    /// Sets a progress callback (input bytes consumed).
    pub fn set_progress(&mut self, p: Progress) {
        self.progress = Some(p);
    }

    /// Test hook: runs `hook` each time the commit rebases on a concurrent
    /// commit, before it tries the next version (lets a test commit in between).
    #[doc(hidden)]
    pub fn set_rebase_hook(&mut self, hook: Box<dyn FnMut() + Send>) {
        self.rebase_hook = Some(hook);
    }

    /// The transaction id.
    pub fn txn(&self) -> &str {
        &self.txn
    }

    /// The declared properties in force.
    pub fn declared(&self) -> &[DeclaredProperty] {
        &self.declared
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn known_source(&self, hash: &str) -> Option<&SourceEntry> {
        self.base
            .sources
            .iter()
            .chain(&self.sources)
            .find(|s| s.hash == hash)
    }

    /// Ingests one file, unless the same content was ingested before.
    pub fn add_file(&mut self, path: &Path) -> Result<(), IngestError> {
        self.add_file_as(path, None)
    }

    /// Ingests a local copy of another source (an object downloaded from a
    /// bucket): `source` is its name (URL) and modification time, which the
    /// manifest records and the "already ingested" check compares, instead
    /// of the copy's path and time.
    pub fn add_file_as(
        &mut self,
        path: &Path,
        source: Option<(&str, Option<i64>)>,
    ) -> Result<(), IngestError> {
        let name = match source {
            Some((n, _)) => n.to_string(),
            None => path.display().to_string(),
        };
        let input_err = |source| IngestError::Input {
            input: name.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(input_err)?;
        if meta.is_dir() {
            return Err(IngestError::BadInput(format!(
                "{name} is a directory; pass files or a glob such as '{name}/*.ndjson'"
            )));
        }
        let mtime = match source {
            Some((_, t)) => t,
            None => meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
        };
        let format = Format::from_path(&name).or(self.default_format).ok_or_else(|| {
            IngestError::BadInput(format!(
                "cannot tell the format of {name}; name it .ndjson, .csv or .parquet or pass --format"
            ))
        })?;
        // The same name, size and (whole-second) modification time is only a
        // hint: a file edited in place can keep all three. Its content decides
        // (and its hash then serves the same-size check below too).
        let mut content_hash = None;
        if let Some(prev) = self.base.sources.iter().find(|s| {
            s.name == name && s.bytes == meta.len() && s.mtime == mtime && mtime.is_some()
        }) {
            let hash = hash_file(path).map_err(input_err)?;
            if hash == prev.hash {
                self.counters.skipped_inputs += 1;
                self.notes.push(format!(
                    "{name}: already ingested (transaction {}), skipped",
                    prev.txn
                ));
                self.tick(meta.len());
                return Ok(());
            }
            content_hash = Some(hash);
        }
        if meta.len() == 0 {
            self.notes
                .push(format!("{name}: empty file, nothing to ingest"));
            self.counters.inputs += 1;
            return Ok(());
        }
        // The same content under another name (a copy, a re-download) must be
        // recognised before any of it is decoded. It can only be one of the
        // sources of the same size: hash first only then; otherwise hash while
        // decoding, which saves a second pass over the file.
        let same_size = self
            .base
            .sources
            .iter()
            .chain(&self.sources)
            .any(|s| s.bytes == meta.len());
        if same_size {
            let hash = match content_hash {
                Some(h) => h,
                None => hash_file(path).map_err(input_err)?,
            };
            if let Some(prev) = self.known_source(&hash) {
                let note = format!(
                    "{name}: same content as {} (transaction {}), skipped",
                    prev.name, prev.txn
                );
                self.counters.skipped_inputs += 1;
                self.notes.push(note);
                self.tick(meta.len());
                return Ok(());
            }
        }
        if format != Format::Parquet {
            // Room for this file's ids up front (assuming lines of about 128
            // bytes), rather than growing the set, and briefly holding it twice,
            // again and again.
            self.seen.reserve((meta.len() / 128) as usize);
        }
        let before = self.counters.written;
        let file = std::fs::File::open(path).map_err(input_err)?;
        let mut hashing = HashingReader {
            inner: file,
            hasher: Xxh3::new(),
            bytes: 0,
        };
        self.decode(&mut hashing, &name, format)
            .map_err(input_err)?;
        // Whatever a decoder left unread still belongs to the content's hash.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(input_err)?;
        let hash = format!("{:032x}", hashing.hasher.digest128());
        self.counters.inputs += 1;
        self.counters.bytes += meta.len();
        let rows = self.counters.written - before;
        self.sources.push(SourceEntry {
            hash,
            name,
            bytes: meta.len(),
            mtime,
            rows,
            txn: self.txn.clone(),
        });
        Ok(())
    }

    /// Ingests a stream (stdin). If its content turns out to have been ingested
    /// before, the whole transaction is discarded at commit.
    pub fn add_reader(&mut self, reader: impl Read, name: &str) -> Result<(), IngestError> {
        let format = self.default_format.unwrap_or(Format::Ndjson);
        let mut hashing = HashingReader {
            inner: reader,
            hasher: Xxh3::new(),
            bytes: 0,
        };
        let before = self.counters.written;
        self.decode(&mut hashing, name, format)
            .map_err(|source| IngestError::Input {
                input: name.to_string(),
                source,
            })?;
        let hash = format!("{:032x}", hashing.hasher.digest128());
        let bytes = hashing.bytes;
        self.counters.inputs += 1;
        self.counters.bytes += bytes;
        if bytes == 0 {
            self.notes
                .push(format!("{name}: empty input, nothing to ingest"));
            return Ok(());
        }
        if let Some(prev) = self.known_source(&hash) {
            let note = format!(
                "{name}: same content as {} (transaction {}); nothing committed",
                prev.name, prev.txn
            );
            self.notes.push(note);
            self.counters.skipped_inputs += 1;
            self.discard = true;
            return Ok(());
        }
        self.sources.push(SourceEntry {
            hash,
            name: name.to_string(),
            bytes,
            mtime: None,
            rows: self.counters.written - before,
            txn: self.txn.clone(),
        });
        Ok(())
    }

    /// Decodes an input, decompressing it first when its name (`.gz`,
    /// `.zst`) or its first bytes (gzip's or zstd's magic number) say it is
    /// compressed. A damaged or truncated compressed input is an error, never
    /// a shorter input.
    fn decode(&mut self, reader: impl Read, name: &str, format: Format) -> std::io::Result<()> {
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, reader);
        let head = std::io::BufRead::fill_buf(&mut reader)?;
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let compression = Compression::of(name, head).map_err(bad)?;
        if compression == Compression::None {
            return self.decode_plain(reader, name, format);
        }
        // Progress counts the compressed bytes read (what the bar's total
        // is made of), not the decoders' decompressed ones.
        let mut counting = Counting {
            inner: reader,
            progress: self.progress.take(),
        };
        let done = match compression {
            Compression::Gzip => {
                let r = flate2::read::MultiGzDecoder::new(&mut counting);
                self.decode_plain(
                    Decompressing {
                        inner: r,
                        kind: "gzip",
                    },
                    name,
                    format,
                )
            }
            _ => match zstd::stream::read::Decoder::with_buffer(&mut counting) {
                Ok(r) => self.decode_plain(
                    Decompressing {
                        inner: r,
                        kind: "zstd",
                    },
                    name,
                    format,
                ),
                Err(e) => Err(e),
            },
        };
        self.progress = counting.progress.take();
        done
    }

    fn decode_plain(
        &mut self,
        reader: impl Read,
        name: &str,
        format: Format,
    ) -> std::io::Result<()> {
        let mut progress = self.progress.take();
        let mut on_bytes = |n: u64| {
            if let Some(p) = progress.as_mut() {
                p(n)
            }
        };
        let names = self.names.clone();
        let result = match format {
            Format::Ndjson => {
                let declared = self.declared.clone();
                let cx = DecodeContext {
                    input: name,
                    names: &names,
                    declared: &declared,
                    bounds: self.bounds,
                    schema: self.schema.clone(),
                    ingested_at: self.ingested_at,
                    max_line: self.cfg.max_line_bytes,
                };
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                parallel::decode_ndjson(reader, &cx, workers, &mut on_bytes, &mut |d, line| {
                    self.absorb(d, name, line)
                })
            }
            Format::Csv => decode::csv::read_csv(
                reader,
                name,
                &names,
                decode::csv::CsvLimits {
                    max_bytes: self.cfg.max_line_bytes,
                    max_lines: self.cfg.max_record_lines,
                },
                self,
                &mut on_bytes,
            ),
            Format::Parquet => {
                decode::parquet::read_parquet(reader, name, &names, self, &mut on_bytes)
            }
        };
        self.progress = progress;
        result?;
        self.io_error()
    }

    /// Reports progress in events rather than bytes (generated input).
    pub fn tick_events(&mut self, n: u64) {
        self.tick(n);
    }

    fn tick(&mut self, n: u64) {
        if let Some(p) = self.progress.as_mut() {
            p(n);
        }
    }

    fn io_error(&mut self) -> std::io::Result<()> {
        match self.pending_error.take() {
            Some(e) => Err(std::io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }

    /// Adds one already-decoded event (used by the generator and the HTTP server).
    pub fn push(&mut self, ev: &RawEvent<'_>, loc: Location<'_>) {
        self.accept(ev, loc, &[]);
    }

    /// Records a generated source (for `tenure gen`), so re-running it is a no-op.
    pub fn add_synthetic_source(&mut self, hash: String, name: String, rows: u64) -> bool {
        if self.known_source(&hash).is_some() {
            self.discard = true;
            self.notes.push(format!(
                "{name}: generated before with the same parameters; nothing committed"
            ));
            return false;
        }
        self.sources.push(SourceEntry {
            hash,
            name,
            bytes: 0,
            mtime: None,
            rows,
            txn: self.txn.clone(),
        });
        true
    }

    /// Is a source with this hash already committed?
    pub fn has_source(&self, hash: &str) -> bool {
        self.known_source(hash).is_some()
    }

    fn flush_day(&mut self, day: i64) -> Result<(), IngestError> {
        let Some(buf) = self.bufs.remove(&day) else {
            return Ok(());
        };
        let rows = buf.rows();
        if rows == 0 {
            return Ok(());
        }
        self.buffered -= rows;
        let batches = buf.finish();
        self.file_seq += 1;
        self.counters.files += 1;
        self.writer.send(Job {
            date: date_string(day),
            name: format!("part-{}-{:05}.parquet", self.txn, self.file_seq),
            batches,
        })
    }

    /// Takes a piece decoded by a worker, in input order: drops repeated
    /// `event_id`s, assigns user keys (both in line order, as [`Sink::accept`]
    /// does) and buffers the rows by day.
    fn absorb(&mut self, d: Decoded, input: &str, first_line: u64) {
        for r in &d.rejects {
            self.reject(
                Location {
                    input,
                    line: first_line + r.line,
                },
                &r.reason,
                &r.raw,
            );
        }
        self.counters.read += d.order.len() as u64;
        let column = |name| self.schema.index_of(name).expect("event schema column");
        let (user_id_column, user_key_column) =
            (column(columns::USER_ID), column(columns::USER_KEY));
        let user_ids: Vec<&StringArray> = d
            .parts
            .iter()
            .map(|(_, b)| b.column(user_id_column).as_string::<i32>())
            .collect();
        let mut keys: Vec<Vec<u32>> = d
            .parts
            .iter()
            .map(|(_, b)| Vec::with_capacity(b.num_rows()))
            .collect();
        let mut dropped: Vec<Vec<usize>> = vec![Vec::new(); d.parts.len()];
        // Rows go in blocks: first the slots of a block's ids are touched in a
        // tight loop, so their cache misses overlap, then the block is inserted
        // (see SeenIds).
        const BLOCK: usize = 64;
        let mut touched = 0u128;
        // A merge's users get their keys right after its row's, as
        // `Sink::accept` gives them; a duplicate row's merge is dropped too.
        let mut merges = d.merges.into_iter().peekable();
        let mut line = 0;
        for (order, ids) in d.order.chunks(BLOCK).zip(d.ids.chunks(BLOCK)) {
            for h in ids.iter().flatten() {
                touched ^= self.seen.touch(*h);
            }
            for (&p, id) in order.iter().zip(ids) {
                let p = p as usize;
                let row = keys[p].len();
                let at = line;
                line += 1;
                if let Some(h) = id
                    && (!self.seen_insert(*h) || self.committed_has(d.parts[p].0, *h))
                {
                    self.counters.duplicates += 1;
                    dropped[p].push(row);
                    keys[p].push(0);
                    while merges.next_if(|(r, _)| *r == at).is_some() {}
                    continue;
                }
                keys[p].push(self.users.key(user_ids[p].value(row)));
                while let Some((_, (kind, from, to, ts))) = merges.next_if(|(r, _)| *r == at) {
                    self.merge(kind, &from, &to, ts);
                }
            }
        }
        std::hint::black_box(touched);
        for (((day, batch), keys), dropped) in d.parts.into_iter().zip(keys).zip(dropped) {
            let mut columns = batch.columns().to_vec();
            columns[user_key_column] = Arc::new(UInt32Array::from(keys));
            let mut batch = RecordBatch::try_new(batch.schema(), columns)
                .expect("same columns with keys filled in");
            if !dropped.is_empty() {
                let mut keep = vec![true; batch.num_rows()];
                for r in dropped {
                    keep[r] = false;
                }
                batch = arrow_select::filter::filter_record_batch(&batch, &keep.into())
                    .expect("filter matches the batch length");
            }
            self.buffer_batch(day, batch);
        }
    }

    /// Records that `from` joins `to` (both get keys: a merge may name a user
    /// with no event yet).
    fn merge(&mut self, kind: tenure_schema::identity::MergeKind, from: &str, to: &str, ts: i64) {
        let from = self.users.key(from);
        let to = self.users.key(to);
        self.merges
            .push(tenure_schema::identity::Merge { ts, kind, from, to });
    }

    /// Records `event_id` hash `h`; false when it was seen before in this
    /// commit. A spill file that cannot be written or read fails the run (after
    /// the current input) and the row is kept meanwhile: nothing is committed.
    fn seen_insert(&mut self, h: u128) -> bool {
        match self.seen.insert(h) {
            Ok(new) => new,
            Err(e) => {
                if self.pending_error.is_none() {
                    self.pending_error = Some(IngestError::Spill(e));
                }
                true
            }
        }
    }

    /// Does the store already hold an event of `day` with id hash `h`? An
    /// index that cannot be read fails the run (after the current input).
    fn committed_has(&mut self, day: i64, h: u128) -> bool {
        match self.committed.contains(day, h) {
            Ok(found) => found,
            Err(e) => {
                if self.pending_error.is_none() {
                    self.pending_error = Some(e);
                }
                false
            }
        }
    }

    /// Buffers decoded rows of one day, flushing files as they fill.
    fn buffer_batch(&mut self, day: i64, mut batch: RecordBatch) {
        while batch.num_rows() > 0 {
            let buf = self.bufs.entry(day).or_default();
            let room = self.cfg.file_rows.max(1).saturating_sub(buf.rows()).max(1);
            let take = room.min(batch.num_rows());
            buf.push_batch(batch.slice(0, take));
            batch = batch.slice(take, batch.num_rows() - take);
            self.buffered += take;
            self.counters.written += take as u64;
            let full = buf.rows() >= self.cfg.file_rows;
            self.maybe_flush(day, full);
        }
    }

    /// Flushes `day` when its file is full, or the biggest buffer when too many
    /// rows are buffered in all.
    fn maybe_flush(&mut self, day: i64, full: bool) {
        if self.pending_error.is_some() {
            return;
        }
        let flush = if full {
            Some(day)
        } else if self.buffered >= self.cfg.buffer_rows {
            self.bufs
                .iter()
                .max_by_key(|(_, c)| c.rows())
                .map(|(d, _)| *d)
        } else {
            None
        };
        if let Some(d) = flush
            && let Err(e) = self.flush_day(d)
        {
            self.pending_error = Some(e);
        }
    }

    /// Flushes every buffer and waits for the writer; returns the staged files.
    pub(crate) fn finish_files(&mut self) -> Result<Vec<tenure_schema::FileEntry>, IngestError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let mut days: Vec<i64> = self.bufs.keys().copied().collect();
        days.sort_unstable();
        for day in days {
            self.flush_day(day)?;
        }
        let mut files = self.writer.finish()?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    pub(crate) fn max_bad(&self) -> Option<u64> {
        self.max_bad
    }

    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

fn describe(props: &[DeclaredProperty]) -> String {
    if props.is_empty() {
        return "(none)".into();
    }
    props
        .iter()
        .map(|p| format!("{}:{:?}", p.name, p.ty).to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sink for Ingest {
    fn accept(&mut self, raw: &RawEvent<'_>, loc: Location<'_>, line: &[u8]) {
        self.counters.read += 1;
        let ev = match validate(raw, &self.declared, self.bounds) {
            Ok(ev) => ev,
            Err(reason) => {
                self.counters.read -= 1;
                self.reject(loc, &reason, line);
                return;
            }
        };
        let (event_id, hash) = parallel::event_id(&ev);
        let day = ev.ts.div_euclid(DAY_MICROS);
        if let Some(h) = hash
            && (!self.seen_insert(h) || self.committed_has(day, h))
        {
            self.counters.duplicates += 1;
            return;
        }
        let key = self.users.key(&ev.user_id);
        if let Some((kind, from)) = &ev.merge {
            self.merge(*kind, from, &ev.user_id, ev.ts);
        }
        let buf = self.bufs.entry(day).or_default();
        let cols = buf.cols.get_or_insert_with(|| {
            EventColumns::new(self.schema.clone(), &self.declared, self.ingested_at)
        });
        cols.push(&ev, &event_id, key);
        let full = buf.rows() >= self.cfg.file_rows;
        self.buffered += 1;
        self.counters.written += 1;
        self.maybe_flush(day, full);
    }

    fn reject(&mut self, loc: Location<'_>, reason: &str, raw: &[u8]) {
        self.counters.read += 1;
        self.counters.rejected += 1;
        self.dead.push(loc, reason, raw);
    }
}

/// Rows of one day waiting to be written: batches decoded by workers, and rows
/// pushed one at a time.
#[derive(Default)]
struct DayBuf {
    batches: Vec<RecordBatch>,
    batch_rows: usize,
    cols: Option<EventColumns>,
}

impl DayBuf {
    fn rows(&self) -> usize {
        self.batch_rows + self.cols.as_ref().map_or(0, EventColumns::rows)
    }

    fn push_batch(&mut self, batch: RecordBatch) {
        self.batch_rows += batch.num_rows();
        self.batches.push(batch);
    }

    fn finish(mut self) -> Vec<RecordBatch> {
        if let Some(mut cols) = self.cols.take()
            && cols.rows() > 0
        {
            self.batches.push(cols.finish());
        }
        self.batches
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Xxh3,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// xxh3-128 of a file's content, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:032x}", h.digest128()))
}

/// How an input is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// A lower-case name without its compression suffix.
    fn strip_suffix(lower: &str) -> &str {
        [".gz", ".gzip", ".zst", ".zstd"]
            .iter()
            .find_map(|s| lower.strip_suffix(s))
            .unwrap_or(lower)
    }

    /// The compression of an input named `name` that starts with `head`:
    /// the magic number decides; a name that promises a compression the
    /// content does not have is an error.
    fn of(name: &str, head: &[u8]) -> Result<Self, String> {
        let by_magic = if head.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else {
            Self::None
        };
        let lower = name.to_ascii_lowercase();
        let by_name = if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Self::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Self::Zstd
        } else {
            Self::None
        };
        if by_name != Self::None && by_magic != by_name && !head.is_empty() {
            let kind = if by_name == Self::Gzip {
                "gzip"
            } else {
                "zstd"
            };
            return Err(format!(
                "{name} is named as {kind}-compressed but does not start like {kind} data"
            ));
        }
        Ok(by_magic)
    }
}

/// A reader that reports the bytes read from it as progress.
struct Counting<R> {
    inner: R,
    progress: Option<Progress>,
}

impl<R: std::io::BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress.as_mut() {
            p(n as u64);
        }
        Ok(n)
    }
}

impl<R: std::io::BufRead> std::io::BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        if let Some(p) = self.progress.as_mut() {
            p(n as u64);
        }
    }
}

/// A decompressing reader whose errors say what was being decompressed.
struct Decompressing<R> {
    inner: R,
    kind: &'static str,
}

impl<R: Read> Read for Decompressing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::UnexpectedEof => std::io::ErrorKind::UnexpectedEof,
                _ => std::io::ErrorKind::InvalidData,
            };
            std::io::Error::new(
                kind,
                format!("not valid {} data (damaged or truncated): {e}", self.kind),
            )
        })
    }
}
