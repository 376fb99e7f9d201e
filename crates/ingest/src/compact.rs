//! Compaction: merge a partition's small files into large sorted ones and swap
//! them in with one manifest commit, so a reader of the manifest sees either the
//! old files or the new ones, never both and never neither.
//!
//! It also folds the identity log in (see `tenure_schema::identity`): rows
//! of a user who joined another person get that person's key (`user_id`
//! keeps the id the event was sent with), so readers no longer apply those
//! merges. A file none of whose users joined anyone is only marked folded.
//!
//! The replaced files are not deleted: they move to
//! [`StoreLayout::retired_file`] (so `events/` holds exactly the committed files)
//! and stay readable there for a retention period ([`DEFAULT_RETAIN`], or
//! `tenure compact --retain`), so a reader still working from the previous
//! version finds them ([`tenure_store::file_locations`]). A later compaction (or
//! `tenure repair`) deletes them once the period has passed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use arrow_array::RecordBatch;
use tenure_schema::{FileEntry, IngestConfig, StoreLayout, event_schema, stored_schema};

use crate::commit::{fault_point, publish};
use crate::io::Io;
use crate::parquet_out::{decode_stored, encode, sort_batch, ts_range, writer_properties};
use crate::{IngestError, Store, manifest, recover};

pub use crate::manifest::DEFAULT_RETAIN;

/// What compaction did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactSummary {
    /// Partitions rewritten.
    pub partitions: u64,
    /// Files before, in those partitions.
    pub files_before: u64,
    /// Files after, in those partitions.
    pub files_after: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Rows whose user joined another person, given that person's key.
    pub merged_rows: u64,
    /// Manifest version committed, if any.
    pub version: Option<u64>,
    /// Notes (recovery).
    pub notes: Vec<String>,
}

/// Compacts every partition that has more than one file, or only the given dates.
/// Files are merged up to `cfg.file_rows` rows each. `progress` is called once
/// per partition done. Replaced files are kept for [`DEFAULT_RETAIN`].
pub fn compact(
    store: Store,
    cfg: &IngestConfig,
    only_dates: Option<&[String]>,
    progress: impl FnMut(u64, u64),
) -> Result<CompactSummary, IngestError> {
    compact_retaining(store, cfg, only_dates, DEFAULT_RETAIN, progress)
}

/// [`compact`], keeping replaced files readable for `retain`, and afterwards
/// maintaining the metadata ([`manifest::maintain`]): files replaced more than
/// `retain` ago are deleted, an unreadable newest manifest version is written
/// again, the users segments are merged and the log is checkpointed.
pub fn compact_retaining(
    store: Store,
    cfg: &IngestConfig,
    only_dates: Option<&[String]>,
    retain: Duration,
    progress: impl FnMut(u64, u64),
) -> Result<CompactSummary, IngestError> {
    let io = Io::new(store);
    let mut summary = compact_files(&io, cfg, only_dates, progress)?;
    summary.notes.extend(manifest::maintain(&io, retain)?);
    Ok(summary)
}

fn compact_files(
    io: &Io,
    cfg: &IngestConfig,
    only_dates: Option<&[String]>,
    mut progress: impl FnMut(u64, u64),
) -> Result<CompactSummary, IngestError> {
    let io = io.clone();
    let mut summary = CompactSummary {
        notes: recover::recover(&io)?,
        ..Default::default()
    };
    let base = manifest::load_latest(&io)?;
    let schema = event_schema(&base.properties);
    let stored = stored_schema(&base.properties);
    let props = writer_properties(cfg, &schema);
    // The identity log: each key that joined another person, and its person.
    let folded = base.identity.len() as u64;
    let mut log = Vec::new();
    for e in &base.identity {
        log.extend(
            tenure_schema::identity::decode(&io.get(&e.path)?)
                .map_err(|m| IngestError::BadInput(format!("identity log {}: {m}", e.path)))?,
        );
    }
    let joined: HashMap<u32, u32> = tenure_schema::identity::resolve(&log)
        .members()
        .into_iter()
        .filter(|(k, p)| k != p)
        .collect();
    let mut by_date: BTreeMap<&str, Vec<&FileEntry>> = BTreeMap::new();
    for f in &base.files {
        by_date.entry(&f.date).or_default().push(f);
    }
    by_date.retain(|date, files| {
        only_dates.is_none_or(|d| d.iter().any(|x| x == date))
            && (files.len() > 1 || files.iter().any(|f| f.identity < folded))
    });
    // Single files not folded through the log: rewritten when a user of
    // theirs joined someone, else only marked.
    let mut marked: Vec<String> = Vec::new();
    let mut single: HashMap<String, RecordBatch> = HashMap::new();
    let mut unchanged = Vec::new();
    for (date, files) in &by_date {
        if files.len() != 1 {
            continue;
        }
        if joined.is_empty() {
            // Nobody joined anyone (only identifies): nothing to read.
            marked.push(files[0].path.clone());
            unchanged.push(*date);
            continue;
        }
        let data = io.get(&files[0].path)?;
        let batch = arrow_select::concat::concat_batches(&stored, &decode_stored(data)?)?;
        let (batch, merged) = to_persons(&batch, &joined)?;
        if merged == 0 {
            marked.push(files[0].path.clone());
            unchanged.push(*date);
        } else {
            summary.merged_rows += merged;
            single.insert(date.to_string(), batch);
        }
    }
    by_date.retain(|date, _| !unchanged.contains(date));
    if by_date.is_empty() && marked.is_empty() {
        return Ok(summary);
    }
    let txn = uuid::Uuid::now_v7().simple().to_string();
    let mut old: Vec<FileEntry> = Vec::new();
    let mut new: Vec<FileEntry> = Vec::new();
    let total = by_date.len() as u64;
    let mut seq = 0;
    for (i, (date, files)) in by_date.iter().enumerate() {
        let merged = match single.remove(*date) {
            Some(b) => b,
            None => {
                let mut batches: Vec<RecordBatch> = Vec::new();
                for f in files {
                    let data = io.get(&f.path)?;
                    batches.extend(decode_stored(data)?);
                }
                let all = arrow_select::concat::concat_batches(&stored, &batches)?;
                drop(batches);
                let (all, n) = to_persons(&all, &joined)?;
                summary.merged_rows += n;
                all
            }
        };
        let sorted = sort_batch(&merged)?;
        drop(merged);
        let mut off = 0;
        while off < sorted.num_rows() {
            let len = cfg.file_rows.max(1).min(sorted.num_rows() - off);
            let part = sorted.slice(off, len);
            seq += 1;
            let name = format!("part-{txn}-{seq:05}.parquet");
            let bytes = encode(&part, props.clone())?;
            let staged = StoreLayout::staged_file(&txn, date, &name);
            let size = bytes.len() as u64;
            io.put(&staged, bytes)?;
            let (min_ts, max_ts) = ts_range(&part);
            new.push(FileEntry {
                path: StoreLayout::event_file(date, &name),
                staged,
                date: date.to_string(),
                rows: len as u64,
                bytes: size,
                min_ts,
                max_ts,
                txn: txn.clone(),
                events: Some(crate::parquet_out::event_names(&part)?),
                identity: folded,
            });
            off += len;
        }
        summary.partitions += 1;
        summary.files_before += files.len() as u64;
        summary.rows += sorted.num_rows() as u64;
        old.extend(files.iter().map(|f| (*f).clone()));
        progress(i as u64 + 1, total);
    }
    summary.files_after = new.len() as u64;
    let old_paths: HashSet<&str> = old.iter().map(|f| f.path.as_str()).collect();
    let base_identity = base.identity.clone();
    let mut current = base;
    loop {
        if !old_paths
            .iter()
            .all(|p| current.files.iter().any(|f| f.path == *p))
        {
            for f in &new {
                io.delete(&f.staged)?;
            }
            return Err(IngestError::Conflict(
                "another compaction changed these partitions concurrently; nothing was committed, rerun to compact what is left".into(),
            ));
        }
        // The log only grows; merges added since are applied at read.
        if current.identity.get(..folded as usize) != Some(&base_identity[..]) {
            for f in &new {
                io.delete(&f.staged)?;
            }
            return Err(IngestError::Conflict(
                "the identity log changed under compaction; nothing was committed, rerun it".into(),
            ));
        }
        let mut next = current.clone();
        next.version = current.version + 1;
        next.files.retain(|f| !old_paths.contains(f.path.as_str()));
        for f in next.files.iter_mut() {
            if marked.contains(&f.path) {
                f.identity = f.identity.max(folded);
            }
        }
        next.files.extend(new.iter().cloned());
        next.files.sort_by(|a, b| a.path.cmp(&b.path));
        let now = chrono::Utc::now();
        next.retired
            .extend(old_paths.iter().map(|p| tenure_schema::RetiredFile {
                path: p.to_string(),
                retired_at: now.timestamp(),
            }));
        next.unreadable = None;
        next.txn = txn.clone();
        next.operation = "compact".into();
        next.committed_at = now.to_rfc3339();
        if manifest::try_commit(&io, &current, &next)? {
            summary.version = Some(next.version);
            break;
        }
        current = manifest::load_latest(&io)?;
    }
    fault_point("compact-after-commit");
    publish(&io, &new, &txn)?;
    for p in &old_paths {
        retire(&io, p)?;
    }
    Ok(summary)
}

/// `batch` with each user who joined another person given that person's
/// key, and how many rows changed.
fn to_persons(
    batch: &RecordBatch,
    joined: &HashMap<u32, u32>,
) -> Result<(RecordBatch, u64), IngestError> {
    if joined.is_empty() {
        return Ok((batch.clone(), 0));
    }
    crate::commit::map_user_keys(batch, |k| joined.get(&k).copied().unwrap_or(k))
}

/// Moves a file that left the table to its retired path (a rename on local disk;
/// copy then delete on object stores, so it is always in at least one place).
pub(crate) fn retire(io: &Io, path: &str) -> Result<(), IngestError> {
    io.rename(path, &StoreLayout::retired_file(path))?;
    Ok(())
}
