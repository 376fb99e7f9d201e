//! The decoded, not yet validated, shape of one event.

use std::borrow::Cow;

/// A scalar as it appeared in the input, borrowed where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// JSON null or an empty CSV cell.
    Null,
    /// true / false.
    Bool(bool),
    /// A number, as its exact source text (so decimals stay exact).
    Num(Cow<'a, str>),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A JSON object or array, as its source text.
    Json(&'a str),
    /// A timestamp already in microseconds (typed Parquet input).
    Micros(i64),
}

impl<'a> Scalar<'a> {
    /// Interprets a JSON value from its raw text (as `serde_json::value::RawValue` gives it).
    pub fn from_json(text: &'a str) -> Result<Self, String> {
        Ok(match text.as_bytes().first() {
            Some(b'"') => {
                let inner = &text[1..text.len() - 1];
                if inner.contains('\\') {
                    Scalar::Str(Cow::Owned(
                        serde_json::from_str::<String>(text).map_err(|e| e.to_string())?,
                    ))
                } else {
                    Scalar::Str(Cow::Borrowed(inner))
                }
            }
            Some(b'{' | b'[') => Scalar::Json(text),
            Some(b't') => Scalar::Bool(true),
            Some(b'f') => Scalar::Bool(false),
            Some(b'n') => Scalar::Null,
            _ => Scalar::Num(Cow::Borrowed(text)),
        })
    }

    /// Is this null (or absent)?
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// Writes the value as JSON text.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Scalar::Null => out.push_str("null"),
            Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Scalar::Num(n) => out.push_str(n),
            Scalar::Str(s) => write_json_string(s, out),
            Scalar::Json(j) => out.push_str(j),
            Scalar::Micros(m) => out.push_str(&m.to_string()),
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Fields of a Segment message envelope that are not event properties.
pub(crate) const ENVELOPE: &[&str] = &[
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

/// One event as decoded from any source format.
#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// `event_id` / `messageId`.
    pub event_id: Option<Scalar<'a>>,
    /// `user_id` / `userId`.
    pub user_id: Option<Scalar<'a>>,
    /// `anonymousId`, used when there is no user id.
    pub anonymous_id: Option<Scalar<'a>>,
    /// `previousId` of an `alias` message.
    pub previous_id: Option<Scalar<'a>>,
    /// `event`.
    pub event: Option<Scalar<'a>>,
    /// Segment message `type` (track, page, screen, identify, group, alias).
    pub kind: Option<Scalar<'a>>,
    /// `ts` / `timestamp`.
    pub ts: Option<Scalar<'a>>,
    /// `revenue` (top level or in `properties`).
    pub revenue: Option<Scalar<'a>>,
    /// `variant` (top level or in `properties`).
    pub variant: Option<Scalar<'a>>,
    /// Declared properties, by declaration index.
    pub declared: Vec<Option<Scalar<'a>>>,
    /// Every other property: name and value.
    pub extra: Vec<(Cow<'a, str>, Scalar<'a>)>,
}

impl<'a> RawEvent<'a> {
    /// An empty event with room for `declared` declared properties.
    pub fn with_declared(declared: usize) -> Self {
        Self {
            declared: vec![None; declared],
            ..Default::default()
        }
    }

    /// Routes a top-level field of a flat event or Segment message (other than
    /// `properties` / `traits`) to its slot, the envelope fields to nowhere,
    /// and everything else to [`Self::set_property`].
    pub fn set_field(
        &mut self,
        names: &crate::validate::PropertyNames,
        key: Cow<'a, str>,
        value: Scalar<'a>,
    ) {
        match key.as_ref() {
            "event_id" | "messageId" | "message_id" => self.event_id = Some(value),
            "user_id" | "userId" => self.user_id = Some(value),
            "anonymousId" | "anonymous_id" => self.anonymous_id = Some(value),
            "previousId" | "previous_id" => self.previous_id = Some(value),
            "event" => self.event = Some(value),
            "type" => self.kind = Some(value),
            "ts" | "timestamp" => self.ts = Some(value),
            k if ENVELOPE.contains(&k) => {}
            _ => self.set_property(names, key, value),
        }
    }

    /// Routes a property (top-level field of a flat event, or a key of Segment's
    /// `properties`/`traits`) to its column or to the JSON bag.
    pub fn set_property(
        &mut self,
        names: &crate::validate::PropertyNames,
        key: Cow<'a, str>,
        value: Scalar<'a>,
    ) {
        match key.as_ref() {
            "revenue" => self.revenue = Some(value),
            "variant" => self.variant = Some(value),
            k => match names.index(k) {
                Some(i) => self.declared[i] = Some(value),
                // A name given twice (a page's `name` at the top and in
                // `properties`, as analytics.js sends it) is kept once, the
                // later value winning as for the typed columns.
                None => match self.extra.iter_mut().find(|(n, _)| n.as_ref() == k) {
                    Some(e) => e.1 = value,
                    None => self.extra.push((key, value)),
                },
            },
        }
    }
}
