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

/// Fields of a Segment message envelope that are not event properties.
const ENVELOPE: &[&str] = &[
    "context",
    "integrations",
    "sentAt",
    "receivedAt",
    "originalTimestamp",
    "version",
    "channel",
    "writeKey",
    "_metadata",
    "projectId",
];

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
            let value = || Scalar::from_json(raw.get()).map_err(de::Error::custom);
            match key.as_ref() {
                "event_id" | "messageId" | "message_id" => ev.event_id = Some(value()?),
                "user_id" | "userId" => ev.user_id = Some(value()?),
                "anonymousId" | "anonymous_id" => ev.anonymous_id = Some(value()?),
                "event" => ev.event = Some(value()?),
                "type" => ev.kind = Some(value()?),
                "ts" | "timestamp" => ev.ts = Some(value()?),
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
                k if ENVELOPE.contains(&k) => {}
                _ => ev.set_property(self.names, key, value()?),
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

/// Reads NDJSON from `reader`, handing each line to `sink`. Blank lines are
/// skipped; lines longer than `max_line` bytes and lines that are not UTF-8 are
/// rejected without stopping the run. `on_bytes` is called with the bytes read.
pub fn read_ndjson<R: Read>(
    mut reader: R,
    input: &str,
    names: &PropertyNames,
    max_line: usize,
    sink: &mut dyn Sink,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    const CHUNK: usize = 4 << 20;
    let too_long = format!("line longer than {max_line} bytes");
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    let mut line_no: u64 = 0;
    // When a line outgrows `max_line` we stop buffering it and skip to its end.
    let mut skipping = false;
    loop {
        // Appends without zeroing the buffer first.
        let n = (&mut reader).take(CHUNK as u64).read_to_end(&mut buf)?;
        on_bytes(n as u64);
        let eof = n == 0;
        let mut pos = 0;
        if skipping {
            match memchr::memchr(b'\n', &buf) {
                Some(i) => {
                    line_no += 1;
                    sink.reject(
                        Location {
                            input,
                            line: line_no,
                        },
                        &too_long,
                        &[],
                    );
                    pos = i + 1;
                    skipping = false;
                }
                None if eof => {
                    line_no += 1;
                    sink.reject(
                        Location {
                            input,
                            line: line_no,
                        },
                        &too_long,
                        &[],
                    );
                    break;
                }
                None => {
                    buf.clear();
                    continue;
                }
            }
        }
        loop {
            let rest = &buf[pos..];
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], pos + i + 1),
                None if eof && !rest.is_empty() => (rest, buf.len()),
                None => break,
            };
            line_no += 1;
            handle_line(
                line,
                Location {
                    input,
                    line: line_no,
                },
                names,
                max_line,
                sink,
            );
            pos = next;
        }
        buf.drain(..pos);
        if eof {
            break;
        }
        if buf.len() > max_line {
            skipping = true;
            buf.clear();
        }
    }
    Ok(())
}

fn handle_line(
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
            &format!("line longer than {max_line} bytes"),
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
