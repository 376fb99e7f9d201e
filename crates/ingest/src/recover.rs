//! Recovery after a crash: finish what was committed, remove what never was.
//!
//! Files reach `events/` only after their transaction's manifest version exists,
//! so a crash can leave (a) committed files still in staging — moved into place
//! here — and (b) files that compaction removed from the table but had not yet
//! moved to their retired path — moved there here (a vacuum deletes them once
//! their retention has passed). Staging left by transactions that never committed is
//! invisible; it is removed once it is older than [`ABANDONED_AFTER`], so a
//! concurrently running writer never has its work deleted under it.

use std::collections::HashSet;
use std::time::Duration;

use tenure_schema::STAGING_PREFIX;

use crate::commit::publish;
use crate::io::Io;
use crate::{IngestError, manifest};

/// Age after which uncommitted staging is considered abandoned.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Brings the store back to "files under `events/` are exactly the committed
/// ones". Returns notes on what it did.
pub fn recover(io: &Io) -> Result<Vec<String>, IngestError> {
    let mut notes = Vec::new();
    let snap = manifest::load_latest(io)?;
    let present: HashSet<String> = io.list("events")?.into_iter().map(|(rel, _)| rel).collect();
    let mut by_txn: std::collections::BTreeMap<&str, Vec<tenure_schema::FileEntry>> =
        Default::default();
    for f in &snap.files {
        if !present.contains(&f.path) {
            by_txn.entry(&f.txn).or_default().push(f.clone());
        }
    }
    for (txn, files) in by_txn {
        publish(io, &files, txn)?;
        notes.push(format!(
            "moved {} committed file(s) of transaction {txn} into place",
            files.len()
        ));
    }
    let removed: HashSet<&str> = snap
        .removed
        .iter()
        .map(String::as_str)
        .chain(snap.retired.iter().map(|r| r.path.as_str()))
        .collect();
    let mut garbage = 0;
    for rel in &present {
        if removed.contains(rel.as_str()) {
            crate::compact::retire(io, rel)?;
            garbage += 1;
        }
    }
    if garbage > 0 {
        notes.push(format!(
            "moved {garbage} file(s) that compaction had replaced to {}",
            tenure_schema::RETIRED_PREFIX
        ));
    }
    let committed: HashSet<&str> = snap.files.iter().map(|f| f.txn.as_str()).collect();
    let now = chrono::Utc::now();
    let mut abandoned = 0;
    for (rel, meta) in io.list(STAGING_PREFIX)? {
        let txn = rel
            .strip_prefix(STAGING_PREFIX)
            .and_then(|r| r.trim_start_matches('/').split('/').next())
            .unwrap_or_default();
        let age = (now - meta.last_modified).to_std().unwrap_or_default();
        if committed.contains(txn) || age > ABANDONED_AFTER {
            io.delete(&rel)?;
            abandoned += 1;
        }
    }
    if let Some(dir) = &io.store.local_dir
        && let Ok(rd) = std::fs::read_dir(dir.join(STAGING_PREFIX))
    {
        for e in rd.flatten() {
            let rel = format!("{STAGING_PREFIX}/{}", e.file_name().to_string_lossy());
            io.store.remove_empty_dirs(&rel);
        }
    }
    if abandoned > 0 {
        notes.push(format!(
            "removed {abandoned} staged file(s) of finished or abandoned transactions"
        ));
    }
    Ok(notes)
}
