//! The reliability suite: what reaches a port cannot crash, blind or starve
//! the router. One test per row of docs/reliability.md (the row names the
//! test); each starts its own engines and router on 127.0.0.1.

use crate::common::*;
use kvroute_core::{BlockHasher, HashAlgo, InstanceId, KvEvent};
use kvroute_directory::Mode;
use kvroute_gateway::{FeedFallback, InstanceConfig, RouterConfig};
use kvroute_kvevents::{Endpoint, EventBatch, Publisher};
use kvroute_routing::InstanceState;
use std::io::{Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn state(r: &Router, id: u32) -> InstanceState {
    r.gw.dispatcher().instance(InstanceId(id)).unwrap().state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_an_engine_killed_mid_run_loses_no_request() {
    let (mut a, b) = (
        backend(Behavior {
            chunk_delay: Duration::from_millis(2),
            ..Default::default()
        })
        .await,
        backend(Behavior {
            chunk_delay: Duration::from_millis(2),
            ..Default::default()
        })
        .await,
    );
    let r = router(config("round_robin", &[&a, &b])).await;
    let c = client();
    let url = r.url("/v1/completions");
    let (tx, mut rx) = tokio::sync::mpsc::channel(200);
    let slots = Arc::new(Semaphore::new(8));
    for i in 0..200 {
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        if i == 50 {
            a.kill();
        }
        let (c, url, tx) = (c.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let ans = post(&c, &url, &completion(&format!("req {i}"), false)).await;
            let _ = tx.send((i, ans.status)).await;
            drop(permit);
        });
    }
    drop(tx);
    let mut ok = 0;
    while let Some((i, status)) = rx.recv().await {
        assert_eq!(status, 200, "request {i}");
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(r.total_inflight(), 0);
    r.shutdown().await;
}

#[tokio::test]
async fn r2_a_hung_engine_is_left_for_another_then_ejected() {
    let a = backend(Behavior {
        hang: true,
        ..Default::default()
    })
    .await;
    let b = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a, &b]);
    cfg.proxy.first_byte_timeout_secs = 0.3;
    cfg.outlier.consecutive_failures = 3;
    cfg.outlier.base_ejection_secs = 60.0;
    let r = router(cfg).await;
    let c = client();
    for i in 0..8 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("h{i}"), true),
        )
        .await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        assert_eq!(ans.header("x-kvroute-instance"), b.url());
        assert!(ans.text().ends_with("data: [DONE]\n\n"));
    }
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    assert!(
        entry.health().has(kvroute_routing::Health::EJECTED),
        "three first-token timeouts eject it"
    );
    assert_eq!(r.gw.metrics().errors("first_byte"), 3);
    assert_eq!(r.total_inflight(), 0);
    // Its /health answers, yet it stays out for the ejection's length.
    let probes = up.probes_sent();
    r.eventually(5.0, "probed again", |_| up.probes_sent() >= probes + 2)
        .await;
    assert_eq!(state(&r, 0), InstanceState::Unhealthy);
    r.shutdown().await;
}

#[tokio::test]
async fn r3_overload_is_refused_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let a = backend(Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Default::default()
    })
    .await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.admission.max_inflight = 2;
    cfg.admission.max_queued = 1;
    cfg.admission.queue_timeout_secs = 0.5;
    let r = router(cfg).await;
    let c = client();
    let url = r.url("/v1/completions");
    // Two streams hold both slots (they wait at the gate after a chunk).
    let mut held = Vec::new();
    for i in 0..2 {
        let (c, url) = (c.clone(), url.clone());
        held.push(tokio::spawn(async move {
            post(&c, &url, &completion(&format!("held {i}"), true)).await
        }));
    }
    r.eventually(5.0, "both streams forwarded", |_| a.requests() == 2)
        .await;
    // A third waits in the queue; a fourth finds the queue full.
    let (c3, u3) = (c.clone(), url.clone());
    let queued = tokio::spawn(async move { post(&c3, &u3, &completion("queued", false)).await });
    r.eventually(5.0, "one request queued", |r| {
        r.gw.admission().queued() == 1
    })
    .await;
    let full = post(&c, &url, &completion("full", false)).await;
    assert_eq!(full.status, 429, "{}", full.text());
    assert_eq!(full.header("retry-after"), "1");
    assert_eq!(full.json()["error"]["code"], "queue_full");
    let queued = queued.await.unwrap();
    assert_eq!(queued.status, 503, "{}", queued.text());
    assert!(queued.headers.contains_key("retry-after"));
    // /health is never queued.
    let h = send(&c, "GET", &r.url("/health"), &[], "").await;
    assert_eq!(h.status, 200);
    // The streams end; the slots are free again.
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    let after = post(&c, &url, &completion("after", false)).await;
    assert_eq!(after.status, 200);
    r.shutdown().await;
}

/// Send raw bytes to the router and read its answer (with a deadline).
fn raw_http(addr: std::net::SocketAddr, head: &str, body: &[u8], hold: Duration) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    std::thread::sleep(hold);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the status line and headers (the router closes or keeps alive).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.len() > 64 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_a_trickled_body_times_out_and_buffered_bytes_are_bounded() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.proxy.body_read_timeout_secs = 0.3;
    cfg.proxy.max_body_bytes = 1 << 20;
    cfg.proxy.max_buffered_body_bytes = 2 << 20;
    let r = router(cfg).await;
    let addr = r.addr;
    // 10 of 1000 announced bytes, then nothing: 408 after the timeout.
    let head = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
    let ans =
        tokio::task::spawn_blocking(move || raw_http(addr, head, b"{\"model\":", Duration::ZERO))
            .await
            .unwrap();
    assert!(ans.starts_with("HTTP/1.1 408"), "{ans}");
    assert!(ans.contains("request_timeout"), "{ans}");

    // Two bodies of 1 MiB being read hold the 2 MiB budget: a third is 503.
    let head = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b' '; 1000]).unwrap();
        open.push(s);
    }
    r.eventually(5.0, "two bodies being read", |r| {
        r.gw.body_budget_available() < 1024
    })
    .await;
    let third = tokio::task::spawn_blocking(move || raw_http(addr, head, b" ", Duration::ZERO))
        .await
        .unwrap();
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.to_lowercase().contains("retry-after: 1"), "{third}");
    drop(open);
    // Once they are gone, the budget is free again.
    r.eventually(5.0, "budget released", |r| {
        r.gw.body_budget_available() == 2048
    })
    .await;
    let c = client();
    let ok = post(&c, &r.url("/v1/completions"), &completion("fine", false)).await;
    assert_eq!(ok.status, 200);
    r.shutdown().await;
}

/// A router in exact mode with instance 0's KV port bound at `port`.
fn exact(a: &Backend, b: &Backend, port: u16) -> RouterConfig {
    let mut cfg = config("cache_affinity", &[]);
    cfg.directory.mode = Mode::Exact;
    cfg.directory.exact_resume_secs = 0.3;
    cfg.directory.min_reset_interval_secs = 60.0;
    cfg.instances = vec![
        InstanceConfig::new(a.url()).with_kv_events(format!("bind:tcp://127.0.0.1:{port}")),
        InstanceConfig::new(b.url()),
    ];
    cfg
}

fn stored(n: u32) -> Vec<KvEvent> {
    let tokens: Vec<u32> = (n * 100..n * 100 + 8).collect();
    let h = BlockHasher::new(HashAlgo::Sha256Cbor, 4)
        .unwrap()
        .hash_blocks(&tokens);
    vec![KvEvent::BlockStored {
        block_hashes: h,
        parent_block_hash: None,
        token_ids: tokens,
        block_size: 4,
    }]
}

fn blocks(r: &Router) -> usize {
    r.gw.dispatcher().directory().instance_blocks(InstanceId(0)) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_kv_ports_survive_hostile_frames_and_forged_publishers() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let port = free_port();
    let r = router(exact(&a, &b, port)).await;
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();

    // The reported crash: a greeting, then a frame announcing 2^45 bytes.
    let mut crash = vec![0xff];
    crash.extend([0u8; 8]);
    crash.extend([0x7f, 0x03, 0x00]);
    let mut mech = b"NULL".to_vec();
    mech.resize(20, 0);
    crash.extend(mech);
    crash.extend([0u8; 32]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&crash).unwrap();
    // The router took the greeting: its own greeting, then its READY
    // command (a command frame, flag 0x04) once it has read ours.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 64];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting[0], 0xff, "a ZMTP greeting");
    let mut flag = [0u8; 1];
    s.read_exact(&mut flag).unwrap();
    assert_eq!(flag[0] & 0x04, 0x04, "a command frame (READY)");
    let mut big = vec![0x06];
    big.extend((1u64 << 45).to_be_bytes());
    s.write_all(&big).unwrap();
    r.eventually(5.0, "violation counted", |_| {
        up.kv.violations.load(Relaxed) >= 1
    })
    .await;
    let c = client();
    let ok = post(&c, &r.url("/v1/completions"), &completion("alive", false)).await;
    assert_eq!(ok.status, 200, "the router still serves");

    // The engine's publisher owns the stream.
    let ep = Endpoint::Connect(format!("tcp://127.0.0.1:{port}"));
    let mut engine = Publisher::open(ep.clone(), "kv-events").await.unwrap();
    let mut seq = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while blocks(&r) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never arrived"
        );
        engine.send_seq(seq, &batch(stored(1)));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A forger connects and clears the cache: ignored, and the instance's
    // entries are predicted while it speaks.
    let mut forger = Publisher::open(ep, "kv-events").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.kv.foreign_batches.load(Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "forger never heard");
        forger.send_seq(0, &batch(vec![KvEvent::AllBlocksCleared]));
        engine.send_seq(seq, &batch(vec![]));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(blocks(&r), 2, "the forged clear was not applied");
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Predicted
    );
    assert!(up.kv.fallback_reasons() & FeedFallback::CONFLICT != 0);
    // The forger goes; the engine's stream in order for exact_resume: exact again.
    drop(forger);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while r.gw.dispatcher().directory().mode(InstanceId(0)) != Mode::Exact {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never back to exact"
        );
        engine.send_seq(seq, &batch(vec![]));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Resets are rate-limited: the engine's first clear is honoured, a
    // second within min_reset_interval only falls back to predicted entries.
    engine.send_seq(seq, &batch(vec![KvEvent::AllBlocksCleared]));
    seq += 1;
    r.eventually(5.0, "first reset", |_| up.kv.resets.load(Relaxed) == 1)
        .await;
    engine.send_seq(seq, &batch(stored(2)));
    seq += 1;
    r.eventually(5.0, "stored again", |r| blocks(r) == 2).await;
    engine.send_seq(seq, &batch(vec![KvEvent::AllBlocksCleared]));
    r.eventually(5.0, "second reset suppressed", |_| {
        up.kv.resets_suppressed.load(Relaxed) == 1
    })
    .await;
    assert_eq!(blocks(&r), 2, "entries kept");
    assert!(up.kv.fallback_reasons() & FeedFallback::RESETS != 0);
    r.shutdown().await;
}

fn batch(events: Vec<KvEvent>) -> EventBatch {
    EventBatch {
        ts: now_secs(),
        events,
        dp_rank: None,
        skipped: 0,
    }
}

/// Emulated vLLM engines (the tiny CPU profile, 20× real time) on `ports`,
/// publishing KV events to `kv` when given.
async fn emulated(ports: &[u16], kv: Option<&[u16]>) -> Vec<kvroute_emulator::Running> {
    let tokenizer = Arc::new(
        kvroute_tokenize::Tokenizer::from_file(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../datasets/tokenizers/qwen3/tokenizer.json.gz"),
        )
        .unwrap(),
    );
    let profile = kvroute_sim::Profile::load("vllm-cpu-tiny").unwrap();
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let mut ec = kvroute_emulator::EmulatorConfig::new(profile.clone(), Arc::clone(&tokenizer));
        ec.speedup = 20.0;
        ec.kv_events = kv.map(|k| Endpoint::Connect(format!("tcp://127.0.0.1:{}", k[i])));
        out.push(kvroute_emulator::spawn_on(ec, *p).await.unwrap());
    }
    out
}

fn exact_on(ports: &[u16], kv: &[u16]) -> RouterConfig {
    let mut cfg = config("cache_affinity", &[]);
    cfg.hashing.block_size = 32;
    cfg.directory.mode = Mode::Exact;
    cfg.directory.exact_resume_secs = 0.3;
    cfg.metrics_interval_secs = 0.1;
    cfg.instances = ports
        .iter()
        .zip(kv)
        .map(|(p, k)| {
            InstanceConfig::new(format!("http://127.0.0.1:{p}"))
                .with_kv_events(format!("bind:tcp://127.0.0.1:{k}"))
        })
        .collect();
    cfg
}

fn token_prompt(first: u32) -> String {
    let tokens: Vec<u32> = (first..first + 320).collect();
    serde_json::json!({"model": "tiny", "prompt": tokens, "max_tokens": 2}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_an_engine_that_publishes_nothing_is_found_silent() {
    let (port, kv) = (free_port(), free_port());
    // The router expects events; the engine was started without them.
    let r = router(exact_on(&[port], &[kv])).await;
    let engines = emulated(&[port], None).await;
    r.eventually(10.0, "probed healthy", |r| r.gw.healthy_count() == 1)
        .await;
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while up.kv.fallback_reasons() & FeedFallback::SILENT == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "silence never noticed"
        );
        let ans = post(&c, &r.url("/v1/completions"), &token_prompt(1000 + i * 400)).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.kv.silences.load(Relaxed), 1);
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Predicted
    );
    let page = r.gw.metrics().render();
    assert!(page.contains("kvroute_directory_mode"), "{page}");
    for e in engines {
        e.stop().await.unwrap();
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_hashes_that_never_match_the_engines_fall_back_to_predicted() {
    let (port, kv) = (free_port(), free_port());
    let mut cfg = exact_on(&[port], &[kv]);
    // The engines hash with vLLM's default seed; this router with another.
    cfg.hashing.seed = "not-the-engines-seed".into();
    let r = router(cfg).await;
    let engines = emulated(&[port], Some(&[kv])).await;
    r.eventually(10.0, "publisher connected and probed healthy", |r| {
        r.gw.engine(InstanceId(0)).unwrap().ext().kv.connected() && r.gw.healthy_count() == 1
    })
    .await;
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while up.kv.fallback_reasons() & FeedFallback::MISMATCH == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mismatch never noticed"
        );
        // The same prompt again and again: the engine hits its cache.
        let ans = post(&c, &r.url("/v1/completions"), &token_prompt(7)).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(up.kv.batches.load(Relaxed) > 0, "events did arrive");
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Predicted
    );
    // Predicted entries match the router's own hashes: repeats are cached again.
    post(&c, &r.url("/v1/completions"), &token_prompt(7)).await;
    let ans = post(&c, &r.url("/v1/completions"), &token_prompt(7)).await;
    assert_eq!(ans.header("x-kvroute-cached-tokens"), "320");
    for e in engines {
        e.stop().await.unwrap();
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_a_restarted_router_hears_the_engines_again() {
    let (port, kv) = (free_port(), free_port());
    let engines = emulated(&[port], Some(&[kv])).await;
    for round in 0..2 {
        let r = router(exact_on(&[port], &[kv])).await;
        let entry = r.gw.engine(InstanceId(0)).unwrap();
        let up = entry.ext();
        r.eventually(10.0, "publisher connected and probed healthy", |r| {
            up.kv.connected() && r.gw.healthy_count() == 1
        })
        .await;
        let c = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut i = 0;
        while up.kv.batches.load(Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no events"
            );
            post(
                &c,
                &r.url("/v1/completions"),
                &token_prompt(50_000 + i * 400),
            )
            .await;
            i += 1;
        }
        assert_eq!(
            r.gw.dispatcher().directory().mode(InstanceId(0)),
            Mode::Exact
        );
        r.shutdown().await;
    }
    for e in engines {
        e.stop().await.unwrap();
    }
}

#[tokio::test]
async fn r9_internal_endpoints_and_addresses_stay_internal() {
    let a = backend(Behavior::default()).await;
    let admin_port = free_port();
    let mut cfg = config("round_robin", &[&a]);
    cfg.proxy.expose_routing_headers = false;
    cfg.admin_listen = Some(format!("127.0.0.1:{admin_port}"));
    cfg.admin_token = Some("a-long-admin-token".into());
    let r = router(cfg).await;
    let c = client();
    let ans = post(&c, &r.url("/v1/completions"), &completion("x", false)).await;
    assert_eq!(ans.status, 200);
    for h in [
        "x-kvroute-instance",
        "x-kvroute-cached-tokens",
        "x-kvroute-reason",
    ] {
        assert!(ans.headers.get(h).is_none(), "{h} is off by default");
    }
    assert!(ans.headers.contains_key("x-request-id"));
    // /metrics and /admin live on the admin listener only.
    let public = send(&c, "GET", &r.url("/metrics"), &[], "").await;
    assert_eq!(public.status, 404);
    let public = send(&c, "GET", &r.url("/admin/instances"), &[], "").await;
    assert_eq!(public.status, 404);
    let admin_url = |p: &str| format!("http://127.0.0.1:{admin_port}{p}");
    let m = send(&c, "GET", &admin_url("/metrics"), &[], "").await;
    assert_eq!(m.status, 200);
    let auth = [("authorization", "Bearer a-long-admin-token")];
    let l = send(&c, "GET", &admin_url("/admin/instances"), &auth, "").await;
    assert_eq!(l.status, 200);
    // A padded token is a wrong token.
    let padded = [("authorization", "Bearer  a-long-admin-token")];
    let l = send(&c, "GET", &admin_url("/admin/instances"), &padded, "").await;
    assert_eq!(l.status, 401);
    // The API is not served on the admin listener.
    let api = post(&c, &admin_url("/v1/completions"), &completion("x", false)).await;
    assert_eq!(api.status, 404);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_a_huge_legal_prompt_costs_only_what_routing_needs() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("cache_affinity", &[&a]);
    cfg.hashing.tokenizer = Some(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/tokenizers/qwen3/tokenizer.json.gz"),
    );
    cfg.hashing.block_size = 16;
    cfg.hashing.max_hashed_tokens = 32 * 1024;
    let r = router(cfg).await;
    // 30 MB of text, under the 32 MiB body limit.
    let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(480_000);
    assert!(text.len() > 29_000_000);
    let body = serde_json::json!({"model": "m", "prompt": text, "max_tokens": 4}).to_string();
    let c = client();
    let t0 = std::time::Instant::now();
    let ans = post(&c, &r.url("/v1/completions"), &body).await;
    let took = t0.elapsed();
    assert_eq!(ans.status, 200, "{}", ans.text());
    // Hashed up to the cap; the length estimated from the part encoded.
    let routed = r.gw.dispatcher().instance(InstanceId(0)).unwrap();
    let prompt_tokens = routed
        .counters
        .prompt_tokens
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (4_000_000..10_000_000).contains(&prompt_tokens),
        "{prompt_tokens} tokens estimated for 30 MB of English"
    );
    assert_eq!(
        r.gw.dispatcher().directory().instance_blocks(InstanceId(0)),
        32 * 1024 / 16,
        "blocks recorded up to the cap"
    );
    // A bound generous enough for a debug build on a busy machine; without
    // the cap this took over a minute in a release build.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    r.shutdown().await;
}
