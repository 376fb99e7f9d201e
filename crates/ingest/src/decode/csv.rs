//! CSV with a header row. Known columns (`user_id`, `event`, `ts`, ...) map as in
//! NDJSON; every other non-empty cell becomes a string property.
//!
//! The dialect is RFC 4180 as spreadsheets write it: `,` between fields, `"`
//! around a field that holds commas, quotes (doubled) or line breaks; records end
//! at `\n`, `\r\n` or `\r`; blank lines are skipped; a UTF-8 byte order mark at
//! the start is ignored. Like the `csv` crate, it is lenient where that is
//! harmless: a quote inside an unquoted field is a literal character, and text
//! after a closing quote is appended to the field.
//!
//! Records are split here, not by a general CSV library, so that a quote that is
//! never closed cannot swallow the rest of the input: a record may span at most
//! `max_record_lines` physical lines and `max_line_bytes` bytes. A quoted field
//! still open past either limit, or at the end of the input, rejects the line it
//! opened on as an unterminated quoted field, and the lines after it are read
//! again as records: one stray quote costs one row, not the rest of the file.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};

use super::{Location, RawEvent, Scalar, Sink};
use crate::validate::PropertyNames;

#[derive(Clone, Copy)]
enum Col {
    EventId,
    UserId,
    AnonymousId,
    PreviousId,
    Event,
    Kind,
    Ts,
    Property,
}

fn classify(name: &str) -> Col {
    match name {
        "event_id" | "messageId" | "message_id" => Col::EventId,
        "user_id" | "userId" => Col::UserId,
        "anonymousId" | "anonymous_id" => Col::AnonymousId,
        "previousId" | "previous_id" => Col::PreviousId,
        "event" => Col::Event,
        "type" => Col::Kind,
        "ts" | "timestamp" => Col::Ts,
        _ => Col::Property,
    }
}

/// Limits on one record.
#[derive(Debug, Clone, Copy)]
pub struct CsvLimits {
    /// Most bytes in a record (`max_line_bytes`), line breaks inside quoted
    /// fields included.
    pub max_bytes: usize,
    /// Most physical lines a record may span (`max_record_lines`).
    pub max_lines: usize,
}

/// Bytes of a line too long to keep that its reject shows.
const TOO_LONG_PREFIX: usize = 256;

/// Reads CSV; records that fail to parse are rejected with their line.
pub fn read_csv<R: Read>(
    reader: R,
    input: &str,
    names: &PropertyNames,
    limits: CsvLimits,
    sink: &mut dyn Sink,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let mut rdr = Records::new(reader, limits);
    rdr.skip_bom()?;
    let header_line = match rdr.next_record()? {
        Next::Eof => return Ok(()),
        Next::Record { line } => line,
        Next::Reject { line, reason } => {
            sink.reject(
                Location { input, line },
                &format!("unreadable CSV header: {reason}"),
                &rdr.raw,
            );
            return Ok(());
        }
    };
    let mut header_names = Vec::with_capacity(rdr.field_count());
    for i in 0..rdr.field_count() {
        match std::str::from_utf8(rdr.field(i)) {
            Ok(s) => header_names.push(s.trim().to_string()),
            Err(_) => {
                sink.reject(
                    Location {
                        input,
                        line: header_line,
                    },
                    "CSV header is not valid UTF-8",
                    &rdr.raw,
                );
                return Ok(());
            }
        }
    }
    let cols: Vec<Col> = header_names.iter().map(|n| classify(n)).collect();
    rdr.columns = header_names.clone();
    on_bytes(rdr.take_bytes_read());
    loop {
        let next = rdr.next_record()?;
        on_bytes(rdr.take_bytes_read());
        let line = match next {
            Next::Eof => break,
            Next::Reject { line, reason } => {
                sink.reject(Location { input, line }, &reason, &rdr.raw);
                continue;
            }
            Next::Record { line } => line,
        };
        let loc = Location { input, line };
        if rdr.field_count() != cols.len() {
            sink.reject(
                loc,
                &format!(
                    "row has {} fields, the header has {}",
                    rdr.field_count(),
                    cols.len()
                ),
                &rdr.raw,
            );
            continue;
        }
        let mut fields = Vec::with_capacity(cols.len());
        let mut bad_utf8 = None;
        for i in 0..rdr.field_count() {
            match std::str::from_utf8(rdr.field(i)) {
                Ok(s) => fields.push(s),
                Err(e) => {
                    bad_utf8 = Some((i, e.valid_up_to()));
                    break;
                }
            }
        }
        if let Some((i, at)) = bad_utf8 {
            sink.reject(
                loc,
                &format!("invalid UTF-8 in column `{}` at byte {at}", header_names[i]),
                &rdr.raw,
            );
            continue;
        }
        let mut ev = RawEvent::with_declared(names.len());
        for ((col, name), value) in cols.iter().zip(&header_names).zip(&fields) {
            if value.is_empty() {
                continue;
            }
            let v = Scalar::Str(Cow::Borrowed(value));
            match col {
                Col::EventId => ev.event_id = Some(v),
                Col::UserId => ev.user_id = Some(v),
                Col::AnonymousId => ev.anonymous_id = Some(v),
                Col::PreviousId => ev.previous_id = Some(v),
                Col::Event => ev.event = Some(v),
                Col::Kind => ev.kind = Some(v),
                Col::Ts => ev.ts = Some(v),
                Col::Property => ev.set_property(names, Cow::Borrowed(name.as_str()), v),
            }
        }
        sink.accept(&ev, loc, &rdr.raw);
    }
    Ok(())
}

/// What [`Records::next_record`] found.
#[derive(Debug, PartialEq)]
enum Next {
    /// A record starting on `line`: its fields are in [`Records::field`], its
    /// text in [`Records::raw`].
    Record { line: u64 },
    /// A record that cannot be read; [`Records::raw`] holds what to show of it.
    Reject { line: u64, reason: String },
    /// The end of the input.
    Eof,
}

/// Where the field scanner is.
#[derive(Clone, Copy, PartialEq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first half of `""`.
    QuoteInQuoted,
}

/// How a physical line ended.
enum LineEnd {
    /// At a line break (`\n`, `\r\n` or `\r`), given as its bytes.
    Break(&'static [u8]),
    /// At the end of the input.
    Eof,
    /// The record grew past the byte limit; the rest of the line is unread.
    TooLong,
}

/// The input, with bytes put back in front of it.
struct Source<R> {
    reader: BufReader<R>,
    /// Bytes to read again before the reader's (the lines after a rejected
    /// line that opened a quote), from `replay_pos`.
    replay: Vec<u8>,
    replay_pos: usize,
    /// Bytes taken from the reader (not counting those read again).
    bytes_read: u64,
}

impl<R: Read> Source<R> {
    fn fill(&mut self) -> std::io::Result<&[u8]> {
        if self.replay_pos < self.replay.len() {
            return Ok(&self.replay[self.replay_pos..]);
        }
        self.reader.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if self.replay_pos < self.replay.len() {
            self.replay_pos += n;
            if self.replay_pos == self.replay.len() {
                self.replay.clear();
                self.replay_pos = 0;
            }
        } else {
            self.reader.consume(n);
            self.bytes_read += n as u64;
        }
    }

    /// Puts `bytes` back in front of what is still to be read.
    fn unread(&mut self, bytes: &[u8]) {
        let mut replay = Vec::with_capacity(bytes.len() + self.replay.len() - self.replay_pos);
        replay.extend_from_slice(bytes);
        replay.extend_from_slice(&self.replay[self.replay_pos..]);
        self.replay = replay;
        self.replay_pos = 0;
    }
}

/// Splits CSV input into records of fields, within [`CsvLimits`].
struct Records<R> {
    src: Source<R>,
    limits: CsvLimits,
    /// Number of the next physical line.
    line: u64,
    /// The current record as read, line breaks inside it included.
    raw: Vec<u8>,
    /// The current record's fields, unquoted, end to end; `ends[i]` is where
    /// field `i` ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
    /// Header names, for reasons.
    columns: Vec<String>,
}

impl<R: Read> Records<R> {
    fn new(reader: R, limits: CsvLimits) -> Self {
        Self {
            src: Source {
                reader: BufReader::with_capacity(256 << 10, reader),
                replay: Vec::new(),
                replay_pos: 0,
                bytes_read: 0,
            },
            limits: CsvLimits {
                max_bytes: limits.max_bytes.max(1),
                max_lines: limits.max_lines.max(1),
            },
            line: 1,
            raw: Vec::new(),
            fields: Vec::new(),
            ends: Vec::new(),
            columns: Vec::new(),
        }
    }

    fn field_count(&self) -> usize {
        self.ends.len()
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fields[start..self.ends[i]]
    }

    /// Input bytes read since the last call.
    fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.src.bytes_read)
    }

    /// Drops a UTF-8 byte order mark at the start of the input.
    fn skip_bom(&mut self) -> std::io::Result<()> {
        const BOM: &[u8] = b"\xef\xbb\xbf";
        let mut head = Vec::with_capacity(3);
        while head.len() < 3 {
            let buf = self.src.fill()?;
            if buf.is_empty() {
                break;
            }
            let take = buf.len().min(3 - head.len());
            head.extend_from_slice(&buf[..take]);
            self.src.consume(take);
        }
        if head != BOM {
            self.src.unread(&head);
        }
        Ok(())
    }

    /// Appends one physical line (without its line break) to `raw`, as long as
    /// `raw` stays within the byte limit.
    fn read_line(&mut self) -> std::io::Result<LineEnd> {
        let limit = self.limits.max_bytes;
        loop {
            let buf = self.src.fill()?;
            if buf.is_empty() {
                return Ok(LineEnd::Eof);
            }
            let room = limit.saturating_sub(self.raw.len());
            let found = memchr::memchr2(b'\n', b'\r', buf);
            let take = found.unwrap_or(buf.len());
            if take > room {
                // Kept up to the limit: the rest of the line may be read again.
                self.raw.extend_from_slice(&buf[..room]);
                self.src.consume(room);
                return Ok(LineEnd::TooLong);
            }
            self.raw.extend_from_slice(&buf[..take]);
            let Some(i) = found else {
                self.src.consume(take);
                continue;
            };
            let cr = buf[i] == b'\r';
            self.src.consume(i + 1);
            if !cr {
                return Ok(LineEnd::Break(b"\n"));
            }
            if self.src.fill()?.first() == Some(&b'\n') {
                self.src.consume(1);
                return Ok(LineEnd::Break(b"\r\n"));
            }
            return Ok(LineEnd::Break(b"\r"));
        }
    }

    /// Skips the rest of a physical line, its line break included.
    fn skip_line(&mut self) -> std::io::Result<()> {
        loop {
            let buf = self.src.fill()?;
            if buf.is_empty() {
                return Ok(());
            }
            match memchr::memchr2(b'\n', b'\r', buf) {
                Some(i) => {
                    let cr = buf[i] == b'\r';
                    self.src.consume(i + 1);
                    if cr && self.src.fill()?.first() == Some(&b'\n') {
                        self.src.consume(1);
                    }
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.src.consume(n);
                }
            }
        }
    }

    /// Reads the next record.
    fn next_record(&mut self) -> std::io::Result<Next> {
        'record: loop {
            self.raw.clear();
            self.fields.clear();
            self.ends.clear();
            let start = self.line;
            let mut state = State::FieldStart;
            // The field a still-open quote was opened in.
            let mut quoted_field = 0;
            // Length of the record's first line, and of it with its line break.
            let mut first_line = None;
            let mut lines = 0u64;
            loop {
                let from = self.raw.len();
                let end = self.read_line()?;
                if let LineEnd::TooLong = end
                    && lines == 0
                {
                    // One physical line over the limit: nothing to read again.
                    self.skip_line()?;
                    self.line += 1;
                    self.raw.truncate(TOO_LONG_PREFIX);
                    return Ok(Next::Reject {
                        line: start,
                        reason: super::too_long(self.limits.max_bytes),
                    });
                }
                if lines == 0 && self.raw.is_empty() {
                    match end {
                        // A blank line between records.
                        LineEnd::Break(_) => {
                            self.line += 1;
                            continue 'record;
                        }
                        _ => return Ok(Next::Eof),
                    }
                }
                if !matches!(end, LineEnd::TooLong) {
                    state = self.scan(from, state, &mut quoted_field);
                }
                lines += 1;
                let open = state == State::Quoted;
                let overflow = match end {
                    LineEnd::Break(brk) if open => {
                        first_line.get_or_insert((self.raw.len(), self.raw.len() + brk.len()));
                        self.raw.extend_from_slice(brk);
                        self.fields.extend_from_slice(brk);
                        if lines >= self.limits.max_lines as u64 {
                            Some(format!(
                                "a CSV record may span at most {} lines (max_record_lines)",
                                self.limits.max_lines
                            ))
                        } else if self.raw.len() > self.limits.max_bytes {
                            Some(format!(
                                "a CSV record may span at most {} bytes (max_line_bytes)",
                                self.limits.max_bytes
                            ))
                        } else {
                            continue;
                        }
                    }
                    LineEnd::TooLong => Some(format!(
                        "a CSV record may span at most {} bytes (max_line_bytes)",
                        self.limits.max_bytes
                    )),
                    LineEnd::Eof if open => Some("it is still open at the end of the input".into()),
                    LineEnd::Break(_) | LineEnd::Eof => {
                        self.line = start + lines;
                        self.ends.push(self.fields.len());
                        return Ok(Next::Record { line: start });
                    }
                };
                let why = overflow.expect("every other case returned or continued");
                let column = match self.columns.get(quoted_field) {
                    Some(name) => format!("column `{name}`"),
                    None => format!("column {}", quoted_field + 1),
                };
                let reason = format!(
                    "unterminated quoted field in {column} (a stray `\"`?): {why}; the lines after this one are read as records"
                );
                // Read everything after the first line again, as new records.
                if let Some((len, with_break)) = first_line {
                    let rest = self.raw[with_break..].to_vec();
                    self.src.unread(&rest);
                    self.raw.truncate(len);
                }
                self.line = start + 1;
                return Ok(Next::Reject {
                    line: start,
                    reason,
                });
            }
        }
    }

    /// Runs the field scanner over `raw[from..]`, appending field bytes and
    /// ends; returns the state at the end of the bytes.
    fn scan(&mut self, from: usize, mut state: State, quoted_field: &mut usize) -> State {
        let bytes = &self.raw[from..];
        let mut i = 0;
        while i < bytes.len() {
            match state {
                State::FieldStart => {
                    if bytes[i] == b'"' {
                        state = State::Quoted;
                        *quoted_field = self.ends.len();
                        i += 1;
                    } else {
                        state = State::Unquoted;
                    }
                }
                State::Unquoted => match memchr::memchr(b',', &bytes[i..]) {
                    Some(j) => {
                        self.fields.extend_from_slice(&bytes[i..i + j]);
                        self.ends.push(self.fields.len());
                        i += j + 1;
                        state = State::FieldStart;
                    }
                    None => {
                        self.fields.extend_from_slice(&bytes[i..]);
                        i = bytes.len();
                    }
                },
                State::Quoted => match memchr::memchr(b'"', &bytes[i..]) {
                    Some(j) => {
                        self.fields.extend_from_slice(&bytes[i..i + j]);
                        i += j + 1;
                        state = State::QuoteInQuoted;
                    }
                    None => {
                        self.fields.extend_from_slice(&bytes[i..]);
                        i = bytes.len();
                    }
                },
                State::QuoteInQuoted => match bytes[i] {
                    b'"' => {
                        self.fields.push(b'"');
                        i += 1;
                        state = State::Quoted;
                    }
                    b',' => {
                        self.ends.push(self.fields.len());
                        i += 1;
                        state = State::FieldStart;
                    }
                    _ => state = State::Unquoted,
                },
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: CsvLimits = CsvLimits {
        max_bytes: 1 << 20,
        max_lines: 100,
    };

    /// A record's line and fields, or its line and the reason it was rejected.
    type Got = Result<(u64, Vec<String>), (u64, String)>;

    /// Every record of `text`.
    fn records(text: &[u8], limits: CsvLimits) -> Vec<Got> {
        let mut r = Records::new(text, limits);
        r.skip_bom().unwrap();
        let mut out = Vec::new();
        loop {
            match r.next_record().unwrap() {
                Next::Eof => return out,
                Next::Record { line } => out.push(Ok((
                    line,
                    (0..r.field_count())
                        .map(|i| String::from_utf8_lossy(r.field(i)).into_owned())
                        .collect(),
                ))),
                Next::Reject { line, reason } => out.push(Err((line, reason))),
            }
        }
    }

    fn ok(line: u64, fields: &[&str]) -> Got {
        Ok((line, fields.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn splits_fields_quotes_and_line_breaks() {
        let got = records(
            b"a,b,c\r\n\"x,1\",\"say \"\"hi\"\"\",\r\n\n\"multi\nline\",q\"uote,\"ab\"cd\rlast,,\"\"",
            LIMITS,
        );
        assert_eq!(
            got,
            vec![
                ok(1, &["a", "b", "c"]),
                ok(2, &["x,1", "say \"hi\"", ""]),
                ok(4, &["multi\nline", "q\"uote", "abcd"]),
                ok(6, &["last", "", ""]),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_dropped_only_at_the_start() {
        let got = records(b"\xef\xbb\xbfa,b\n\xef\xbb\xbfc,d\n", LIMITS);
        assert_eq!(got, vec![ok(1, &["a", "b"]), ok(2, &["\u{feff}c", "d"])]);
        assert_eq!(records(b"\xef\xbb", LIMITS), vec![ok(1, &["\u{fffd}"])]);
        assert_eq!(records(b"", LIMITS), vec![]);
    }

    #[test]
    fn an_open_quote_rejects_its_line_and_the_rest_is_read_again() {
        let limits = CsvLimits {
            max_bytes: 1 << 20,
            max_lines: 3,
        };
        let got = records(b"a,\"b\nc,d\ne,f\ng,h\n", limits);
        assert!(
            matches!(&got[0], Err((1, r)) if r.contains("column 2") && r.contains("3 lines")),
            "{got:?}"
        );
        assert_eq!(
            &got[1..],
            [ok(2, &["c", "d"]), ok(3, &["e", "f"]), ok(4, &["g", "h"])]
        );
        // Still open at the end of the input, whatever the limits.
        let got = records(b"a,b\n\"c,d\ne,f", LIMITS);
        assert!(
            matches!(&got[1], Err((2, r)) if r.contains("end of the input")),
            "{got:?}"
        );
        assert_eq!(&got[2..], [ok(3, &["e", "f"])]);
    }

    #[test]
    fn records_longer_than_the_byte_limit_are_rejected() {
        let limits = CsvLimits {
            max_bytes: 8,
            max_lines: 100,
        };
        assert_eq!(records(b"12345678\n", limits), vec![ok(1, &["12345678"])]);
        assert!(matches!(&records(b"123456789", limits)[0], Err((1, _))));
        let got = records(b"123456789,a\nok\n\"1234\n5678\n\"\nz", limits);
        assert!(
            matches!(&got[0], Err((1, r)) if r.contains("longer than 8")),
            "{got:?}"
        );
        assert_eq!(got[1], ok(2, &["ok"]));
        assert!(
            matches!(&got[2], Err((3, r)) if r.contains("8 bytes")),
            "{got:?}"
        );
        // `5678` is read again; the lone quote on line 5 opens a field that is
        // still open at the end.
        assert_eq!(got[3], ok(4, &["5678"]));
        assert!(matches!(&got[4], Err((5, _))), "{got:?}");
        assert_eq!(got[5], ok(6, &["z"]));
        assert_eq!(got.len(), 6);
    }

    fn field() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", " ", ",", "\"", "\n", "\r\n", "é", "x\"y"]),
            0..6,
        )
        .prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Fields quoted as the `csv` crate writes them read back unchanged, as
        /// the `csv` crate reads them.
        #[test]
        fn agrees_with_the_csv_crate(rows in prop::collection::vec(prop::collection::vec(field(), 1..4), 1..6)) {
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            for r in &rows {
                w.write_record(r).unwrap();
            }
            let text = w.into_inner().unwrap();
            let theirs: Vec<Vec<String>> = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&text[..])
                .records()
                .map(|r| r.unwrap().iter().map(str::to_string).collect())
                .collect();
            let ours: Vec<Vec<String>> = records(&text, LIMITS)
                .into_iter()
                .map(|r| r.unwrap().1)
                .collect();
            prop_assert_eq!(ours, theirs);
        }
    }
}
