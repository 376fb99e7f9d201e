//! Committing a transaction: users dictionary segment, manifest version with a
//! conditional put (rebasing on concurrent commits), then moving files into place.

use std::sync::Arc;

use arrow_array::{Array, RecordBatch, UInt32Array};
use tenure_schema::{FileEntry, Snapshot, StoreLayout, columns};

use crate::io::Io;
use crate::parquet_out::{decode_stored, encode, sort_batch, writer_properties};
use crate::session::{Ingest, Summary};
use crate::users::{decode_segment, encode_segment};
use crate::{IngestError, manifest};

/// Test hook: `TENURE_FAULT=<point>` aborts the process at a named point of the
/// commit, to prove that a crash there loses or duplicates nothing.
pub fn fault_point(point: &str) {
    if std::env::var("TENURE_FAULT").is_ok_and(|f| f == point) {
        eprintln!("TENURE_FAULT: aborting at {point}");
        std::process::abort();
    }
}

impl Ingest {
    /// Finishes the transaction: stages the remaining files and commits them.
    /// Nothing is visible to readers before this returns successfully.
    pub fn commit(mut self) -> Result<Summary, IngestError> {
        let files = match self.finish_files() {
            Ok(f) => f,
            Err(e) => {
                self.abandon();
                return Err(e);
            }
        };
        let rejected = self.dead.count();
        let dead_letter = if rejected > 0 {
            let path = StoreLayout::dead_letter(&self.txn);
            let mut text = self.dead.take();
            if self.dead.dropped() > 0 {
                text.push_str(&format!(
                    "{{\"note\":\"{} further rejects not kept (dead-letter buffer full)\"}}\n",
                    self.dead.dropped()
                ));
            }
            self.io.put(&path, text.into_bytes())?;
            Some(format!(
                "{}/{path}",
                self.io.store.url.trim_end_matches('/')
            ))
        } else {
            None
        };
        if let Some(max_bad) = self.max_bad()
            && rejected > max_bad
        {
            self.abandon();
            return Err(IngestError::TooManyBad {
                rejected,
                max_bad,
                dead_letter: dead_letter.unwrap_or_default(),
            });
        }
        let mut summary = Summary {
            counters: self.counters.clone(),
            version: None,
            dead_letter,
            notes: std::mem::take(&mut self.notes),
            elapsed_secs: 0.0,
        };
        summary.counters.files = files.len() as u64;
        if self.discard || (files.is_empty() && self.sources.is_empty()) {
            self.abandon();
            summary.counters.files = 0;
            summary.counters.written = 0;
            summary.elapsed_secs = self.started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        let version = self.commit_files(files)?;
        summary.version = Some(version);
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Deletes everything this transaction staged.
    fn abandon(&mut self) {
        let staging = format!("{}/{}", tenure_schema::STAGING_PREFIX, self.txn);
        if let Ok(list) = self.io.list(&staging) {
            for (rel, _) in list {
                let _ = self.io.delete(&rel);
            }
        }
        self.io.store.remove_empty_dirs(&staging);
    }

    fn commit_files(&mut self, mut files: Vec<FileEntry>) -> Result<u64, IngestError> {
        fault_point("before-users");
        let mut segment = None;
        if self.users.added().len() > 0 {
            let rel = StoreLayout::users_segment(&self.txn);
            self.io
                .put(&rel, encode_segment(self.users.base(), self.users.added())?)?;
            segment = Some(rel);
        }
        fault_point("before-commit");
        let mut base = self.base.clone();
        let mut new_users = self.users.added().len() as u64;
        loop {
            let mut next = base.clone();
            next.version = base.version + 1;
            next.properties = self.declared.clone();
            next.files.extend(files.iter().cloned());
            next.sources.extend(self.sources.iter().cloned());
            if let Some(seg) = &segment {
                next.users.segments.push(seg.clone());
                next.users.count += new_users;
            }
            next.txn = self.txn.clone();
            next.operation = "ingest".into();
            next.committed_at = chrono::Utc::now().to_rfc3339();
            if manifest::try_commit(&self.io, &base, &next)? {
                fault_point("after-commit");
                publish(&self.io, &files, &self.txn)?;
                manifest::after_commit(&self.io, next.version);
                return Ok(next.version);
            }
            // Another writer won this version: rebase on theirs.
            let theirs = manifest::load_latest(&self.io)?;
            if let Some(dup) = self
                .sources
                .iter()
                .find(|s| theirs.sources.iter().any(|t| t.hash == s.hash))
                .cloned()
            {
                self.abandon();
                return Err(IngestError::Conflict(format!(
                    "{} was ingested by a concurrent run while this one was working; nothing was committed by this run, rerun it to ingest the rest",
                    dup.name
                )));
            }
            if theirs.users.count != base.users.count {
                (files, new_users) = self.rekey(&base, &theirs, files, segment.as_deref())?;
            }
            base = theirs;
        }
    }

    /// After a concurrent commit added users, gives this transaction's new users
    /// the keys the store now assigns them and rewrites the staged files.
    fn rekey(
        &mut self,
        base: &Snapshot,
        theirs: &Snapshot,
        files: Vec<FileEntry>,
        segment: Option<&str>,
    ) -> Result<(Vec<FileEntry>, u64), IngestError> {
        let mut their_users = std::collections::HashMap::new();
        for seg in theirs
            .users
            .segments
            .iter()
            .filter(|s| !base.users.segments.contains(s))
        {
            for (k, id) in decode_segment(self.io.get(seg)?)? {
                their_users.insert(id, k);
            }
        }
        let first = self.users.base();
        let mut next_key = theirs.users.count as u32;
        let mut remap = Vec::with_capacity(self.users.added().len());
        let mut still_new: Vec<&str> = Vec::new();
        for id in self.users.added() {
            match their_users.get(id) {
                Some(&k) => remap.push(k),
                None => {
                    remap.push(next_key);
                    next_key += 1;
                    still_new.push(id);
                }
            }
        }
        let props = writer_properties(&Default::default(), self.schema());
        let mut out = Vec::with_capacity(files.len());
        for mut f in files {
            let data = self.io.get(&f.staged)?;
            let batches = decode_stored(data)?;
            let stored = tenure_schema::stored_schema(&self.declared);
            let batch = arrow_select::concat::concat_batches(&stored, &batches)?;
            let batch = remap_keys(&batch, first, &remap)?;
            let bytes = encode(&sort_batch(&batch)?, props.clone())?;
            f.bytes = bytes.len() as u64;
            self.io.put(&f.staged, bytes)?;
            out.push(f);
        }
        if let Some(seg) = segment {
            self.io.put(
                seg,
                encode_segment(theirs.users.count as u32, still_new.iter().copied())?,
            )?;
        }
        Ok((out, still_new.len() as u64))
    }
}

fn remap_keys(batch: &RecordBatch, first: u32, remap: &[u32]) -> Result<RecordBatch, IngestError> {
    let idx = batch.schema().index_of(columns::USER_KEY)?;
    let keys = batch
        .column(idx)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .expect("user_key is UInt32");
    let new: UInt32Array = keys
        .values()
        .iter()
        .map(|&k| {
            if k >= first {
                remap[(k - first) as usize]
            } else {
                k
            }
        })
        .collect::<Vec<_>>()
        .into();
    let mut cols = batch.columns().to_vec();
    cols[idx] = Arc::new(new);
    debug_assert_eq!(cols[idx].len(), batch.num_rows());
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// Moves committed files from staging to their final place under `events/`, then
/// removes the transaction's staging prefix. Idempotent: recovery calls it again
/// after a crash.
pub fn publish(io: &Io, files: &[FileEntry], txn: &str) -> Result<(), IngestError> {
    for (i, f) in files.iter().enumerate() {
        if i == files.len() / 2 {
            fault_point("mid-publish");
        }
        io.rename(&f.staged, &f.path)?;
    }
    let staging = format!("{}/{txn}", tenure_schema::STAGING_PREFIX);
    for (rel, _) in io.list(&staging)? {
        io.delete(&rel)?;
    }
    io.store.remove_empty_dirs(&staging);
    Ok(())
}
