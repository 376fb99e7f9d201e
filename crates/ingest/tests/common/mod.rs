//! Helpers shared by the ingest tests: reading a store back through its manifest.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_ingest::io::Io;
use tenure_ingest::{Store, manifest};
use tenure_schema::Snapshot;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// The committed snapshot of a store.
pub fn snapshot(url: &str) -> Snapshot {
    manifest::load_latest(&Io::new(Store::open(url).unwrap())).unwrap()
}

/// Every committed file's batches, in manifest order, with its partition date.
pub fn read_table(url: &str) -> Vec<(String, RecordBatch)> {
    let io = Io::new(Store::open(url).unwrap());
    let snap = manifest::load_latest(&io).unwrap();
    let mut out = Vec::new();
    let paths =
        tenure_ingest::io::block_on(tenure_store::readable_paths(&io.store, &snap)).unwrap();
    for (f, path) in snap.files.iter().zip(&paths) {
        let data = io.get(path).unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
        {
            out.push((f.date.clone(), b.unwrap()));
        }
    }
    out
}

/// Renders the table as CSV-like lines (`date,col1,col2,...`), timestamps in
/// RFC 3339 with microseconds, nulls empty; the `ingested_at` column is left out.
pub fn table_lines(url: &str, columns: &[&str]) -> Vec<String> {
    let opts = FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%dT%H:%M:%S%.6fZ"));
    let mut lines = Vec::new();
    for (date, batch) in read_table(url) {
        // Timestamps are stored in UTC; drop the zone name for formatting.
        let naive = arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None);
        let cols: Vec<_> = columns
            .iter()
            .map(|c| {
                let col = batch
                    .column_by_name(c)
                    .unwrap_or_else(|| panic!("no column {c}"));
                match col.data_type() {
                    arrow_schema::DataType::Timestamp(_, Some(_)) => {
                        arrow_cast::cast(col, &naive).unwrap()
                    }
                    _ => col.clone(),
                }
            })
            .collect();
        let fmts: Vec<_> = cols
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..batch.num_rows() {
            let mut line = date.clone();
            for f in &fmts {
                let v = f.value(i).to_string();
                line.push(',');
                if v.contains([',', '"']) {
                    line.push('"');
                    line.push_str(&v.replace('"', "\"\""));
                    line.push('"');
                } else {
                    line.push_str(&v);
                }
            }
            lines.push(line);
        }
    }
    lines
}

/// Event ids in the table.
pub fn event_ids(url: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (_, b) in read_table(url) {
        let col = b.column_by_name("event_id").unwrap();
        let col = col
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        for i in 0..col.len() {
            ids.push(col.value(i).to_string());
        }
    }
    ids
}

/// Files present under `events/` of a local store, relative to it.
pub fn files_under_events(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = dir.join("events");
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out.sort();
    out
}
