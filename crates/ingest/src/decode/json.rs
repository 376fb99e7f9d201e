//! NDJSON: flat events and Segment-style messages, one JSON object per line.
//!
//! Each line is parsed by a serde visitor that borrows keys and values from the
//! line buffer and routes them straight into a [`RawEvent`]; no `serde_json::Value`
//! tree is built. Values are captured as raw JSON text, so numbers (revenue) keep
//! their exact decimal digits.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::record::ENVELOPE;
use super::{Location, RawEvent, Scalar, Sink};
use crate::validate::PropertyNames;

/// A map key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

struct EventVisitor<'n> {
    names: &'n PropertyNames,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent<'de>, A::Error> {
        let mut ev = RawEvent::with_declared(self.names.len());
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            match key.as_ref() {
                "properties" | "traits" => match raw.get().as_bytes().first() {
                    Some(b'{') => {
                        let mut d = serde_json::Deserializer::from_str(raw.get());
                        d.deserialize_map(PropsVisitor {
                            names: self.names,
                            ev: &mut ev,
                        })
                        .map_err(de::Error::custom)?;
                    }
                    Some(b'n') => {}
                    _ => {
                        return Err(de::Error::custom(format!("`{key}` must be an object")));
                    }
                },
                // Envelope values are skipped undecoded.
                k if ENVELOPE.contains(&k) => {}
                _ => {
                    let value = Scalar::from_json(raw.get()).map_err(de::Error::custom)?;
                    ev.set_field(self.names, key, value);
                }
            }
        }
        Ok(ev)
    }
}

struct PropsVisitor<'n, 'e, 'de> {
    names: &'n PropertyNames,
    ev: &'e mut RawEvent<'de>,
}

impl<'de> Visitor<'de> for PropsVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of properties")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            let value = Scalar::from_json(raw.get()).map_err(de::Error::custom)?;
            self.ev.set_property(self.names, key, value);
        }
        Ok(())
    }
}

/// Parses one JSON object (one NDJSON line or one Segment message).
pub fn parse_event<'a>(text: &'a str, names: &PropertyNames) -> Result<RawEvent<'a>, String> {
    if let Some(ev) = super::fast::parse(text, names) {
        return Ok(ev);
    }
    parse_event_serde(text, names)
}

/// [`parse_event`] by serde alone: every JSON shape, and the error messages.
pub fn parse_event_serde<'a>(text: &'a str, names: &PropertyNames) -> Result<RawEvent<'a>, String> {
    let mut d = serde_json::Deserializer::from_str(text);
    let ev = d
        .deserialize_map(EventVisitor { names })
        .map_err(|e| describe_json_error(&e))?;
    d.end().map_err(|e| describe_json_error(&e))?;
    Ok(ev)
}

fn describe_json_error(e: &serde_json::Error) -> String {
    // serde_json's messages carry "at line 1 column N"; the line is ours to report.
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if e.column() > 0 {
        format!("malformed JSON: {msg} (column {})", e.column())
    } else {
        format!("malformed JSON: {msg}")
    }
}

/// Bytes read from the input at a time.
const CHUNK: usize = 4 << 20;

/// A piece of NDJSON input, as [`Chunker`] cuts it.
pub enum Piece {
    /// Whole lines (the last one may lack its newline at the end of the input).
    Lines(Vec<u8>),
    /// One line longer than the limit, skipped without being buffered.
    TooLong,
}

impl Piece {
    /// Lines in this piece, blank ones included.
    pub fn lines(&self) -> u64 {
        match self {
            Piece::Lines(b) => {
                let n = memchr::memchr_iter(b'\n', b).count() as u64;
                n + u64::from(b.last().is_some_and(|&c| c != b'\n'))
            }
            Piece::TooLong => 1,
        }
    }
}

/// Cuts NDJSON input into pieces of whole lines (about 4 MiB each) that can be
/// decoded independently, in input order. A line longer than `max_line` is never
/// buffered whole: it becomes [`Piece::TooLong`] and is skipped to its end.
pub struct Chunker<R> {
    reader: R,
    carry: Vec<u8>,
    max_line: usize,
    skipping: bool,
    eof: bool,
    started: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R, max_line: usize) -> Self {
        Self {
            reader,
            carry: Vec::new(),
            max_line,
            skipping: false,
            eof: false,
            started: false,
        }
    }

    /// The next piece, or `None` at the end. `on_bytes` is called with the bytes read.
    pub fn next_piece(&mut self, on_bytes: &mut dyn FnMut(u64)) -> std::io::Result<Option<Piece>> {
        loop {
            if self.eof {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Piece::Lines(std::mem::take(&mut self.carry))));
            }
            let mut buf = std::mem::take(&mut self.carry);
            buf.reserve(CHUNK);
            // Appends without zeroing the buffer first.
            let n = (&mut self.reader)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)?;
            on_bytes(n as u64);
            self.eof = n == 0;
            if !self.started {
                // A UTF-8 byte order mark (as Windows tools write) is not part of
                // the first line. `take` reads up to CHUNK bytes, so the first
                // read holds all of a mark, if there is one.
                self.started = true;
                if buf.starts_with(b"\xef\xbb\xbf") {
                    buf.drain(..3);
                }
            }
            if self.skipping {
                match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        self.skipping = false;
                        self.carry = buf[i + 1..].to_vec();
                        return Ok(Some(Piece::TooLong));
                    }
                    None if self.eof => {
                        self.skipping = false;
                        return Ok(Some(Piece::TooLong));
                    }
                    None => continue,
                }
            }
            if self.eof {
                self.carry = buf;
                continue;
            }
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => {
                    let rest = &buf[i + 1..];
                    if rest.len() > self.max_line {
                        self.skipping = true;
                    } else {
                        self.carry = rest.to_vec();
                    }
                    buf.truncate(i + 1);
                    return Ok(Some(Piece::Lines(buf)));
                }
                None if buf.len() > self.max_line => self.skipping = true,
                None => self.carry = buf,
            }
        }
    }
}

/// Calls `f` with each line of `lines` (without its newline) and its 1-based
/// number, counting from `first`.
pub fn for_each_line(lines: &[u8], first: u64, mut f: impl FnMut(&[u8], u64)) {
    let mut line_no = first;
    let mut pos = 0;
    while pos < lines.len() {
        let rest = &lines[pos..];
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], pos + i + 1),
            None => (rest, lines.len()),
        };
        f(line, line_no);
        line_no += 1;
        pos = next;
    }
}

/// Decodes one line and hands it to `sink` (blank lines are skipped).
pub fn handle_line(
    line: &[u8],
    loc: Location<'_>,
    names: &PropertyNames,
    max_line: usize,
    sink: &mut dyn Sink,
) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if line.len() > max_line {
        sink.reject(
            loc,
            &super::too_long(max_line),
            &line[..line.len().min(256)],
        );
        return;
    }
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            sink.reject(
                loc,
                &format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                line,
            );
            return;
        }
    };
    match parse_event(text, names) {
        Ok(ev) => sink.accept(&ev, loc, line),
        Err(reason) => sink.reject(loc, &reason, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PropertyNames {
        PropertyNames::new(&["country".to_string()])
    }

    #[test]
    fn flat_event_routes_fields() {
        let n = names();
        let ev = parse_event(
            r#"{"user_id":"u1","event":"purchase","ts":"2026-01-02T03:04:05Z","revenue":12.50,"country":"JP","item":"a\"b","n":[1,2]}"#,
            &n,
        )
        .unwrap();
        assert_eq!(ev.user_id, Some(Scalar::Str("u1".into())));
        assert_eq!(ev.revenue, Some(Scalar::Num("12.50".into())));
        assert_eq!(ev.declared[0], Some(Scalar::Str("JP".into())));
        assert_eq!(ev.extra.len(), 2);
        assert_eq!(ev.extra[0].1, Scalar::Str("a\"b".into()));
        assert_eq!(ev.extra[1].1, Scalar::Json("[1,2]"));
    }

    #[test]
    fn segment_message_reads_properties_and_ignores_envelope() {
        let n = names();
        let ev = parse_event(
            r#"{"type":"track","anonymousId":"a1","messageId":"m1","event":"Order Completed","timestamp":"2026-01-02T03:04:05.123Z","properties":{"revenue":"9.99","country":"CN","coupon":null},"context":{"ip":"1.2.3.4"}}"#,
            &n,
        )
        .unwrap();
        assert_eq!(ev.anonymous_id, Some(Scalar::Str("a1".into())));
        assert_eq!(ev.event_id, Some(Scalar::Str("m1".into())));
        assert_eq!(ev.revenue, Some(Scalar::Str("9.99".into())));
        assert_eq!(ev.declared[0], Some(Scalar::Str("CN".into())));
        assert_eq!(ev.extra, vec![("coupon".into(), Scalar::Null)]);
    }

    #[test]
    fn malformed_json_names_the_column() {
        let e = parse_event(r#"{"user_id":"u1","event":}"#, &names()).unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        assert!(e.contains("column"), "{e}");
        let e = parse_event(r#"[1,2]"#, &names()).unwrap_err();
        assert!(e.contains("expected a JSON object"), "{e}");
        let e = parse_event(r#"{"a":1} x"#, &names()).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }
}
