//! Compaction: merge a partition's small files into large sorted ones and swap
//! them in with one manifest commit, so a reader of the manifest sees either the
//! old files or the new ones, never both and never neither.
//!
//! The replaced files are not deleted: they move to
//! [`StoreLayout::retired_file`] (so `events/` holds exactly the committed files)
//! and stay readable there for a retention period ([`DEFAULT_RETAIN`], or
//! `tenure compact --retain`), so a reader still working from the previous
//! version finds them ([`tenure_store::file_locations`]). A later compaction (or
//! `tenure repair`) deletes them once the period has passed.

use std::collections::{BTreeMap, HashSet};
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
    let mut by_date: BTreeMap<&str, Vec<&FileEntry>> = BTreeMap::new();
    for f in &base.files {
        by_date.entry(&f.date).or_default().push(f);
    }
    by_date.retain(|date, files| {
        files.len() > 1 && only_dates.is_none_or(|d| d.iter().any(|x| x == date))
    });
    if by_date.is_empty() {
        return Ok(summary);
    }
    let txn = uuid::Uuid::now_v7().simple().to_string();
    let mut old: Vec<FileEntry> = Vec::new();
    let mut new: Vec<FileEntry> = Vec::new();
    let total = by_date.len() as u64;
    let mut seq = 0;
    for (i, (date, files)) in by_date.iter().enumerate() {
        let mut batches: Vec<RecordBatch> = Vec::new();
        for f in files {
            let data = io.get(&f.path)?;
            batches.extend(decode_stored(data)?);
        }
        let merged = arrow_select::concat::concat_batches(&stored, &batches)?;
        drop(batches);
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
        let mut next = current.clone();
        next.version = current.version + 1;
        next.files.retain(|f| !old_paths.contains(f.path.as_str()));
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

/// Moves a file that left the table to its retired path (a rename on local disk;
/// copy then delete on object stores, so it is always in at least one place).
pub(crate) fn retire(io: &Io, path: &str) -> Result<(), IngestError> {
    io.rename(path, &StoreLayout::retired_file(path))?;
    Ok(())
}
