//! Reading and committing manifest versions.

use tenure_schema::{Snapshot, StoreLayout};
use tenure_store::retry::{OPERATION_RETRIES, is_transport_error};

use crate::{IngestError, io::Io};

/// The newest committed snapshot, or the empty version 0 of a new store.
pub fn load_latest(io: &Io) -> Result<Snapshot, IngestError> {
    Ok(crate::io::block_on(tenure_store::load_latest(&io.store))?)
}

/// Tries to commit `snapshot` as its `version`; `false` when another writer
/// committed that version first (reload, rebase and try the next one).
///
/// "Already exists" does not prove another writer won: when the answer to our
/// conditional put is lost after the server stored it (a 5xx in its place, or
/// the connection closing before it), object_store sends the put again and
/// the server refuses the copy of our own version. So the existing version is
/// read back, and if it carries our `txn`, the commit is ours. The same check
/// settles a transport failure (a timeout or reset, which object_store does
/// not retry for a conditional put) when the version exists; when it does not,
/// the put is sent again, which is safe: a copy can only land once, and if the
/// first one lands later the next attempt finds it ours. When that fails too,
/// the error is returned and the caller keeps its staged files, since the put
/// may still land (recovery then publishes them).
pub fn try_commit(io: &Io, snapshot: &Snapshot) -> Result<bool, IngestError> {
    let rel = StoreLayout::manifest(snapshot.version);
    let data = snapshot.to_json().into_bytes();
    let mut retries = 0;
    loop {
        match io.put_if_absent(&rel, data.clone()) {
            Ok(true) => return Ok(true),
            Ok(false) => return Ok(committed_by(io, &rel, &snapshot.txn)?.unwrap_or(false)),
            Err(e) => {
                if let Ok(Some(ours)) = committed_by(io, &rel, &snapshot.txn) {
                    return Ok(ours);
                }
                let transport = matches!(&e, IngestError::ObjectStore(o) if is_transport_error(o));
                if !transport || retries == OPERATION_RETRIES {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(100 << retries));
                retries += 1;
            }
        }
    }
}

/// Whether the manifest version at `rel` was committed by transaction `txn`;
/// `None` when there is no such version. A version that cannot be parsed is
/// not ours (ours was whole when sent).
fn committed_by(io: &Io, rel: &str, txn: &str) -> Result<Option<bool>, IngestError> {
    Ok(io
        .get_opt(rel)?
        .map(|data| Snapshot::from_json(&data).is_ok_and(|v| v.txn == txn)))
}
