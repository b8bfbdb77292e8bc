//! A cheap stub engine for measuring proxy overhead: answers the OpenAI
//! completion routes instantly (a tiny non-streamed JSON body, or a
//! three-chunk SSE stream when asked) and every probe the routers send
//! (`/health`, `/v1/models`, `/model_info`, `/server_info`, `/metrics`,
//! `/tokenize`), tagging each answer with `x-worker-port`.
//!
//! `cargo run --release --example stub_backend -- PORT`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

async fn handle(
    port: u16,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stream = body
        .windows(14)
        .any(|w| w == b"\"stream\":true" || w == b"\"stream\": true");
    let (ctype, text): (&str, String) = match path.as_str() {
        "/v1/completions" | "/v1/chat/completions" if stream => (
            "text/event-stream",
            "data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"finish_reason\":null}]}\n\n\
             data: {\"choices\":[{\"index\":0,\"text\":\"b\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n\
             data: [DONE]\n\n"
                .to_string(),
        ),
        "/v1/completions" | "/v1/chat/completions" => (
            "application/json",
            r#"{"id":"cmpl-0","object":"text_completion","model":"fake-model","choices":[{"index":0,"text":"ab","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#.to_string(),
        ),
        "/v1/models" => ("application/json", r#"{"object":"list","data":[{"id":"fake-model","object":"model","owned_by":"stub"}]}"#.to_string()),
        "/model_info" | "/get_model_info" => ("application/json", r#"{"model_path":"fake-model","is_generation":true}"#.to_string()),
        "/server_info" | "/get_server_info" => ("application/json", r#"{"model_path":"fake-model"}"#.to_string()),
        "/tokenize" => ("application/json", r#"{"count":1,"max_model_len":4096,"tokens":[1]}"#.to_string()),
        "/metrics" => ("text/plain", "vllm:num_requests_running{engine=\"0\",model_name=\"fake-model\"} 0.0\nvllm:num_requests_waiting{engine=\"0\",model_name=\"fake-model\"} 0.0\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"fake-model\"} 0.0\n".to_string()),
        _ => ("text/plain", String::new()),
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        "content-type",
        ctype
            .parse()
            .unwrap_or(hyper::header::HeaderValue::from_static("text/plain")),
    );
    r.headers_mut().insert("x-worker-port", port.into());
    Ok(r)
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18001);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(move |r| handle(port, r)))
                    .await;
            });
        }
    })
}
