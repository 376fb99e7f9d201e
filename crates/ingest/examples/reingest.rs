//! Ingests files into a store and prints the counters and the rate, for
//! measuring re-ingest with store-wide duplicate detection:
//! `cargo run --release -p tenure-ingest --example reingest -- STORE FILE...`

use tenure_ingest::{Ingest, IngestOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: reingest STORE FILE...")?;
    let mut ing = Ingest::begin(Store::open(&url)?, IngestOptions::default())?;
    for f in args {
        ing.add_file(std::path::Path::new(&f))?;
    }
    let s = ing.commit()?;
    let c = &s.counters;
    println!(
        "read {} written {} duplicates {} rejected {} in {:.2}s: {:.0} events read/s",
        c.read,
        c.written,
        c.duplicates,
        c.rejected,
        s.elapsed_secs,
        c.read as f64 / s.elapsed_secs
    );
    Ok(())
}
