//! Link settings of the `tenure` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Packed relative relocations (DT_RELR, GNU ld >= 2.38, glibc >= 2.36):
        // the binary is position independent and holds ~240K relative
        // relocations; as 24-byte records the dynamic loader spends a quarter
        // of a short command's start-up applying them, as a bitmap it does not.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
