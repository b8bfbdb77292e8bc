//! One request, sent and measured: [`Prepared`] (the body, built before the
//! clock starts) and [`send`] (the exchange, timed chunk by chunk, turned
//! into a [`RequestRecord`]).
//!
//! Timing: `start` is taken just before the request is handed to the client;
//! TTFT is the arrival of the first chunk carrying generated text (vLLM's
//! role-only first chat chunk does not count); e2e ends at `[DONE]` (or the
//! end of the body); TPOT is `(e2e − ttft) / (output_tokens − 1)`, the mean
//! ITL the mean gap between consecutive text chunks. Several events in one
//! frame share that frame's arrival time.
//!
//! Failure is a field, not an error: connect failures, non-2xx statuses,
//! broken or truncated streams, in-stream error events, timeouts and aborts
//! each give a record with its [`ErrorKind`] and message.

use crate::config::Api;
use crate::http::{error_body_message, error_chain, read_body, BaseUrl, Client};
use crate::record::{ErrorKind, RequestRecord};
use crate::sse::{Chunk, SseEvent, SseParser, Usage};
use crate::LoadgenError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use hyper::Uri;
use kvroute_workload::Turn;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Router header naming the instance that served the request.
pub const HEADER_INSTANCE: &str = "x-kvroute-instance";
/// Router header with the prompt tokens it predicted cached there.
pub const HEADER_CACHED_TOKENS: &str = "x-kvroute-cached-tokens";

/// A request ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    uri: Uri,
    body: Bytes,
    /// Our own count of the prompt's tokens (used if the server reports none).
    pub(crate) prompt_tokens: u32,
    pub(crate) max_tokens: u32,
}

impl Prepared {
    /// The request for `turn`: chat with `messages`, or completions with
    /// `prompt_text` (token ids when there is no text). Chat turns without
    /// messages (token-only traces) go to `/v1/completions`.
    pub(crate) fn new(
        api: Api,
        base: &BaseUrl,
        model: &str,
        turn: &Turn,
        extra_body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Prepared, LoadgenError> {
        let use_chat = api == Api::Chat && !turn.messages.is_empty();
        let mut body = json!({
            "model": model,
            "max_tokens": turn.max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
            "ignore_eos": true,
        });
        let path = if use_chat {
            body["messages"] = json!(turn.messages);
            "/v1/chat/completions"
        } else {
            body["prompt"] = match &turn.prompt_text {
                Some(text) => json!(text),
                None => json!(turn.prompt_tokens),
            };
            "/v1/completions"
        };
        for (k, v) in extra_body {
            body[k] = v.clone();
        }
        Ok(Prepared {
            uri: base.join(path)?,
            body: Bytes::from(body.to_string()),
            prompt_tokens: u32::try_from(turn.prompt_tokens.len()).unwrap_or(u32::MAX),
            max_tokens: turn.max_tokens,
        })
    }
}

/// Who a record is about, filled in by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ident {
    pub(crate) id: u64,
    pub(crate) session: u64,
    pub(crate) turn: u32,
}

/// What was observed of one exchange so far (kept outside the exchange's
/// future so a timeout or abort still leaves the partial measurement).
#[derive(Debug, Default)]
struct Measure {
    status: u16,
    instance: Option<String>,
    predicted_cached: Option<u32>,
    first_text: Option<Instant>,
    last_text: Option<Instant>,
    text_chunks: u32,
    gaps: Vec<f64>,
    usage: Usage,
    done_at: Option<Instant>,
}

#[derive(Debug)]
struct Failure {
    kind: ErrorKind,
    message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl Measure {
    fn headers(&mut self, h: &HeaderMap) {
        self.instance = h
            .get(HEADER_INSTANCE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.predicted_cached = h
            .get(HEADER_CACHED_TOKENS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
    }

    fn usage(&mut self, u: Usage) {
        self.usage.prompt_tokens = u.prompt_tokens.or(self.usage.prompt_tokens);
        self.usage.completion_tokens = u.completion_tokens.or(self.usage.completion_tokens);
        self.usage.cached_tokens = u.cached_tokens.or(self.usage.cached_tokens);
    }

    fn text(&mut self, at: Instant) {
        self.first_text.get_or_insert(at);
        if let Some(last) = self.last_text {
            self.gaps
                .push(at.saturating_duration_since(last).as_secs_f64());
        }
        self.last_text = Some(at);
        self.text_chunks += 1;
    }

    fn event(&mut self, ev: &SseEvent, at: Instant) -> Result<(), Failure> {
        match Chunk::parse(ev).map_err(|m| Failure::new(ErrorKind::Protocol, m))? {
            Chunk::Done => {
                self.done_at.get_or_insert(at);
                Ok(())
            }
            Chunk::Error(m) => Err(Failure::new(ErrorKind::Server, format!("error event: {m}"))),
            Chunk::Data { text, usage } => {
                if text.is_some() {
                    self.text(at);
                }
                if let Some(u) = usage {
                    self.usage(u);
                }
                Ok(())
            }
        }
    }
}

/// The exchange itself; everything observed goes into `m`.
async fn exchange(client: &Client, p: &Prepared, m: &mut Measure) -> Result<(), Failure> {
    let req = hyper::Request::post(p.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "text/event-stream, application/json")
        .body(Full::new(p.body.clone()))
        .map_err(|e| Failure::new(ErrorKind::Protocol, e.to_string()))?;
    let resp = client
        .request_target(req)
        .await
        .map_err(|e| Failure::new(ErrorKind::Connect, error_chain(&e)))?;
    m.status = resp.status().as_u16();
    m.headers(resp.headers());
    if !resp.status().is_success() {
        let message = match read_body(resp.into_body()).await {
            Ok(body) => error_body_message(&body),
            Err(e) => e,
        };
        return Err(Failure::new(
            ErrorKind::Status,
            format!("HTTP {}: {message}", m.status),
        ));
    }
    let json_body = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut body = resp.into_body();
    if json_body {
        // The server ignored `stream`: one JSON answer.
        let bytes = read_body(body)
            .await
            .map_err(|e| Failure::new(ErrorKind::Stream, e))?;
        let at = Instant::now();
        return whole_response(&bytes, at, m);
    }
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    while m.done_at.is_none() {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(Failure::new(
                    ErrorKind::Stream,
                    format!("response body broke off: {}", error_chain(&e)),
                ))
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let at = Instant::now();
                parser.push(&data, &mut events);
                for ev in events.drain(..) {
                    m.event(&ev, at)?;
                }
            }
        }
    }
    if m.done_at.is_none() {
        let at = Instant::now();
        parser.finish(&mut events);
        for ev in events.drain(..) {
            m.event(&ev, at)?;
        }
    } else {
        // Read the (normally empty) rest so the connection can be reused,
        // but do not wait on a server that keeps the body open.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    }
    if m.done_at.is_none() {
        return Err(Failure::new(
            ErrorKind::Stream,
            "the stream ended without data: [DONE]",
        ));
    }
    if m.text_chunks == 0 && m.usage.completion_tokens.unwrap_or(0) == 0 {
        return Err(Failure::new(ErrorKind::Protocol, "no token was generated"));
    }
    Ok(())
}

fn whole_response(bytes: &[u8], at: Instant, m: &mut Measure) -> Result<(), Failure> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::new(ErrorKind::Protocol, format!("bad JSON answer: {e}")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(Failure::new(
            ErrorKind::Server,
            crate::sse::error_message(err),
        ));
    }
    if let Some(u) = v.get("usage").and_then(Usage::from_json) {
        m.usage(u);
    }
    m.text(at);
    m.done_at = Some(at);
    Ok(())
}

/// The run-wide facts [`send`] needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendCtx<'a> {
    pub(crate) client: &'a Client,
    /// Where requests go (the `instance` when the router does not say).
    pub(crate) target: &'a BaseUrl,
    pub(crate) timeout: Duration,
    /// Start of the run (`start` is relative to it).
    pub(crate) t0: Instant,
    /// Requests started before `t0 + warmup` are warm-up.
    pub(crate) warmup: Duration,
}

/// Send `p`, measure it, and describe it. `abort` turning true cancels the
/// request (an [`ErrorKind::Aborted`] record).
pub(crate) async fn send(
    ctx: SendCtx<'_>,
    who: Ident,
    p: &Prepared,
    abort: &mut watch::Receiver<bool>,
) -> RequestRecord {
    let mut m = Measure::default();
    let start = Instant::now();
    let outcome = tokio::select! {
        biased;
        _ = abort.wait_for(|stop| *stop) => Err(Failure::new(ErrorKind::Aborted, "aborted: the run was interrupted")),
        r = tokio::time::timeout(ctx.timeout, exchange(ctx.client, p, &mut m)) => match r {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!("timed out after {:.3} s", ctx.timeout.as_secs_f64()),
            )),
        },
    };
    let end = m.done_at.unwrap_or_else(Instant::now);
    let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let ttft = m.first_text.map_or(f64::NAN, secs);
    let e2e = secs(end);
    let output_tokens = m.usage.completion_tokens.unwrap_or(m.text_chunks);
    let (error_kind, error) = match outcome {
        Ok(()) => (None, String::new()),
        Err(f) => (Some(f.kind), f.message),
    };
    let ok = error_kind.is_none();
    let tpot = (ok && output_tokens > 1 && ttft.is_finite())
        .then(|| (e2e - ttft) / f64::from(output_tokens - 1));
    let itl_mean = match (m.first_text, m.last_text) {
        (Some(a), Some(b)) if ok && m.text_chunks > 1 => {
            Some(b.saturating_duration_since(a).as_secs_f64() / f64::from(m.text_chunks - 1))
        }
        _ => None,
    };
    let since_t0 = start.saturating_duration_since(ctx.t0);
    RequestRecord {
        id: who.id,
        session: who.session,
        turn: who.turn,
        instance: m
            .instance
            .unwrap_or_else(|| ctx.target.as_str().to_string()),
        status: m.status,
        error,
        start: since_t0.as_secs_f64(),
        ttft,
        tpot,
        itl_mean,
        e2e,
        prompt_tokens: m.usage.prompt_tokens.unwrap_or(p.prompt_tokens),
        cached_tokens: m.usage.cached_tokens,
        predicted_cached_tokens: m.predicted_cached,
        output_tokens,
        engine_ttft: None,
        engine_e2e: None,
        error_kind,
        warmup: since_t0 < ctx.warmup,
        max_tokens: p.max_tokens,
        itls: if ok { m.gaps } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_workload::ChatMessage;

    fn turn(messages: bool, text: bool) -> Turn {
        Turn {
            messages: if messages {
                vec![ChatMessage::user("hi")]
            } else {
                vec![]
            },
            prompt_text: text.then(|| "<|im_start|>user\nhi".to_string()),
            prompt_tokens: vec![1, 2, 3],
            max_tokens: 7,
        }
    }

    fn body(p: &Prepared) -> serde_json::Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    #[test]
    fn request_bodies() {
        let base = BaseUrl::parse("http://h:1").unwrap();
        let none = serde_json::Map::new();
        let chat = Prepared::new(Api::Chat, &base, "tiny", &turn(true, true), &none).unwrap();
        assert_eq!(chat.uri.path(), "/v1/chat/completions");
        let b = body(&chat);
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["stream"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["model"], "tiny");
        assert!(b.get("prompt").is_none());

        let text = Prepared::new(Api::Completions, &base, "m", &turn(true, true), &none).unwrap();
        assert_eq!(text.uri.path(), "/v1/completions");
        assert_eq!(body(&text)["prompt"], "<|im_start|>user\nhi");
        // A token-only trace turn: completions with ids, whatever the API.
        for api in [Api::Chat, Api::Completions] {
            let ids = Prepared::new(api, &base, "m", &turn(false, false), &none).unwrap();
            assert_eq!(ids.uri.path(), "/v1/completions");
            assert_eq!(body(&ids)["prompt"], json!([1, 2, 3]));
            assert_eq!(ids.prompt_tokens, 3);
        }
        // --extra-body: new fields added, loadgen's own overridden.
        let extra = json!({"temperature": 0.5, "ignore_eos": false, "chat_template_kwargs": {"enable_thinking": false}});
        let extra = extra.as_object().unwrap();
        let b = body(&Prepared::new(Api::Chat, &base, "tiny", &turn(true, true), extra).unwrap());
        assert_eq!(b["temperature"], 0.5);
        assert_eq!(b["ignore_eos"], false);
        assert_eq!(b["chat_template_kwargs"]["enable_thinking"], false);
        assert_eq!(b["max_tokens"], 7);
    }

    #[test]
    fn router_headers() {
        let mut h = HeaderMap::new();
        h.insert(HEADER_INSTANCE, "http://127.0.0.1:8001".parse().unwrap());
        h.insert(HEADER_CACHED_TOKENS, "96".parse().unwrap());
        let mut m = Measure::default();
        m.headers(&h);
        assert_eq!(m.instance.as_deref(), Some("http://127.0.0.1:8001"));
        assert_eq!(m.predicted_cached, Some(96));
    }
}
