//! Test fixtures: a small engine that answers like vLLM (JSON completions,
//! SSE streams ending in `data: [DONE]`, `/health`, `/v1/models`,
//! `/metrics` with vLLM names), a router started on 127.0.0.1:0 with a
//! handle on its `Gateway`, and an HTTP client.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kvroute_core::InstanceId;
use kvroute_gateway::{serve_gateway, Gateway, InstanceConfig, RouterConfig};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// How a fake engine behaves.
#[derive(Clone, Default)]
pub struct Behavior {
    /// Answer every completion with this status and an error body.
    pub fail_status: Option<u16>,
    /// `/health` answers 503.
    pub unhealthy: bool,
    /// Stream this many token chunks (default 3).
    pub chunks: usize,
    /// Pause between chunks.
    pub chunk_delay: Duration,
    /// After the first chunk, wait for a permit before sending the rest.
    pub gate: Option<Arc<Semaphore>>,
    /// After the first chunk, fail the stream (connection cut).
    pub die_after_first_chunk: bool,
    /// `/metrics` page to serve.
    pub metrics_page: Option<String>,
    /// Accept completions and never produce anything: a stream gets its
    /// headers and no data, a non-streaming request no answer at all.
    pub hang: bool,
}

/// What a fake engine saw.
#[derive(Default)]
pub struct Seen {
    /// Completion requests received.
    pub requests: AtomicUsize,
    /// Bodies received.
    pub bodies: Mutex<Vec<Bytes>>,
    /// x-request-id headers received.
    pub request_ids: Mutex<Vec<String>>,
    /// Streams that ran to their end.
    pub streams_finished: AtomicUsize,
}

/// A running fake engine.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// Stop accepting and cut every open connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn backend(b: Behavior) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    backend_on(listener, b).await
}

pub async fn backend_on(listener: TcpListener, b: Behavior) -> Backend {
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let b = Arc::new(b);
    let s2 = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (b, seen) = (Arc::clone(&b), Arc::clone(&s2));
            conns.spawn(async move {
                let svc = service_fn(move |req| answer(Arc::clone(&b), Arc::clone(&seen), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Backend {
        addr,
        seen,
        task: Some(task),
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

async fn answer(
    b: Arc<Behavior>,
    seen: Arc<Seen>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = |status: u16, ct: &str, body: BoxBody| {
        Response::builder()
            .status(status)
            .header("content-type", ct)
            .body(body)
            .unwrap()
    };
    match path.as_str() {
        "/health" => Ok(resp(
            if b.unhealthy { 503 } else { 200 },
            "text/plain",
            full(""),
        )),
        "/v1/models" => Ok(resp(
            200,
            "application/json",
            full(r#"{"object":"list","data":[{"id":"fake-model","object":"model"}]}"#),
        )),
        "/metrics" => match &b.metrics_page {
            Some(p) => Ok(resp(200, "text/plain", full(p.clone()))),
            None => Ok(resp(404, "text/plain", full("no metrics"))),
        },
        "/v1/completions" | "/v1/chat/completions" => {
            seen.requests.fetch_add(1, Ordering::SeqCst);
            if let Some(id) = req.headers().get("x-request-id") {
                seen.request_ids
                    .lock()
                    .push(id.to_str().unwrap_or_default().to_string());
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            seen.bodies.lock().push(body.clone());
            if let Some(status) = b.fail_status {
                return Ok(resp(
                    status,
                    "application/json",
                    full(
                        r#"{"object":"error","message":"engine failure","type":"InternalServerError","code":500}"#,
                    ),
                ));
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let stream = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
            if b.hang && !stream {
                std::future::pending::<()>().await;
            }
            if b.hang {
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
                tokio::spawn(async move {
                    let _keep = tx;
                    std::future::pending::<()>().await;
                });
                let body = StreamBody::new(tokio_stream_from(rx));
                return Ok(resp(200, "text/event-stream", BodyExt::boxed(body)));
            }
            if !stream {
                return Ok(resp(
                    200,
                    "application/json",
                    full(
                        r#"{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}"#,
                    ),
                ));
            }
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            let n = if b.chunks == 0 { 3 } else { b.chunks };
            let b2 = Arc::clone(&b);
            tokio::spawn(async move {
                for i in 0..n {
                    let chunk = format!(
                        "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\"t{i}\"}}]}}\n\n"
                    );
                    if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                        return;
                    }
                    if i == 0 {
                        if b2.die_after_first_chunk {
                            // Let the first chunk reach the router first.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let _ = tx.send(Err(std::io::Error::other("engine died"))).await;
                            return;
                        }
                        if let Some(g) = &b2.gate {
                            match g.acquire().await {
                                Ok(p) => p.forget(),
                                Err(_) => return,
                            }
                        }
                    }
                    if !b2.chunk_delay.is_zero() {
                        tokio::time::sleep(b2.chunk_delay).await;
                    }
                }
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                    .await
                    .is_ok()
                {
                    seen.streams_finished.fetch_add(1, Ordering::SeqCst);
                }
            });
            let body = StreamBody::new(tokio_stream_from(rx));
            Ok(resp(200, "text/event-stream", BodyExt::boxed(body)))
        }
        _ => Ok(resp(
            404,
            "application/json",
            full(r#"{"detail":"Not Found"}"#),
        )),
    }
}

/// An mpsc receiver as a stream (no tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// A running router.
pub struct Router {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Router {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn inflight(&self, id: u32) -> u32 {
        self.gw
            .dispatcher()
            .instance(InstanceId(id))
            .map_or(0, |i| i.inflight())
    }

    pub fn total_inflight(&self) -> u32 {
        self.gw
            .dispatcher()
            .with_table(|t| t.all().iter().map(|i| i.inflight()).sum())
    }

    pub fn counter(&self, id: u32, which: &str) -> u64 {
        let i = self.gw.dispatcher().instance(InstanceId(id)).unwrap();
        let c = &i.counters;
        match which {
            "routed" => c.routed.load(Ordering::SeqCst),
            "finished" => c.finished.load(Ordering::SeqCst),
            "failed" => c.failed.load(Ordering::SeqCst),
            "cancelled" => c.cancelled.load(Ordering::SeqCst),
            _ => panic!("{which}"),
        }
    }

    /// Wait until `f` holds (polling), at most `secs`.
    pub async fn eventually(&self, secs: f64, what: &str, mut f: impl FnMut(&Router) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        while !f(self) {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A test configuration: fast probes, no metric polls, the given policy.
/// A port free now on 127.0.0.1 (for sockets a test binds later, or that
/// another party binds).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn config(policy: &str, backends: &[&Backend]) -> RouterConfig {
    let mut c = RouterConfig {
        policy: kvroute_policy::PolicyConfig::parse(policy).unwrap(),
        instances: backends
            .iter()
            .map(|b| InstanceConfig::new(b.url()))
            .collect(),
        ..Default::default()
    };
    c.hashing.block_size = 4;
    c.health.interval_secs = 0.2;
    c.health.timeout_secs = 0.5;
    c.metrics_interval_secs = 0.0;
    c.shutdown_grace_secs = 2.0;
    c.proxy.connect_timeout_secs = 0.5;
    c.proxy.expose_routing_headers = true;
    c
}

pub async fn router(config: RouterConfig) -> Router {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(config).unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let probed = Arc::clone(&gw);
    let g2 = Arc::clone(&gw);
    let task = tokio::spawn(async move {
        serve_gateway(listener, g2, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    // Instances take requests after their first probe.
    tokio::time::timeout(Duration::from_secs(10), probed.ready())
        .await
        .expect("every instance probed within 10 s");
    Router {
        addr,
        gw,
        stop: Some(stop),
        task: Some(task),
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A buffered response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no header {name}"))
    }
}

pub async fn send(
    c: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(c: &TestClient, url: &str, body: &str) -> Answer {
    send(
        c,
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// A completions body.
pub fn completion(prompt: &str, stream: bool) -> String {
    serde_json::json!({"model": "fake-model", "prompt": prompt, "max_tokens": 8, "stream": stream})
        .to_string()
}
