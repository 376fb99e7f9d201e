//! Dead letters: every rejected record with its input, line and reason, kept as
//! NDJSON under the store root so it can be inspected, fixed and re-ingested.
//!
//! Each letter keeps the whole record as it was read (`raw`), up to the line
//! limit (`max_line_bytes`: longer lines keep their first bytes only), so
//! fixing a dead letter's `raw` and ingesting it again is enough. Letters are
//! held in memory until the commit writes them: past [`FULL_BYTES`] of letters,
//! further ones keep their input, line and reason but not the record
//! (`"raw":null`); past [`MAX_BYTES`], rejects are only counted. A note at the
//! end of the file says how many of each.

use crate::decode::Location;
use crate::decode::write_json_string;

/// Bytes of letters kept whole, records included.
pub(crate) const FULL_BYTES: usize = 64 << 20;
/// Bytes of letters kept at all; between [`FULL_BYTES`] and this, letters go
/// without their record (about 100 bytes each: a million more rejects).
pub(crate) const MAX_BYTES: usize = 160 << 20;

/// Rejected records, as NDJSON lines.
#[derive(Debug)]
pub struct DeadLetters {
    buf: String,
    count: u64,
    without_raw: u64,
    dropped: u64,
    full_bytes: usize,
    max_bytes: usize,
    /// The first few, for the summary printed to the user.
    pub first: Vec<String>,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self::with_caps(FULL_BYTES, MAX_BYTES)
    }
}

impl DeadLetters {
    /// Dead letters kept whole up to `full_bytes`, and without their records
    /// up to `max_bytes`.
    pub(crate) fn with_caps(full_bytes: usize, max_bytes: usize) -> Self {
        Self {
            buf: String::new(),
            count: 0,
            without_raw: 0,
            dropped: 0,
            full_bytes,
            max_bytes,
            first: Vec::new(),
        }
    }

    /// Records one reject.
    pub fn push(&mut self, loc: Location<'_>, reason: &str, raw: &[u8]) {
        self.count += 1;
        if self.first.len() < 10 {
            self.first
                .push(format!("{}:{}: {reason}", loc.input, loc.line));
        }
        if self.buf.len() >= self.max_bytes {
            self.dropped += 1;
            return;
        }
        self.buf.push_str("{\"input\":");
        write_json_string(loc.input, &mut self.buf);
        self.buf
            .push_str(&format!(",\"line\":{},\"reason\":", loc.line));
        write_json_string(reason, &mut self.buf);
        self.buf.push_str(",\"raw\":");
        if self.buf.len() + raw.len() <= self.full_bytes {
            write_json_string(&String::from_utf8_lossy(raw), &mut self.buf);
        } else {
            self.without_raw += 1;
            self.buf.push_str("null");
        }
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

    /// The NDJSON text (with a note on the letters kept without their record).
    pub fn take(&mut self) -> String {
        if self.without_raw > 0 {
            self.buf.push_str(&format!(
                "{{\"note\":\"{} rejects kept without their record (more than {} MiB of dead letters)\"}}\n",
                self.without_raw,
                self.full_bytes >> 20
            ));
            self.without_raw = 0;
        }
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_kept_whole_then_without_raw_then_counted() {
        let mut d = DeadLetters::with_caps(12_000, 10_200);
        let loc = |line| Location { input: "in", line };
        let record = "r".repeat(5_000);
        for line in 1..=6 {
            d.push(loc(line), "bad", record.as_bytes());
        }
        assert_eq!(d.count(), 6);
        let text = d.take();
        let got = lines(&text);
        // Two whole records fit under 12,000 bytes; the next letters go
        // without theirs until 10,200 bytes; the rest are counted.
        assert_eq!(got[0]["raw"], record);
        assert_eq!(got[1]["raw"], record);
        assert_eq!(got[2]["raw"], serde_json::Value::Null);
        assert_eq!(got[2]["line"], 3);
        let kept = got.iter().filter(|v| v.get("line").is_some()).count();
        assert_eq!(kept as u64 + d.dropped(), 6);
        assert!(d.dropped() > 0);
        let note = got.last().unwrap()["note"].as_str().unwrap();
        assert!(
            note.starts_with(&format!("{} rejects kept without", kept - 2)),
            "{note}"
        );
    }

    #[test]
    fn a_long_record_is_not_cut() {
        let mut d = DeadLetters::default();
        let record = format!("{{\"a\":\"{}\"}}", "é".repeat(100_000));
        d.push(
            Location {
                input: "in",
                line: 7,
            },
            "bad",
            record.as_bytes(),
        );
        assert_eq!(lines(&d.take())[0]["raw"], record);
    }
}
