//! Compaction: merge a partition's small files into large sorted ones and swap
//! them in with one manifest commit, so a reader of the manifest sees either the
//! old files or the new ones, never both and never neither.

use std::collections::{BTreeMap, HashSet};

use arrow_array::RecordBatch;
use tenure_schema::{FileEntry, IngestConfig, StoreLayout, event_schema, stored_schema};

use crate::commit::{fault_point, publish};
use crate::io::Io;
use crate::parquet_out::{decode_stored, encode, sort_batch, ts_range, writer_properties};
use crate::{IngestError, Store, manifest, recover};

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
/// per partition done.
pub fn compact(
    store: Store,
    cfg: &IngestConfig,
    only_dates: Option<&[String]>,
    mut progress: impl FnMut(u64, u64),
) -> Result<CompactSummary, IngestError> {
    let io = Io::new(store);
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
        next.removed.extend(old_paths.iter().map(|p| p.to_string()));
        next.txn = txn.clone();
        next.operation = "compact".into();
        next.committed_at = chrono::Utc::now().to_rfc3339();
        if manifest::try_commit(&io, &next)? {
            summary.version = Some(next.version);
            break;
        }
        current = manifest::load_latest(&io)?;
    }
    fault_point("compact-after-commit");
    publish(&io, &new, &txn)?;
    for p in &old_paths {
        io.delete(p)?;
    }
    Ok(summary)
}
