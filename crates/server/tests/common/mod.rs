//! Helpers for the server tests: an in-process server on a free loopback port,
//! Segment-style requests, and reading the committed events back from Parquet.

#![allow(dead_code)]

pub mod tmpfs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use arrow_array::{Array, Int64Array, StringArray};
use arrow_schema::DataType;
use base64::Engine;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tenure_server::{ServeReport, Server, ServerConfig, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY: &str = "test-key";

/// A config for tests: loopback port 0, small limits, fast commits.
pub fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir.join("store").display().to_string(), dir.join("wal"));
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.write_keys = vec![KEY.to_string()];
    c.flush_bytes = 64 << 10;
    c.flush_age = Duration::from_millis(200);
    c.max_wal_bytes = 64 << 20;
    c.request_timeout = Duration::from_secs(5);
    c.shutdown_grace = Duration::from_secs(5);
    c
}

/// A running in-process server.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ServeReport, ServerError>>,
}

impl Running {
    pub async fn start(cfg: ServerConfig) -> Self {
        let server = Server::bind(cfg).await.expect("server binds");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop: flush and commit.
    pub async fn stop(mut self) -> Result<ServeReport, ServerError> {
        let _ = self.stop.take().expect("not stopped yet").send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("server stops within a minute")
            .expect("server task")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// A Segment track message.
pub fn track(id: &str, user: &str, event: &str, ts: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "messageId": id,
        "userId": user,
        "event": event,
        "timestamp": ts,
        "properties": {"plan": "pro", "n": 1},
        "context": {"library": {"name": "test"}},
    })
}

pub fn batch(messages: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "batch": messages }).to_string()
}

pub async fn post(
    c: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let r = c
        .post(url)
        .header("authorization", basic(KEY))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event_id: String,
    pub user_id: String,
    pub event: String,
    pub ts: i64,
    pub properties: Option<String>,
}

fn strings(batch: &arrow_array::RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).expect("column");
    let col = arrow_cast::cast(col, &DataType::Utf8).unwrap();
    let a = col.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect()
}

/// Every committed event of a local store, read through its manifest. Must not
/// run on a tokio runtime thread (it uses the ingest crate's own runtime).
pub fn stored(store_dir: &Path) -> Vec<Row> {
    let store = tenure_ingest::Store::open(&store_dir.display().to_string()).unwrap();
    let snap = tenure_ingest::io::block_on(tenure_store::load_latest(&store)).unwrap();
    let paths = tenure_ingest::io::block_on(tenure_store::readable_paths(&store, &snap)).unwrap();
    let mut out = Vec::new();
    for p in paths {
        let data = bytes::Bytes::from(std::fs::read(store_dir.join(&p)).unwrap());
        for b in ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let ids = strings(&b, "event_id");
            let users = strings(&b, "user_id");
            let events = strings(&b, "event");
            let props = strings(&b, "properties");
            let ts = arrow_cast::cast(b.column_by_name("ts").unwrap(), &DataType::Int64).unwrap();
            let ts = ts.as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push(Row {
                    event_id: ids[i].clone().unwrap(),
                    user_id: users[i].clone().unwrap(),
                    event: events[i].clone().unwrap(),
                    ts: ts.value(i),
                    properties: props[i].clone(),
                });
            }
        }
    }
    out
}

/// [`stored`] from async code.
pub async fn stored_async(store_dir: &Path) -> Vec<Row> {
    let dir = store_dir.to_path_buf();
    tokio::task::spawn_blocking(move || stored(&dir))
        .await
        .unwrap()
}

/// How many times each event id is stored.
pub fn id_counts(rows: &[Row]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r.event_id.clone()).or_insert(0) += 1;
    }
    m
}

/// `/health`: its status code and body.
pub async fn health(c: &reqwest::Client, srv: &Running) -> (u16, serde_json::Value) {
    let r = c
        .get(srv.url("/health"))
        .send()
        .await
        .expect("health answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("health is JSON"))
}

/// Asks `/health` every 100 ms until `done` holds for its answer; panics with
/// the last answer if that takes more than `within`.
pub async fn health_until(
    c: &reqwest::Client,
    srv: &Running,
    within: Duration,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let start = std::time::Instant::now();
    loop {
        let (s, h) = health(c, srv).await;
        if done(s, &h) {
            return (s, h);
        }
        assert!(start.elapsed() < within, "still {s} {h} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
