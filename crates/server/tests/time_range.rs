//! The server accepts the same time range as `tenure ingest`: 1970 onwards by
//! default, narrowed by `[ingest] accept_from` / `accept_until`, checked before
//! acknowledging, so nothing acknowledged is refused at commit (issue 16, item 14).

mod common;

use common::*;
use tenure_schema::Moment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_events_are_accepted_within_the_configured_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ingest.ingest.accept_from = Some(Moment::parse("1997-01-01").unwrap());
    let srv = Running::start(cfg).await;
    let c = client();
    let (status, body) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![
            track("in-range", "u1", "buy", "1997-06-01T12:00:00Z"),
            track("too-early", "u2", "buy", "1996-12-31T23:59:59Z"),
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("before accept_from 1997-01-01"),
        "{body}"
    );
    let report = srv.stop().await.unwrap();
    assert_eq!((report.acked, report.flushed), (1, 1));
    let rows = stored_async(&dir.path().join("store")).await;
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["in-range"]);

    // Without a configured range, 1970 is the floor.
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(config(dir.path())).await;
    let (status, body) = post(
        &c,
        &srv.url("/v1/batch"),
        batch(vec![
            track("old", "u1", "buy", "1970-01-02T00:00:00Z"),
            track("older", "u1", "buy", "1969-12-31T00:00:00Z"),
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("before 1970-01-01"), "{body}");
    let report = srv.stop().await.unwrap();
    assert_eq!((report.acked, report.flushed), (1, 1));
}
