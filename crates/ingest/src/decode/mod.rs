//! Decoding inputs into [`RawEvent`]s, one record at a time, without building a
//! generic JSON tree per row: each source format borrows straight from its buffer.

pub mod csv;
mod fast;
pub mod json;
pub mod parquet;
mod record;

pub use record::{RawEvent, Scalar, write_json_string};

/// Where a record came from, for rejects.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    /// Input name (path or `-`).
    pub input: &'a str,
    /// 1-based line (NDJSON, CSV) or row (Parquet).
    pub line: u64,
}

/// The reason given for a line longer than `max_line` bytes.
pub fn too_long(max_line: usize) -> String {
    format!("line longer than {max_line} bytes")
}

/// What a decoder hands each record to.
pub trait Sink {
    /// A decoded record, still to be validated.
    fn accept(&mut self, event: &RawEvent<'_>, loc: Location<'_>, raw: &[u8]);
    /// A record that could not be decoded at all.
    fn reject(&mut self, loc: Location<'_>, reason: &str, raw: &[u8]);
}
