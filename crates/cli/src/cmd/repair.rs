//! `tenure repair`: bring a store's metadata back to a readable, compact state.

use clap::Args;
use tenure_ingest::io::Io;
use tenure_ingest::{Store, manifest, recover};

/// Repair a store after a crash or a lost write.
///
/// Finishes or removes what an interrupted run left (as every ingest does at
/// start); when the newest manifest version is unreadable (truncated by a crash
/// on a disk that lost it), writes the last complete version again as a new
/// one, so every command reads it without a warning; then deletes files
/// replaced more than `--retain` seconds ago, merges the users dictionary into
/// one segment and checkpoints the manifest log. Nothing committed and readable
/// is dropped.
///
/// Example:
///
///   tenure repair --data ./store
#[derive(Args)]
pub struct RepairArgs {
    /// Store URL.
    #[arg(long, value_name = "URL")]
    pub data: String,
    /// Seconds that replaced files stay readable for readers of older versions.
    #[arg(long, value_name = "SECS", default_value_t = manifest::DEFAULT_RETAIN.as_secs())]
    pub retain: u64,
}

/// Runs the command.
pub fn run(args: RepairArgs) -> anyhow::Result<()> {
    let io = Io::new(Store::open_existing(&args.data)?);
    let mut notes = recover::recover(&io)?;
    notes.extend(manifest::maintain(
        &io,
        std::time::Duration::from_secs(args.retain),
    )?);
    for n in &notes {
        eprintln!("note: {n}");
    }
    let snap = manifest::load_latest(&io)?;
    eprintln!(
        "store {} is at manifest version {} ({} files, {} rows)",
        args.data,
        snap.version,
        snap.files.len(),
        snap.rows()
    );
    Ok(())
}
