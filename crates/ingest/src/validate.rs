//! Validation: a [`RawEvent`] becomes a [`ValidEvent`] or a reason for rejecting it.

use std::borrow::Cow;

use tenure_schema::{DeclaredProperty, IngestConfig, Moment, PropertyType, REVENUE_SCALE};

use crate::decimal::parse_decimal;
use crate::decode::{RawEvent, Scalar};
use crate::timestamp::{self, DAY_MICROS};

/// Declared property names, for routing properties to their columns.
#[derive(Debug, Clone, Default)]
pub struct PropertyNames {
    names: Vec<String>,
}

impl PropertyNames {
    /// From the declared names, in declaration order.
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names.to_vec(),
        }
    }

    /// From declared properties.
    pub fn from_declared(declared: &[DeclaredProperty]) -> Self {
        Self {
            names: declared.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// Index of a declared property. Linear: projects declare a handful.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Number of declared properties.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No declared properties?
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A typed value of a declared property.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed<'a> {
    /// Absent or null.
    Null,
    /// Text.
    Str(Cow<'a, str>),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Timestamp, microseconds.
    Micros(i64),
    /// Decimal scaled by 100.
    Decimal(i128),
}

/// An event that passed validation, ready to be appended to columns.
#[derive(Debug)]
pub struct ValidEvent<'a> {
    /// Event id; `None` means "generate one" (the source had none).
    pub event_id: Option<Cow<'a, str>>,
    /// User id.
    pub user_id: Cow<'a, str>,
    /// Event name.
    pub event: Cow<'a, str>,
    /// Timestamp, UTC microseconds.
    pub ts: i64,
    /// Revenue, in cents.
    pub revenue: Option<i128>,
    /// A/B variant.
    pub variant: Option<Cow<'a, str>>,
    /// Declared properties, by declaration index.
    pub declared: Vec<Typed<'a>>,
    /// Other properties as a JSON object (empty when there are none).
    pub properties: String,
    /// The user an `identify` (its `anonymousId`) or `alias` (its
    /// `previousId`) merges into `user_id`, if any.
    pub merge: Option<(tenure_schema::identity::MergeKind, Cow<'a, str>)>,
}

/// The accepted time range: from 1970-01-01 (or `[ingest] accept_from`) to one
/// day past now (or `[ingest] accept_until`), both ends included.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    /// Earliest accepted timestamp.
    pub min: i64,
    /// Latest accepted timestamp.
    pub max: i64,
    /// The ends come from the config (for the reasons given).
    from_config: (bool, bool),
}

impl TimeBounds {
    /// The default range: 1970-01-01 to now plus one day.
    pub fn now() -> Self {
        Self::new(&IngestConfig::default())
    }

    /// The range a config asks for; unset ends take the defaults of [`Self::now`].
    pub fn new(cfg: &IngestConfig) -> Self {
        let now = chrono::Utc::now().timestamp_micros();
        Self {
            min: cfg.accept_from.unwrap_or(Moment::EPOCH).micros(),
            max: cfg.accept_until.map_or(now + DAY_MICROS, Moment::micros),
            from_config: (cfg.accept_from.is_some(), cfg.accept_until.is_some()),
        }
    }

    /// Why `ts` is outside the range, if it is.
    fn check(&self, ts: i64) -> Result<(), String> {
        let at = Moment::from_micros(ts);
        if ts < self.min {
            let bound = Moment::from_micros(self.min);
            return Err(if self.from_config.0 {
                format!("timestamp {at} is before accept_from {bound}")
            } else {
                format!("timestamp {at} is before 1970-01-01, the earliest time Tenure stores")
            });
        }
        if ts > self.max {
            return Err(if self.from_config.1 {
                format!(
                    "timestamp {at} is after accept_until {}",
                    Moment::from_micros(self.max)
                )
            } else {
                format!("timestamp {at} is more than a day in the future")
            });
        }
        Ok(())
    }
}

fn text<'a>(field: &str, v: &Scalar<'a>) -> Result<Option<Cow<'a, str>>, String> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(s.clone())),
        Scalar::Num(n) if !n.contains(['.', 'e', 'E']) => Ok(Some(n.clone())),
        other => Err(format!("`{field}` must be a string, got {}", kind(other))),
    }
}

/// NUL cannot be told from the end of a string by much of what reads the
/// store (C libraries, terminals, CSV tools), and no real id or event name
/// holds one.
fn nul(field: &str) -> String {
    format!("`{field}` contains a NUL character (\\u0000)")
}

fn kind(v: &Scalar<'_>) -> &'static str {
    match v {
        Scalar::Null => "null",
        Scalar::Bool(_) => "a boolean",
        Scalar::Num(_) => "a number",
        Scalar::Str(_) => "a string",
        Scalar::Json(j) if j.starts_with('[') => "an array",
        Scalar::Json(_) => "an object",
        Scalar::Micros(_) => "a timestamp",
    }
}

fn parse_ts(field: &str, v: &Scalar<'_>) -> Result<Option<i64>, String> {
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
        other => Err(format!(
            "`{field}` must be a timestamp, got {}",
            kind(other)
        )),
    }
}

fn decimal(field: &str, v: &Scalar<'_>) -> Result<Option<i128>, String> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Num(n) => parse_decimal(n, REVENUE_SCALE as u32, 18)
            .map(Some)
            .map_err(|e| format!("`{field}`: {e}")),
        Scalar::Str(s) if !s.trim().is_empty() => parse_decimal(s, REVENUE_SCALE as u32, 18)
            .map(Some)
            .map_err(|e| format!("`{field}`: {e}")),
        Scalar::Str(_) => Ok(None),
        other => Err(format!("`{field}` must be a number, got {}", kind(other))),
    }
}

fn typed<'a>(p: &DeclaredProperty, v: &Scalar<'a>) -> Result<Typed<'a>, String> {
    let name = p.name.as_str();
    let bad = || format!("`{name}` must be {:?}, got {}", p.ty, kind(v)).to_lowercase();
    if v.is_null() {
        return Ok(Typed::Null);
    }
    Ok(match p.ty {
        PropertyType::String => match v {
            Scalar::Str(s) => Typed::Str(s.clone()),
            Scalar::Num(n) => Typed::Str(n.clone()),
            Scalar::Bool(b) => Typed::Str(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => return Err(bad()),
        },
        PropertyType::Int => match v {
            Scalar::Num(n) | Scalar::Str(n) => Typed::Int(
                n.trim()
                    .parse()
                    .map_err(|_| format!("`{name}` must be an integer, got {n:?}"))?,
            ),
            _ => return Err(bad()),
        },
        PropertyType::Float => match v {
            Scalar::Num(n) | Scalar::Str(n) => {
                let f: f64 = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{name}` must be a number, got {n:?}"))?;
                if !f.is_finite() {
                    return Err(format!("`{name}` must be a finite number"));
                }
                Typed::Float(f)
            }
            _ => return Err(bad()),
        },
        PropertyType::Bool => match v {
            Scalar::Bool(b) => Typed::Bool(*b),
            Scalar::Str(s) if s == "true" || s == "false" => Typed::Bool(s == "true"),
            _ => return Err(bad()),
        },
        PropertyType::Timestamp => match parse_ts(name, v)? {
            Some(m) => Typed::Micros(m),
            None => Typed::Null,
        },
        PropertyType::Decimal => match decimal(name, v)? {
            Some(d) => Typed::Decimal(d),
            None => Typed::Null,
        },
    })
}

/// Validates one event. `declared` must be the properties `raw` was decoded with.
pub fn validate<'a>(
    raw: &RawEvent<'a>,
    declared: &[DeclaredProperty],
    bounds: TimeBounds,
) -> Result<ValidEvent<'a>, String> {
    validate_with(raw, declared, bounds, true)
}

/// Whether [`validate`] would accept the event, without building what it
/// returns (the other properties' JSON): for a server checking events it
/// stores as they came and commits later.
pub fn check(
    raw: &RawEvent<'_>,
    declared: &[DeclaredProperty],
    bounds: TimeBounds,
) -> Result<(), String> {
    validate_with(raw, declared, bounds, false).map(drop)
}

/// [`validate`] without building the other properties' JSON (`properties`
/// is left empty): for a reader that needs the typed fields only.
pub fn validate_typed<'a>(
    raw: &RawEvent<'a>,
    declared: &[DeclaredProperty],
    bounds: TimeBounds,
) -> Result<ValidEvent<'a>, String> {
    validate_with(raw, declared, bounds, false)
}

fn validate_with<'a>(
    raw: &RawEvent<'a>,
    declared: &[DeclaredProperty],
    bounds: TimeBounds,
    properties_json: bool,
) -> Result<ValidEvent<'a>, String> {
    let kind = match &raw.kind {
        None | Some(Scalar::Null) => None,
        Some(k) => text("type", k)?,
    };
    let user_id = match raw
        .user_id
        .as_ref()
        .map(|v| text("user_id", v))
        .transpose()?
        .flatten()
    {
        Some(u) => Some(u),
        None => raw
            .anonymous_id
            .as_ref()
            .map(|v| text("anonymousId", v))
            .transpose()?
            .flatten(),
    };
    let user_id = match user_id {
        Some(u) if !u.is_empty() => u,
        Some(_) => return Err("`user_id` is empty".into()),
        None => return Err("missing `user_id` (or `userId` / `anonymousId`)".into()),
    };
    if user_id.contains('\0') {
        let field = if raw.user_id.as_ref().is_none_or(Scalar::is_null) {
            "anonymousId"
        } else {
            "user_id"
        };
        return Err(nul(field));
    }
    let named = raw
        .event
        .as_ref()
        .map(|v| text("event", v))
        .transpose()?
        .flatten();
    let event = match kind.as_deref() {
        None | Some("track") => named.ok_or("missing `event`")?,
        Some(k @ ("page" | "screen")) => named.unwrap_or(Cow::Owned(k.to_string())),
        Some(k @ ("identify" | "group" | "alias")) => Cow::Owned(k.to_string()),
        Some(other) => {
            return Err(format!(
                "unknown message `type` {other:?}; expected track, page, screen, identify, group or alias"
            ));
        }
    };
    if event.is_empty() {
        return Err("`event` is empty".into());
    }
    if event.contains('\0') {
        return Err(nul("event"));
    }
    let ts = match &raw.ts {
        Some(v) => parse_ts("ts", v)?.ok_or("missing `ts` (or `timestamp`)")?,
        None => return Err("missing `ts` (or `timestamp`)".into()),
    };
    bounds.check(ts)?;
    let event_id = match &raw.event_id {
        Some(v) => text("event_id", v)?.filter(|s| !s.is_empty()),
        None => None,
    };
    let revenue = match &raw.revenue {
        Some(v) => decimal("revenue", v)?,
        None => None,
    };
    let variant = match &raw.variant {
        Some(Scalar::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Some(v) => text("variant", v)?,
        None => None,
    };
    let mut typed_values = Vec::with_capacity(declared.len());
    for (p, v) in declared.iter().zip(&raw.declared) {
        typed_values.push(match v {
            Some(v) => typed(p, v)?,
            None => Typed::Null,
        });
    }
    let mut properties = String::new();
    if properties_json && !raw.extra.is_empty() {
        properties.push('{');
        for (i, (k, v)) in raw.extra.iter().enumerate() {
            if i > 0 {
                properties.push(',');
            }
            crate::decode::write_json_string(k, &mut properties);
            properties.push(':');
            v.write_json(&mut properties);
        }
        properties.push('}');
    }
    let merge = merge_of(raw, kind.as_deref(), &user_id)?;
    Ok(ValidEvent {
        event_id,
        user_id,
        event,
        ts,
        revenue,
        variant,
        declared: typed_values,
        properties,
        merge,
    })
}

/// The merge an `identify` (`userId` with another `anonymousId`) or an
/// `alias` (`previousId` into `userId`) records; an `alias` without a
/// `previousId` is rejected. An `identify` of the user alone (a server-side
/// library's, PostHog's `$set`) merges nothing and identifies nobody.
fn merge_of<'a>(
    raw: &RawEvent<'a>,
    kind: Option<&str>,
    user_id: &Cow<'a, str>,
) -> Result<Option<(tenure_schema::identity::MergeKind, Cow<'a, str>)>, String> {
    use tenure_schema::identity::MergeKind;
    let other =
        |field: &'static str, v: &Option<Scalar<'a>>| -> Result<Option<Cow<'a, str>>, String> {
            let t = v.as_ref().map(|v| text(field, v)).transpose()?.flatten();
            match t {
                Some(t) if t.contains('\0') => Err(nul(field)),
                Some(t) if !t.is_empty() && t != *user_id => Ok(Some(t)),
                _ => Ok(None),
            }
        };
    match kind {
        Some("identify") => {
            if raw.user_id.as_ref().is_none_or(Scalar::is_null) {
                // Only an anonymous id: nothing to merge it with.
                return Ok(None);
            }
            Ok(other("anonymousId", &raw.anonymous_id)?.map(|a| (MergeKind::Identify, a)))
        }
        Some("alias") => {
            if raw.previous_id.as_ref().is_none_or(Scalar::is_null) {
                return Err("an `alias` needs `previousId` (the id that joins `userId`)".into());
            }
            Ok(other("previousId", &raw.previous_id)?.map(|p| (MergeKind::Alias, p)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::parse_event;

    fn check(line: &str) -> Result<ValidEvent<'_>, String> {
        let declared = vec![DeclaredProperty {
            name: "quantity".into(),
            ty: PropertyType::Int,
        }];
        let names = PropertyNames::from_declared(&declared);
        let raw = parse_event(line, &names)?;
        // Validation borrows from the line, which outlives this call.
        let bounds = TimeBounds::now();
        let v = validate(&raw, &declared, bounds);
        // The check-only path agrees on every event the tests try.
        assert_eq!(
            super::check(&raw, &declared, bounds),
            v.as_ref().map(drop).map_err(Clone::clone)
        );
        let v = v?;
        Ok(ValidEvent {
            event_id: v.event_id.map(|c| Cow::Owned(c.into_owned())),
            user_id: Cow::Owned(v.user_id.into_owned()),
            event: Cow::Owned(v.event.into_owned()),
            variant: v.variant.map(|c| Cow::Owned(c.into_owned())),
            declared: vec![],
            ..v
        })
    }

    #[test]
    fn accepts_flat_and_segment_events() {
        let v = check(r#"{"user_id":42,"event":"view","ts":1767225600,"x":{"a":1}}"#).unwrap();
        assert_eq!(v.user_id, "42");
        assert_eq!(v.properties, r#"{"x":{"a":1}}"#);
        let v = check(r#"{"type":"page","anonymousId":"a","timestamp":"2026-01-01T00:00:00Z","properties":{"revenue":"3.10"}}"#).unwrap();
        assert_eq!(v.event, "page");
        assert_eq!(v.revenue, Some(310));
        assert_eq!(v.properties, "");
        let v = check(r#"{"type":"identify","userId":"u","timestamp":"2026-01-01T00:00:00Z","traits":{"plan":"pro"}}"#).unwrap();
        assert_eq!(v.event, "identify");
        assert_eq!(v.properties, r#"{"plan":"pro"}"#);
    }

    #[test]
    fn a_property_given_twice_is_stored_once() {
        // analytics.js puts a page's name at the top and in `properties`.
        let v = check(r#"{"type":"page","name":"Home","anonymousId":"a","timestamp":"2026-01-01T00:00:00Z","properties":{"name":"Home","path":"/"}}"#).unwrap();
        assert_eq!(v.properties, r#"{"name":"Home","path":"/"}"#);
        let v = check(r#"{"user_id":"u","event":"e","ts":1767225600,"x":1,"x":2}"#).unwrap();
        assert_eq!(v.properties, r#"{"x":2}"#);
    }

    #[test]
    fn accepts_events_from_1970() {
        for ts in [
            "\"1997-03-04T05:06:07Z\"",
            "\"1970-01-01\"",
            "0",
            "857451967",
            "857451967000",
        ] {
            let line = format!(r#"{{"user_id":"u","event":"view","ts":{ts}}}"#);
            check(&line).unwrap_or_else(|e| panic!("{ts}: {e}"));
        }
        // NUL elsewhere than in the id and the event name is kept.
        let v = check(r#"{"user_id":"u","event":"view","ts":0,"note":"a\u0000"}"#).unwrap();
        assert_eq!(v.properties, r#"{"note":"a\u0000"}"#);
    }

    #[test]
    fn configured_bounds_name_themselves() {
        let cfg = tenure_schema::Config::parse(
            "[ingest]\naccept_from = 1997-01-01\naccept_until = \"1998-06-30T12:00:00Z\"\n",
        )
        .unwrap()
        .ingest;
        let b = TimeBounds::new(&cfg);
        let at = |s: &str| timestamp::parse_text(s).unwrap();
        assert!(b.check(at("1997-01-01")).is_ok());
        assert!(b.check(at("1998-06-30T12:00:00Z")).is_ok());
        assert_eq!(
            b.check(at("1996-12-31T23:59:59.5Z")).unwrap_err(),
            "timestamp 1996-12-31T23:59:59.500Z is before accept_from 1997-01-01"
        );
        assert_eq!(
            b.check(at("1998-06-30T12:00:01Z")).unwrap_err(),
            "timestamp 1998-06-30T12:00:01Z is after accept_until 1998-06-30T12:00:00Z"
        );
        let d = TimeBounds::now();
        assert_eq!(d.min, 0);
        assert!(
            d.check(at("2999-01-01"))
                .unwrap_err()
                .contains("a day in the future")
        );
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (r#"{"event":"view","ts":"2026-01-01"}"#, "missing `user_id`"),
            (r#"{"user_id":"u","ts":"2026-01-01"}"#, "missing `event`"),
            (r#"{"user_id":"u","event":"view"}"#, "missing `ts`"),
            (
                r#"{"user_id":"u","event":"view","ts":"soon"}"#,
                "unparseable timestamp",
            ),
            (
                r#"{"user_id":"u","event":"view","ts":"1969-12-31T23:59:59Z"}"#,
                "timestamp 1969-12-31T23:59:59Z is before 1970-01-01",
            ),
            (
                r#"{"user_id":"u","event":"view","ts":-1}"#,
                "before 1970-01-01",
            ),
            (
                r#"{"user_id":"u\u0000","event":"view","ts":"2026-01-01"}"#,
                "`user_id` contains a NUL character",
            ),
            (
                r#"{"userId":null,"anonymousId":"\u0000","event":"view","ts":"2026-01-01"}"#,
                "`anonymousId` contains a NUL character",
            ),
            (
                r#"{"user_id":"u","event":"a\u0000b","ts":"2026-01-01"}"#,
                "`event` contains a NUL character",
            ),
            (
                r#"{"user_id":"u","event":"view","ts":"2999-01-01"}"#,
                "in the future",
            ),
            (
                r#"{"user_id":["u"],"event":"view","ts":"2026-01-01"}"#,
                "`user_id` must be a string, got an array",
            ),
            (
                r#"{"user_id":"u","event":7.5,"ts":"2026-01-01"}"#,
                "`event` must be a string",
            ),
            (
                r#"{"user_id":"u","event":"buy","ts":"2026-01-01","revenue":"lots"}"#,
                "not a number",
            ),
            (
                r#"{"user_id":"u","event":"buy","ts":"2026-01-01","revenue":1.001}"#,
                "decimal places",
            ),
            (
                r#"{"user_id":"u","event":"buy","ts":"2026-01-01","quantity":"two"}"#,
                "`quantity` must be an integer",
            ),
            (
                r#"{"user_id":"u","event":"buy","ts":"2026-01-01","quantity":true}"#,
                "`quantity` must be int",
            ),
            (
                r#"{"type":"fly","userId":"u","timestamp":"2026-01-01"}"#,
                "unknown message `type`",
            ),
            (
                r#"{"user_id":"","event":"x","ts":"2026-01-01"}"#,
                "`user_id` is empty",
            ),
            (
                r#"{"user_id":"u","event":"x","ts":"2026-01-01","properties":[1]}"#,
                "must be an object",
            ),
        ];
        for (line, want) in cases {
            let err = check(line)
                .err()
                .unwrap_or_else(|| panic!("accepted {line}"));
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
