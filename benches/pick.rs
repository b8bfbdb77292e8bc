//! Decision latency of every policy at 2, 16, 128 and 1024 instances, with
//! ~1 M blocks indexed and 2,000-token prompts (block size 16). Each
//! iteration is one `Policy::pick` including the directory prefix match.
//!
//! `cargo bench --bench pick` (criterion: mean and spread), and
//! `cargo bench --bench pick -- --percentiles` for p50/p99/p999 per call.

mod common;

use common::Fixture;
use criterion::{criterion_group, BenchmarkId, Criterion};
use kvroute_core::RouteRequest;
use kvroute_policy::{PolicyConfig, POLICY_NAMES};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [2, 16, 128, 1024];

fn prompts(f: &Fixture) -> Vec<RouteRequest> {
    (0..256).map(|i| f.prompt(i)).collect()
}

fn bench_pick(c: &mut Criterion) {
    for n in SIZES {
        let f = Fixture::new(n);
        let reqs = prompts(&f);
        let view = f.view();
        let mut group = c.benchmark_group(format!("pick/{n}"));
        group
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for &name in POLICY_NAMES {
            let p = PolicyConfig::by_name(name).expect("registry name").build();
            let mut i = 0;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(p.pick(&reqs[i], &view).expect("instances exist"))
                })
            });
        }
        group.finish();
    }
}

/// Per-call latency percentiles (criterion reports means, the targets are p99).
fn percentiles() {
    println!("| instances | policy | p50 µs | p99 µs | p99.9 µs |");
    println!("|---:|---|---:|---:|---:|");
    for n in SIZES {
        let f = Fixture::new(n);
        let reqs = prompts(&f);
        let view = f.view();
        for &name in POLICY_NAMES {
            let p = PolicyConfig::by_name(name).expect("registry name").build();
            let mut samples = Vec::with_capacity(20_000);
            for k in 0..22_000 {
                let r = &reqs[k % reqs.len()];
                let t = Instant::now();
                black_box(p.pick(r, &view).expect("instances exist"));
                if k >= 2_000 {
                    samples.push(t.elapsed().as_nanos() as f64 / 1e3);
                }
            }
            common::print_percentiles(n, name, &mut samples);
        }
    }
}

criterion_group!(benches, bench_pick);

fn main() {
    if std::env::args().any(|a| a == "--percentiles") {
        percentiles();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
