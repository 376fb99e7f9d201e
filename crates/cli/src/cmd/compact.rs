//! `tenure compact`: merge small files per partition, fold identity merges in.

use clap::Args;
use tenure_ingest::{Store, compact_retaining};
use tenure_schema::Config;

use crate::progress::count_bar;

/// Merge each date partition's small files into large sorted ones.
///
/// The swap is one manifest commit: readers of the table see the old files or
/// the new ones, never both and never neither. Run it after many small ingests
/// (for example after a day of `tenure serve` flushes).
///
/// Replaced files move to `_tenure/retired/` (so `events/` holds exactly the
/// committed files) and stay readable there for `--retain` seconds, for readers
/// still working from the previous version; a later compaction deletes them.
/// Compaction also folds identity merges into the files: the rows of a user
/// who joined another person through `identify` or `alias` get that person's
/// `user_key` (their `user_id` stays the id they were sent with), so readers
/// no longer apply those merges as they read. It also maintains the
/// metadata: it rewrites an unreadable newest manifest version, merges the
/// users dictionary into one segment and checkpoints the manifest log.
///
/// Example:
///
///   tenure compact --data ./store
#[derive(Args)]
pub struct CompactArgs {
    /// Store URL.
    #[arg(long, value_name = "URL")]
    pub data: String,
    /// Only these partitions (YYYY-MM-DD, repeatable).
    #[arg(long, value_name = "DATE")]
    pub date: Vec<String>,
    /// Most rows per output file.
    #[arg(long, value_name = "N", default_value_t = Config::default().ingest.file_rows)]
    pub file_rows: usize,
    /// Seconds that replaced files stay readable for readers of older versions
    /// before a later compaction deletes them.
    #[arg(long, value_name = "SECS", default_value_t = tenure_ingest::compact::DEFAULT_RETAIN.as_secs())]
    pub retain: u64,
}

/// Runs the command.
pub fn run(args: CompactArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.data)?;
    let mut cfg = Config::default().ingest;
    cfg.file_rows = args.file_rows.max(1);
    let bar = count_bar(0, "compact");
    let dates = (!args.date.is_empty()).then_some(args.date.as_slice());
    let retain = std::time::Duration::from_secs(args.retain);
    let s = compact_retaining(store, &cfg, dates, retain, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let s = s?;
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    match s.version {
        Some(v) => eprintln!(
            "compacted {} partition(s): {} files -> {} files, {} rows ({} of merged users); committed manifest version {v}",
            s.partitions, s.files_before, s.files_after, s.rows, s.merged_rows
        ),
        None => eprintln!("nothing to compact"),
    }
    Ok(())
}
