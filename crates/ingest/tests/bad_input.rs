//! Hostile and unusual input: stray CSV quotes, historical timestamps, byte
//! order marks, NUL characters, long rejected records (issue 16, items 3, 14, 15).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use tenure_ingest::{Ingest, IngestOptions, Store, Summary};
use tenure_schema::Config;

fn ingest(dir: &Path, files: &[&Path], config: Config) -> Summary {
    let url = dir.join("store");
    let mut ing = Ingest::begin(
        Store::open(url.to_str().unwrap()).unwrap(),
        IngestOptions {
            config,
            ..Default::default()
        },
    )
    .unwrap();
    for f in files {
        ing.add_file(f).unwrap();
    }
    ing.commit().unwrap()
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn store_url(dir: &Path) -> String {
    dir.join("store").to_str().unwrap().to_string()
}

/// The dead letters of a run, parsed.
fn dead_letters(dir: &Path, s: &Summary) -> Vec<serde_json::Value> {
    let Some(dl) = &s.dead_letter else {
        return Vec::new();
    };
    let url = store_url(dir);
    let path = Path::new(&url).join(dl.strip_prefix(&url).unwrap().trim_start_matches('/'));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `properties` of the stored events, in event_id order.
fn stored(dir: &Path, column: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = table_lines(&store_url(dir), &["event_id", column])
        .into_iter()
        .map(|l| {
            let mut parts = l.splitn(3, ',');
            parts.next();
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn csv_rows(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("e{i},u{i},view,2026-01-01T00:00:{:02}Z,fine", i % 60))
        .collect()
}

#[test]
fn a_stray_csv_quote_rejects_its_line_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = csv_rows(1000);
    // Line 4 of the file (the header is line 1): a quote opened and never closed,
    // in the last column, so that swallowing the rest still gives a full row.
    rows[2] = "e3,u3,view,2026-01-01T00:00:03Z,\"oops".to_string();
    let text = format!("event_id,user_id,event,ts,note\n{}\n", rows.join("\n"));
    let f = write(dir.path(), "events.csv", &text);
    let s = ingest(dir.path(), &[&f], Config::default());
    assert_eq!(
        (s.counters.read, s.counters.written, s.counters.rejected),
        (1000, 999, 1)
    );
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["line"], 4, "{}", dl[0]);
    let reason = dl[0]["reason"].as_str().unwrap();
    assert!(reason.contains("unterminated quoted field"), "{reason}");
    assert!(reason.contains("`note`"), "{reason}");
    // The whole physical line, as it was, so it can be fixed and re-ingested.
    assert_eq!(dl[0]["raw"], rows[2]);
    assert_eq!(event_ids(&store_url(dir.path())).len(), 999);
}

#[test]
fn an_unclosed_quote_on_the_last_csv_line_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let text = "user_id,event,ts,note\nu1,view,2026-01-01,ok\nu2,view,2026-01-01,\"oops\n";
    let f = write(dir.path(), "events.csv", text);
    let s = ingest(dir.path(), &[&f], Config::default());
    assert_eq!((s.counters.written, s.counters.rejected), (1, 1));
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl[0]["line"], 3);
    assert!(
        dl[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unterminated quoted field"),
        "{}",
        dl[0]
    );
}

#[test]
fn a_quoted_csv_field_may_span_lines_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let long_note: String = (0..10).map(|i| format!("l{i}\n")).collect();
    let text = format!(
        "event_id,user_id,event,ts,note\r\n\
         e1,u1,view,2026-01-01,\"line one\nline \"\"two\"\", with a comma\"\r\n\
         e2,u2,view,2026-01-01,\"crlf\r\ninside\"\r\n\
         e3,u3,view,2026-01-01,\"{long_note}\"\n\
         e4,u4,view,soon,x\n\
         \n\
         e5,u5,view,2026-01-01,\"\"\n"
    );
    let f = write(dir.path(), "events.csv", &text);
    let mut config = Config::default();
    config.ingest.max_record_lines = 11;
    let s = ingest(dir.path(), &[&f], config.clone());
    assert_eq!((s.counters.written, s.counters.rejected), (4, 1));
    let props = stored(dir.path(), "properties");
    let note = |i: usize| -> String {
        let csv = &props[i].1;
        // table_lines quotes values holding commas or quotes.
        let json = if let Some(inner) = csv.strip_prefix('"') {
            inner.strip_suffix('"').unwrap().replace("\"\"", "\"")
        } else {
            csv.clone()
        };
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["note"].as_str().unwrap().to_string()
    };
    assert_eq!(note(0), "line one\nline \"two\", with a comma");
    assert_eq!(note(1), "crlf\r\ninside");
    assert_eq!(note(2), long_note);
    // The line numbers of later records count the line breaks inside fields.
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl[0]["line"], 17, "{}", dl[0]);
    assert_eq!(props.len(), 4);

    // One line fewer allowed: the 11-line field is refused, its first line
    // rejected and the lines after it read as records (each also rejected).
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "events.csv", &text);
    config.ingest.max_record_lines = 10;
    let s = ingest(dir.path(), &[&f], config);
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl[0]["line"], 6, "{}", dl[0]);
    assert!(
        dl[0]["reason"].as_str().unwrap().contains("10 lines"),
        "{}",
        dl[0]
    );
    assert_eq!(s.counters.written, 3, "{dl:?}");
}

#[test]
fn a_quoted_csv_field_may_not_run_past_max_line_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let text = "user_id,event,ts,note\nu1,view,2026-01-01,\"a\nb\nc\nd\"\nu2,view,2026-01-01,x\n";
    let f = write(dir.path(), "events.csv", text);
    let mut config = Config::default();
    config.ingest.max_line_bytes = 26;
    let s = ingest(dir.path(), &[&f], config);
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl[0]["line"], 2, "{dl:?}");
    assert!(
        dl[0]["reason"].as_str().unwrap().contains("26 bytes"),
        "{dl:?}"
    );
    // u2's row is read as a record of its own.
    assert_eq!(s.counters.written, 1, "{dl:?}");
}

fn ndjson_line(id: &str, ts: &str) -> String {
    format!(r#"{{"event_id":"{id}","user_id":"u","event":"buy","ts":{ts}}}"#)
}

#[test]
fn historical_events_from_1970_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        ndjson_line("text", "\"1997-03-04T05:06:07Z\""),
        ndjson_line("secs", "857451967"),
        ndjson_line("millis", "857451967000"),
        ndjson_line("micros", "857451967000000"),
        ndjson_line("nanos", "857451967000000000"),
        ndjson_line("epoch", "\"1970-01-01T00:00:00Z\""),
        ndjson_line("early", "\"1969-12-31T23:59:59Z\""),
    ];
    let f = write(dir.path(), "old.ndjson", lines.join("\n"));
    let s = ingest(dir.path(), &[&f], Config::default());
    assert_eq!((s.counters.written, s.counters.rejected), (6, 1));
    let ts = stored(dir.path(), "ts");
    let of = |id: &str| ts.iter().find(|(i, _)| i == id).unwrap().1.clone();
    for id in ["text", "secs", "millis", "micros", "nanos"] {
        assert_eq!(of(id), "1997-03-04T05:06:07.000000Z", "{id}");
    }
    assert_eq!(of("epoch"), "1970-01-01T00:00:00.000000Z");
    let dl = dead_letters(dir.path(), &s);
    let reason = dl[0]["reason"].as_str().unwrap();
    assert!(reason.contains("before 1970-01-01"), "{reason}");
}

#[test]
fn accept_from_and_accept_until_narrow_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        ndjson_line("a", "\"1996-12-31T23:59:59Z\""),
        ndjson_line("b", "\"1997-01-01T00:00:00Z\""),
        ndjson_line("c", "\"1998-06-30T12:00:00Z\""),
        ndjson_line("d", "\"1998-07-01T00:00:00Z\""),
    ];
    let f = write(dir.path(), "old.ndjson", lines.join("\n"));
    let config = Config::parse(
        "[ingest]\naccept_from = 1997-01-01\naccept_until = \"1998-06-30T23:59:59Z\"\n",
    )
    .unwrap();
    let s = ingest(dir.path(), &[&f], config);
    assert_eq!((s.counters.written, s.counters.rejected), (2, 2));
    let dl = dead_letters(dir.path(), &s);
    let reasons: Vec<&str> = dl.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(
        reasons[0].contains("before accept_from 1997-01-01"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("after accept_until 1998-06-30T23:59:59Z"),
        "{reasons:?}"
    );
    let ids: Vec<String> = stored(dir.path(), "ts").into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["b", "c"]);
}

#[test]
fn a_byte_order_mark_at_the_start_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let bom = "\u{feff}";
    let nd = write(
        dir.path(),
        "bom.ndjson",
        format!(
            "{bom}{}\n{}\n",
            ndjson_line("n1", "\"2026-01-01\""),
            ndjson_line("n2", "\"2026-01-01\"")
        ),
    );
    let csv = write(
        dir.path(),
        "bom.csv",
        format!("{bom}event_id,user_id,event,ts\nc1,u,view,2026-01-01\nc2,u,view,2026-01-01\n"),
    );
    let s = ingest(dir.path(), &[&nd, &csv], Config::default());
    assert_eq!(
        (s.counters.written, s.counters.rejected),
        (4, 0),
        "{:?}",
        dead_letters(dir.path(), &s)
    );
    let mut ids = event_ids(&store_url(dir.path()));
    ids.sort();
    assert_eq!(ids, ["c1", "c2", "n1", "n2"]);
}

#[test]
fn dead_letters_keep_the_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let pad = "x".repeat(20_000);
    let bad_json = format!(r#"{{"user_id":"u","event":"view","ts":"soon","pad":"{pad}"}}"#);
    let nd = write(
        dir.path(),
        "long.ndjson",
        format!("{}\n{bad_json}\n", ndjson_line("ok", "\"2026-01-01\"")),
    );
    let bad_csv = format!("u,view,soon,\"{pad}\nwith \"\"quotes\"\"\"");
    let csv = write(
        dir.path(),
        "long.csv",
        format!("user_id,event,ts,pad\r\n{bad_csv}\r\nu,view,2026-01-01,x\r\n"),
    );
    let s = ingest(dir.path(), &[&nd, &csv], Config::default());
    assert_eq!((s.counters.written, s.counters.rejected), (2, 2));
    let dl = dead_letters(dir.path(), &s);
    assert_eq!(dl[0]["raw"], bad_json);
    assert_eq!(dl[1]["raw"], bad_csv);
    assert_eq!(dl[1]["line"], 2);

    // Fixed, the dead letter's text ingests.
    let fixed = dl[0]["raw"].as_str().unwrap().replace("soon", "2026-01-02");
    let f = write(dir.path(), "fixed.ndjson", fixed);
    let s = ingest(dir.path(), &[&f], Config::default());
    assert_eq!((s.counters.written, s.counters.rejected), (1, 0));
}

#[test]
fn nul_characters_in_user_id_and_event_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let nd = write(
        dir.path(),
        "nul.ndjson",
        [
            r#"{"user_id":"a\u0000b","event":"view","ts":"2026-01-01"}"#,
            r#"{"user_id":"u","event":"view\u0000","ts":"2026-01-01"}"#,
            r#"{"userId":"u","event":"view","timestamp":"2026-01-01","properties":{"x":"\u0000"}}"#,
            r#"{"type":"track","anonymousId":"\u0000","event":"view","timestamp":"2026-01-01"}"#,
        ]
        .join("\n"),
    );
    let csv = write(
        dir.path(),
        "nul.csv",
        "user_id,event,ts\nu\0,view,2026-01-01\nu,\0,2026-01-01\nu,view,2026-01-01\n",
    );
    let pq = dir.path().join("nul.parquet");
    {
        use arrow_array::{RecordBatch, StringArray};
        let batch = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u\0", "u", "u"])) as _,
            ),
            (
                "event",
                Arc::new(StringArray::from(vec!["view", "vi\0ew", "view"])) as _,
            ),
            (
                "ts",
                Arc::new(StringArray::from(vec!["2026-01-01"; 3])) as _,
            ),
        ])
        .unwrap();
        let file = std::fs::File::create(&pq).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let s = ingest(dir.path(), &[&nd, &csv, &pq], Config::default());
    let dl = dead_letters(dir.path(), &s);
    assert_eq!((s.counters.written, s.counters.rejected), (3, 7), "{dl:?}");
    let reasons: Vec<(&str, u64)> = dl
        .iter()
        .map(|d| (d["reason"].as_str().unwrap(), d["line"].as_u64().unwrap()))
        .collect();
    for (i, (reason, _)) in reasons.iter().enumerate() {
        let field = match i {
            1 | 4 | 6 => "`event`",
            2 => "`anonymousId`",
            _ => "`user_id`",
        };
        assert!(
            reason.contains(field) && reason.contains("NUL"),
            "{i}: {reasons:?}"
        );
    }
}
