//! Recovery after a crash: finish what was committed, remove what never was.
//!
//! Files reach `events/` only after their transaction's manifest version exists,
//! so a crash can leave (a) committed files still in staging — moved into place
//! here — and (b) files that compaction removed from the table but had not yet
//! moved to their retired path — moved there here (a vacuum deletes them once
//! their retention has passed). Staging left by transactions that never committed is
//! invisible; it is removed once its transaction's lease (see [`crate::lease`])
//! has expired, so a running writer never has its work deleted under it, however
//! long it runs. Staging without a lease (written by an older version) is
//! removed once it is older than [`ABANDONED_AFTER`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tenure_schema::STAGING_PREFIX;

use crate::commit::publish;
use crate::io::Io;
use crate::lease::{LEASE_EXPIRY, LEASE_FILE};
use crate::{IngestError, manifest};

/// Age after which uncommitted staging without a lease is considered abandoned.
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
    let age =
        |meta: &object_store::ObjectMeta| (now - meta.last_modified).to_std().unwrap_or_default();
    let txn_of = |rel: &str| -> String {
        rel.strip_prefix(STAGING_PREFIX)
            .and_then(|r| r.trim_start_matches('/').split('/').next())
            .unwrap_or_default()
            .to_string()
    };
    let staged = io.list(STAGING_PREFIX)?;
    // A transaction whose lease is fresh is running: none of its files goes.
    let leases: HashMap<String, Duration> = staged
        .iter()
        .filter(|(rel, _)| rel.ends_with(&format!("/{LEASE_FILE}")))
        .map(|(rel, meta)| (txn_of(rel), age(meta)))
        .collect();
    let mut abandoned = 0;
    for (rel, meta) in &staged {
        let txn = txn_of(rel);
        let gone = committed.contains(txn.as_str())
            || match leases.get(&txn) {
                Some(lease_age) => *lease_age > LEASE_EXPIRY,
                None => age(meta) > ABANDONED_AFTER,
            };
        if gone {
            io.delete(rel)?;
            if !rel.ends_with(&format!("/{LEASE_FILE}")) {
                abandoned += 1;
            }
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
