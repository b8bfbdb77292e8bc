//! The HTTP face of the emulated engine: the routes a vLLM server answers
//! (and the probes sglang-router and vllm-router send), each request turned
//! into an engine command and its tokens streamed back as they are produced.

use crate::driver::{lock, Command, Shared, TokenEvent};
use crate::openai::{self, Api, ApiError, GenRequest, Prompt, ResponseId, Usage};
use crate::EmulatorConfig;
use bytes::Bytes;
use futures_util::stream;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use kvroute_sim::EngineRequest;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Response bodies: whole or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 32 << 20;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub(crate) config: EmulatorConfig,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_id: AtomicU64,
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn error(e: ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    full(status, "application/json", e.body())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl App {
    /// Route one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let resp = match (&method, path.as_str()) {
            (&Method::GET, "/health") | (&Method::GET, "/ping") => {
                full(StatusCode::OK, "text/plain", "")
            }
            (&Method::GET, "/v1/models") => self.models(),
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/version") => json_response(
                StatusCode::OK,
                json!({"version": "0.32.0+kvroute-emulator"}),
            ),
            (&Method::GET, "/model_info") | (&Method::GET, "/get_model_info") => self.model_info(),
            (&Method::GET, "/server_info") | (&Method::GET, "/get_server_info") => {
                self.server_info()
            }
            (&Method::POST, "/v1/completions") => self.generate(Api::Completions, req).await,
            (&Method::POST, "/v1/chat/completions") => self.generate(Api::Chat, req).await,
            (&Method::POST, "/tokenize") => self.tokenize(req).await,
            (&Method::POST, "/reset_prefix_cache") => self.reset_prefix_cache().await,
            _ => error(ApiError::not_found(format!("no route for {method} {path}"))),
        };
        Ok(resp)
    }

    fn models(&self) -> Response<Body> {
        let c = &self.config;
        json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{
                "id": c.model, "object": "model", "created": unix_now(), "owned_by": "vllm",
                "root": c.model_path(), "parent": null, "max_model_len": c.profile.limits.max_model_len,
            }]}),
        )
    }

    fn model_info(&self) -> Response<Body> {
        let p = self.config.model_path();
        json_response(
            StatusCode::OK,
            json!({"model_path": p, "tokenizer_path": p, "is_generation": true, "preferred_sampling_params": null}),
        )
    }

    fn server_info(&self) -> Response<Body> {
        let l = &self.config.profile.limits;
        json_response(
            StatusCode::OK,
            json!({
                "model_path": self.config.model_path(), "served_model_name": self.config.model,
                "max_total_num_tokens": l.num_blocks as u64 * u64::from(l.block_size),
                "page_size": l.block_size, "max_running_requests": l.max_num_seqs,
                "context_length": l.max_model_len, "version": "0.32.0+kvroute-emulator",
            }),
        )
    }

    fn metrics(&self) -> Response<Body> {
        let text = lock(&self.shared.metrics).render(&self.config.model);
        full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            text,
        )
    }

    async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) => Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError {
                        status: 413,
                        message: format!("request body larger than {MAX_BODY} bytes"),
                        kind: "BadRequestError",
                    }
                } else {
                    ApiError::bad_request(format!("reading request body: {e}"))
                },
            ),
        }
    }

    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.config.model && m != self.config.model_path() => Err(
                ApiError::not_found(format!("The model `{m}` does not exist.")),
            ),
            _ => Ok(()),
        }
    }

    /// Prompt → token ids, as vLLM would tokenize it.
    fn tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
        match prompt {
            Prompt::Tokens(t) => Ok(t.clone()),
            Prompt::Text(s) => self
                .config
                .tokenizer
                .encode(s)
                .map_err(|e| ApiError::bad_request(e.to_string())),
            Prompt::Messages(m) => {
                let template = self.config.chat_template.as_ref().ok_or_else(|| {
                    ApiError::bad_request("this server has no chat template; use /v1/completions")
                })?;
                let text = template
                    .render(m)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.config
                    .tokenizer
                    .encode_with(&text, false)
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            }
        }
    }

    /// vLLM (dev mode) answers 200 when the cache was reset, 500 otherwise.
    async fn reset_prefix_cache(&self) -> Response<Body> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::ResetPrefixCache(tx)).is_err() {
            return error(ApiError {
                status: 503,
                message: "engine stopped".into(),
                kind: "ServiceUnavailableError",
            });
        }
        match rx.await {
            Ok(true) => full(StatusCode::OK, "text/plain", ""),
            _ => error(ApiError {
                status: 500,
                message: "prefix cache not reset: requests are running".into(),
                kind: "InternalServerError",
            }),
        }
    }

    async fn tokenize(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match Self::read_body(req).await {
            Ok(b) => b,
            Err(e) => return error(e),
        };
        let api = if serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|v| v.get("messages").is_some())
        {
            Api::Chat
        } else {
            Api::Completions
        };
        let parsed = match openai::parse(api, &body) {
            Ok(p) => p,
            Err(e) => return error(e),
        };
        match self.tokens(&parsed.prompt) {
            Ok(t) => json_response(
                StatusCode::OK,
                json!({"count": t.len(), "max_model_len": self.config.profile.limits.max_model_len, "tokens": t}),
            ),
            Err(e) => error(e),
        }
    }

    async fn generate(&self, api: Api, req: Request<Incoming>) -> Response<Body> {
        let body = match Self::read_body(req).await {
            Ok(b) => b,
            Err(e) => return error(e),
        };
        match self.start(api, &body).await {
            Ok(r) => r,
            Err(e) => error(e),
        }
    }

    async fn start(&self, api: Api, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let gen: GenRequest = openai::parse(api, body)?;
        self.check_model(gen.model.as_deref())?;
        let prompt = self.tokens(&gen.prompt)?;
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        let max_len = self.config.profile.limits.max_model_len;
        let n = prompt.len() as u32;
        let max_tokens = match gen.max_tokens {
            Some(m) => m,
            None => self
                .config
                .default_max_tokens
                .min(max_len.saturating_sub(n)),
        };
        if max_tokens == 0 || n.saturating_add(max_tokens) > max_len {
            return Err(ApiError::bad_request(format!(
                "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({n} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                n.saturating_add(max_tokens)
            )));
        }
        // vLLM's front end (template, tokenizer, input processing) takes time
        // before the scheduler sees the request: the profile's frontend delay.
        let delay = self.config.profile.frontend.delay_secs(n) / self.config.speedup.max(1e-9);
        if delay > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(delay)).await;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (admitted_tx, admitted_rx) = oneshot::channel();
        self.commands
            .send(Command::Add {
                request: EngineRequest {
                    id,
                    prompt,
                    max_tokens,
                },
                tx,
                admitted: admitted_tx,
            })
            .map_err(|_| ApiError {
                status: 503,
                message: "engine stopped".into(),
                kind: "ServiceUnavailableError",
            })?;
        match admitted_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ApiError::bad_request(e.to_string())),
            Err(_) => {
                return Err(ApiError {
                    status: 503,
                    message: "engine stopped".into(),
                    kind: "ServiceUnavailableError",
                })
            }
        }
        let rid = ResponseId {
            id: match api {
                Api::Completions => format!("cmpl-{id}"),
                Api::Chat => format!("chatcmpl-{id}"),
            },
            created: unix_now(),
            model: self.config.model.clone(),
            api,
        };
        let guard = AbortOnDrop {
            id,
            commands: self.commands.clone(),
            armed: true,
        };
        if gen.stream {
            Ok(self.stream(rid, rx, guard, n, gen.include_usage))
        } else {
            self.collect(rid, rx, guard, n).await
        }
    }

    fn stream(
        &self,
        rid: ResponseId,
        rx: mpsc::UnboundedReceiver<TokenEvent>,
        guard: AbortOnDrop,
        prompt: u32,
        include_usage: bool,
    ) -> Response<Body> {
        let tokenizer = self.config.tokenizer.clone();
        struct St {
            rx: mpsc::UnboundedReceiver<TokenEvent>,
            guard: AbortOnDrop,
            rid: ResponseId,
            first: bool,
            done: bool,
        }
        let st = St {
            rx,
            guard,
            rid,
            first: true,
            done: false,
        };
        let body = stream::unfold(st, move |mut st| {
            let tokenizer = tokenizer.clone();
            async move {
                if st.done {
                    return None;
                }
                let frame = match st.rx.recv().await {
                    Some(TokenEvent::Token(t)) => {
                        let text = tokenizer.decode(&[t]);
                        let c = st.rid.chunk(&text, st.first, None);
                        st.first = false;
                        c
                    }
                    Some(TokenEvent::Done(f)) => {
                        st.done = true;
                        st.guard.armed = false;
                        let mut out = st.rid.chunk("", st.first, Some("length"));
                        if include_usage {
                            out.push_str(&st.rid.usage_chunk(Usage {
                                prompt,
                                completion: f.output_tokens,
                                cached: f.cached_tokens,
                            }));
                        }
                        out.push_str(openai::DONE);
                        out
                    }
                    None => {
                        st.done = true;
                        "data: {\"error\": {\"message\": \"engine stopped\", \"type\": \"InternalServerError\", \"code\": 500}}\n\n".to_string()
                    }
                };
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(frame))), st))
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    }

    async fn collect(
        &self,
        rid: ResponseId,
        mut rx: mpsc::UnboundedReceiver<TokenEvent>,
        mut guard: AbortOnDrop,
        prompt: u32,
    ) -> Result<Response<Body>, ApiError> {
        let mut ids = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                TokenEvent::Token(t) => ids.push(t),
                TokenEvent::Done(f) => {
                    guard.armed = false;
                    let text = self.config.tokenizer.decode(&ids);
                    let usage = Usage {
                        prompt,
                        completion: f.output_tokens,
                        cached: f.cached_tokens,
                    };
                    return Ok(full(
                        StatusCode::OK,
                        "application/json",
                        rid.full(&text, usage),
                    ));
                }
            }
        }
        Err(ApiError {
            status: 500,
            message: "engine stopped".into(),
            kind: "InternalServerError",
        })
    }
}

/// Aborts the engine request if the response is dropped before it finished
/// (the client went away), as vLLM does.
#[derive(Debug)]
struct AbortOnDrop {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.commands.send(Command::Abort(self.id));
        }
    }
}
