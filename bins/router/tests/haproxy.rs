//! Scale-out with real parts: two router processes behind HAProxy (the
//! Debian package), each subscribed to every engine's KV events (exact mode;
//! the emulated engines bind their publishers as vLLM does, so any number of
//! routers can subscribe). The same multi-turn conversations keep the prefix
//! hit rate of a single router within [`HIT_RATE_TOLERANCE`], and killing one
//! replica (SIGKILL) mid-run loses no request: HAProxy's health check takes it
//! out and its layer-7 retries resend what the dead replica never answered.
//!
//! Needs `haproxy` on PATH (`scripts/test.sh` installs it); without it the
//! test says so and passes, except under `CI=true` where it fails.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use kvroute_emulator::{spawn_on, EmulatorConfig, Running};
use kvroute_kvevents::Endpoint;
use kvroute_sim::Profile;
use kvroute_tokenize::{ChatTemplate, Tokenizer};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest difference in engine-reported prefix hit rate (cached prompt
/// tokens ÷ prompt tokens) between two replicas behind HAProxy and one
/// router alone, absolute.
const HIT_RATE_TOLERANCE: f64 = 0.05;
const CONVERSATIONS: usize = 12;
const TURNS: usize = 5;

fn qwen3() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/tokenizers/qwen3")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two emulated engines publishing KV events on ports they bind.
async fn engines() -> (Vec<Running>, Vec<u16>) {
    let tokenizer = Arc::new(Tokenizer::from_file(qwen3().join("tokenizer.json.gz")).unwrap());
    let template = Arc::new(
        ChatTemplate::from_tokenizer_config(qwen3().join("tokenizer_config.json")).unwrap(),
    );
    let profile = Profile::load("vllm-cpu-tiny").unwrap();
    let (mut running, mut kv) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let port = free_port();
        let mut ec = EmulatorConfig::new(profile.clone(), Arc::clone(&tokenizer));
        ec.speedup = 20.0;
        ec.chat_template = Some(Arc::clone(&template));
        ec.kv_events = Some(Endpoint::Bind(format!("tcp://127.0.0.1:{port}")));
        running.push(spawn_on(ec, free_port()).await.unwrap());
        kv.push(port);
    }
    (running, kv)
}

/// A router process in exact mode in front of `engines`.
fn router(engines: &[Running], kv: &[u16]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_router"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--policy", "cache_affinity", "--directory-mode", "exact"])
        .args(["--block-size", "32"])
        .arg("--tokenizer")
        .arg(qwen3().join("tokenizer.json.gz"))
        .arg("--chat-template")
        .arg(qwen3().join("tokenizer_config.json"));
    for (e, k) in engines.iter().zip(kv) {
        cmd.args(["--instance", &e.url()]).args([
            "--kv-events",
            &format!("{}=connect:tcp://127.0.0.1:{k}", e.url()),
        ]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn get_status(c: &HttpClient, url: &str) -> Option<u16> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    Some(c.request(req).await.ok()?.status().as_u16())
}

/// Wait until `url` answers 200 (a readiness signal, polled).
async fn ready(c: &HttpClient, url: &str, what: &str) {
    let t = Instant::now();
    while get_status(c, url).await != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(20), "{what} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the router's KV-event subscriptions are live: every engine
/// counts a subscriber per router.
async fn subscribed(c: &HttpClient, router: &str) {
    let t = Instant::now();
    loop {
        let req = hyper::Request::get(format!("{router}/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let text = match c.request(req).await {
            Ok(r) => String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes())
                .into_owned(),
            Err(_) => String::new(),
        };
        let connected = text
            .lines()
            .filter(|l| l.starts_with("kvroute_kv_event_publishers{"))
            .filter(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
            })
            .count();
        if connected == 2 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "router {router} not subscribed to both engines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One chat turn; the engine's (prompt, cached) tokens, or the failure.
async fn turn(
    c: &HttpClient,
    url: &str,
    messages: &[serde_json::Value],
) -> Result<(u64, u64), String> {
    let body = serde_json::json!({"model": "tiny", "messages": messages, "max_tokens": 6});
    let req = hyper::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let u = &v["usage"];
    Ok((
        u["prompt_tokens"].as_u64().unwrap_or(0),
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
    ))
}

/// The conversations, each a long system prompt of its own (so they spread
/// over both engines) and `TURNS` questions; conversations run at once,
/// turns in order. Calls `at_half` once half the turns are done. Returns
/// the hit rate and the failures.
async fn converse(c: &HttpClient, url: &str, at_half: impl FnOnce() + Send) -> (f64, Vec<String>) {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..CONVERSATIONS {
        let (c, url, done) = (c.clone(), url.to_string(), Arc::clone(&done));
        tasks.spawn(async move {
            let mut messages = vec![serde_json::json!({"role": "system", "content": format!(
                "You are assistant number {k}. Answer questions about topic {k} in detail, \
                 citing sources and dates wherever you can. {}",
                format!("Background for topic {k}: a long briefing paragraph. ").repeat(12)
            )})];
            let (mut prompt, mut cached, mut failures) = (0, 0, Vec::new());
            for t in 0..TURNS {
                messages.push(serde_json::json!({"role": "user", "content": format!(
                    "Question {t} of conversation {k}: what happened next, and why?"
                )}));
                match turn(&c, &url, &messages).await {
                    Ok((p, h)) => {
                        prompt += p;
                        cached += h;
                        messages
                            .push(serde_json::json!({"role": "assistant", "content": "Noted."}));
                    }
                    Err(e) => failures.push(format!("conversation {k} turn {t}: {e}")),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (prompt, cached, failures)
        });
    }
    let mut at_half = Some(at_half);
    let half = CONVERSATIONS * TURNS / 2;
    let (mut prompt, mut cached, mut failures) = (0u64, 0u64, Vec::new());
    loop {
        if done.load(std::sync::atomic::Ordering::Relaxed) >= half {
            if let Some(f) = at_half.take() {
                f();
            }
        }
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => {
                    let (p, h, f) = r.unwrap();
                    prompt += p;
                    cached += h;
                    failures.extend(f);
                }
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    (cached as f64 / prompt.max(1) as f64, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_haproxy_keep_the_hit_rate_and_survive_a_kill() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "haproxy is not installed (apt-get install haproxy)"
        );
        eprintln!("skipped: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // One router alone, on its own engines.
    let (solo_engines, solo_kv) = engines().await;
    let (_solo, solo_url) = router(&solo_engines, &solo_kv);
    ready(&c, &format!("{solo_url}/health"), "router").await;
    subscribed(&c, &solo_url).await;
    let (solo_hit, solo_failures) = converse(&c, &solo_url, || {}).await;
    assert!(solo_failures.is_empty(), "{solo_failures:?}");

    // Two replicas behind HAProxy, on fresh engines; one killed mid-run.
    let (engines, kv) = engines().await;
    let (r1, url1) = router(&engines, &kv);
    let (r2, url2) = router(&engines, &kv);
    for u in [&url1, &url2] {
        ready(&c, &format!("{u}/health"), "router").await;
        subscribed(&c, u).await;
    }
    let lb_port = free_port();
    let server = |name: &str, url: &str| {
        format!(
            "    server {name} {} check inter 100ms fall 1 rise 1\n",
            url.trim_start_matches("http://")
        )
    };
    let cfg = format!(
        "global\n    maxconn 256\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response response-timeout\n\
         frontend fe\n    bind 127.0.0.1:{lb_port}\n    default_backend routers\n\
         backend routers\n    balance roundrobin\n    option httpchk GET /health\n{}{}",
        server("r1", &url1),
        server("r2", &url2)
    );
    let dir = std::env::temp_dir().join(format!("kvroute-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _lb = Proc(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lb_url = format!("http://127.0.0.1:{lb_port}");
    ready(&c, &format!("{lb_url}/health"), "haproxy").await;

    let mut r2 = Some(r2);
    let (hit, failures) = converse(&c, &lb_url, || {
        // SIGKILL: no drain, in-flight requests cut.
        drop(r2.take());
    })
    .await;
    assert!(r2.is_none(), "the replica was killed mid-run");
    eprintln!("prefix hit rate: one router {solo_hit:.3}, two replicas behind HAProxy (one killed) {hit:.3}");
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    assert!(
        (hit - solo_hit).abs() <= HIT_RATE_TOLERANCE,
        "hit rate behind HAProxy {hit:.3} vs one router {solo_hit:.3}"
    );
    assert!(
        solo_hit > 0.5,
        "the conversations reuse their prefixes: {solo_hit:.3}"
    );
    drop(r1);
    let _ = std::fs::remove_dir_all(&dir);
}
