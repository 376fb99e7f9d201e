//! PostHog's capture API (`/batch/`, `/capture/`, `/e/`, `/i/v0/e/`,
//! `/track/`), so teams on PostHog's SDKs can send the same events to Tenure:
//! a body is rewritten as a Segment batch, then taken exactly like one
//! (validation, skew correction, WAL, dedup by `uuid`).
//!
//! | PostHog | Segment message |
//! | --- | --- |
//! | `api_key` (or `token`, also in `properties`) | `writeKey` |
//! | `event` | `event` of a `track` |
//! | `$identify`, `$set` events | an `identify` whose `traits` are `$set` (and `$set_once`); `$anon_distinct_id` is its `anonymousId` (merged into the user) |
//! | `$create_alias` | an `alias` whose `previousId` is `properties.alias` |
//! | `distinct_id` (or `properties.distinct_id`) | `userId` |
//! | `uuid` | `messageId` |
//! | `timestamp`, `sent_at` | `timestamp`, `sentAt` |
//! | `properties` | `properties` |
//!
//! Bodies: one event, `{"batch": [...]}` or a bare array of events, JSON,
//! gzip by `Content-Encoding: gzip` or `?compression=gzip-js` (posthog-js).

use serde_json::{Map, Value};

/// Whether `path` is one of PostHog's capture endpoints.
pub(crate) fn is_capture_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/batch" | "/capture" | "/e" | "/i/v0/e" | "/track"
    )
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// One PostHog event as a Segment message.
fn message(mut e: Map<String, Value>) -> Value {
    let mut props = match e.remove("properties") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let distinct = e
        .remove("distinct_id")
        .or_else(|| e.remove("$distinct_id"))
        .or_else(|| props.remove("distinct_id"))
        .map(|v| match v {
            Value::String(s) => Value::String(s),
            Value::Number(n) => Value::String(n.to_string()),
            other => other,
        });
    props.remove("token");
    let event = e.remove("event");
    let mut m = Map::new();
    let mut traits = Map::new();
    for key in ["$set_once", "$set"] {
        for source in [e.remove(key), props.remove(key)] {
            if let Some(Value::Object(o)) = source {
                traits.extend(o);
            }
        }
    }
    let identify = matches!(text(event.as_ref()), Some("$identify" | "$set"));
    if identify {
        m.insert("type".into(), "identify".into());
        m.insert("traits".into(), Value::Object(traits));
        if let Some(anon) = props.remove("$anon_distinct_id") {
            m.insert("anonymousId".into(), anon);
        }
    } else if text(event.as_ref()) == Some("$create_alias") {
        m.insert("type".into(), "alias".into());
        if let Some(alias) = props.remove("alias") {
            m.insert("previousId".into(), alias);
        }
    } else {
        m.insert("type".into(), "track".into());
        if let Some(ev) = event {
            m.insert("event".into(), ev);
        }
    }
    if let Some(d) = distinct {
        m.insert("userId".into(), d);
    }
    if let Some(id) = e.remove("uuid") {
        m.insert("messageId".into(), id);
    }
    if let Some(ts) = e.remove("timestamp") {
        m.insert("timestamp".into(), ts);
    }
    m.insert("properties".into(), Value::Object(props));
    Value::Object(m)
}

/// A PostHog capture body as a Segment batch body (`writeKey` from the
/// body's `api_key`).
pub(crate) fn to_segment(body: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let (mut envelope, events) = match v {
        Value::Array(a) => (Map::new(), a),
        Value::Object(mut o) => match o.remove("batch") {
            Some(Value::Array(a)) => (o, a),
            Some(_) => return Err("`batch` must be an array of events".into()),
            None => (Map::new(), vec![Value::Object(o)]),
        },
        _ => {
            return Err(
                "the body must be a PostHog event, {\"batch\": [...]} or an array of events".into(),
            );
        }
    };
    let key_of = |o: &Map<String, Value>| {
        text(o.get("api_key"))
            .or(text(o.get("token")))
            .or(text(o.get("properties").and_then(|p| p.get("token"))))
            .map(str::to_string)
    };
    let mut key = key_of(&envelope);
    let mut batch = Vec::with_capacity(events.len());
    for e in events {
        match e {
            Value::Object(mut o) => {
                if key.is_none() {
                    key = key_of(&o);
                }
                o.remove("api_key");
                batch.push(message(o));
            }
            // Not an object: left as is, so the batch reports it by index.
            other => batch.push(other),
        }
    }
    let mut out = Map::new();
    out.insert("batch".into(), Value::Array(batch));
    if let Some(k) = key {
        out.insert("writeKey".into(), Value::String(k));
    }
    if let Some(s) = envelope.remove("sent_at") {
        out.insert("sentAt".into(), s);
    }
    Ok(Value::Object(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_set_events_become_track_and_identify_messages() {
        let body = r#"{"api_key":"k","sent_at":"2026-01-05T10:00:01Z","batch":[
            {"event":"view_item","distinct_id":"u1","uuid":"a-1","timestamp":"2026-01-05T10:00:00Z","properties":{"revenue":"12.50","$lib":"posthog-python"}},
            {"event":"$set","distinct_id":"u2","$set":{"plan":"pro"},"properties":{"$lib":"posthog-python"}},
            {"event":"$identify","properties":{"distinct_id":7,"$set_once":{"first":"x"},"token":"k"}},
            3]}"#;
        let got: Value = serde_json::from_str(&to_segment(body).unwrap()).unwrap();
        let want: Value = serde_json::json!({
            "writeKey": "k",
            "sentAt": "2026-01-05T10:00:01Z",
            "batch": [
                {"type": "track", "event": "view_item", "userId": "u1", "messageId": "a-1",
                 "timestamp": "2026-01-05T10:00:00Z",
                 "properties": {"revenue": "12.50", "$lib": "posthog-python"}},
                {"type": "identify", "userId": "u2", "traits": {"plan": "pro"},
                 "properties": {"$lib": "posthog-python"}},
                {"type": "identify", "userId": "7", "traits": {"first": "x"}, "properties": {}},
                3
            ]
        });
        assert_eq!(got, want);
    }

    #[test]
    fn single_events_arrays_and_keys_in_properties() {
        let one = r#"{"event":"e","distinct_id":"u","properties":{"token":"t"}}"#;
        let got: Value = serde_json::from_str(&to_segment(one).unwrap()).unwrap();
        assert_eq!(got["writeKey"], "t");
        assert_eq!(got["batch"][0]["userId"], "u");
        let arr = r#"[{"event":"e","distinct_id":"u","api_key":"a"}]"#;
        let got: Value = serde_json::from_str(&to_segment(arr).unwrap()).unwrap();
        assert_eq!(got["writeKey"], "a");
        assert!(got["batch"][0].get("api_key").is_none());
        assert!(to_segment("nope").unwrap_err().contains("malformed"));
        assert!(to_segment(r#"{"batch":1}"#).unwrap_err().contains("array"));
        assert!(
            is_capture_path("/batch/")
                && is_capture_path("/i/v0/e/")
                && !is_capture_path("/v1/batch")
        );
    }
}
