//! Shared fixtures: emulated vLLM engines, ShareGPT slices, and
//! [`Scripted`], a tiny OpenAI-style server whose answer is chosen by the
//! request's last message (`ok`, `500`, `cut`, `error-event`, `no-done`,
//! `hang`, `slow`, and `auth`: 401 unless the request carries
//! `Authorization: Bearer sk-test` and `x-tenant: blue`; its answer has as
//! many tokens as the body's `max_tokens`, so `--extra-body` shows).

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kvroute_core::Nanos;
use kvroute_emulator::{spawn, EmulatorConfig, Running};
use kvroute_sim::Profile;
use kvroute_workload::{
    build_workload, embedded_qwen3_template, embedded_qwen3_tokenizer, ArrivalSpec, ChatMessage,
    ChatTemplate, Session, ShareGptSpec, Tokenizer, Turn, WorkloadSpec,
};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

pub fn tokenizer() -> Arc<Tokenizer> {
    static T: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| Arc::new(embedded_qwen3_tokenizer().unwrap()))
        .clone()
}

pub fn template() -> Arc<ChatTemplate> {
    static T: OnceLock<Arc<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| Arc::new(embedded_qwen3_template().unwrap()))
        .clone()
}

/// An emulated vLLM-CPU engine running `speedup` times faster than real time.
pub async fn engine(speedup: f64) -> Running {
    let mut c = EmulatorConfig::new(Profile::load("vllm-cpu-tiny").unwrap(), tokenizer());
    c.speedup = speedup;
    c.chat_template = Some(template());
    spawn(c).await.unwrap()
}

/// The first `sessions` ShareGPT conversations of the shipped sample, at
/// most `turns` turns each, `max_prompt` prompt tokens and `max_out` output
/// tokens per turn.
pub fn sharegpt(
    sessions: usize,
    turns: usize,
    max_prompt: usize,
    max_out: u32,
    think_s: f64,
    arrival: ArrivalSpec,
) -> Vec<Session> {
    let spec = WorkloadSpec::Sharegpt(ShareGptSpec {
        max_sessions: Some(sessions),
        max_turns: Some(turns),
        max_output_tokens: max_out,
        max_prompt_tokens: Some(max_prompt),
        think_time_s: think_s,
        ..ShareGptSpec::default()
    });
    build_workload(&spec, &arrival, &tokenizer(), Some(&template()), 7)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A one-turn session whose message tells [`Scripted`] how to answer.
pub fn scripted_session(id: u64, mode: &str, max_tokens: u32) -> Session {
    Session::single(
        id,
        Nanos::ZERO,
        Turn {
            messages: vec![ChatMessage::user(mode)],
            prompt_text: None,
            prompt_tokens: vec![1, 2, 3],
            max_tokens,
        },
    )
}

/// A free port (nothing listens on it any more).
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

type Body = BoxBody<Bytes, std::io::Error>;

/// A scripted OpenAI-style server (see the module docs). Dropped with the
/// test's runtime.
pub struct Scripted {
    pub addr: SocketAddr,
}

impl Scripted {
    pub async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
        });
        Scripted { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

fn chunk(text: &str) -> Bytes {
    let v = serde_json::json!({"object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    Bytes::from(format!("data: {v}\n\n"))
}

fn usage(n: u64) -> Bytes {
    let v = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
        "total_tokens": 3 + n, "prompt_tokens_details": {"cached_tokens": 0}}});
    Bytes::from(format!("data: {v}\n\n"))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/v1/models" {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            r#"{"object":"list","data":[{"id":"scripted","object":"model"}]}"#,
        ));
    }
    if path != "/v1/chat/completions" {
        return Ok(full(StatusCode::NOT_FOUND, "text/plain", "not found"));
    }
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer sk-test")
        && req.headers().get("x-tenant").is_some_and(|v| v == "blue");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mode = v["messages"][0]["content"]
        .as_str()
        .unwrap_or("ok")
        .to_string();
    let n = v["max_tokens"].as_u64().unwrap_or(4);
    if mode == "auth" && !authorized {
        return Ok(full(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"error": {"message": "scripted: missing or wrong key", "type": "Unauthorized", "code": 401}}"#,
        ));
    }
    if mode == "500" {
        return Ok(full(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            r#"{"error": {"message": "scripted failure", "type": "InternalServerError", "code": 500}}"#,
        ));
    }
    let (mut tx, rx) = Channel::<Bytes, std::io::Error>::new(16);
    tokio::spawn(async move {
        let delay = if mode == "slow" { 50 } else { 2 };
        let _ = tx.send_data(chunk("a")).await;
        match mode.as_str() {
            "cut" => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.abort(std::io::Error::other("scripted cut"));
            }
            "error-event" => {
                let _ = tx
                    .send_data(Bytes::from_static(
                        b"data: {\"error\": {\"message\": \"scripted error event\", \"code\": 500}}\n\n",
                    ))
                    .await;
            }
            "hang" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            _ => {
                for _ in 1..n {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = tx.send_data(chunk("b")).await;
                }
                let _ = tx.send_data(usage(n)).await;
                if mode != "no-done" {
                    let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
                }
            }
        }
    });
    let mut r = Response::new(rx.boxed());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r.headers_mut()
        .insert("x-kvroute-instance", "scripted-0".parse().unwrap());
    r.headers_mut()
        .insert("x-kvroute-cached-tokens", "2".parse().unwrap());
    Ok(r)
}
