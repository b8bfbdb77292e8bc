//! Shared set-up for the benches: a directory holding ~1 M blocks spread over
//! N instances, and 2,000-token prompts (block size 16) that partly match it.

#![allow(dead_code)]

use kvroute_core::{
    BlockHash, ClusterView, InstanceId, InstanceLoad, Nanos, Overlap, RouteRequest, SeededRng,
};
use kvroute_directory::{Directory, Freshness};

pub const BLOCK_SIZE: u32 = 16;
pub const PROMPT_BLOCKS: usize = 125; // 2,000 tokens
pub const INDEXED_BLOCKS: usize = 1_000_000;

/// A directory with `INDEXED_BLOCKS` entries over `n` instances, plus the chains
/// it was filled with (so queries can share their prefixes).
pub struct Fixture {
    pub directory: Directory,
    pub chains: Vec<(InstanceId, Vec<BlockHash>)>,
    pub loads: Vec<InstanceLoad>,
    pub instances: Vec<InstanceId>,
    rng: SeededRng,
}

impl Fixture {
    pub fn new(n: usize) -> Fixture {
        let rng = SeededRng::new(42);
        let directory = Directory::new(Freshness::Live);
        let mut chains = Vec::new();
        let mut stored = 0;
        // 20 % of chains start with a shared 32-block "system prompt".
        let system: Vec<BlockHash> = (0..32).map(|_| BlockHash(rng.next_u64())).collect();
        while stored < INDEXED_BLOCKS {
            let inst = InstanceId(rng.below(n) as u32);
            let chain: Vec<BlockHash> = if rng.below(5) == 0 {
                system
                    .iter()
                    .copied()
                    .chain((32..PROMPT_BLOCKS).map(|_| BlockHash(rng.next_u64())))
                    .collect()
            } else {
                (0..PROMPT_BLOCKS)
                    .map(|_| BlockHash(rng.next_u64()))
                    .collect()
            };
            directory.record_routed(Nanos::ZERO, inst, &chain, None);
            stored += chain.len();
            chains.push((inst, chain));
        }
        let loads = (0..n)
            .map(|_| InstanceLoad {
                running: rng.below(32) as u32,
                waiting: rng.below(8) as u32,
                kv_usage: rng.unit(),
                inflight: rng.below(40) as u32,
                pending_prefill_tokens: rng.below(20_000) as u64,
                observed_at: Nanos::ZERO,
            })
            .collect();
        Fixture {
            directory,
            chains,
            loads,
            instances: (0..n as u32).map(InstanceId).collect(),
            rng,
        }
    }

    /// A 2,000-token prompt: half share a random-length prefix of an indexed
    /// chain, half are new.
    pub fn prompt(&self, id: u64) -> RouteRequest {
        let mut hashes = Vec::with_capacity(PROMPT_BLOCKS);
        if self.rng.below(2) == 0 {
            let (_, chain) = &self.chains[self.rng.below(self.chains.len())];
            let keep = self.rng.below(PROMPT_BLOCKS + 1);
            hashes.extend_from_slice(&chain[..keep]);
        }
        while hashes.len() < PROMPT_BLOCKS {
            hashes.push(BlockHash(self.rng.next_u64()));
        }
        RouteRequest {
            id: kvroute_core::RequestId(id),
            block_hashes: hashes,
            block_size: BLOCK_SIZE,
            prompt_tokens: BLOCK_SIZE * PROMPT_BLOCKS as u32,
            ..Default::default()
        }
    }

    pub fn view(&self) -> FixtureView<'_> {
        FixtureView { f: self }
    }
}

/// A ClusterView over the fixture: overlap comes from the real directory.
pub struct FixtureView<'a> {
    f: &'a Fixture,
}

impl ClusterView for FixtureView<'_> {
    fn instances(&self) -> &[InstanceId] {
        &self.f.instances
    }
    fn load(&self, id: InstanceId) -> InstanceLoad {
        self.f.loads[id.index()]
    }
    fn overlap(&self, hashes: &[BlockHash]) -> Overlap {
        self.f.directory.overlap(Nanos::ZERO, hashes)
    }
    fn cached_blocks(&self, id: InstanceId) -> u64 {
        self.f.directory.instance_blocks(id)
    }
    fn now(&self) -> Nanos {
        Nanos::ZERO
    }
}

/// One row of the `--percentiles` table: p50, p99 and p99.9 of `samples`
/// (µs), as `| instances | policy | p50 | p99 | p99.9 |`.
pub fn print_percentiles(instances: usize, policy: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let q = |x: f64| samples[((samples.len() - 1) as f64 * x) as usize];
    println!(
        "| {instances} | {policy} | {:.2} | {:.2} | {:.2} |",
        q(0.5),
        q(0.99),
        q(0.999)
    );
}
