//! Analytic checks of the engine model on one instance.

use kvroute_core::{HashAlgo, KvEvent, Nanos};
use kvroute_sim::{Engine, EngineRequest, Finished, LatencyModel, Profile, StepWork};
use proptest::prelude::*;

fn profile(num_blocks: usize, block_size: u32, budget: u32) -> Profile {
    let mut p = Profile::load("vllm-cpu-tiny").unwrap();
    p.limits.num_blocks = num_blocks;
    p.limits.block_size = block_size;
    p.limits.max_num_batched_tokens = budget;
    p.limits.max_model_len = (num_blocks as u32 * block_size).min(4096);
    p.latency = LatencyModel {
        step_overhead: 0.01,
        prefill_per_token: 1e-4,
        prefill_per_attn_token: 1e-7,
        decode_per_seq: 2e-4,
        decode_per_ctx_token: 1e-6,
        ..LatencyModel::default()
    };
    p
}

/// Run until idle, adding requests at their times; returns finished requests.
fn run(e: &mut Engine, mut arrivals: Vec<(Nanos, EngineRequest)>) -> Vec<Finished> {
    arrivals.sort_by_key(|(t, r)| (*t, r.id));
    let mut arrivals = std::collections::VecDeque::from(arrivals);
    let mut now = Nanos::ZERO;
    let mut done = Vec::new();
    loop {
        while arrivals.front().is_some_and(|(t, _)| *t <= now) {
            let (t, r) = arrivals.pop_front().unwrap();
            e.add(t, r).unwrap();
        }
        match e.start_step(now) {
            Some(end) => {
                now = end;
                done.extend(e.finish_step().finished);
            }
            None => match arrivals.front() {
                Some((t, _)) => now = *t,
                None => break,
            },
        }
    }
    done
}

fn req(id: u64, prompt: Vec<u32>, max_tokens: u32) -> EngineRequest {
    EngineRequest {
        id,
        prompt,
        max_tokens,
    }
}

#[test]
fn lone_request_ttft_and_e2e_are_the_model_sum() {
    let p = profile(256, 16, 2048);
    let lat = p.latency.clone();
    let mut e = Engine::new(p, HashAlgo::Xxh3);
    let (prompt, out) = (1000u32, 5u32);
    let start = Nanos::from_millis(3);
    let f = run(&mut e, vec![(start, req(1, (0..prompt).collect(), out))]);

    let mut w = StepWork::default();
    w.add_prefill(prompt, 0);
    let mut expect = start.saturating_add(Nanos::from_secs_f64(lat.step_secs(&w)));
    assert_eq!(f[0].first_token, expect, "TTFT = one prefill step");
    for k in 1..out {
        let mut d = StepWork::default();
        d.add_decode(prompt + k);
        expect = expect.saturating_add(Nanos::from_secs_f64(lat.step_secs(&d)));
    }
    assert_eq!(f[0].finish, expect, "E2E = prefill + (out-1) decode steps");
    assert_eq!(
        (f[0].output_tokens, f[0].cached_tokens, f[0].first_scheduled),
        (out, 0, start)
    );
}

#[test]
fn chunked_prefill_splits_a_long_prompt() {
    let p = profile(256, 16, 256);
    let lat = p.latency.clone();
    let mut e = Engine::new(p, HashAlgo::Xxh3);
    let f = run(&mut e, vec![(Nanos::ZERO, req(1, (0..600).collect(), 1))]);
    let mut t = Nanos::ZERO;
    for (n, ctx) in [(256, 0), (256, 256), (88, 512)] {
        let mut w = StepWork::default();
        w.add_prefill(n, ctx);
        t = t.saturating_add(Nanos::from_secs_f64(lat.step_secs(&w)));
    }
    assert_eq!(f[0].first_token, t);
    assert_eq!(e.counters().steps, 3);
}

#[test]
fn identical_second_prompt_hits_all_full_blocks() {
    for (len, bs) in [(1000u32, 16u32), (70, 32), (33, 32)] {
        let mut e = Engine::new(profile(512, bs, 4096), HashAlgo::Xxh3);
        let prompt: Vec<u32> = (0..len).map(|t| t * 7 + 1).collect();
        let f = run(
            &mut e,
            vec![
                (Nanos::ZERO, req(1, prompt.clone(), 3)),
                (Nanos::from_secs(5), req(2, prompt, 3)),
            ],
        );
        assert_eq!(f[0].cached_tokens, 0);
        assert_eq!(f[1].cached_tokens, len / bs * bs, "len {len} bs {bs}");
        assert!(
            f[1].first_token.saturating_sub(f[1].arrival)
                < f[0].first_token.saturating_sub(f[0].arrival)
        );
    }
}

#[test]
fn a_block_aligned_prompt_recomputes_its_last_block() {
    // vLLM caps a hit at num_tokens − 1 so that one token is always computed.
    let mut e = Engine::new(profile(64, 16, 4096), HashAlgo::Xxh3);
    let prompt: Vec<u32> = (0..64).collect();
    let f = run(
        &mut e,
        vec![
            (Nanos::ZERO, req(1, prompt.clone(), 1)),
            (Nanos::from_secs(1), req(2, prompt, 1)),
        ],
    );
    assert_eq!(f[1].cached_tokens, 48);
}

#[test]
fn eviction_order_matches_a_reference_lru() {
    // 8 blocks of 4 tokens. Three 2-block prompts run one after another; the
    // free queue then holds each request's blocks tail-first, oldest request first.
    let mut e = Engine::new(profile(8, 4, 64), HashAlgo::Xxh3);
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|k| (0..9).map(|t| 100 * k + t).collect())
        .collect();
    let mut arr = Vec::new();
    for (k, p) in prompts.iter().enumerate() {
        arr.push((Nanos::from_secs(k as u64), req(k as u64, p.clone(), 1)));
    }
    run(&mut e, arr);
    let hasher = e.hasher().clone();
    let hs: Vec<Vec<_>> = prompts.iter().map(|p| hasher.hash_blocks(p)).collect();
    // Reference LRU: blocks freed in order r0.b1, r0.b0, r1.b1, r1.b0, r2.b1, r2.b0;
    // untouched blocks (never hashed) sit ahead of them.
    let want = vec![hs[0][1], hs[0][0], hs[1][1], hs[1][0], hs[2][1], hs[2][0]];
    assert_eq!(e.eviction_order(), want);
    // A new request needing 3 blocks takes the next three in the queue: two
    // cached blocks of r0 (evicted), then r1's unhashed partial block.
    let _ = e.drain_kv_events();
    run(
        &mut e,
        vec![(Nanos::from_secs(9), req(9, (1000..1012).collect(), 1))],
    );
    let removed: Vec<_> = e
        .drain_kv_events()
        .into_iter()
        .filter_map(|ev| match ev {
            KvEvent::BlockRemoved { block_hashes } => Some(block_hashes),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(removed, vec![hs[0][1], hs[0][0]]);
}

#[test]
fn kv_events_describe_the_cache_exactly() {
    // Replaying the engine's events into a set gives exactly its cached blocks.
    let mut e = Engine::new(profile(24, 4, 64), HashAlgo::Xxh3);
    let reqs = (0..12u64)
        .map(|k| {
            (
                Nanos::from_millis(k * 50),
                req(
                    k,
                    (0..(5 + k as u32 * 3))
                        .map(|t| t % 11 + (k as u32 % 3) * 100)
                        .collect(),
                    3,
                ),
            )
        })
        .collect();
    run(&mut e, reqs);
    let mut set = std::collections::HashSet::new();
    for ev in e.drain_kv_events() {
        match ev {
            KvEvent::BlockStored { block_hashes, .. } => set.extend(block_hashes),
            KvEvent::BlockRemoved { block_hashes } => {
                for h in block_hashes {
                    assert!(set.remove(&h), "removed a block never stored");
                }
            }
            KvEvent::AllBlocksCleared => set.clear(),
        }
    }
    assert_eq!(set.len(), e.cached_blocks());
}

proptest! {
    /// Conservation: every admitted request finishes exactly once, even when
    /// the cache is so small that requests are preempted.
    #[test]
    fn every_admitted_request_finishes(
        reqs in prop::collection::vec((0u64..2_000, 1u32..120, 1u32..20, 0u32..4), 1..40),
        blocks in 18usize..60, // the cache must hold one max_model_len sequence
        budget in 16u32..256,
    ) {
        let mut p = profile(blocks, 8, budget);
        p.limits.max_model_len = 140;
        p.limits.max_num_seqs = 8;
        let mut e = Engine::new(p, HashAlgo::Xxh3);
        let arrivals: Vec<_> = reqs
            .iter()
            .enumerate()
            .map(|(i, &(t, len, out, fam))| {
                (Nanos::from_millis(t), req(i as u64, (0..len).map(|x| x + fam * 1000).collect(), out))
            })
            .collect();
        let n = arrivals.len();
        let f = run(&mut e, arrivals);
        prop_assert_eq!(f.len(), n);
        let mut ids: Vec<u64> = f.iter().map(|x| x.id).collect();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), n);
        for (x, &(_, _, out, _)) in f.iter().map(|x| (x, &reqs[x.id as usize])) {
            prop_assert_eq!(x.output_tokens, out);
            prop_assert!(x.arrival <= x.first_scheduled && x.first_scheduled < x.first_token && x.first_token <= x.finish);
        }
        prop_assert!(!e.has_work());
        prop_assert!((e.kv_usage() - 0.0).abs() < 1e-12, "all blocks free at the end");
    }
}
