//! Directory throughput: block inserts (predicted-mode routing of a 125-block
//! prompt into a capacity-bounded index that is already full), KV-event
//! removals, and prefix matches against ~1 M indexed blocks.
//!
//! `cargo bench --bench directory`; throughput is reported in blocks/s.

mod common;

use common::{Fixture, PROMPT_BLOCKS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvroute_core::{BlockHash, InstanceId, SeededRng};
use kvroute_directory::PrefixIndex;
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

criterion_group!(benches, bench_index);
criterion_main!(benches);
