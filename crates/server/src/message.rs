//! Segment tracking-API payloads: split a request body into messages, correct
//! each timestamp for client clock skew, validate it, and give it a stable id.
//!
//! Validation here is the same `tenure_ingest::validate` the commit applies
//! later, so an event acknowledged with 200 is not rejected at commit time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use tenure_ingest::decode::{Scalar, json::parse_event};
use tenure_ingest::timestamp;
use tenure_ingest::validate::{PropertyNames, TimeBounds, check as check_event};
use tenure_schema::DeclaredProperty;

/// The tracking-API endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    Batch,
}

impl Endpoint {
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        Some(match path.trim_end_matches('/') {
            // The short paths are analytics.js's (analytics-next).
            "/v1/track" | "/v1/t" => Self::Track,
            "/v1/identify" | "/v1/i" => Self::Identify,
            "/v1/page" | "/v1/p" => Self::Page,
            "/v1/screen" | "/v1/s" => Self::Screen,
            "/v1/group" | "/v1/g" => Self::Group,
            "/v1/alias" | "/v1/a" => Self::Alias,
            "/v1/batch" | "/v1/import" | "/v1/b" => Self::Batch,
            _ => return None,
        })
    }

    /// The message type a single-message endpoint implies; the WAL stores it as
    /// a one-byte code (0: take `type` from the message).
    pub(crate) fn kind_code(self) -> u8 {
        match self {
            Self::Batch => 0,
            Self::Track => 1,
            Self::Identify => 2,
            Self::Page => 3,
            Self::Screen => 4,
            Self::Group => 5,
            Self::Alias => 6,
        }
    }
}

/// The message type of a WAL kind code.
pub(crate) fn kind_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "track",
        2 => "identify",
        3 => "page",
        4 => "screen",
        5 => "group",
        6 => "alias",
        _ => return None,
    })
}

/// One valid message, ready for the WAL.
#[derive(Debug)]
pub(crate) struct Accepted<'a> {
    /// Skew-corrected timestamp, UTC microseconds.
    pub ts: i64,
    /// `messageId`, or a generated UUIDv7 when the client sent none.
    pub id: Cow<'a, str>,
    /// Dedup key: a hash of the client's `messageId` (none for generated ids).
    pub dedup: Option<u64>,
    /// WAL kind code (see [`Endpoint::kind_code`]).
    pub kind: u8,
    /// The message as the client sent it.
    pub json: &'a str,
    /// The event for live segments (only when the server keeps them).
    pub live: Option<tenure_live::LiveEvent>,
}

/// One invalid message: its index in the batch (0 for single messages) and why.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// A request body that cannot be taken at all.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Not a JSON object of the expected shape: 400.
    Malformed(String),
    /// A message larger than the per-event limit: 413.
    EventTooLarge { index: usize, bytes: usize },
}

/// A request body split into valid and invalid messages.
#[derive(Debug, Default)]
pub(crate) struct Decoded<'a> {
    pub accepted: Vec<Accepted<'a>>,
    pub rejected: Vec<Rejected>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SentAtOnly<'a> {
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
}

/// What decoding needs to know about the store and the request.
pub(crate) struct Context<'c> {
    pub names: &'c PropertyNames,
    pub declared: &'c [DeclaredProperty],
    pub bounds: TimeBounds,
    pub max_event_bytes: usize,
    /// When the request arrived, UTC microseconds (Segment's `receivedAt`).
    pub received_at: i64,
    /// Live segments, when kept: accepted events carry their live event.
    pub live: Option<&'c crate::live::LiveApp>,
}

/// Splits and checks a request body.
pub(crate) fn decode<'a>(
    body: &'a str,
    endpoint: Endpoint,
    cx: &Context<'_>,
) -> Result<Decoded<'a>, BodyError> {
    let mut out = Decoded::default();
    if endpoint == Endpoint::Batch {
        let b: BatchBody<'a> = serde_json::from_str(body).map_err(|e| {
            BodyError::Malformed(format!(
                "the body must be a JSON object with a `batch` array of messages: {e}"
            ))
        })?;
        let batch_sent = match b.sent_at.map(|v| time_value("sentAt", v)).transpose() {
            Ok(t) => t.flatten(),
            Err(reason) => return Err(BodyError::Malformed(reason)),
        };
        out.accepted.reserve(b.batch.len());
        for (index, msg) in b.batch.iter().enumerate() {
            one(msg.get(), index, 0, batch_sent, cx, &mut out)?;
        }
    } else {
        one(body.trim(), 0, endpoint.kind_code(), None, cx, &mut out)?;
    }
    Ok(out)
}

fn one<'a>(
    text: &'a str,
    index: usize,
    kind: u8,
    batch_sent: Option<i64>,
    cx: &Context<'_>,
    out: &mut Decoded<'a>,
) -> Result<(), BodyError> {
    if text.len() > cx.max_event_bytes {
        return Err(BodyError::EventTooLarge {
            index,
            bytes: text.len(),
        });
    }
    match check(text, kind, batch_sent, cx) {
        Ok(a) => out.accepted.push(a),
        Err(reason) => out.rejected.push(Rejected { index, reason }),
    }
    Ok(())
}

fn check<'a>(
    text: &'a str,
    kind: u8,
    batch_sent: Option<i64>,
    cx: &Context<'_>,
) -> Result<Accepted<'a>, String> {
    let mut raw = parse_event(text, cx.names)?;
    // `sentAt` is envelope, which the event decoder skips; look for it only when
    // the text mentions it, so most messages are parsed once.
    static SENT_AT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\"sentAt\""));
    let sent_at = if SENT_AT.find(text.as_bytes()).is_some() {
        let s: SentAtOnly<'_> =
            serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
        s.sent_at
            .map(|v| time_value("sentAt", v))
            .transpose()?
            .flatten()
    } else {
        None
    }
    .or(batch_sent);
    let ts = match &raw.ts {
        None => None,
        Some(v) => scalar_time("timestamp", v)?,
    };
    let ts = correct_skew(ts, sent_at, cx.received_at);
    raw.ts = Some(Scalar::Micros(ts));
    if let Some(k) = kind_name(kind) {
        raw.kind = Some(Scalar::Str(Cow::Borrowed(k)));
    }
    let client_id = match &raw.event_id {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(s.clone()),
        Some(Scalar::Num(n)) if !n.contains(['.', 'e', 'E']) => Some(n.clone()),
        Some(Scalar::Null) | None => None,
        Some(Scalar::Str(_)) => None,
        Some(_) => return Err("`messageId` must be a string".into()),
    };
    let dedup = client_id
        .as_ref()
        .map(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
    let id = client_id.unwrap_or_else(|| Cow::Owned(uuid::Uuid::now_v7().hyphenated().to_string()));
    raw.event_id = Some(Scalar::Str(id.clone()));
    let live = match cx.live {
        None => {
            check_event(&raw, cx.declared, cx.bounds)?;
            None
        }
        Some(app) => {
            let valid = if app.needs_json {
                tenure_ingest::validate::validate(&raw, cx.declared, cx.bounds)?
            } else {
                tenure_ingest::validate::validate_typed(&raw, cx.declared, cx.bounds)?
            };
            Some(app.event_of(&valid))
        }
    };
    Ok(Accepted {
        ts,
        id,
        dedup,
        kind,
        json: text,
        live,
    })
}

/// Segment's clock-skew correction: the client's clock may be wrong, but the
/// interval between the event and sending it is right, so
/// `timestamp' = receivedAt - (sentAt - timestamp)`. Without `sentAt` the
/// client's timestamp stands; without a timestamp the event happened when it
/// arrived.
pub(crate) fn correct_skew(ts: Option<i64>, sent_at: Option<i64>, received_at: i64) -> i64 {
    match (ts, sent_at) {
        (Some(t), Some(s)) => received_at.saturating_sub(s.saturating_sub(t)),
        (Some(t), None) => t,
        (None, _) => received_at,
    }
}

fn time_value(field: &str, v: &RawValue) -> Result<Option<i64>, String> {
    let s = Scalar::from_json(v.get())?;
    scalar_time(field, &s)
}

fn scalar_time(field: &str, v: &Scalar<'_>) -> Result<Option<i64>, String> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Micros(m) => Ok(Some(*m)),
        Scalar::Str(s) => timestamp::parse_text(s)
            .or_else(|| timestamp::parse_epoch(s))
            .map(Some)
            .ok_or_else(|| format!("unparseable timestamp `{field}`: {s:?}")),
        Scalar::Num(n) => timestamp::parse_epoch(n)
            .map(Some)
            .ok_or_else(|| format!("unparseable timestamp `{field}`: {n}")),
        _ => Err(format!("`{field}` must be a timestamp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn cx(names: &PropertyNames) -> Context<'_> {
        Context {
            names,
            declared: &[],
            bounds: TimeBounds::now(),
            max_event_bytes: 1000,
            received_at: RECEIVED,
            live: None,
        }
    }

    #[test]
    fn skew_correction_follows_segment() {
        // Client clock one hour fast: sent at 01:00:10 by its clock, event at 01:00:00.
        let t = 1_767_229_200_000_000;
        assert_eq!(
            correct_skew(Some(t), Some(t + 10_000_000), RECEIVED),
            RECEIVED - 10_000_000
        );
        assert_eq!(correct_skew(Some(t), None, RECEIVED), t);
        assert_eq!(correct_skew(None, Some(t), RECEIVED), RECEIVED);
    }

    #[test]
    fn batch_applies_envelope_sent_at_and_reports_bad_messages() {
        let names = PropertyNames::default();
        let body = r#"{"batch":[
            {"type":"track","userId":"u1","event":"view","messageId":"m1","timestamp":"2025-12-31T23:59:00Z"},
            {"type":"track","event":"view","timestamp":"2025-12-31T23:59:00Z"},
            {"type":"identify","anonymousId":"a","messageId":"m3","timestamp":"2025-12-31T23:58:00Z","sentAt":"2025-12-31T23:59:00Z"}
        ],"sentAt":"2025-12-31T23:59:30Z"}"#;
        let d = decode(body, Endpoint::Batch, &cx(&names)).unwrap();
        assert_eq!(d.accepted.len(), 2);
        assert_eq!(d.accepted[0].ts, RECEIVED - 30_000_000);
        assert_eq!(d.accepted[0].id, "m1");
        assert!(d.accepted[0].dedup.is_some());
        // The message's own sentAt wins over the batch's.
        assert_eq!(d.accepted[1].ts, RECEIVED - 60_000_000);
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].index, 1);
        assert!(d.rejected[0].reason.contains("user_id"), "{:?}", d.rejected);
    }

    #[test]
    fn single_endpoint_sets_type_and_generates_ids() {
        let names = PropertyNames::default();
        let d = decode(
            r#"{"userId":"u","traits":{"plan":"pro"}}"#,
            Endpoint::Identify,
            &cx(&names),
        )
        .unwrap();
        assert_eq!(d.accepted.len(), 1);
        assert_eq!(d.accepted[0].ts, RECEIVED);
        assert_eq!(d.accepted[0].kind, 2);
        assert!(d.accepted[0].dedup.is_none());
        assert_eq!(d.accepted[0].id.len(), 36);
        // track needs an event name
        let d = decode(r#"{"userId":"u"}"#, Endpoint::Track, &cx(&names)).unwrap();
        assert!(d.rejected[0].reason.contains("missing `event`"));
    }

    #[test]
    fn body_errors() {
        let names = PropertyNames::default();
        assert!(matches!(
            decode(r#"{"batch":{}}"#, Endpoint::Batch, &cx(&names)),
            Err(BodyError::Malformed(_))
        ));
        let big = format!(
            r#"{{"batch":[{{"userId":"u","event":"e","x":"{}"}}]}}"#,
            "a".repeat(2000)
        );
        assert!(matches!(
            decode(&big, Endpoint::Batch, &cx(&names)),
            Err(BodyError::EventTooLarge { index: 0, .. })
        ));
        let d = decode("{not json", Endpoint::Track, &cx(&names)).unwrap();
        assert!(d.rejected[0].reason.starts_with("malformed JSON"));
    }
}
