//! `tenure serve` refuses a configuration that cannot work before serving,
//! with exit code 2 (bad input) like every other command.

use std::process::Command;

/// Issue 16 item 12: declared properties other than the store's.
#[test]
fn serve_with_other_properties_than_the_store_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "user_id,event,ts\nu1,signup,2026-01-01T00:00:00Z\n").unwrap();
    let store = dir.path().join("store");
    let st = Command::new(env!("CARGO_BIN_EXE_tenure"))
        .arg("ingest")
        .arg(&csv)
        .arg("--to")
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let cfg = dir.path().join("tenure.toml");
    std::fs::write(&cfg, "[properties]\nplan = \"string\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tenure"))
        .arg("serve")
        .arg("--to")
        .arg(&store)
        .arg("--wal")
        .arg(dir.path().join("wal"))
        .args(["--write-key", "k", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("properties"), "{err}");
}
