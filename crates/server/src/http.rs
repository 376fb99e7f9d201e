//! The HTTP surface: routing, write-key authentication, body limits, gzip, and
//! turning decode and WAL outcomes into Segment-style responses.
//!
//! Requests whose headers carry a valid key are read under
//! `max_inflight_requests`; those without one (their key may be the body's
//! `writeKey`) under `max_unauthenticated_requests`, so that connections that
//! never authenticate cannot crowd out clients that do. Headers and bodies
//! must arrive within `request_timeout`.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::App;
use crate::config::BadEventPolicy;
use crate::message::{self, BodyError, Context, Endpoint};
use crate::wal::Refused;

type Resp = Response<Full<Bytes>>;

/// The events of a request, on its response for the request log.
#[derive(Clone, Copy, Debug, Default)]
struct RequestEvents {
    /// Stored (acknowledged, not duplicates).
    stored: usize,
    /// Invalid.
    rejected: usize,
}

/// hyper's service function: routes, counts and logs one line per request.
pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // CORS: a page of an allowed origin may send events (analytics.js).
    let allowed = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| app.cfg.cors_origins.iter().any(|a| a == "*" || a == o))
        .map(str::to_string);
    let mut resp = match method {
        Method::OPTIONS => preflight(&req, allowed.is_some()),
        _ => route(&app, req, started).await,
    };
    if let Some(o) = allowed
        && let Ok(v) = http::HeaderValue::from_str(&o)
    {
        let h = resp.headers_mut();
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
    let status = resp.status().as_u16();
    app.metrics.response(status);
    let ev = resp
        .extensions()
        .get::<RequestEvents>()
        .copied()
        .unwrap_or_default();
    tracing::info!(
        method = %method,
        path = %path,
        status,
        latency_ms = (started.elapsed().as_secs_f64() * 1e5).round() / 100.0,
        events = ev.stored,
        rejected = ev.rejected,
        "request"
    );
    Ok(resp)
}

/// The answer to a CORS preflight: the methods and headers a page may use,
/// for a day; 403 for an origin not given with `--cors-origin`.
fn preflight(req: &Request<Incoming>, allowed: bool) -> Resp {
    if !allowed {
        return error(
            StatusCode::FORBIDDEN,
            "this origin may not send events; start the server with --cors-origin <origin>",
        );
    }
    let headers = req
        .headers()
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| {
            http::HeaderValue::from_static("content-type, authorization, content-encoding")
        });
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            "POST, GET, OPTIONS",
        )
        .header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, headers)
        .header(http::header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Full::new(Bytes::new()))
        .expect("static response")
}

/// The settings document analytics.js fetches at load
/// (`<cdnURL>/v1/projects/<write key>/settings`): it sends to this server
/// (the host the page asked), with Segment's metrics off, so that no request
/// leaves for Segment. 404 for an unknown key.
fn settings(app: &App, req: &Request<Incoming>, key: &str) -> Resp {
    if !known(&app.keys, key.as_bytes()) {
        return error(StatusCode::NOT_FOUND, "no such write key");
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or_else(|| app.cfg.listen.to_string());
    let protocol = header("x-forwarded-proto").unwrap_or_else(|| "http".to_string());
    let body = serde_json::json!({
        "integrations": {
            "Segment.io": {
                "apiKey": key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": false,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    });
    json(StatusCode::OK, body.to_string())
}

async fn route(app: &App, req: Request<Incoming>, started: Instant) -> Resp {
    let path = req.uri().path().to_string();
    let endpoint = Endpoint::from_path(&path);
    let settings_key = path
        .strip_prefix("/v1/projects/")
        .and_then(|r| r.strip_suffix("/settings"))
        .filter(|k| !k.is_empty() && !k.contains('/'))
        .map(str::to_string);
    match (req.method(), path.as_str(), endpoint) {
        (&Method::GET | &Method::HEAD, "/health", _) => health(app),
        (&Method::GET, _, _) if settings_key.is_some() => {
            settings(app, &req, settings_key.as_deref().expect("some"))
        }
        (&Method::GET, p, _) if p.starts_with("/v1/users/") || p.starts_with("/v1/segments/") => {
            profile(app, &req).await
        }
        (&Method::GET, "/metrics", _) => Response::builder()
            .header(CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(app.metrics.render())))
            .expect("static response"),
        (&Method::POST, _, Some(ep)) => track(app, ep, req, started, false).await,
        (&Method::POST, p, None) if crate::posthog::is_capture_path(p) => {
            track(app, Endpoint::Batch, req, started, true).await
        }
        (_, "/health" | "/metrics", _) | (_, _, Some(_)) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint; use POST /v1/batch, /v1/track, /v1/identify or /v1/page (Segment), or /batch/ or /capture/ (PostHog)",
        ),
    }
}

/// The profile API: `GET /v1/users/{user_id}` (features and current
/// segments) and `GET /v1/segments/{name}?offset=&limit=` (member count and a
/// page of members, in the order users were first seen), from the live state.
/// Authenticated with a read key as the HTTP Basic user; a write key does not
/// read.
async fn profile(app: &App, req: &Request<Incoming>) -> Resp {
    let Some(live) = &app.live else {
        return error(
            StatusCode::NOT_FOUND,
            "live segments are off; start the server with --segments <file.seg> --read-key <key>",
        );
    };
    match basic_key(req.headers()) {
        Some(k) if known(&live.read_keys, &k) => {}
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "a read key is required (HTTP Basic user, as the write key is sent; write keys do not read)",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"tenure\""),
            );
            return r;
        }
    }
    let path = req.uri().path();
    let now = crate::live::now_micros();
    if let Some(user) = path.strip_prefix("/v1/users/") {
        let Some(user) = percent_decode(user) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the user id is not valid percent-encoded UTF-8",
            );
        };
        let found = {
            let (live, user) = (live.clone(), user.clone());
            tokio::task::spawn_blocking(move || {
                live.locked(|state, out| state.profile(&user, now, out))
            })
            .await
            .expect("live profile")
        };
        return match found {
            Some(p) => json(
                StatusCode::OK,
                serde_json::json!({
                    "user_id": p.user_id,
                    "as_of": tenure_live::rfc3339(now),
                    "features": p.features,
                    "segments": p.segments,
                })
                .to_string(),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                &format!("no events of user {user:?}"),
            ),
        };
    }
    let name = path.strip_prefix("/v1/segments/").unwrap_or_default();
    let query = req.uri().query().unwrap_or_default();
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.parse::<usize>())
    };
    let (offset, limit) = match (param("offset"), param("limit")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            return error(
                StatusCode::BAD_REQUEST,
                "offset and limit must be whole numbers",
            );
        }
        (o, l) => (
            o.and_then(Result::ok).unwrap_or(0),
            l.and_then(Result::ok).unwrap_or(100).min(10_000),
        ),
    };
    let answer = {
        let (live, name) = (live.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            live.locked(|state, out| {
                state.advance(now, out);
                match state.segment_index(&name) {
                    Some(i) => Ok(state.members(i, offset, limit)),
                    None => Err(state
                        .plan()
                        .segments()
                        .iter()
                        .map(|s| s.name.clone())
                        .collect::<Vec<_>>()),
                }
            })
        })
        .await
        .expect("live members")
    };
    match answer {
        Ok((count, users)) => json(
            StatusCode::OK,
            serde_json::json!({
                "segment": name,
                "as_of": tenure_live::rfc3339(now),
                "members": count,
                "offset": offset,
                "limit": limit,
                "users": users,
            })
            .to_string(),
        ),
        Err(names) => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no live segment `{name}`; the segments are: {}",
                names.join(", ")
            ),
        ),
    }
}

/// `%XX` escapes decoded (a path segment); `None` if not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let digit = |j: usize| (b.get(j)? as &u8).is_ascii_hexdigit().then(|| b[j]);
            let (hi, lo) = (digit(i + 1)?, digit(i + 2)?);
            let hex = [hi, lo];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Commits failed this many times in a row make the server unhealthy (with
/// the backoff between attempts, a second or two of failures).
const UNHEALTHY_AFTER_FAILED_FLUSHES: u64 = 3;

/// 200 while events are both taken and committed; 503 when the WAL cannot be
/// written or commits keep failing (events are still taken until the WAL is
/// full, but nothing reaches the store: someone must look).
fn health(app: &App) -> Resp {
    let m = &app.metrics;
    let flush_error = m.flush_failing(UNHEALTHY_AFTER_FAILED_FLUSHES);
    let (status, state, error) = match (app.wal.broken(), flush_error) {
        (Some(e), _) => (StatusCode::SERVICE_UNAVAILABLE, "wal-broken", Some(e)),
        (None, Some(e)) => (StatusCode::SERVICE_UNAVAILABLE, "flush-failing", Some(e)),
        (None, None) => (StatusCode::OK, "ok", None),
    };
    let mut body = serde_json::json!({
        "status": state,
        "wal_bytes": m.wal_bytes.load(Relaxed),
        "queue_bytes": m.queue_bytes.load(Relaxed),
        "acked": m.acked.load(Relaxed),
        "flushed": m.flushed.load(Relaxed),
        "failed_flushes_in_a_row": m.flush_failing.load(Relaxed),
    });
    if let Some(e) = error {
        body["error"] = serde_json::Value::String(e);
    }
    json(status, body.to_string())
}

/// Takes a tracking request: Segment's, or PostHog's capture body
/// (`posthog`), rewritten as a Segment batch once read.
async fn track(
    app: &App,
    ep: Endpoint,
    req: Request<Incoming>,
    started: Instant,
    posthog: bool,
) -> Resp {
    // An HTTP Basic key decides at once; without one the key may be the body's
    // `writeKey` (Segment's libraries send both), checked once the body is read.
    let header_key = match basic_key(req.headers()) {
        Some(k) if known(&app.keys, &k) => true,
        Some(_) => return unauthorized(),
        None => false,
    };
    // Bound the memory held by bodies: beyond this many requests in progress,
    // push back before reading another body. A request without a key in its
    // headers may still be anyone's: it is read under a pool of its own, so
    // that stalled unauthenticated connections cannot take the places of
    // clients that authenticate (they keep the request timeout as bound).
    let pool = if header_key {
        &app.inflight
    } else {
        &app.unauthenticated
    };
    let Ok(mut _permit) = pool.clone().try_acquire_owned() else {
        return busy(
            StatusCode::TOO_MANY_REQUESTS,
            if header_key {
                "too many requests in progress"
            } else {
                "too many requests without a write key in their headers in progress; send it as the HTTP Basic user name"
            },
        );
    };
    let max = app.cfg.max_body_bytes;
    let declared_len = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > max as u64) {
        return too_large(max);
    }
    let gzip = match req.headers().get(CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Encoding; send gzip or plain JSON",
            );
        }
    };
    // posthog-js marks a gzip body in the query instead of a header.
    let gzip = gzip
        || (posthog
            && req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("compression=gzip"))));
    let read = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(app.cfg.request_timeout, read).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(max),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let body = if gzip {
        match gunzip(&body, max) {
            Ok(b) => Bytes::from(b),
            Err(Gunzip::TooLarge) => return too_large(max),
            Err(Gunzip::Bad(e)) => {
                return error(StatusCode::BAD_REQUEST, &format!("invalid gzip body: {e}"));
            }
        }
    } else {
        body
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON");
    };
    let rewritten;
    let text = match posthog {
        false => text,
        true => match crate::posthog::to_segment(text) {
            Ok(t) => {
                rewritten = t;
                rewritten.as_str()
            }
            Err(m) => return error(StatusCode::BAD_REQUEST, &m),
        },
    };
    if !header_key {
        if !body_key(text).is_some_and(|k| known(&app.keys, k.as_bytes())) {
            return unauthorized();
        }
        // Authenticated now: from here on it counts like any other request.
        let Ok(p) = app.inflight.clone().try_acquire_owned() else {
            return busy(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests in progress",
            );
        };
        _permit = p;
    }
    let received_at = chrono::Utc::now();
    let cx = Context {
        names: &app.names,
        declared: &app.declared,
        // The range the flusher commits with, so nothing acknowledged is refused later.
        bounds: tenure_ingest::validate::TimeBounds::new(&app.cfg.ingest.ingest),
        max_event_bytes: app.cfg.max_event_bytes,
        received_at: received_at.timestamp_micros(),
        live: app.live.as_deref(),
    };
    let mut decoded = match message::decode(text, ep, &cx) {
        Ok(d) => d,
        Err(BodyError::Malformed(m)) => return error(StatusCode::BAD_REQUEST, &m),
        Err(BodyError::EventTooLarge { index, bytes }) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "message {index} is {bytes} bytes, more than the {} allowed per message; nothing was stored",
                    app.cfg.max_event_bytes
                ),
            );
        }
    };
    let m = &app.metrics;
    let total = decoded.accepted.len() + decoded.rejected.len();
    m.received.fetch_add(total as u64, Relaxed);
    m.rejected.fetch_add(decoded.rejected.len() as u64, Relaxed);
    let refuse = !decoded.rejected.is_empty() && app.cfg.bad_events == BadEventPolicy::RefuseBatch;
    let mut stored = 0;
    if !decoded.accepted.is_empty() && !refuse {
        let ticket = match app.wal.submit(&decoded.accepted, received_at.timestamp()) {
            Ok(t) => t,
            Err(Refused::QueueFull) => {
                return busy(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the write-ahead log queue is full",
                );
            }
            Err(Refused::WalFull) => {
                let why = match m.flush_failing(1) {
                    Some(e) => format!("commits to the store fail: {e}"),
                    None => "the store is not keeping up".to_string(),
                };
                return busy(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the write-ahead log is full: {why}"),
                );
            }
            Err(Refused::ShuttingDown) => {
                return busy(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                );
            }
            Err(Refused::Broken(e)) => return busy(StatusCode::SERVICE_UNAVAILABLE, &e),
            Err(Refused::TooLarge(n)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("a WAL record of {n} bytes would be too long; nothing was stored"),
                );
            }
        };
        let dups = ticket.duplicates;
        let durable = match &app.live {
            None => ticket.durable().await,
            Some(live) => {
                // Once durable, into the live state (duplicates were applied
                // with their first copy), by a task of its own: a client that
                // hangs up while waiting does not leave its acknowledged
                // events out of the live state.
                let keep = ticket.keep.clone();
                let events: Vec<tenure_live::LiveEvent> = decoded
                    .accepted
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| keep.as_ref().is_none_or(|k| k[*i]))
                    .filter_map(|(_, a)| a.live.take())
                    .collect();
                let live = live.clone();
                let seqs = ticket.seqs;
                tokio::spawn(async move {
                    let r = ticket.durable().await;
                    if r.is_ok() {
                        // On a blocking thread: the live lock may be held a
                        // while (a checkpoint), and the runtime's workers
                        // serve every other request meanwhile.
                        tokio::task::spawn_blocking(move || live.apply(events, seqs))
                            .await
                            .expect("live apply");
                    }
                    r
                })
                .await
                .expect("live apply task")
            }
        };
        if let Err(f) = durable {
            let status = if f.storage_full {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return busy(status, &f.message);
        }
        stored = decoded.accepted.len() - dups;
        m.acked.fetch_add(decoded.accepted.len() as u64, Relaxed);
        m.duplicates.fetch_add(dups as u64, Relaxed);
        m.ack_latency.observe(started.elapsed().as_secs_f64());
    }
    let events = RequestEvents {
        stored,
        rejected: decoded.rejected.len(),
    };
    if decoded.rejected.is_empty() {
        let mut resp = json(StatusCode::OK, r#"{"success":true}"#.to_string());
        resp.extensions_mut().insert(events);
        return resp;
    }
    let message = if refuse {
        "invalid messages; nothing from this request was stored"
    } else {
        "invalid messages were dropped; the others were stored"
    };
    let body = serde_json::json!({
        "success": false,
        "error": message,
        "stored": stored,
        "errors": decoded.rejected,
    });
    let mut resp = json(StatusCode::BAD_REQUEST, body.to_string());
    resp.extensions_mut().insert(events);
    resp
}

/// The write key of HTTP Basic authentication, its user name (Segment sends
/// `base64("<key>:")`). None without a Basic `Authorization` header.
fn basic_key(headers: &HeaderMap) -> Option<Vec<u8>> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    Some(user.to_vec())
}

/// The `writeKey` member of a request body (a batch envelope or a single
/// message), which Segment's libraries send besides the Basic header.
fn body_key(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct KeyOnly<'a> {
        #[serde(rename = "writeKey", borrow, default)]
        write_key: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<KeyOnly<'_>>(text).ok()?.write_key
}

/// Is `given` one of the keys? Compares against every key, in time independent
/// of where they differ.
fn known(keys: &[Vec<u8>], given: &[u8]) -> bool {
    keys.iter().fold(false, |found, k| {
        let same = k.len() == given.len()
            && k.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        found | same
    })
}

fn unauthorized() -> Resp {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or unknown write key (send it as the HTTP Basic user name, or as `writeKey` in the body)",
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"tenure\""),
    );
    r
}

enum Gunzip {
    TooLarge,
    Bad(std::io::Error),
}

/// Decompresses a gzip body, refusing to inflate it past `max` bytes (a small
/// body can expand a thousandfold).
fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, Gunzip> {
    let mut out = Vec::with_capacity((data.len() * 4).min(max + 1));
    flate2::read::MultiGzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Gunzip::Bad)?;
    if out.len() > max {
        return Err(Gunzip::TooLarge);
    }
    Ok(out)
}

fn json(status: StatusCode, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// An error answer. `code` and `message` are the members Segment's libraries
/// read from an error (they log `[Segment] code: message (status)`).
fn error(status: StatusCode, message: &str) -> Resp {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    json(
        status,
        serde_json::json!({"success": false, "error": message, "code": code, "message": message})
            .to_string(),
    )
}

fn too_large(max: usize) -> Resp {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than {max} bytes (after decompression); nothing was stored"),
    )
}

/// 429 or 503 with a `Retry-After`, which Segment's libraries honour.
fn busy(status: StatusCode, message: &str) -> Resp {
    let mut r = error(status, message);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn authorized(keys: &[Vec<u8>], h: &HeaderMap) -> bool {
        basic_key(h).is_some_and(|k| known(keys, &k))
    }

    #[test]
    fn write_key_from_basic_auth() {
        let keys = vec![b"k1".to_vec(), b"other".to_vec()];
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(authorized(&keys, &basic(&format!("Basic {}", enc("k1:")))));
        assert!(authorized(
            &keys,
            &basic(&format!("basic {}", enc("other")))
        ));
        assert!(!authorized(&keys, &basic(&format!("Basic {}", enc("k2:")))));
        assert!(!authorized(&keys, &basic(&format!("Basic {}", enc("k:")))));
        // Not Basic: no key from the header (the body's writeKey may still do).
        assert!(basic_key(&basic(&format!("Bearer {}", enc("k1:")))).is_none());
        assert!(!authorized(&keys, &basic("Basic !!!")));
        assert!(basic_key(&HeaderMap::new()).is_none());
    }

    #[test]
    fn write_key_from_the_body() {
        assert_eq!(
            body_key(r#"{"batch":[{"writeKey":"inner"}],"writeKey":"k1","sentAt":"x"}"#).as_deref(),
            Some("k1")
        );
        assert_eq!(
            body_key(r#"{"userId":"u","writeKey":"k\u0031"}"#).as_deref(),
            Some("k1")
        );
        assert_eq!(body_key(r#"{"batch":[]}"#), None);
        assert_eq!(body_key(r#"{"writeKey":7}"#), None);
        assert_eq!(body_key("{not json"), None);
        assert!(known(&[b"k1".to_vec()], b"k1"));
        assert!(!known(&[b"k1".to_vec()], b"k"));
    }

    #[test]
    fn gunzip_is_bounded() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&vec![b'a'; 100_000]).unwrap();
        let z = e.finish().unwrap();
        assert_eq!(gunzip(&z, 100_000).ok().unwrap().len(), 100_000);
        assert!(matches!(gunzip(&z, 99_999), Err(Gunzip::TooLarge)));
        assert!(matches!(gunzip(b"not gzip", 100), Err(Gunzip::Bad(_))));
    }
}
