//! Reading and committing manifest versions.

use tenure_schema::{MANIFEST_PREFIX, Snapshot, StoreLayout};

use crate::{IngestError, io::Io};

/// The newest committed snapshot, or the empty version 0 of a new store.
pub fn load_latest(io: &Io) -> Result<Snapshot, IngestError> {
    let latest = io
        .list(MANIFEST_PREFIX)?
        .iter()
        .filter_map(|(rel, _)| StoreLayout::manifest_version(rel.rsplit('/').next()?))
        .max();
    let Some(version) = latest else {
        return Ok(Snapshot::default());
    };
    let data = io.get(&StoreLayout::manifest(version))?;
    Snapshot::from_json(&data).map_err(|e| IngestError::Corrupt {
        url: io.store.url.clone(),
        message: format!("manifest version {version}: {e}"),
    })
}

/// Tries to commit `snapshot` as its `version`; `false` when another writer
/// committed that version first (reload, rebase and try the next one).
pub fn try_commit(io: &Io, snapshot: &Snapshot) -> Result<bool, IngestError> {
    io.put_if_absent(
        &StoreLayout::manifest(snapshot.version),
        snapshot.to_json().into_bytes(),
    )
}
