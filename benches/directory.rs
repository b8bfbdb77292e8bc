//! Directory throughput: block inserts (predicted-mode routing of a 125-block
//! prompt into a capacity-bounded index that is already full), KV-event
//! removals, prefix matches against ~1 M indexed blocks, and KV-event ingest
//! as the router does it (decode vLLM's msgpack payload, apply its events to
//! a full, bounded directory).
//!
//! `cargo bench --bench directory`; throughput is reported in blocks/s.

mod common;

use common::{Fixture, PROMPT_BLOCKS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvroute_core::{BlockHash, InstanceId, KvEvent, Nanos, SeededRng};
use kvroute_directory::{Directory, Freshness, PrefixIndex};
use kvroute_kvevents::{decode_payload, encode_payload, EventBatch};
use std::hint::black_box;
use std::time::Duration;

fn bench_index(c: &mut Criterion) {
    let rng = SeededRng::new(7);
    let mut g = c.benchmark_group("index");
    g.measurement_time(Duration::from_secs(3));

    // Inserts into a full index (every insert also evicts once).
    let mut ix = PrefixIndex::new();
    for i in 0..16 {
        ix.set_capacity(InstanceId(i), 1_000_000 / 16);
    }
    for _ in 0..(1_000_000 / PROMPT_BLOCKS) {
        let chain: Vec<BlockHash> = (0..PROMPT_BLOCKS)
            .map(|_| BlockHash(rng.next_u64()))
            .collect();
        ix.insert_chain(InstanceId(rng.below(16) as u32), &chain, None);
    }
    let chains: Vec<Vec<BlockHash>> = (0..512)
        .map(|_| {
            (0..PROMPT_BLOCKS)
                .map(|_| BlockHash(rng.next_u64()))
                .collect()
        })
        .collect();
    g.throughput(Throughput::Elements(PROMPT_BLOCKS as u64));
    let mut k = 0;
    g.bench_function("insert_chain_125_blocks_full_index", |b| {
        b.iter(|| {
            k += 1;
            let chain = &chains[k % chains.len()];
            // Fresh hashes each time so the insert is not a mere touch.
            let salt = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for h in chain {
                ix.insert(InstanceId((k % 16) as u32), BlockHash(h.0 ^ salt));
            }
        })
    });

    // The same through `insert_chain`, the predicted-routing path (one
    // eviction pass per chain).
    let mut salted = Vec::with_capacity(PROMPT_BLOCKS);
    g.bench_function("insert_chain_125_blocks_full_index_batched", |b| {
        b.iter(|| {
            k += 1;
            let salt = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            salted.clear();
            salted.extend(
                chains[k % chains.len()]
                    .iter()
                    .map(|h| BlockHash(h.0 ^ salt)),
            );
            ix.insert_chain(InstanceId((k % 16) as u32), &salted, None);
        })
    });

    // Insert then remove (KV-event churn), steady size.
    g.bench_function("insert_then_remove_125_blocks", |b| {
        b.iter(|| {
            k += 1;
            let inst = InstanceId((k % 16) as u32);
            let chain = &chains[k % chains.len()];
            for h in chain {
                ix.insert(inst, *h);
            }
            for h in chain {
                black_box(ix.remove(inst, *h));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("match_prefix");
    g.measurement_time(Duration::from_secs(2));
    for n in [16, 1024] {
        let f = Fixture::new(n);
        let reqs: Vec<_> = (0..256).map(|i| f.prompt(i)).collect();
        let mut i = 0;
        g.bench_function(format!("{n}_instances_1M_blocks"), |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(
                    f.directory
                        .with_index(|ix| ix.match_prefix(&reqs[i].block_hashes)),
                )
            })
        });
    }
    g.finish();
}

/// KV-event ingest: payloads as vLLM 0.32 sends them (each a step's
/// `BlockStored` of 32 blocks of 16 tokens, and the `BlockRemoved` of the
/// blocks it evicted), decoded and applied to a directory already full.
fn bench_ingest(c: &mut Criterion) {
    let rng = SeededRng::new(11);
    let dir = Directory::new(Freshness::Live);
    let inst = InstanceId(0);
    dir.set_capacity(inst, 100_000);
    let block = |h: u64| BlockHash(h);
    let payloads: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let stored: Vec<BlockHash> = (0..32).map(|_| block(rng.next_u64())).collect();
            let removed: Vec<BlockHash> = (0..32).map(|_| block(rng.next_u64())).collect();
            encode_payload(&EventBatch {
                ts: 1.0,
                events: vec![
                    KvEvent::BlockStored {
                        block_hashes: stored,
                        parent_block_hash: Some(block(rng.next_u64())),
                        token_ids: (0..32 * 16).map(|_| rng.below(151_000) as u32).collect(),
                        block_size: 16,
                    },
                    KvEvent::BlockRemoved {
                        block_hashes: removed,
                    },
                ],
                dp_rank: Some(0),
                skipped: 0,
            })
        })
        .collect();
    // Fill the directory to capacity first.
    for k in 0..4_000u64 {
        let chain: Vec<BlockHash> = (0..32).map(|i| block(k << 8 | i)).collect();
        dir.apply(
            Nanos::ZERO,
            inst,
            KvEvent::BlockStored {
                block_hashes: chain,
                parent_block_hash: None,
                token_ids: Vec::new(),
                block_size: 16,
            },
        );
    }
    let mut g = c.benchmark_group("kv_ingest");
    g.measurement_time(Duration::from_secs(3));
    // Blocks stored plus blocks removed per batch.
    g.throughput(Throughput::Elements(64));
    let mut k = 0;
    g.bench_function("decode_and_apply_32_stored_32_removed", |b| {
        b.iter(|| {
            k = (k + 1) % payloads.len();
            let batch = decode_payload(&payloads[k]).expect("valid payload");
            for ev in batch.events {
                black_box(dir.apply(Nanos::ZERO, inst, ev));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_index, bench_ingest);
criterion_main!(benches);
