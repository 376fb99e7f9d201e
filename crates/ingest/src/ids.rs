//! Store-wide `event_id`s: an event whose id the store already holds is a
//! duplicate, whichever run stored the first copy.
//!
//! Each committed data file has an index (`_tenure/ids/date=D/<file>.ids`,
//! listed in the manifest's `ids`): the sorted 128-bit xxh3 hashes of its rows'
//! `event_id`s, written by the file writers next to the staged file and moved
//! into place with it. An ingest looks every id that passed the in-run check
//! ([`crate::seen::SeenIds`]) up in the committed ids of the row's date
//! partition, loaded on first touch and kept in a bounded LRU of partitions
//! (inputs are mostly time-ordered, so few are live at once); the cost is one
//! load per partition the new input touches, not a pass over the store. When
//! another writer commits first, the rebase drops from the staged files the ids
//! that the winner's files now hold.
//!
//! Scope, stated plainly:
//! - Uniqueness is per date partition (the UTC date of `ts`): an id re-sent
//!   with a timestamp on another UTC date is a different event to the store.
//!   Exports re-sent as they were (the case this exists for) keep their dates.
//! - Ids are compared by their 128-bit hash: two different ids collide with
//!   probability about n²/2¹²⁹, nil at any realistic size.
//! - A partition with files written before these indexes existed (or whose
//!   index file is missing) is read from its files' `event_id` column instead,
//!   so older stores are covered too, at the cost of reading that column once
//!   per run that touches the partition.
//! - Ids generated for events without one (UUIDv7) are indexed too: they never
//!   repeat, but re-ingesting an export of the store itself is then recognised.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use hashbrown::HashSet;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_schema::{FileEntry, IdsEntry, Snapshot, columns};

use crate::IngestError;
use crate::io::Io;
use crate::timestamp::date_string;

/// Where the committed id indexes live.
pub const IDS_PREFIX: &str = "_tenure/ids";

const MAGIC: &[u8; 8] = b"TNIDS001";

/// Where the index of the committed file `file` (under `events/`) lives.
pub fn ids_path(file: &FileEntry) -> String {
    let name = file.path.rsplit('/').next().unwrap_or(&file.path);
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    format!("{IDS_PREFIX}/date={}/{stem}.ids", file.date)
}

/// Where the index of a staged file is staged.
pub fn staged_ids_path(staged: &str) -> String {
    format!("{staged}.ids")
}

/// The manifest entry of a staged file's index.
pub fn entry(file: &FileEntry) -> IdsEntry {
    IdsEntry {
        date: file.date.clone(),
        path: ids_path(file),
        rows: file.rows,
    }
}

/// The 128-bit xxh3 hashes of a batch's `event_id`s.
pub fn hash_ids(batch: &RecordBatch) -> Result<Vec<u128>, IngestError> {
    let col = batch.column(batch.schema().index_of(columns::EVENT_ID)?);
    let col = arrow_cast::cast(col, &arrow_schema::DataType::Utf8)?;
    // Straight into the list (no per-row `Option` list first): this runs on
    // every file an ingest writes.
    Ok(col
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(|id| xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
        .collect())
}

/// The 128-bit xxh3 hash of each row's `event_id` (`None` where null).
pub fn row_hashes(batch: &RecordBatch) -> Result<Vec<Option<u128>>, IngestError> {
    let col = batch.column(batch.schema().index_of(columns::EVENT_ID)?);
    let col = arrow_cast::cast(col, &arrow_schema::DataType::Utf8)?;
    let ids = col.as_string::<i32>();
    Ok((0..ids.len())
        .map(|i| {
            ids.is_valid(i)
                .then(|| xxhash_rust::xxh3::xxh3_128(ids.value(i).as_bytes()))
        })
        .collect())
}

/// Encodes hashes as an index file (sorted, little-endian).
pub fn encode(mut hashes: Vec<u128>) -> Vec<u8> {
    hashes.sort_unstable();
    hashes.dedup();
    let mut out = Vec::with_capacity(MAGIC.len() + hashes.len() * 16);
    out.extend_from_slice(MAGIC);
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

/// Decodes an index file.
pub fn decode(data: &[u8]) -> Result<Vec<u128>, IngestError> {
    let body = data
        .strip_prefix(MAGIC.as_slice())
        .filter(|b| b.len() % 16 == 0)
        .ok_or_else(|| IngestError::Corrupt {
            url: String::new(),
            message: "an event-id index file is malformed".into(),
        })?;
    Ok(body
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect())
}

/// Hashes of the `event_id` column of a committed Parquet file.
fn read_file_ids(data: Bytes) -> Result<Vec<u128>, IngestError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
    let idx = builder.schema().index_of(columns::EVENT_ID)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let mut out = Vec::new();
    for b in builder.with_projection(mask).build()? {
        out.extend(hash_ids(&b?)?);
    }
    Ok(out)
}

type IdSet = HashSet<u128, foldhash::fast::FixedState>;

struct Partition {
    ids: IdSet,
    last_used: u64,
}

/// What the base snapshot holds of one date.
#[derive(Default)]
struct DateFiles {
    files: Vec<FileEntry>,
    ids: Vec<IdsEntry>,
}

/// The committed ids of the partitions an ingest touches, loaded on demand.
pub struct CommittedIds {
    io: Io,
    dates: HashMap<String, DateFiles>,
    cache: hashbrown::HashMap<i64, Partition, foldhash::fast::FixedState>,
    held: usize,
    limit: usize,
    tick: u64,
}

impl CommittedIds {
    /// The committed ids of `snap`; at most about `limit` ids are held in
    /// memory (the partitions used longest ago are dropped and reloaded if
    /// touched again), except that the partition in use is always held.
    pub fn new(io: Io, snap: &Snapshot, limit: usize) -> Self {
        let mut dates: HashMap<String, DateFiles> = HashMap::new();
        for f in &snap.files {
            dates
                .entry(f.date.clone())
                .or_default()
                .files
                .push(f.clone());
        }
        for e in &snap.ids {
            // An index whose partition has no files left is of no use.
            if let Some(d) = dates.get_mut(&e.date) {
                d.ids.push(e.clone());
            }
        }
        Self {
            io,
            dates,
            cache: Default::default(),
            held: 0,
            limit,
            tick: 0,
        }
    }

    /// Does the store hold an event of day `day` whose id hashes to `h`?
    pub fn contains(&mut self, day: i64, h: u128) -> Result<bool, IngestError> {
        self.tick += 1;
        if let Some(p) = self.cache.get_mut(&day) {
            p.last_used = self.tick;
            return Ok(p.ids.contains(&h));
        }
        let ids = self.load(&date_string(day))?;
        let found = ids.contains(&h);
        self.held += ids.len();
        self.cache.insert(
            day,
            Partition {
                ids,
                last_used: self.tick,
            },
        );
        while self.held > self.limit && self.cache.len() > 1 {
            let (&oldest, _) = self
                .cache
                .iter()
                .filter(|(d, _)| **d != day)
                .min_by_key(|(_, p)| p.last_used)
                .expect("more than one partition");
            let p = self.cache.remove(&oldest).expect("present");
            self.held -= p.ids.len();
        }
        Ok(found)
    }

    fn load(&self, date: &str) -> Result<IdSet, IngestError> {
        let Some(d) = self.dates.get(date) else {
            return Ok(IdSet::default());
        };
        load_partition(&self.io, &d.files, &d.ids)
    }
}

/// The ids of one partition: from its index files when they cover every
/// committed row (compaction replaces files but keeps their indexes),
/// otherwise file by file, from each file's index or its `event_id` column.
fn load_partition(io: &Io, files: &[FileEntry], ids: &[IdsEntry]) -> Result<IdSet, IngestError> {
    let file_rows: u64 = files.iter().map(|f| f.rows).sum();
    let indexed: u64 = ids.iter().map(|e| e.rows).sum();
    let mut set = IdSet::default();
    set.reserve(file_rows as usize);
    if indexed == file_rows {
        let mut complete = true;
        for e in ids {
            match io.get_opt(&e.path)? {
                Some(data) => set.extend(decode(&data)?),
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            return Ok(set);
        }
        set.clear();
    }
    for f in files {
        set.extend(file_ids(io, f)?);
    }
    Ok(set)
}

/// The first of `paths` that exists (a committed file may be moving from
/// staging to its place while this runs, hence the final path twice).
fn get_moving(io: &Io, at: &str, staged: &str) -> Result<Option<Bytes>, IngestError> {
    for p in [at, staged, at] {
        if let Some(data) = io.get_opt(p)? {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The id hashes of one committed file: from its index, or from its data.
pub fn file_ids(io: &Io, f: &FileEntry) -> Result<Vec<u128>, IngestError> {
    if let Some(data) = get_moving(io, &ids_path(f), &staged_ids_path(&f.staged))? {
        return decode(&data);
    }
    match get_moving(io, &f.path, &f.staged)? {
        Some(data) => read_file_ids(data),
        None => Err(IngestError::Corrupt {
            url: io.store.url.clone(),
            message: format!("committed file {} is missing", f.path),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_round_trip_sorted_and_reject_garbage() {
        let data = encode(vec![3, 1, u128::MAX, 1]);
        assert_eq!(decode(&data).unwrap(), vec![1, 3, u128::MAX]);
        assert!(decode(b"TNIDS001abc").is_err());
        assert!(decode(b"nonsense").is_err());
    }
}
