//! The fault-injecting proxy.
//!
//! Each request that matches the plan's filter gets an index (0, 1, 2, ... in
//! arrival order) and the plan maps the index to a [`Fault`]: first the
//! scripted faults, in order, then a seeded draw by share. The same seed gives
//! the same fault for the same index, so a failing run can be replayed (the
//! order of concurrent requests can still differ between runs).
//!
//! Every forwarded request goes over a fresh connection to the server; the
//! client side keeps its connections alive as usual, so a fault that closes or
//! resets a connection also hits the client's connection pool, as a real
//! network fault does.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and relay the answer unchanged.
    Pass,
    /// Close the connection without forwarding or answering: the server never
    /// sees the request.
    Drop,
    /// Forward it, let the server finish, then close the connection without
    /// answering: the work is done but the client never learns it.
    LostResponse,
    /// Answer this status (500, 503, ...) without forwarding.
    Status(u16),
    /// Forward it, let the server finish, then answer this status instead of
    /// the server's answer (a failure report for work that was done).
    StatusAfterForward(u16),
    /// Wait this long, then forward and relay.
    Delay(Duration),
    /// Forward it, send the answer's head and half its body, then reset the
    /// connection (TCP RST). An answer without a body is reset before its head.
    ResetMidBody,
}

impl Fault {
    /// A short name, as counted in [`ProxyStats`].
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Drop => "drop",
            Fault::LostResponse => "lost-response",
            Fault::Status(500) => "500",
            Fault::Status(503) => "503",
            Fault::Status(_) => "status",
            Fault::StatusAfterForward(_) => "status-after-forward",
            Fault::Delay(_) => "delay",
            Fault::ResetMidBody => "reset-mid-body",
        }
    }
}

/// Which faults the proxy injects, and into which requests.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    seed: u64,
    shares: Vec<(f64, Fault)>,
    script: Vec<Fault>,
    method: Option<String>,
    path_contains: Option<String>,
}

impl FaultPlan {
    /// No faults: a plain forwarding proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// A plan whose draws by share use this seed.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// Gives `fault` to this share (0..=1) of the matching requests. Shares add
    /// up; the rest pass.
    pub fn share(mut self, share: f64, fault: Fault) -> Self {
        self.shares.push((share, fault));
        let total: f64 = self.shares.iter().map(|(s, _)| s).sum();
        assert!(
            (0.0..=1.0).contains(&share) && total <= 1.0 + 1e-9,
            "fault shares must add up to at most 1"
        );
        self
    }

    /// The first matching requests get these faults, in order, before any
    /// draw by share.
    pub fn script(mut self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.script.extend(faults);
        self
    }

    /// Injects faults only into requests with this method (any method when
    /// empty) whose path contains `path_contains` (any path when empty); the
    /// others always pass and do not take an index.
    pub fn only(mut self, method: &str, path_contains: &str) -> Self {
        self.method = (!method.is_empty()).then(|| method.to_ascii_uppercase());
        self.path_contains = (!path_contains.is_empty()).then(|| path_contains.to_string());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }

    /// The fault of the matching request with this index.
    pub fn fault(&self, index: u64) -> Fault {
        if let Some(f) = self.script.get(index as usize) {
            return *f;
        }
        let x = (splitmix64(self.seed ^ splitmix64(index)) >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (share, fault) in &self.shares {
            acc += share;
            if x < acc {
                return *fault;
            }
        }
        Fault::Pass
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the proxy has seen since it started (or since its plan was last set).
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Requests received.
    pub requests: u64,
    /// Requests that matched the plan's filter.
    pub matched: u64,
    /// Injected faults by [`Fault::name`] (passes are not counted).
    pub faults: BTreeMap<&'static str, u64>,
}

impl ProxyStats {
    /// How many faults of this name were injected.
    pub fn count(&self, name: &str) -> u64 {
        self.faults.get(name).copied().unwrap_or(0)
    }

    /// All injected faults.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<(FaultPlan, ProxyStats)>,
}

impl Shared {
    fn next_fault(&self, method: &str, path: &str) -> Fault {
        let mut guard = self.state.lock().expect("proxy state");
        let (plan, stats) = &mut *guard;
        stats.requests += 1;
        if !plan.matches(method, path) {
            return Fault::Pass;
        }
        let fault = plan.fault(stats.matched);
        stats.matched += 1;
        if fault != Fault::Pass {
            *stats.faults.entry(fault.name()).or_insert(0) += 1;
        }
        fault
    }
}

/// A running proxy on `127.0.0.1`, on its own thread and runtime (so sync and
/// async tests can both use it). Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`, as in
    /// `AWS_ENDPOINT`) with this plan.
    pub fn start(upstream: &str, plan: FaultPlan) -> io::Result<Self> {
        let hostport = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/');
        let upstream = hostport
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("cannot resolve {hostport}")))?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new((plan, ProxyStats::default())),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("proxy listener");
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(serve_connection(state.clone(), stream));
                                }
                            }
                            _ = &mut stopped => break,
                        }
                    }
                });
            })?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The proxy's endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the plan (request indices start again at 0) and clears the stats.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.shared.state.lock().expect("proxy state") = (plan, ProxyStats::default());
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.state.lock().expect("proxy state").1.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type ProxyBody = BoxBody<Bytes, io::Error>;

/// A client connection that ends with a TCP reset instead of a clean close
/// once a [`Fault::ResetMidBody`] has flagged it.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResetOnDrop {
        stream,
        reset: reset.clone(),
    });
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), reset.clone(), req));
    // A service error closes the connection without an answer: that is how
    // drops and lost responses are made.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> io::Result<Response<ProxyBody>> {
    let fault = shared.next_fault(req.method().as_str(), req.uri().path());
    match fault {
        Fault::Pass => Ok(relay(forward(&shared, req).await?)),
        Fault::Drop => Err(io::Error::other("fault proxy: dropped")),
        Fault::LostResponse => {
            finish(forward(&shared, req).await?).await?;
            Err(io::Error::other("fault proxy: response lost"))
        }
        Fault::Status(status) => Ok(error_answer(status)),
        Fault::StatusAfterForward(status) => {
            finish(forward(&shared, req).await?).await?;
            Ok(error_answer(status))
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(relay(forward(&shared, req).await?))
        }
        Fault::ResetMidBody => {
            let (parts, body) = forward(&shared, req).await?.into_parts();
            let bytes = body.collect().await.map_err(io::Error::other)?.to_bytes();
            reset.store(true, Ordering::Relaxed);
            if bytes.len() < 2 {
                return Err(io::Error::other("fault proxy: reset"));
            }
            let half = Frame::data(bytes.slice(..bytes.len() / 2));
            // The pause lets the half body reach the client before the reset.
            let frames = futures::stream::iter([Ok(half)]).chain(futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(io::Error::from(io::ErrorKind::ConnectionReset))
            }));
            // The server's Content-Length stays, so the client expects the rest.
            Ok(Response::from_parts(
                parts,
                BodyExt::boxed(StreamBody::new(frames)),
            ))
        }
    }
}

/// Sends the request to the server over a fresh connection.
async fn forward(shared: &Shared, req: Request<Incoming>) -> io::Result<Response<Incoming>> {
    let stream = TcpStream::connect(shared.upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(io::Error::other)
}

/// Reads the server's whole answer, so its work is surely done.
async fn finish(resp: Response<Incoming>) -> io::Result<()> {
    resp.into_body().collect().await.map_err(io::Error::other)?;
    Ok(())
}

fn relay(resp: Response<Incoming>) -> Response<ProxyBody> {
    resp.map(|b| b.map_err(io::Error::other).boxed())
}

fn error_answer(status: u16) -> Response<ProxyBody> {
    let code = if status == 503 {
        "SlowDown"
    } else {
        "InternalError"
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_seeded_and_follows_the_shares() {
        let plan = FaultPlan::seeded(7)
            .share(0.25, Fault::Drop)
            .share(0.25, Fault::Status(500));
        let a: Vec<Fault> = (0..4000).map(|i| plan.fault(i)).collect();
        let b: Vec<Fault> = (0..4000).map(|i| plan.fault(i)).collect();
        assert_eq!(a, b);
        let drops = a.iter().filter(|f| **f == Fault::Drop).count();
        let errors = a.iter().filter(|f| **f == Fault::Status(500)).count();
        assert!((900..1100).contains(&drops), "{drops}");
        assert!((900..1100).contains(&errors), "{errors}");
        let other: Vec<Fault> = (0..4000)
            .map(|i| FaultPlan::seeded(8).share(0.5, Fault::Drop).fault(i))
            .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn a_script_comes_first_and_the_filter_selects_requests() {
        let plan = FaultPlan::none()
            .script([Fault::LostResponse, Fault::Status(503)])
            .only("put", "/_tenure/manifest/");
        assert!(plan.matches("PUT", "/b/t/_tenure/manifest/v00000000000000000001.json"));
        assert!(!plan.matches("GET", "/b/t/_tenure/manifest/v00000000000000000001.json"));
        assert!(!plan.matches("PUT", "/b/t/events/x.parquet"));
        assert_eq!(plan.fault(0), Fault::LostResponse);
        assert_eq!(plan.fault(1), Fault::Status(503));
        assert_eq!(plan.fault(2), Fault::Pass);
    }
}
