//! Stores for the engine's unit tests.

use std::path::Path;

/// A memory store (named `<name>` plus the process id) holding a fixture's
/// events (`fixture` under `fixtures/`).
pub(crate) fn store(name: &str, fixture: &str) -> String {
    let url = format!("memory://{name}-{}", std::process::id());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let (at, file) = (url.clone(), root.join(fixture));
    // Ingest blocks on a runtime of its own: not inside the test's.
    std::thread::spawn(move || {
        let store = tenure_ingest::Store::open(&at).unwrap();
        let mut ing =
            tenure_ingest::Ingest::begin(store, tenure_ingest::IngestOptions::default()).unwrap();
        ing.add_file(&file).unwrap();
        ing.commit().unwrap();
    })
    .join()
    .unwrap();
    url
}
