//! The emulated engine over real HTTP and ZMQ on 127.0.0.1: OpenAI responses,
//! SSE streaming, prefix-cache hits, vLLM `/metrics`, and KV events whose
//! block hashes are vLLM's `sha256_cbor` of the prompt.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kvroute_core::{BlockHasher, HashAlgo, KvEvent};
use kvroute_emulator::{spawn, EmulatorConfig, Running};
use kvroute_kvevents::{Endpoint, Subscriber};
use kvroute_metrics::Scrape;
use kvroute_sim::Profile;
use kvroute_workload::{ChatTemplate, Tokenizer};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

fn tokenizer() -> Arc<Tokenizer> {
    static T: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        Arc::new(
            Tokenizer::from_file(datasets().join("tokenizers/qwen3/tokenizer.json.gz")).unwrap(),
        )
    })
    .clone()
}

fn config() -> EmulatorConfig {
    let mut c = EmulatorConfig::new(Profile::load("vllm-cpu-tiny").unwrap(), tokenizer());
    c.speedup = 20.0;
    c.chat_template = Some(Arc::new(
        ChatTemplate::from_tokenizer_config(
            datasets().join("tokenizers/qwen3/tokenizer_config.json"),
        )
        .unwrap(),
    ));
    c
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn request(c: &HttpClient, method: &str, url: String, body: &str) -> (u16, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(c: &HttpClient, e: &Running, path: &str, body: serde_json::Value) -> (u16, String) {
    request(c, "POST", format!("{}{path}", e.url()), &body.to_string()).await
}

async fn metrics(c: &HttpClient, e: &Running) -> Scrape {
    let (s, text) = request(c, "GET", format!("{}/metrics", e.url()), "").await;
    assert_eq!(s, 200);
    Scrape::parse(&text).unwrap()
}

fn sse_events(body: &str) -> Vec<serde_json::Value> {
    body.split("\n\n")
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn completions_stream_cache_and_metrics() {
    let e = spawn(config()).await.unwrap();
    let c = client();
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(30);
    let body = serde_json::json!({"model": "tiny", "prompt": prompt, "max_tokens": 5, "stream": true,
                                   "stream_options": {"include_usage": true}, "ignore_eos": true});
    let (s, text) = post(&c, &e, "/v1/completions", body.clone()).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events = sse_events(&text);
    let with_text = events
        .iter()
        .filter(|v| {
            v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(with_text >= 4, "one chunk per token: {text}");
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    // The same prompt again: every full block but the last is a hit.
    let (_, text) = post(&c, &e, "/v1/completions", body).await;
    let usage = sse_events(&text).last().unwrap()["usage"].clone();
    let n = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        (n - 1) / 32 * 32
    );

    let m = metrics(&c, &e).await;
    assert_eq!(
        m.histogram("vllm:time_to_first_token_seconds")
            .unwrap()
            .count,
        2.0
    );
    assert_eq!(m.counter("vllm:prompt_tokens").unwrap(), 2.0 * n as f64);
    assert!(m.counter("vllm:prefix_cache_hits").unwrap() > 0.0);
    assert_eq!(m.gauge("vllm:num_requests_running"), Some(0.0));
    e.stop().await.unwrap();
}

#[tokio::test]
async fn chat_and_errors_look_like_vllm() {
    let e = spawn(config()).await.unwrap();
    let c = client();
    let (s, text) = post(&c, &e, "/v1/chat/completions",
        serde_json::json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})).await;
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let (s, text) = post(
        &c,
        &e,
        "/v1/completions",
        serde_json::json!({"model": "other", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404);
    assert!(text.contains("does not exist"));
    let (s, _) = post(
        &c,
        &e,
        "/v1/completions",
        serde_json::json!({"prompt": "x", "max_tokens": 100000}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = request(
        &c,
        "POST",
        format!("{}/v1/completions", e.url()),
        "{not json",
    )
    .await;
    assert_eq!(s, 400);
    let (s, text) = request(&c, "GET", format!("{}/v1/models", e.url()), "").await;
    assert_eq!(s, 200);
    assert!(text.contains("\"tiny\""));
    let (s, _) = request(&c, "GET", format!("{}/health", e.url()), "").await;
    assert_eq!(s, 200);
    e.stop().await.unwrap();
}

#[tokio::test]
async fn kv_events_carry_vllm_block_hashes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let mut sub = Subscriber::open(Endpoint::Bind(addr.clone()), Default::default())
        .await
        .unwrap();
    let mut cfg = config();
    cfg.kv_events = Some(Endpoint::Connect(addr));
    let e = spawn(cfg).await.unwrap();
    let c = client();
    let tokens: Vec<u32> = (100..420).collect(); // 10 full blocks of 32
                                                 // The first messages may be lost while the connection comes up: repeat
                                                 // distinct prompts until one batch arrives, then check the next exactly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = post(
        &c,
        &e,
        "/v1/completions",
        serde_json::json!({"prompt": tokens, "max_tokens": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let hasher = BlockHasher::new(HashAlgo::Sha256Cbor, 32).unwrap();
    let want = hasher.hash_blocks(&tokens);
    let mut stored = Vec::new();
    while stored.len() < want.len() {
        let r = tokio::time::timeout(Duration::from_secs(5), sub.recv_batch())
            .await
            .expect("KV events arrive")
            .unwrap();
        for ev in r.batch.events {
            if let KvEvent::BlockStored { block_hashes, .. } = ev {
                stored.extend(block_hashes);
            }
        }
    }
    assert_eq!(stored[..want.len()], want[..]);
    e.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_frees_the_engine() {
    let e = spawn(config()).await.unwrap();
    let c = client();
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{}/v1/completions", e.url()))
        .body(Full::new(Bytes::from(
            serde_json::json!({"prompt": "hello there", "max_tokens": 2000, "stream": true})
                .to_string(),
        )))
        .unwrap();
    let mut resp = c.request(req).await.unwrap().into_body();
    let first = resp.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(resp);
    let mut running = 1.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        running = metrics(&c, &e)
            .await
            .gauge("vllm:num_requests_running")
            .unwrap();
        if running == 0.0 {
            break;
        }
    }
    assert_eq!(running, 0.0, "the aborted request left the batch");
    e.stop().await.unwrap();
}
