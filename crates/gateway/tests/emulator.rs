//! End to end against the emulated vLLM engine (`kvroute-emulator`): with the
//! real Qwen3 tokenizer and chat template and KV events in vLLM's format,
//! the router's predicted cached tokens equal the engine's actual hits.

use crate::common::*;
use kvroute_core::InstanceId;
use kvroute_directory::Mode;
use kvroute_emulator::{spawn_on, EmulatorConfig};
use kvroute_gateway::{InstanceConfig, PromptInput};
use kvroute_kvevents::Endpoint;
use kvroute_sim::Profile;
use kvroute_tokenize::{ChatMessage, ChatTemplate, Tokenizer};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

fn qwen3() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/tokenizers/qwen3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_mode_predictions_equal_the_engines_cache_hits() {
    let tokenizer = Arc::new(Tokenizer::from_file(qwen3().join("tokenizer.json.gz")).unwrap());
    let template = Arc::new(
        ChatTemplate::from_tokenizer_config(qwen3().join("tokenizer_config.json")).unwrap(),
    );
    let profile = Profile::load("vllm-cpu-tiny").unwrap();
    let block_size = profile.limits.block_size as usize;

    // Ports first: the router binds the KV-event sockets, the engines connect.
    let engines: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let mut cfg = config("cache_affinity", &[]);
    cfg.hashing.block_size = block_size;
    cfg.hashing.tokenizer = Some(qwen3().join("tokenizer.json.gz"));
    cfg.hashing.chat_template = Some(qwen3().join("tokenizer_config.json"));
    cfg.directory.mode = Mode::Exact;
    cfg.metrics_interval_secs = 0.1;
    cfg.instances = engines
        .iter()
        .map(|(http, kv)| {
            InstanceConfig::new(format!("http://127.0.0.1:{http}"))
                .with_kv_events(format!("bind:tcp://127.0.0.1:{kv}"))
        })
        .collect();
    let r = router(cfg).await;
    let mut running = Vec::new();
    for (http, kv) in &engines {
        let mut ec = EmulatorConfig::new(profile.clone(), Arc::clone(&tokenizer));
        ec.speedup = 20.0;
        ec.chat_template = Some(Arc::clone(&template));
        ec.kv_events = Some(Endpoint::Connect(format!("tcp://127.0.0.1:{kv}")));
        running.push(spawn_on(ec, *http).await.unwrap());
    }
    r.eventually(5.0, "engines connected to the KV sockets", |r| {
        r.gw.engines().iter().all(|u| u.ext().kv.connected())
    })
    .await;
    r.eventually(5.0, "engine cache config polled", |r| {
        r.gw.engines()
            .iter()
            .all(|u| u.ext().engine.block_size.load(Relaxed) as usize == block_size)
    })
    .await;

    let c = client();
    let mut messages = vec![ChatMessage::system(
        "You are a meticulous assistant. Answer every question about the history of \
         computing with dates, names and a short explanation of why it mattered. "
            .repeat(3),
    )];
    let mut home: Option<String> = None;
    for turn in 0..4 {
        messages.push(ChatMessage::user(format!(
            "Question {turn}: who built one of the first stored-program computers, and in which year did it run its first program? Please be precise."
        )));
        let body =
            serde_json::json!({"model": "tiny", "messages": messages, "max_tokens": 8}).to_string();
        let ans = post(&c, &r.url("/v1/chat/completions"), &body).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        let inst = ans.header("x-kvroute-instance").to_string();
        let predicted: u64 = ans.header("x-kvroute-cached-tokens").parse().unwrap();
        let usage = &ans.json()["usage"];
        let actual = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
        let (ours, hashes) =
            r.gw.encoder()
                .encode(&PromptInput::Chat(messages.clone()))
                .unwrap();
        assert_eq!(
            u64::from(ours),
            prompt_tokens,
            "router and engine tokenize alike"
        );
        assert_eq!(
            predicted, actual,
            "turn {turn}: predicted vs the engine's cached tokens"
        );
        if turn > 0 {
            assert!(actual > 0);
            assert_eq!(
                home.as_deref(),
                Some(inst.as_str()),
                "the conversation stays"
            );
        }
        home = Some(inst.clone());
        // Wait until the engine's events for this prompt reached the directory.
        let id = r.gw.find(&inst).unwrap();
        let last = *hashes.last().unwrap();
        r.eventually(5.0, "events applied", |r| {
            r.gw.dispatcher()
                .directory()
                .with_index(|ix| ix.contains(id, last))
        })
        .await;
        let reply = ans.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        messages.push(ChatMessage::assistant(reply));
    }
    let id = r.gw.find(home.as_deref().unwrap()).unwrap();
    let entry = r.gw.engine(id).unwrap();
    let up = entry.ext();
    assert!(up.kv.batches.load(Relaxed) > 0);
    assert_eq!(up.kv.gaps.load(Relaxed), 0);
    assert_eq!(r.gw.dispatcher().directory().mode(id), Mode::Exact);
    r.eventually(5.0, "engine hits mirrored", |r| {
        r.gw.engine(id)
            .unwrap()
            .ext()
            .engine
            .prefix_cache_hits
            .load(Relaxed)
            > 0
    })
    .await;
    assert_eq!(r.total_inflight(), 0);
    let _ = InstanceId(0);
    r.shutdown().await;
    for e in running {
        let _ = tokio::time::timeout(Duration::from_secs(5), e.stop()).await;
    }
}

#[tokio::test]
async fn long_prompts_are_tokenized_with_the_real_tokenizer_off_the_runtime() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("cache_affinity", &[&a]);
    cfg.hashing.block_size = 16;
    cfg.hashing.tokenizer = Some(qwen3().join("tokenizer.json.gz"));
    let r = router(cfg).await;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(1000); // 45 KB
    let tokens =
        r.gw.encoder()
            .encode(&PromptInput::Text(text.as_str().into()))
            .unwrap()
            .0;
    assert!(tokens > 5000, "{tokens}");
    let c = client();
    let first = post(&c, &r.url("/v1/completions"), &completion(&text, false)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-kvroute-cached-tokens"), "0");
    let again = post(&c, &r.url("/v1/completions"), &completion(&text, false)).await;
    let cached: u32 = again.header("x-kvroute-cached-tokens").parse().unwrap();
    assert_eq!(cached, tokens / 16 * 16);
    r.shutdown().await;
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../http/testdata")
        .join(name)
}

/// Engines served over https (vLLM's --ssl-certfile/--ssl-keyfile) behind
/// the router, their certificate signed by a private CA the router is told
/// to trust; a CA file that does not exist is refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_engines_with_a_private_ca() {
    let tokenizer = Arc::new(Tokenizer::from_file(qwen3().join("tokenizer.json.gz")).unwrap());
    let mut ec = EmulatorConfig::new(Profile::load("vllm-cpu-tiny").unwrap(), tokenizer);
    ec.speedup = 20.0;
    ec.tls =
        Some(kvroute_http::server_tls(&testdata("server.pem"), &testdata("server.key")).unwrap());
    let engine = spawn_on(ec, 0).await.unwrap();
    assert!(engine.url().starts_with("https://"));

    let mut cfg = config("round_robin", &[]);
    cfg.instances = vec![InstanceConfig::new(engine.url())];
    cfg.proxy.ca_file = Some(testdata("missing-ca.pem"));
    let Err(err) = kvroute_gateway::Gateway::new(cfg.clone()) else {
        panic!("a missing CA file is refused");
    };
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    cfg.proxy.ca_file = Some(testdata("ca.pem"));
    cfg.proxy.http2 = true; // offered by ALPN; the engine answers in HTTP/1.1
    cfg.metrics_interval_secs = 0.1;
    let r = router(cfg).await;
    r.eventually(5.0, "its /metrics polled over https", |r| {
        r.gw.engines()[0].ext().engine.polls_ok.load(Relaxed) > 0
    })
    .await;
    r.eventually(5.0, "the https engine is healthy", |r| {
        r.gw.healthy_count() == 1
    })
    .await;
    let c = client();
    for _ in 0..3 {
        let body =
            serde_json::json!({"model": "tiny", "prompt": "hello over TLS", "max_tokens": 4});
        let a = post(&c, &r.url("/v1/completions"), &body.to_string()).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("x-kvroute-instance"), engine.url());
        assert!(a.json()["choices"][0]["text"].is_string(), "{}", a.text());
    }
    r.shutdown().await;
}

/// Token-id prompts (`/v1/completions` with `prompt: [ids]`, as traces and
/// synthetic benchmarks send them) in exact mode: the router hashes the ids
/// as given, the engine's KV events carry the same block hashes, and the
/// predicted cached tokens equal the engine's. With a load-only policy
/// (which predicts nothing cached) the feed checks must not take the
/// engine's hits for a hash mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_mode_with_token_id_prompts() {
    token_id_prompts_in_exact_mode("cache_affinity").await;
    token_id_prompts_in_exact_mode("round_robin").await;
}

async fn token_id_prompts_in_exact_mode(policy: &str) {
    let tokenizer = Arc::new(Tokenizer::from_file(qwen3().join("tokenizer.json.gz")).unwrap());
    let profile = Profile::load("vllm-cpu-tiny").unwrap();
    let block_size = profile.limits.block_size as usize;
    let (http, kv) = (free_port(), free_port());
    let mut cfg = config(policy, &[]);
    cfg.hashing.block_size = block_size;
    cfg.hashing.tokenizer = Some(qwen3().join("tokenizer.json.gz"));
    cfg.directory.mode = Mode::Exact;
    cfg.metrics_interval_secs = 0.05;
    cfg.instances = vec![InstanceConfig::new(format!("http://127.0.0.1:{http}"))
        .with_kv_events(format!("bind:tcp://127.0.0.1:{kv}"))];
    let r = router(cfg).await;
    let mut ec = EmulatorConfig::new(profile, tokenizer);
    ec.speedup = 20.0;
    ec.kv_events = Some(Endpoint::Connect(format!("tcp://127.0.0.1:{kv}")));
    let engine = spawn_on(ec, http).await.unwrap();
    r.eventually(5.0, "engine connected and healthy", |r| {
        r.gw.engines().iter().all(|u| u.ext().kv.connected()) && r.gw.healthy_count() == 1
    })
    .await;
    let c = client();
    let shared: Vec<u32> = (1000..1000 + 4 * block_size as u32).collect();
    for k in 0..12u32 {
        let mut prompt = shared.clone();
        prompt.extend((0..block_size as u32).map(|i| 5000 + 100 * k + i));
        let body = serde_json::json!({"model": "tiny", "prompt": prompt, "max_tokens": 2});
        let ans = post(&c, &r.url("/v1/completions"), &body.to_string()).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        let actual = ans.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0);
        if k > 0 {
            assert_eq!(actual, 4 * block_size as u64, "{policy}: request {k}");
        }
        if policy == "cache_affinity" {
            let predicted: u64 = ans.header("x-kvroute-cached-tokens").parse().unwrap();
            assert_eq!(predicted, actual, "{policy}: request {k}");
        }
        let (_, hashes) = r.gw.encoder().encode(&PromptInput::Tokens(prompt)).unwrap();
        let last = *hashes.last().unwrap();
        r.eventually(5.0, "events applied", |r| {
            r.gw.dispatcher()
                .directory()
                .with_index(|ix| ix.contains(InstanceId(0), last))
        })
        .await;
        // Let the poller see this request's counters.
        let polls = r.gw.engines()[0].ext().engine.polls_ok.load(Relaxed);
        r.eventually(5.0, "a poll after the request", |r| {
            r.gw.engines()[0].ext().engine.polls_ok.load(Relaxed) > polls + 1
        })
        .await;
    }
    let up = r.gw.engines()[0].clone();
    assert_eq!(up.ext().kv.mismatches.load(Relaxed), 0, "{policy}");
    assert_eq!(up.ext().kv.silences.load(Relaxed), 0, "{policy}");
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Exact,
        "{policy}"
    );
    r.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), engine.stop()).await;
}
