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

/// Write keys need not be on the command line (where `ps` shows them): with
/// none at all the server refuses to start (exit 2, saying where keys go);
/// a key from `TENURE_WRITE_KEYS` or `--write-key-file` gets past that check
/// (here to the next refusal, a WAL path that is a file).
#[test]
fn write_keys_from_the_environment_or_a_file_and_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal-is-a-file");
    std::fs::write(&wal, "").unwrap();
    let serve = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenure"));
        c.arg("serve")
            .arg("--to")
            .arg(dir.path().join("store"))
            .arg("--wal")
            .arg(&wal)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("TENURE_WRITE_KEYS");
        c
    };
    let none = serve().output().unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no write key") && err.contains("TENURE_WRITE_KEYS"),
        "{err}"
    );

    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# rotated monthly\nk1\n").unwrap();
    for cmd in [
        serve().env("TENURE_WRITE_KEYS", "k1,k2").output().unwrap(),
        serve().arg("--write-key-file").arg(&keys).output().unwrap(),
    ] {
        let err = String::from_utf8_lossy(&cmd.stderr);
        assert!(!cmd.status.success(), "{err}");
        assert!(!err.contains("no write key"), "{err}");
        assert!(err.contains("wal-is-a-file"), "{err}");
    }
}
