//! A whole routing decision, as the router and the simulator make it:
//! `Dispatcher::route` — the policy's pick, the directory's prefix match,
//! the accounting and the predicted blocks written into a full,
//! capacity-bounded directory (each write evicts) — then the request's end.
//! Prompts are cold: every one is new (half share a random prefix of a
//! chain the directory holds), 2,000 tokens, block size 16; ~1 M blocks
//! indexed. 16 and 1024 instances; in predicted mode (each decision
//! writes its blocks) and in exact mode (the directory is the engines' KV
//! events, so a decision only reads it).
//!
//! `cargo bench --bench route` (criterion: mean and spread), and
//! `cargo bench --bench route -- --percentiles` for p50/p99/p99.9 per call.

mod common;

use common::{Fixture, INDEXED_BLOCKS};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use kvroute_core::{ManualClock, Nanos, Outcome, RouteRequest};
use kvroute_directory::{Directory, Freshness, Mode};
use kvroute_policy::{PolicyConfig, POLICY_NAMES};
use kvroute_routing::Dispatcher;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZES: [usize; 2] = [16, 1024];

/// A dispatcher over `n` instances whose directory holds the fixture's
/// chains, each instance bounded to its share of them (inserts evict).
fn dispatcher(f: &Fixture, n: usize, policy: &str, mode: Mode) -> Dispatcher {
    let dir = Arc::new(Directory::new(Freshness::Live));
    let d = Dispatcher::new(
        PolicyConfig::by_name(policy)
            .expect("registry name")
            .build(),
        Arc::clone(&dir),
        Arc::new(ManualClock::new(Nanos::ZERO)),
    );
    for i in 0..n {
        d.add_instance(format!("i{i}"));
    }
    for (i, _) in f.instances.iter().enumerate() {
        dir.set_capacity(kvroute_core::InstanceId(i as u32), INDEXED_BLOCKS / n);
    }
    for (inst, chain) in &f.chains {
        dir.record_routed(Nanos::ZERO, *inst, chain, None);
    }
    for i in 0..n {
        dir.set_mode(kvroute_core::InstanceId(i as u32), mode);
    }
    d
}

fn bench_route(c: &mut Criterion) {
    for n in SIZES {
        let f = Fixture::new(n);
        let mut group = c.benchmark_group(format!("route/{n}"));
        group
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for &name in POLICY_NAMES {
            let d = dispatcher(&f, n, name, Mode::Predicted);
            let mut id = 0u64;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_batched(
                    || {
                        id += 1;
                        f.prompt(id)
                    },
                    |req: RouteRequest| {
                        let routed = d.route(&req).expect("instances exist");
                        routed.guard.finish(Outcome::Finished);
                        black_box(routed.decision)
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

/// Per-call latency percentiles (the targets are p99).
fn percentiles() {
    for mode in [Mode::Predicted, Mode::Exact] {
        println!("\n{} mode", mode.as_str());
        percentiles_in(mode);
    }
}

fn percentiles_in(mode: Mode) {
    println!("| instances | policy | p50 µs | p99 µs | p99.9 µs |");
    println!("|---:|---|---:|---:|---:|");
    for n in SIZES {
        let f = Fixture::new(n);
        for &name in POLICY_NAMES {
            let d = dispatcher(&f, n, name, mode);
            let reqs: Vec<RouteRequest> = (0..22_000).map(|i| f.prompt(i)).collect();
            let mut samples = Vec::with_capacity(20_000);
            for (k, r) in reqs.iter().enumerate() {
                let t = Instant::now();
                let routed = d.route(r).expect("instances exist");
                routed.guard.finish(Outcome::Finished);
                black_box(routed.decision);
                if k >= 2_000 {
                    samples.push(t.elapsed().as_nanos() as f64 / 1e3);
                }
            }
            common::print_percentiles(n, name, &mut samples);
        }
    }
}

criterion_group!(benches, bench_route);

fn main() {
    if std::env::args().any(|a| a == "--percentiles") {
        percentiles();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
