//! Committing a transaction: users dictionary segment, manifest version with a
//! conditional put (rebasing on concurrent commits), then moving files into place.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

use arrow_array::{Array, BooleanArray, RecordBatch, UInt32Array};
use tenure_schema::{FileEntry, Snapshot, StoreLayout, columns};

use crate::ids;
use crate::io::Io;
use crate::parquet_out::{decode_stored, encode, sort_batch, ts_range, writer_properties};
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
        if self.discard || (files.is_empty() && self.sources.is_empty() && self.merges.is_empty()) {
            self.abandon();
            summary.counters.files = 0;
            summary.counters.written = 0;
            summary.elapsed_secs = self.started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        let (version, files) = self.commit_files(files)?;
        // A rebase may have dropped rows that a concurrent commit stored first.
        summary.counters.written = self.counters.written;
        summary.counters.duplicates = self.counters.duplicates;
        summary.counters.files = files as u64;
        summary.version = Some(version);
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Deletes everything this transaction staged.
    fn abandon(&mut self) {
        self.lease.release();
        if !self.merges.is_empty() {
            // Written before the commit (like the users segment), never listed.
            let _ = self.io.delete(&StoreLayout::identity(&self.txn));
        }
        let staging = format!("{}/{}", tenure_schema::STAGING_PREFIX, self.txn);
        if let Ok(list) = self.io.list(&staging) {
            for (rel, _) in list {
                let _ = self.io.delete(&rel);
            }
        }
        self.io.store.remove_empty_dirs(&staging);
    }

    fn commit_files(&mut self, mut files: Vec<FileEntry>) -> Result<(u64, usize), IngestError> {
        fault_point("before-users");
        let mut segment = None;
        if self.users.added().len() > 0 {
            let rel = StoreLayout::users_segment(&self.txn);
            self.io
                .put(&rel, encode_segment(self.users.base(), self.users.added())?)?;
            segment = Some(rel);
        }
        let identity = StoreLayout::identity(&self.txn);
        if !self.merges.is_empty() {
            self.io
                .put(&identity, tenure_schema::identity::encode(&self.merges))?;
        }
        // Nothing that the manifest will list may be missing (had recovery
        // elsewhere taken this run for abandoned, its lease expired).
        if let Some(lost) = files
            .iter()
            .map(|f| f.staged.as_str())
            .chain(segment.as_deref())
            .map(|rel| self.io.exists(rel).map(|e| (!e).then(|| rel.to_string())))
            .find_map(Result::transpose)
            .transpose()?
        {
            self.abandon();
            return Err(IngestError::Staging(format!(
                "the staged file {lost} of this run is gone (its staging was removed while the run was stopped for longer than the lease expiry, {} s); nothing was committed, rerun it",
                crate::lease::LEASE_EXPIRY.as_secs()
            )));
        }
        fault_point("before-commit");
        let mut base = self.base.clone();
        // This transaction's users that no committed segment knows (yet): they
        // hold the consecutive keys `start..` in the staged files and the
        // segment. Each rebase looks them up only in the segments committed
        // since the previous one and renumbers them after the winner's users.
        let mut pending = PendingUsers {
            start: self.users.base(),
            ids: self.users.added().map(str::to_string).collect(),
        };
        loop {
            let mut next = base.clone();
            next.version = base.version + 1;
            next.properties = self.declared.clone();
            next.files.extend(files.iter().cloned());
            next.ids.extend(files.iter().map(ids::entry));
            next.sources.extend(self.sources.iter().cloned());
            if let Some(seg) = &segment {
                next.users.segments.push(seg.clone());
                next.users.count += pending.ids.len() as u64;
            }
            if !self.merges.is_empty() {
                next.identity.push(tenure_schema::IdentityEntry {
                    path: identity.clone(),
                    merges: self.merges.len() as u64,
                    txn: self.txn.clone(),
                });
            }
            next.txn = self.txn.clone();
            next.operation = "ingest".into();
            next.committed_at = chrono::Utc::now().to_rfc3339();
            if manifest::try_commit(&self.io, &base, &next)? {
                // No refresh may recreate the lease once publishing removes it.
                self.lease.release();
                fault_point("after-commit");
                publish(&self.io, &files, &self.txn)?;
                manifest::after_commit(&self.io, next.version);
                return Ok((next.version, files.len()));
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
            let remap = if theirs.users.count != base.users.count {
                self.rekey(&base, &theirs, &mut segment, &mut pending)?
            } else {
                None
            };
            if let Some(r) = &remap
                && !self.merges.is_empty()
            {
                for m in &mut self.merges {
                    (m.from, m.to) = (r.key(m.from), r.key(m.to));
                }
                self.io
                    .put(&identity, tenure_schema::identity::encode(&self.merges))?;
            }
            let dups = self.their_ids(&base, &theirs, &files)?;
            if remap.is_some() || !dups.is_empty() {
                files = self.rewrite_staged(files, remap.as_ref(), &dups)?;
            }
            base = theirs;
            if let Some(hook) = self.rebase_hook.as_mut() {
                hook();
            }
        }
    }

    /// After a concurrent commit added users, gives this transaction's pending
    /// users the keys the store now assigns them (their committed key, or the
    /// next free ones after `theirs`) and rewrites the segment. Returns the
    /// remapping of the keys the staged files hold: keys from the first up
    /// (the old start of the pending users) map to the returned ones.
    fn rekey(
        &mut self,
        base: &Snapshot,
        theirs: &Snapshot,
        segment: &mut Option<String>,
        pending: &mut PendingUsers,
    ) -> Result<Option<Remap>, IngestError> {
        if pending.ids.is_empty() {
            return Ok(None);
        }
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
        let first = pending.start;
        let mut next_key = u32::try_from(theirs.users.count)
            .map_err(|_| IngestError::BadInput("more than 2^32 users".into()))?;
        let mut keys = Vec::with_capacity(pending.ids.len());
        let mut still_new: Vec<String> = Vec::new();
        for id in std::mem::take(&mut pending.ids) {
            match their_users.get(&id) {
                Some(&k) => keys.push(k),
                None => {
                    keys.push(next_key);
                    next_key += 1;
                    still_new.push(id);
                }
            }
        }
        pending.start = theirs.users.count as u32;
        pending.ids = still_new;
        if let Some(seg) = segment.as_deref() {
            if pending.ids.is_empty() {
                self.io.delete(seg)?;
                *segment = None;
            } else {
                self.io.put(
                    seg,
                    encode_segment(pending.start, pending.ids.iter().map(String::as_str))?,
                )?;
            }
        }
        Ok(Some(Remap { first, keys }))
    }

    /// The event ids that files `theirs` committed since `base` hold in the
    /// partitions this transaction writes: its rows with those ids are
    /// duplicates now.
    fn their_ids(
        &self,
        base: &Snapshot,
        theirs: &Snapshot,
        files: &[FileEntry],
    ) -> Result<HashMap<String, HashSet<u128>>, IngestError> {
        let mine: HashSet<&str> = files.iter().map(|f| f.date.as_str()).collect();
        let known: HashSet<&str> = base.files.iter().map(|f| f.path.as_str()).collect();
        let mut out: HashMap<String, HashSet<u128>> = HashMap::new();
        for f in theirs
            .files
            .iter()
            .filter(|f| mine.contains(f.date.as_str()) && !known.contains(f.path.as_str()))
        {
            out.entry(f.date.clone())
                .or_default()
                .extend(ids::file_ids(&self.io, f)?);
        }
        Ok(out)
    }

    /// Rewrites the staged files after a rebase: new user keys, and without
    /// the rows whose ids a concurrent commit stored first. A file left empty
    /// is dropped.
    fn rewrite_staged(
        &mut self,
        files: Vec<FileEntry>,
        remap: Option<&Remap>,
        dups: &HashMap<String, HashSet<u128>>,
    ) -> Result<Vec<FileEntry>, IngestError> {
        let props = writer_properties(&Default::default(), self.schema());
        let stored = tenure_schema::stored_schema(&self.declared);
        let mut out = Vec::with_capacity(files.len());
        for mut f in files {
            let dup = dups.get(&f.date);
            if remap.is_none() && dup.is_none() {
                out.push(f);
                continue;
            }
            let data = self.io.get(&f.staged)?;
            let batches = decode_stored(data)?;
            let mut batch = arrow_select::concat::concat_batches(&stored, &batches)?;
            if let Some(dup) = dup {
                let keep: BooleanArray = ids::row_hashes(&batch)?
                    .into_iter()
                    .map(|h| Some(!h.is_some_and(|h| dup.contains(&h))))
                    .collect();
                let dropped = keep.false_count() as u64;
                if dropped > 0 {
                    batch = arrow_select::filter::filter_record_batch(&batch, &keep)?;
                    self.counters.written -= dropped;
                    self.counters.duplicates += dropped;
                }
            }
            if batch.num_rows() == 0 {
                self.io.delete(&f.staged)?;
                self.io.delete(&ids::staged_ids_path(&f.staged))?;
                continue;
            }
            if let Some(r) = remap {
                batch = map_user_keys(&batch, |k| r.key(k))?.0;
            }
            let sorted = sort_batch(&batch)?;
            (f.min_ts, f.max_ts) = ts_range(&sorted);
            let bytes = encode(&sorted, props.clone())?;
            f.bytes = bytes.len() as u64;
            if f.rows != sorted.num_rows() as u64 {
                f.rows = sorted.num_rows() as u64;
                self.io.put(
                    &ids::staged_ids_path(&f.staged),
                    ids::encode(ids::hash_ids(&sorted)?),
                )?;
            }
            self.io.put(&f.staged, bytes)?;
            out.push(f);
        }
        Ok(out)
    }
}

/// New keys of a transaction's pending users: key `first + i` becomes `keys[i]`.
struct Remap {
    first: u32,
    keys: Vec<u32>,
}

/// Users of a committing transaction that are not in the store yet.
struct PendingUsers {
    /// The key of the first; the others follow consecutively.
    start: u32,
    ids: Vec<String>,
}

impl Remap {
    /// The key that `k` (a staged key) has now.
    fn key(&self, k: u32) -> u32 {
        match k.checked_sub(self.first) {
            Some(i) => self.keys[i as usize],
            None => k,
        }
    }
}

/// `batch` with every `user_key` replaced by `f(key)`, and how many rows
/// changed (the batch itself when none did). Rebases re-key staged files with
/// it, compaction folds identity merges into the files.
pub(crate) fn map_user_keys(
    batch: &RecordBatch,
    mut f: impl FnMut(u32) -> u32,
) -> Result<(RecordBatch, u64), IngestError> {
    let idx = batch.schema().index_of(columns::USER_KEY)?;
    let keys = batch
        .column(idx)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| IngestError::BadInput("user_key is not UInt32".into()))?;
    let mut changed = 0;
    let new: Vec<u32> = keys
        .values()
        .iter()
        .map(|&k| {
            let n = f(k);
            changed += u64::from(n != k);
            n
        })
        .collect();
    if changed == 0 {
        return Ok((batch.clone(), 0));
    }
    let mut cols = batch.columns().to_vec();
    cols[idx] = Arc::new(UInt32Array::from(new));
    Ok((RecordBatch::try_new(batch.schema(), cols)?, changed))
}

/// Moves committed files from staging to their final place under `events/`, then
/// removes the transaction's staging prefix. Idempotent: recovery calls it again
/// after a crash.
pub fn publish(io: &Io, files: &[FileEntry], txn: &str) -> Result<(), IngestError> {
    // Id indexes first: once every data file is in place, recovery does not
    // come back here (an index lost in between only makes readers of its
    // partition fall back to the data, see `ids`).
    for f in files {
        io.rename(&ids::staged_ids_path(&f.staged), &ids::ids_path(f))?;
    }
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
