//! A small tmpfs for disk-full tests: a real filesystem that really runs out
//! of space (ENOSPC on write), mounted for one test and unmounted when the
//! value is dropped, panics included.
//!
//! Mounting needs root (or CAP_SYS_ADMIN). Without it the test re-runs itself
//! in a new user and mount namespace (`unshare -Urm`), where it may mount; if
//! that is not possible either, the test fails saying so: it never passes
//! without having filled a disk.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the environment of a test re-run under `unshare`.
const REEXEC: &str = "TENURE_TEST_IN_UNSHARE";

/// A mounted tmpfs.
pub struct Tmpfs {
    dir: PathBuf,
}

/// Mounts a tmpfs of `bytes` at `dir` (created if needed). Returns None when
/// the test was run to completion in a child namespace instead (the caller
/// returns at once); panics when no tmpfs can be had.
pub fn mount(dir: &Path, bytes: u64, test_name: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).expect("create the mount point");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output();
    let why = match out {
        Ok(o) if o.status.success() => {
            return Some(Tmpfs {
                dir: dir.to_path_buf(),
            });
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run mount: {e}"),
    };
    if std::env::var_os(REEXEC).is_some() {
        panic!(
            "cannot mount a tmpfs at {} even in a new namespace ({why}): this disk-full test needs root, CAP_SYS_ADMIN or unprivileged user namespaces",
            dir.display()
        );
    }
    // Run this very test again, alone, in a namespace where we may mount.
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args(["-Urm", "--propagation", "private"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(REEXEC, "1")
        .status();
    match status {
        Ok(s) if s.success() => None,
        Ok(s) => panic!(
            "cannot mount a tmpfs at {} ({why}); the test re-run under `unshare -Urm` failed: {s}",
            dir.display()
        ),
        Err(e) => panic!(
            "cannot mount a tmpfs at {} ({why}) and cannot run unshare ({e}): this disk-full test needs root or CAP_SYS_ADMIN",
            dir.display()
        ),
    }
}

impl Tmpfs {
    /// Fills the filesystem: writes `name` until the disk is full. Returns its path;
    /// deleting it gives the space back.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let block = vec![0x5au8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Byte by byte for the last partial block.
        while let Ok(1) = f.write(&block[..1]) {}
        path
    }

    /// Bytes still free.
    pub fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so that a file still open by a stopping server does not keep
        // the mount around.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
