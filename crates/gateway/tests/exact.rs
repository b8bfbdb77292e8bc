//! Exact directory mode: KV events over ZMQ decide the predicted cached
//! tokens; gaps fall back to predicted entries and recover; restarts clear;
//! vLLM's replay socket fills gaps.

use crate::common::*;
use kvroute_core::{BlockHash, BlockHasher, HashAlgo, InstanceId, KvEvent};
use kvroute_directory::Mode;
use kvroute_gateway::InstanceConfig;
use kvroute_kvevents::{Endpoint, EventBatch, Publisher};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The router's hashes for a token prompt (sha256_cbor, block size 4).
fn hashes(tokens: &[u32]) -> Vec<BlockHash> {
    BlockHasher::new(HashAlgo::Sha256Cbor, 4)
        .unwrap()
        .hash_blocks(tokens)
}

fn stored(hashes: &[BlockHash], tokens: &[u32]) -> KvEvent {
    KvEvent::BlockStored {
        block_hashes: hashes.to_vec(),
        parent_block_hash: None,
        token_ids: tokens.to_vec(),
        block_size: 4,
    }
}

fn token_prompt(tokens: &[u32]) -> String {
    serde_json::json!({"model": "m", "prompt": tokens, "max_tokens": 4}).to_string()
}

fn exact_config(a: &Backend, b: &Backend, kv_port: u16) -> kvroute_gateway::RouterConfig {
    let mut cfg = config("cache_affinity", &[]);
    cfg.directory.mode = Mode::Exact;
    cfg.directory.exact_resume_secs = 0.3;
    cfg.instances = vec![
        InstanceConfig::new(a.url()).with_kv_events(format!("bind:tcp://127.0.0.1:{kv_port}")),
        InstanceConfig::new(b.url()),
    ];
    cfg
}

fn blocks(r: &Router, id: u32) -> u64 {
    r.gw.dispatcher()
        .directory()
        .instance_blocks(InstanceId(id))
}

#[tokio::test]
async fn kv_events_decide_the_predicted_cached_tokens() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let port = free_port();
    let r = router(exact_config(&a, &b, port)).await;
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Exact
    );
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(1)),
        Mode::Predicted
    );

    // The engine connects to the router's bound SUB socket (vLLM's default).
    let ep = Endpoint::Connect(format!("tcp://127.0.0.1:{port}"));
    let mut publ = loop {
        match Publisher::open(ep.clone(), "kv-events").await {
            Ok(p) => break p,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let tokens: Vec<u32> = (1..=16).collect();
    let h = hashes(&tokens);
    // PUB drops messages until the subscription has propagated: resend until seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while blocks(&r, 0) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never arrived"
        );
        publ.send(now_secs(), vec![stored(&h[..3], &tokens[..12])]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client();
    for _ in 0..2 {
        let ans = post(&c, &r.url("/v1/completions"), &token_prompt(&tokens)).await;
        assert_eq!(ans.status, 200);
        assert_eq!(ans.header("x-kvroute-instance"), a.url());
        assert_eq!(ans.header("x-kvroute-cached-tokens"), "12");
        assert_eq!(ans.header("x-kvroute-reason"), "cache_hit");
        // Exact mode: routing does not add entries, only events do.
        assert_eq!(blocks(&r, 0), 3);
    }
    // The engine evicts the third block.
    publ.send(
        now_secs(),
        vec![KvEvent::BlockRemoved {
            block_hashes: vec![h[2]],
        }],
    );
    r.eventually(5.0, "eviction applied", |r| blocks(r, 0) == 2)
        .await;
    let ans = post(&c, &r.url("/v1/completions"), &token_prompt(&tokens)).await;
    assert_eq!(ans.header("x-kvroute-cached-tokens"), "8");
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    assert!(up.kv.batches.load(Relaxed) >= 2);
    assert_eq!(up.kv.gaps.load(Relaxed), 0);
    assert!(up.kv.connected());
    let page = r.gw.metrics().render();
    assert!(
        page.contains("kvroute_kv_event_lag_seconds_count{worker="),
        "{page}"
    );
    r.shutdown().await;
}

/// A publisher that can send any sequence number.
struct RawPub {
    sock: Publisher,
}

impl RawPub {
    async fn connect(port: u16) -> RawPub {
        let sock = Publisher::open(
            Endpoint::Connect(format!("tcp://127.0.0.1:{port}")),
            "kv-events",
        )
        .await
        .unwrap();
        RawPub { sock }
    }

    async fn send(&mut self, seq: i64, events: Vec<KvEvent>) {
        let batch = EventBatch {
            ts: now_secs(),
            events,
            dp_rank: None,
            skipped: 0,
        };
        self.sock.send_seq(seq, &batch);
    }
}

#[tokio::test]
async fn a_sequence_gap_falls_back_to_predicted_then_recovers() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let port = free_port();
    let r = router(exact_config(&a, &b, port)).await;
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    let mut p = RawPub::connect(port).await;
    let mut seq = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.kv.batches.load(Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never arrived"
        );
        p.send(seq, vec![]).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tokens: Vec<u32> = (100..116).collect();
    let h = hashes(&tokens);
    p.send(seq, vec![stored(&h[..2], &tokens[..8])]).await;
    seq += 1;
    r.eventually(5.0, "stored", |r| blocks(r, 0) == 2).await;
    assert_eq!(up.kv.gaps.load(Relaxed), 0);

    // Five batches lost.
    let gap_at = tokio::time::Instant::now();
    seq += 5;
    p.send(seq, vec![]).await;
    seq += 1;
    r.eventually(5.0, "fallback", |r| {
        r.gw.dispatcher().directory().mode(InstanceId(0)) == Mode::Predicted
    })
    .await;
    assert_eq!(up.kv.gaps.load(Relaxed), 1);
    assert_eq!(up.kv.lost_batches.load(Relaxed), 5);
    assert_eq!(up.kv.fallbacks.load(Relaxed), 1);
    let page = r.gw.metrics().render();
    assert!(page.contains("mode=\"predicted\"} 1"), "{page}");

    // In fallback, routing predictions are recorded again.
    let c = client();
    let ans = post(&c, &r.url("/v1/completions"), &token_prompt(&tokens)).await;
    assert_eq!(ans.header("x-kvroute-instance"), a.url());
    assert_eq!(ans.header("x-kvroute-cached-tokens"), "8");
    assert_eq!(
        blocks(&r, 0),
        4,
        "the request's blocks were predicted cached"
    );

    // In order for longer than exact_resume_secs: back to exact.
    let t0 = tokio::time::Instant::now();
    while r.gw.dispatcher().directory().mode(InstanceId(0)) != Mode::Exact {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "never returned to exact"
        );
        p.send(seq, vec![]).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        gap_at.elapsed() >= Duration::from_millis(300),
        "exact_resume_secs is 0.3"
    );

    // The engine restarts: sequence numbers start over, its cache is empty.
    p.send(0, vec![]).await;
    r.eventually(5.0, "cleared on restart", |r| blocks(r, 0) == 0)
        .await;
    assert_eq!(up.kv.restarts.load(Relaxed), 1);
    r.shutdown().await;
}

#[tokio::test]
async fn a_gap_is_filled_from_the_replay_socket() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let port = free_port();
    let mut cfg = exact_config(&a, &b, port);
    // The engine's replay socket, holding batches 0..100; the lost batch 12
    // held the prompt's blocks.
    let tokens: Vec<u32> = (500..516).collect();
    let h = hashes(&tokens);
    let mut source = Publisher::open(Endpoint::Bind("tcp://127.0.0.1:0".into()), "kv-events")
        .await
        .unwrap()
        .with_replay("tcp://127.0.0.1:0", 10_000)
        .await
        .unwrap();
    for seq in 0..100i64 {
        let events = if seq == 12 {
            vec![stored(&h, &tokens)]
        } else {
            vec![]
        };
        source.send(now_secs(), events);
        assert_eq!(source.sent(), seq + 1);
    }
    cfg.instances[0].replay = Some(format!("tcp://{}", source.replay_addr().unwrap()));
    let r = router(cfg).await;
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    let mut p = RawPub::connect(port).await;
    let mut seq = 0i64;
    while up.kv.batches.load(Relaxed) == 0 {
        p.send(seq, vec![]).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(seq < 100, "events never arrived");
    }
    // The router joined at some seq ≥ 0 and replayed what came before it.
    let joined_replayed = up.kv.replayed_batches.load(Relaxed);
    // Jump to 15 past the last sent: the batches in between are missing.
    let first_missing = seq;
    assert!(
        first_missing <= 12,
        "the prompt's batch is among the missing"
    );
    p.send(15, vec![]).await;
    r.eventually(5.0, "gap replayed", |r| blocks(r, 0) == 4)
        .await;
    assert_eq!(up.kv.gaps.load(Relaxed), 1);
    assert_eq!(
        up.kv.replayed_batches.load(Relaxed) - joined_replayed,
        (15 - first_missing) as u64
    );
    assert_eq!(up.kv.lost_batches.load(Relaxed), 0);
    assert_eq!(
        r.gw.dispatcher().directory().mode(InstanceId(0)),
        Mode::Exact
    );
    r.shutdown().await;
}
