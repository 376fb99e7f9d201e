//! Reading and committing manifest versions.

use tenure_schema::{Snapshot, StoreLayout};

use crate::{IngestError, io::Io};

/// The newest committed snapshot, or the empty version 0 of a new store.
pub fn load_latest(io: &Io) -> Result<Snapshot, IngestError> {
    Ok(crate::io::block_on(tenure_store::load_latest(&io.store))?)
}

/// Tries to commit `snapshot` as its `version`; `false` when another writer
/// committed that version first (reload, rebase and try the next one).
pub fn try_commit(io: &Io, snapshot: &Snapshot) -> Result<bool, IngestError> {
    io.put_if_absent(
        &StoreLayout::manifest(snapshot.version),
        snapshot.to_json().into_bytes(),
    )
}
