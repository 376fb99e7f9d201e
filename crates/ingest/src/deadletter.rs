//! Dead letters: every rejected record with its input, line and reason, kept as
//! NDJSON under the store root so it can be inspected, fixed and re-ingested.

use crate::decode::Location;
use crate::decode::write_json_string;

/// Most bytes of dead letters kept in memory; past that, rejects are counted only.
const MAX_BYTES: usize = 64 << 20;
/// Most bytes of a rejected record's text kept in its dead letter.
pub(crate) const MAX_RAW: usize = 4096;

/// Rejected records, as NDJSON lines.
#[derive(Debug, Default)]
pub struct DeadLetters {
    buf: String,
    count: u64,
    dropped: u64,
    /// The first few, for the summary printed to the user.
    pub first: Vec<String>,
}

impl DeadLetters {
    /// Records one reject.
    pub fn push(&mut self, loc: Location<'_>, reason: &str, raw: &[u8]) {
        self.count += 1;
        if self.first.len() < 10 {
            self.first
                .push(format!("{}:{}: {reason}", loc.input, loc.line));
        }
        if self.buf.len() > MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.buf.push_str("{\"input\":");
        write_json_string(loc.input, &mut self.buf);
        self.buf
            .push_str(&format!(",\"line\":{},\"reason\":", loc.line));
        write_json_string(reason, &mut self.buf);
        self.buf.push_str(",\"raw\":");
        let raw = &raw[..raw.len().min(MAX_RAW)];
        write_json_string(&String::from_utf8_lossy(raw), &mut self.buf);
        self.buf.push_str("}\n");
    }

    /// Number of rejects.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Rejects counted but not kept because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The NDJSON text.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}
