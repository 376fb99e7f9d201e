//! A small strict JSON reader (RFC 8259) that remembers where every value starts,
//! so summary errors can point at a line and column.
//!
//! The summaries are tiny and flat; a serde dependency would buy nothing here but
//! compile time and errors without positions.

use crate::ParseError;

/// A JSON value with the position where it starts.
#[derive(Debug)]
pub(crate) struct Json {
    pub line: usize,
    pub column: usize,
    pub value: JsonValue,
}

#[derive(Debug)]
pub(crate) enum JsonValue {
    Null,
    Bool,
    /// The literal text, so integers can be checked exactly.
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Members),
}

impl JsonValue {
    pub fn describe(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool => "a boolean",
            JsonValue::Number(_) => "a number",
            JsonValue::String(_) => "a string",
            JsonValue::Array(_) => "an array",
            JsonValue::Object(_) => "an object",
        }
    }
}

/// An object's members in document order.
pub(crate) type Members = Vec<(String, Json)>;

/// A small strict JSON reader (RFC 8259) that tracks line and column.
pub(crate) struct JsonReader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
    depth: usize,
}

/// Nesting deeper than this is not a summary; refusing it keeps recursion bounded.
const MAX_DEPTH: usize = 64;

impl<'a> JsonReader<'a> {
    pub fn new(text: &'a str) -> Self {
        JsonReader {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
            depth: 0,
        }
    }

    /// Reads one value and checks that nothing but whitespace follows it.
    pub fn document(mut self) -> Result<Json, ParseError> {
        let doc = self.value()?;
        self.skip_ws();
        if let Some(&c) = self.chars.peek() {
            return Err(self.error(format!("unexpected `{c}` after the array")));
        }
        Ok(doc)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.line, self.column, message)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.chars.peek() {
            if matches!(c, ' ' | '\t' | '\n' | '\r') {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn expect(&mut self, want: char) -> Result<(), ParseError> {
        self.skip_ws();
        match self.chars.peek() {
            Some(&c) if c == want => {
                self.bump();
                Ok(())
            }
            Some(&c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{want}`, found the end of the file"))),
        }
    }

    fn value(&mut self) -> Result<Json, ParseError> {
        self.skip_ws();
        let (line, column) = (self.line, self.column);
        let value = match self.chars.peek().copied() {
            None => return Err(self.error("expected a value, found the end of the file")),
            Some('[') => {
                self.nest()?;
                self.bump();
                let mut items = Vec::new();
                self.skip_ws();
                if self.chars.peek() == Some(&']') {
                    self.bump();
                } else {
                    loop {
                        items.push(self.value()?);
                        self.skip_ws();
                        match self.bump() {
                            Some(',') => continue,
                            Some(']') => break,
                            Some(c) => {
                                return Err(ParseError::new(
                                    self.line,
                                    self.column - 1,
                                    format!("expected `,` or `]`, found `{c}`"),
                                ));
                            }
                            None => return Err(self.error("unterminated array")),
                        }
                    }
                }
                self.depth -= 1;
                JsonValue::Array(items)
            }
            Some('{') => {
                self.nest()?;
                self.bump();
                let mut members = Vec::new();
                self.skip_ws();
                if self.chars.peek() == Some(&'}') {
                    self.bump();
                } else {
                    loop {
                        self.skip_ws();
                        let key = self.value()?;
                        let JsonValue::String(name) = key.value else {
                            return Err(ParseError::new(
                                key.line,
                                key.column,
                                format!("expected a key in quotes, found {}", key.value.describe()),
                            ));
                        };
                        self.expect(':')?;
                        let v = self.value()?;
                        members.push((name, v));
                        self.skip_ws();
                        match self.bump() {
                            Some(',') => continue,
                            Some('}') => break,
                            Some(c) => {
                                return Err(ParseError::new(
                                    self.line,
                                    self.column - 1,
                                    format!("expected `,` or `}}`, found `{c}`"),
                                ));
                            }
                            None => return Err(self.error("unterminated object")),
                        }
                    }
                }
                self.depth -= 1;
                JsonValue::Object(members)
            }
            Some('"') => JsonValue::String(self.string()?),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let mut text = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                        text.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                if !valid_json_number(&text) {
                    return Err(ParseError::new(
                        line,
                        column,
                        format!("`{text}` is not a valid number"),
                    ));
                }
                JsonValue::Number(text)
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() {
                        word.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                match word.as_str() {
                    "null" => JsonValue::Null,
                    "true" | "false" => JsonValue::Bool,
                    _ => {
                        return Err(ParseError::new(
                            line,
                            column,
                            format!("unexpected `{word}`; strings need double quotes"),
                        ));
                    }
                }
            }
            Some(c) => return Err(self.error(format!("unexpected `{c}`"))),
        };
        Ok(Json {
            line,
            column,
            value,
        })
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(self.error("nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let (line, column) = (self.line, self.column);
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(ParseError::new(line, column, "unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let c = self
                        .bump()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    match c {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair spells one character.
                                if self.bump() != Some('\\') || self.bump() != Some('u') {
                                    return Err(self.error("unpaired surrogate in \\u escape"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error("unpaired surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(code)
                                    .ok_or_else(|| self.error("invalid \\u escape"))?,
                            );
                        }
                        other => return Err(self.error(format!("invalid escape `\\{other}`"))),
                    }
                }
                Some(c) if (c as u32) < 0x20 => {
                    return Err(self.error("control character inside a string"));
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}

/// The JSON number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn valid_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    if b.get(i) == Some(&b'0') {
        i += 1;
    } else if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "12", "1.5", "1e5", "1E+5", "-2.5e-3"] {
            assert!(valid_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "1.2.3", "1-2"] {
            assert!(!valid_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn strings_and_escapes() {
        let doc = JsonReader::new(r#"["a\"b\u00e9\ud83d\ude00", null, true]"#)
            .document()
            .unwrap();
        let JsonValue::Array(items) = doc.value else {
            panic!("not an array")
        };
        let JsonValue::String(s) = &items[0].value else {
            panic!("not a string")
        };
        assert_eq!(s, "a\"bé😀");
        assert_eq!(items[2].column, 34);
    }
}
