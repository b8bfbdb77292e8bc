//! The request path: [`Gateway::handle`].
//!
//! ```text
//! POST /v1/completions, /v1/chat/completions
//!   body (size limit) ─▶ parse_request ─▶ PromptEncoder (tokens → block hashes)
//!   ─▶ Dispatcher::route_excluding(tried) ─▶ forward the original bytes
//!   ─▶ connect error / 5xx / 429 before any byte went out? finish(Failed), retry elsewhere
//!   ─▶ response headers + x-kvroute-* ─▶ TrackedBody (guard ends with the body)
//! GET /health, /metrics, /v1/models; /admin/…; the allowed engine paths
//! (`proxy.forward_paths`) → round robin; anything else → 404
//! ```
//!
//! Accounting on every path: each attempt's [`InflightGuard`] is finished
//! exactly once — `Failed` when the attempt is abandoned for a retry or
//! times out, and by the [`TrackedBody`] (finished, failed, or cancelled by
//! a client disconnect) for the attempt whose response is passed on.
//!
//! [`InflightGuard`]: kvroute_routing::InflightGuard

use crate::body::{BodyTimeout, ProxyBody, TrackedBody, Tracking};
use crate::error::{error_response, json_response, request_error_response};
use crate::gateway::Gateway;
use crate::request::{parse_request, ApiKind, RequestError};
use crate::upstream::{Engine, Upstream};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use kvroute_core::{Decision, InstanceId, Outcome, RequestId, RouteRequest, SessionId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// `x-kvroute-instance`: the instance's URL.
pub const HEADER_INSTANCE: &str = "x-kvroute-instance";
/// `x-kvroute-cached-tokens`: prompt tokens predicted cached there.
pub const HEADER_CACHED_TOKENS: &str = "x-kvroute-cached-tokens";
/// `x-kvroute-policy`: the policy's registry name.
pub const HEADER_POLICY: &str = "x-kvroute-policy";
/// `x-kvroute-reason`: the branch of the policy that decided.
pub const HEADER_REASON: &str = "x-kvroute-reason";
/// `x-request-id`: the client's, or one the router made up; sent upstream.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// `x-session-id`: optional conversation id (a routing hint for prompts
/// shorter than a block).
pub const HEADER_SESSION_ID: &str = "x-session-id";

/// Prompts with more text than this are tokenized on the blocking pool.
const BLOCKING_ENCODE_BYTES: usize = 32 * 1024;

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// A failed attempt's response, kept in case no other instance is left.
struct Held {
    response: Response<Incoming>,
    upstream: Arc<Engine>,
    decision: Decision,
}

/// Where a routed request went, attached to its response for the access log.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The engine's URL.
    pub engine: Arc<str>,
    /// Prompt tokens predicted cached there.
    pub cached_tokens: u32,
    /// The request id sent upstream.
    pub request_id: HeaderValue,
}

/// Which endpoints a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything: the API, `/health`, `/metrics`, `/admin/…`.
    All,
    /// The API and `/health` (the public port when `admin_listen` is set).
    Public,
    /// `/health`, `/metrics` and `/admin/…` (the admin listener).
    Admin,
}

/// An inference request ready to route.
pub(crate) struct Prepared {
    pub(crate) route: RouteRequest,
    pub(crate) request_id: HeaderValue,
    pub(crate) stream: bool,
}

/// Request bytes one request holds against `proxy.max_buffered_body_bytes`
/// (what all requests may hold at once): released when dropped.
#[derive(Debug, Default)]
pub struct BodyHold {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    kib: usize,
}

impl Gateway {
    /// Grow `hold` to cover `bytes` of request body, or refuse with
    /// [`RequestError::Overloaded`] (503) while all requests together hold
    /// the whole budget.
    pub fn hold_body(&self, hold: &mut BodyHold, bytes: usize) -> Result<(), RequestError> {
        let want = bytes.div_ceil(1024);
        if want <= hold.kib {
            return Ok(());
        }
        let more = u32::try_from(want - hold.kib).map_err(|_| RequestError::Overloaded)?;
        let p = Arc::clone(&self.body_budget)
            .try_acquire_many_owned(more)
            .map_err(|_| RequestError::Overloaded)?;
        match hold.permit.as_mut() {
            Some(h) => h.merge(p),
            None => hold.permit = Some(p),
        }
        hold.kib = want;
        Ok(())
    }
}

impl Gateway {
    /// Answer one request on the public port. Never fails: every error is a
    /// response.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let surface = if self.config.admin_listen.is_some() {
            Surface::Public
        } else {
            Surface::All
        };
        self.handle_on(surface, req).await
    }

    /// Answer one request on a listener serving `surface`.
    pub async fn handle_on(
        self: Arc<Self>,
        surface: Surface,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let path = req.uri().path();
        let api = surface != Surface::Admin;
        let internal = surface != Surface::Public;
        match (req.method(), path) {
            (&Method::GET, "/health") => self.health(),
            (&Method::POST, "/v1/completions") if api => {
                self.inference(ApiKind::Completions, req).await
            }
            (&Method::POST, "/v1/chat/completions") if api => {
                self.inference(ApiKind::ChatCompletions, req).await
            }
            (&Method::GET, "/metrics") if internal => {
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (page, content_type) = self.metrics.negotiate(accept);
                self.text(StatusCode::OK, content_type, page)
            }
            _ if internal && (path == "/admin" || path.starts_with("/admin/")) => {
                crate::admin::handle(&self, req).await
            }
            (&Method::GET, "/v1/models") if api && self.config.model.is_some() => self.models(),
            (&Method::GET, "/v1/models") if api => {
                let first = self
                    .dispatcher
                    .with_table(|t| t.eligible().first().copied());
                self.passthrough(req, first).await
            }
            _ if api && self.config.proxy.forwards(path) => self.passthrough(req, None).await,
            _ => {
                self.metrics.error("not_found");
                error_response(
                    StatusCode::NOT_FOUND,
                    &format!("{} {} is not served by this router", req.method(), path),
                    "invalid_request_error",
                    "not_found",
                )
            }
        }
    }

    fn health(&self) -> Response<ProxyBody> {
        let n = self.healthy_count();
        let status = if n > 0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": if n > 0 { "ok" } else { "unavailable" },
            "healthy_instances": n,
        });
        json_response(status, serde_json::to_vec(&body).unwrap_or_default())
    }

    fn models(&self) -> Response<ProxyBody> {
        let name = self.config.model.as_deref().unwrap_or_default();
        let body = serde_json::json!({
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "kvroute"}],
        });
        json_response(
            StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    fn refuse(&self, e: &RequestError) -> Response<ProxyBody> {
        self.metrics.error(e.metric_kind());
        tracing::debug!(error = %e, "request refused");
        request_error_response(e)
    }

    /// Read a body: at most `max_body_bytes` (413), all of it within
    /// `body_read_timeout_secs` (408), and only while all requests together
    /// hold less than `max_buffered_body_bytes` (503). The bytes count
    /// against that budget until the returned hold is dropped.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        mut body: Incoming,
    ) -> Result<(Bytes, BodyHold), RequestError> {
        let limit = self.config.proxy.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(RequestError::TooLarge { limit });
        }
        let deadline = tokio::time::Instant::now() + self.timeouts.body_read;
        let mut hold = BodyHold::default();
        let expected = declared.map_or(0, |n| n as usize);
        self.hold_body(&mut hold, expected)?;
        let mut buf = bytes::BytesMut::with_capacity(expected);
        let after = self.timeouts.body_read;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(RequestError::BodyTimeout { after }),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(RequestError::Body(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(RequestError::TooLarge { limit });
                }
                self.hold_body(&mut hold, buf.len() + data.len())?;
                buf.extend_from_slice(&data);
            }
        }
        Ok((buf.freeze(), hold))
    }

    /// Parse an inference body and turn its prompt into block hashes: the
    /// routing request, with the client's `x-request-id` (or a new one).
    pub(crate) async fn prepare(
        &self,
        kind: ApiKind,
        headers: &HeaderMap,
        bytes: &[u8],
    ) -> Result<Prepared, RequestError> {
        let parsed = parse_request(kind, bytes)?;
        let stream = parsed.stream;
        let max_tokens = parsed.max_tokens;
        let encoded =
            if self.encoder.has_tokenizer() && parsed.prompt.text_len() > BLOCKING_ENCODE_BYTES {
                // A long text would hold a runtime worker for milliseconds.
                let enc = self.encoder.clone();
                let prompt = parsed.prompt.into_owned();
                tokio::task::spawn_blocking(move || enc.encode(&prompt))
                    .await
                    .unwrap_or_else(|e| Err(RequestError::Tokenize(e.to_string())))
            } else {
                self.encoder.encode(&parsed.prompt)
            };
        let (prompt_tokens, block_hashes) = encoded?;
        let (route, request_id) =
            self.route_request(headers, prompt_tokens, block_hashes, max_tokens);
        Ok(Prepared {
            route,
            request_id,
            stream,
        })
    }

    /// The routing request for a prompt already turned into block hashes
    /// (none for a request without a prompt), and its request id.
    pub(crate) fn route_request(
        &self,
        headers: &HeaderMap,
        prompt_tokens: u32,
        block_hashes: Vec<kvroute_core::BlockHash>,
        expected_output_tokens: Option<u32>,
    ) -> (RouteRequest, HeaderValue) {
        let rid = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = match headers.get(HEADER_REQUEST_ID) {
            Some(v) => v.clone(),
            None => HeaderValue::try_from(format!("kvr-{rid:x}"))
                .unwrap_or_else(|_| HeaderValue::from_static("kvr")),
        };
        let route = RouteRequest {
            id: RequestId(rid),
            session: headers
                .get(HEADER_SESSION_ID)
                .map(|v| session_id(v.as_bytes())),
            block_hashes,
            block_size: u32::try_from(self.encoder.hasher().block_size()).unwrap_or(u32::MAX),
            prompt_tokens,
            expected_output_tokens,
        };
        (route, request_id)
    }

    async fn inference(
        self: &Arc<Self>,
        kind: ApiKind,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let (bytes, _hold) = match self.read_body(&parts.headers, body).await {
            Ok(b) => b,
            Err(e) => return self.refuse(&e),
        };
        let Prepared {
            route: route_req,
            request_id,
            stream,
        } = match self.prepare(kind, &parts.headers, &bytes).await {
            Ok(p) => p,
            Err(e) => return self.refuse(&e),
        };
        let rid = route_req.id.0;
        let mut fwd_headers = Some(forward_headers(&parts.headers, &request_id));
        // The same path (and query, if any) on the engine.
        let path = parts
            .uri
            .path_and_query()
            .map_or(kind.path(), |p| p.as_str());
        let deadline = tokio::time::Instant::from_std(started) + self.timeouts.request;

        self.explain(&route_req, &request_id);
        let attempts = 1 + self.config.proxy.retries;
        let mut tried: Vec<InstanceId> = Vec::new();
        let mut held: Option<Held> = None;
        let mut last_error: Option<String> = None;
        for attempt in 0..attempts {
            let t0 = Instant::now();
            let routed = match self.dispatcher.route_excluding(&route_req, &tried) {
                Ok(r) => r,
                Err(_) => break,
            };
            self.metrics
                .decision(t0.elapsed().as_secs_f64(), routed.decision.reason);
            let decision = routed.decision;
            let guard = routed.guard;
            if attempt > 0 {
                self.metrics.retry();
            }
            let entry = Arc::clone(guard.entry());
            let up = entry.ext();
            let headers = fwd_headers
                .take()
                .unwrap_or_else(|| forward_headers(&parts.headers, &request_id));
            let upstream_req = match build_request(up, Method::POST, path, headers, bytes.clone()) {
                Ok(r) => r,
                Err(e) => {
                    guard.finish(Outcome::Failed);
                    self.metrics.error("upstream");
                    last_error = Some(e.to_string());
                    tried.push(decision.instance);
                    continue;
                }
            };
            let sent = tokio::time::timeout_at(deadline, self.client.request(upstream_req)).await;
            let resp = match sent {
                Err(_elapsed) => {
                    // Not retried: the engine may still be working on it.
                    guard.finish(Outcome::Failed);
                    self.request_failed(&entry);
                    self.metrics.error("timeout");
                    tracing::warn!(request = rid, instance = %up.name(), "timed out waiting for the engine's response");
                    return error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the engine did not answer in time",
                        "server_error",
                        "upstream_timeout",
                    );
                }
                Ok(Err(e)) => {
                    guard.finish(Outcome::Failed);
                    self.request_failed(&entry);
                    let connect = e.is_connect();
                    self.metrics
                        .error(if connect { "connect" } else { "upstream" });
                    tracing::warn!(request = rid, instance = %up.name(), error = %error_chain(&e), attempt, "upstream request failed");
                    if connect {
                        self.suspect(&entry);
                    }
                    last_error = Some(error_chain(&e));
                    tried.push(decision.instance);
                    continue;
                }
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            if status.is_server_error() {
                self.request_failed(&entry);
            }
            let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            if retryable && attempt + 1 < attempts {
                guard.finish(Outcome::Failed);
                self.metrics.error("upstream_status");
                tracing::warn!(request = rid, instance = %up.name(), %status, attempt, "engine answered with an error; trying another instance");
                tried.push(decision.instance);
                held = Some(Held {
                    response: resp,
                    upstream: Arc::clone(&entry),
                    decision,
                });
                continue;
            }
            if retryable {
                self.metrics.error("upstream_status");
            }
            let (mut parts, mut body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let success = parts.status.is_success();
            let sse = stream && success && !parts.headers.contains_key(header::CONTENT_LENGTH);
            // A stream's headers go out with its first token: until then
            // nothing has reached the client, so an engine that accepted the
            // request but produces nothing can still be left for another.
            let first = if sse {
                match first_data(&mut body, self.timeouts.first_byte).await {
                    Ok(first) => {
                        self.request_succeeded(&entry);
                        first
                    }
                    Err(why) => {
                        guard.finish(Outcome::Failed);
                        self.request_failed(&entry);
                        self.metrics.error("first_byte");
                        tracing::warn!(request = rid, instance = %up.name(), attempt, reason = %why, "no first token from the engine; trying another instance");
                        last_error = Some(why);
                        tried.push(decision.instance);
                        continue;
                    }
                }
            } else {
                if !status.is_server_error() {
                    self.request_succeeded(&entry);
                }
                None
            };
            let timeout = if stream {
                BodyTimeout::Idle(self.timeouts.stream_idle)
            } else {
                BodyTimeout::Deadline(deadline)
            };
            let code = parts.status.as_u16();
            let body = TrackedBody::new(
                body,
                guard,
                Tracking {
                    success,
                    sse,
                    timeout,
                    first,
                    started,
                    code,
                },
                Arc::clone(&self.metrics),
            );
            let mut out = Response::from_parts(parts, ProxyBody::Tracked(Box::new(body)));
            out.extensions_mut().insert(RouteInfo {
                engine: Arc::clone(&up.name_arc()),
                cached_tokens: route_req.blocks_to_tokens(decision.cached_blocks),
                request_id: request_id.clone(),
            });
            self.decorate(out.headers_mut(), up, &decision, &route_req, request_id);
            return out;
        }
        if let Some(h) = held {
            // Every other instance failed too or none is left: pass the
            // last error response on (already accounted as failed).
            let (mut parts, body) = h.response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let mut out = Response::from_parts(parts, ProxyBody::Plain(body));
            self.decorate(
                out.headers_mut(),
                h.upstream.ext(),
                &h.decision,
                &route_req,
                request_id,
            );
            return out;
        }
        match last_error {
            None => {
                self.metrics.error("no_instance");
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy instance is available",
                    "server_error",
                    "no_instance",
                )
            }
            Some(e) => error_response(
                StatusCode::BAD_GATEWAY,
                &format!("no instance could serve the request: {e}"),
                "server_error",
                "upstream_unavailable",
            ),
        }
    }

    /// Explain this decision to be if it is sampled (every
    /// `proxy.explain_every`th) or the log is at `debug`: each candidate's
    /// matched blocks, the policy's terms and its score.
    fn explain(&self, req: &RouteRequest, request_id: &HeaderValue) {
        let every = u64::from(self.config.proxy.explain_every);
        let sampled = every > 0 && req.id.0.is_multiple_of(every);
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        if !sampled && !debug {
            return;
        }
        let candidates = self.dispatcher.explain(req);
        let name = |id: InstanceId| {
            self.engine(id)
                .map(|e| e.name().to_string())
                .unwrap_or_default()
        };
        if debug {
            for c in &candidates {
                let terms: Vec<String> = c
                    .terms
                    .iter()
                    .map(|t| format!("{}={:.4}", t.name, t.value))
                    .collect();
                tracing::debug!(request = req.id.0, engine = %name(c.instance), matched_blocks = c.matched_blocks, score = c.score, terms = %terms.join(" "), "candidate");
            }
        }
        if sampled {
            let entry = serde_json::json!({
                "request": req.id.0,
                "request_id": request_id.to_str().unwrap_or(""),
                "policy": self.dispatcher.policy().name(),
                "prompt_tokens": req.prompt_tokens,
                "prompt_blocks": req.block_hashes.len(),
                "candidates": candidates.iter().map(|c| serde_json::json!({
                    "engine": name(c.instance),
                    "matched_blocks": c.matched_blocks,
                    "score": c.score,
                    "terms": c.terms.iter().map(|t| (t.name.to_string(), serde_json::json!(t.value))).collect::<serde_json::Map<_, _>>(),
                })).collect::<Vec<_>>(),
            });
            let mut q = self.explained.lock();
            if q.len() == 32 {
                q.pop_front();
            }
            q.push_back(entry);
        }
    }

    fn decorate(
        &self,
        h: &mut HeaderMap,
        up: &Upstream,
        decision: &Decision,
        req: &RouteRequest,
        request_id: HeaderValue,
    ) {
        h.insert(HeaderName::from_static(HEADER_REQUEST_ID), request_id);
        if !self.config.proxy.expose_routing_headers {
            return;
        }
        h.insert(
            HeaderName::from_static(HEADER_INSTANCE),
            up.header_value().clone(),
        );
        h.insert(
            HeaderName::from_static(HEADER_CACHED_TOKENS),
            HeaderValue::from(req.blocks_to_tokens(decision.cached_blocks)),
        );
        h.insert(
            HeaderName::from_static(HEADER_POLICY),
            self.policy_header.clone(),
        );
        h.insert(
            HeaderName::from_static(HEADER_REASON),
            HeaderValue::from_static(decision.reason.as_str()),
        );
    }

    /// Forward a request the router does not route by prompt: to `target`,
    /// else round robin over the healthy instances. No retries, no
    /// accounting.
    async fn passthrough(
        self: &Arc<Self>,
        req: Request<Incoming>,
        target: Option<InstanceId>,
    ) -> Response<ProxyBody> {
        let target = target.or_else(|| {
            self.dispatcher.with_table(|t| {
                let e = t.eligible();
                (!e.is_empty())
                    .then(|| e[self.round_robin.fetch_add(1, Ordering::Relaxed) % e.len()])
            })
        });
        let Some(entry) = target.and_then(|id| self.engine(id)) else {
            self.metrics.error("no_instance");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy instance is available",
                "server_error",
                "no_instance",
            );
        };
        let up = entry.ext();
        let (parts, body) = req.into_parts();
        let (bytes, _hold) = match self.read_body(&parts.headers, body).await {
            Ok(b) => b,
            Err(e) => return self.refuse(&e),
        };
        let request_id = parts
            .headers
            .get(HEADER_REQUEST_ID)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("kvr-passthrough"));
        let headers = forward_headers(&parts.headers, &request_id);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let upstream_req = match build_request(up, parts.method.clone(), path, headers, bytes) {
            Ok(r) => r,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot forward this request: {e}"),
                    "invalid_request_error",
                    "bad_path",
                )
            }
        };
        match tokio::time::timeout(self.timeouts.request, self.client.request(upstream_req)).await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if self.config.proxy.expose_routing_headers {
                    parts.headers.insert(
                        HeaderName::from_static(HEADER_INSTANCE),
                        up.header_value().clone(),
                    );
                }
                Response::from_parts(parts, ProxyBody::Plain(body))
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                self.metrics
                    .error(if connect { "connect" } else { "upstream" });
                if connect {
                    self.suspect(&entry);
                }
                error_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("an instance failed: {}", error_chain(&e)),
                    "server_error",
                    "upstream_unavailable",
                )
            }
            Err(_) => {
                self.metrics.error("timeout");
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the engine did not answer in time",
                    "server_error",
                    "upstream_timeout",
                )
            }
        }
    }
}

/// The first data of a streamed body, waiting at most `limit`: `Ok(None)`
/// if the body ended without data, `Err` if it failed or stayed silent.
async fn first_data(
    body: &mut Incoming,
    limit: std::time::Duration,
) -> Result<Option<Bytes>, String> {
    let work = async {
        loop {
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(format!(
                        "the engine's stream failed before its first token: {e}"
                    ))
                }
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        if !d.is_empty() {
                            return Ok(Some(d));
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no first token within {limit:?}"))?
}

/// The client's headers minus hop-by-hop ones, `host` and `content-length`
/// (the client sets both), plus the request id.
fn forward_headers(from: &HeaderMap, request_id: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(from.len() + 2);
    for (name, value) in from {
        if is_hop_by_hop(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name.as_str() == HEADER_REQUEST_ID
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    h.insert(
        HeaderName::from_static(HEADER_REQUEST_ID),
        request_id.clone(),
    );
    h
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    h.remove(header::UPGRADE);
}

fn build_request(
    up: &Upstream,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let uri = up.url().join(path_and_query)?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// FNV-1a of a session header.
fn session_id(b: &[u8]) -> SessionId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SessionId(h)
}

pub(crate) use kvroute_http::error_chain;
