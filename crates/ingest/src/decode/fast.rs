//! A fast path for the common NDJSON line: one flat JSON object of scalars (plus
//! a `properties` / `traits` object of scalars), strings without escapes.
//!
//! [`parse`] scans the line once, borrowing every key and value. It accepts
//! only text that is valid JSON by the grammar of RFC 8259 and decodes it to
//! exactly what the serde path in [`super::json`] would; anything else (escapes,
//! nested arrays or objects, control characters, malformed input) makes it
//! return `None`, and the caller falls back to the serde path, which also
//! produces the error messages. A property test checks the agreement.

use std::borrow::Cow;

use super::{RawEvent, Scalar};
use crate::validate::PropertyNames;

struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// A string without escapes or control characters; returns its contents.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let rest = &self.bytes()[start..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' || rest[..end].iter().any(|&c| c < 0x20) {
            return None;
        }
        self.pos = start + end + 1;
        Some(&self.text[start..start + end])
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number by JSON's grammar; returns its text.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(&self.text[start..self.pos])
    }

    fn literal(&mut self, word: &'static str) -> Option<()> {
        self.bytes()[self.pos..]
            .starts_with(word.as_bytes())
            .then(|| self.pos += word.len())
    }

    /// A scalar value (string, number, true, false, null).
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        Some(match self.peek()? {
            b'"' => Scalar::Str(Cow::Borrowed(self.string()?)),
            b't' => {
                self.literal("true")?;
                Scalar::Bool(true)
            }
            b'f' => {
                self.literal("false")?;
                Scalar::Bool(false)
            }
            b'n' => {
                self.literal("null")?;
                Scalar::Null
            }
            _ => Scalar::Num(Cow::Borrowed(self.number()?)),
        })
    }

    /// The members of an object, `f` called with each key and the scanner
    /// positioned at its value (after any whitespace).
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Parses one line on the fast path; `None` means "use the serde path".
pub fn parse<'a>(text: &'a str, names: &PropertyNames) -> Option<RawEvent<'a>> {
    let mut s = Scan { text, pos: 0 };
    let mut ev = RawEvent::with_declared(names.len());
    s.ws();
    s.object(|s, key| {
        match key {
            "properties" | "traits" => match s.peek()? {
                b'{' => s.object(|s, k| {
                    let v = s.scalar()?;
                    ev.set_property(names, Cow::Borrowed(k), v);
                    Some(())
                })?,
                b'n' => s.literal("null")?,
                _ => return None,
            },
            _ => {
                let v = s.scalar()?;
                ev.set_field(names, Cow::Borrowed(key), v);
            }
        }
        Some(())
    })?;
    s.ws();
    (s.pos == text.len()).then_some(ev)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::decode::json::parse_event_serde;

    fn names() -> PropertyNames {
        PropertyNames::new(&["country".to_string()])
    }

    /// Pieces that, glued together, make valid lines, near misses and garbage.
    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\t",
            "\"",
            "\\",
            "\\\"",
            "\\n",
            "\u{1}",
            "é",
            "\"user_id\"",
            "\"userId\"",
            "\"event\"",
            "\"ts\"",
            "\"event_id\"",
            "\"messageId\"",
            "\"properties\"",
            "\"traits\"",
            "\"context\"",
            "\"revenue\"",
            "\"variant\"",
            "\"country\"",
            "\"type\"",
            "\"anonymousId\"",
            "\"x\"",
            "\"u1\"",
            "\"a b\"",
            "\"\"",
            "0",
            "-0",
            "01",
            "1.5",
            "1.",
            ".5",
            "-",
            "1e5",
            "1E+5",
            "2e",
            "-12.50e-3",
            "true",
            "false",
            "null",
            "nul",
            "tru",
            "{}",
            "[]",
            "[1,2]",
            "{\"a\":1}",
        ])
    }

    fn object() -> impl Strategy<Value = String> {
        let value = prop::sample::select(vec![
            "\"u1\"",
            "12.50",
            "-0",
            "1e5",
            "true",
            "false",
            "null",
            "\"a\\\"b\"",
            "[1]",
            "{\"revenue\":\"9.99\",\"country\":\"CN\",\"n\":null}",
            "{}",
            "\"2026-01-02T03:04:05Z\"",
            // Near misses: each makes the whole line invalid JSON.
            "1.",
            ".5",
            "01",
            "-",
            "2e",
            "1e+",
            "nul",
            "tru",
            "\"\u{1}\"",
            "\"a",
            "+1",
            "{\"a\":}",
            "{\"a\" 1}",
            "{,}",
            "{\"a\":1,}",
            // Valid edge cases.
            "1e400",
            "-0.0e+00",
            "\"\"",
            "{ }",
            "\"\u{7f}é\"",
        ]);
        let key = prop::sample::select(vec![
            "user_id",
            "userId",
            "anonymousId",
            "event",
            "ts",
            "timestamp",
            "event_id",
            "messageId",
            "type",
            "properties",
            "traits",
            "context",
            "revenue",
            "variant",
            "country",
            "item_id",
            "sentAt",
        ]);
        prop::collection::vec(
            (key, value, prop::sample::select(vec!["", " ", "\t"])),
            0..8,
        )
        .prop_map(|members| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    fn agrees(text: &str) {
        let n = names();
        if let Some(fast) = parse(text, &n) {
            let slow = parse_event_serde(text, &n);
            assert!(
                slow.is_ok(),
                "fast path accepted {text:?}, serde says {slow:?}"
            );
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", slow.unwrap()),
                "{text:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn fast_path_agrees_with_serde_on_token_soup(tokens in prop::collection::vec(token(), 0..24)) {
            agrees(&tokens.concat());
        }

        #[test]
        fn fast_path_agrees_with_serde_on_objects(obj in object(), cut in 0usize..200, junk in token()) {
            agrees(&obj);
            let cut = obj.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(obj.len());
            agrees(&obj[..cut]);
            agrees(&format!("{}{}{}", &obj[..cut], junk, &obj[cut..]));
        }
    }

    #[test]
    fn generated_lines_take_the_fast_path() {
        let n = names();
        let line = r#"{"event_id":"7-8a-1","user_id":"u0000138","event":"view_item","ts":"2026-01-01T20:48:40.355Z","variant":"A","country":"CN","item_id":1,"revenue":12.50}"#;
        let ev = parse(line, &n).expect("fast path");
        assert_eq!(ev.user_id, Some(Scalar::Str("u0000138".into())));
        assert_eq!(ev.declared[0], Some(Scalar::Str("CN".into())));
        assert_eq!(ev.revenue, Some(Scalar::Num("12.50".into())));
        assert_eq!(ev.extra, vec![("item_id".into(), Scalar::Num("1".into()))]);
        // Escapes and nested values go to serde.
        assert!(parse(r#"{"user_id":"a\"b"}"#, &n).is_none());
        assert!(parse(r#"{"context":{"ip":"1.2.3.4"}}"#, &n).is_none());
        // Segment messages with flat properties stay on the fast path.
        let seg = r#"{"type":"track","userId":"u1","event":"Order Completed","properties":{"revenue":"9.99","country":"CN"},"timestamp":"2026-01-02T03:04:05Z"}"#;
        assert!(parse(seg, &n).is_some());
        agrees(seg);
    }
}
