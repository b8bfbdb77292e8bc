//! [`EngineMetrics`]: the emulated engine's `/metrics`, kept the way vLLM
//! keeps them (via `kvroute_metrics::VllmMetrics`, which owns the names,
//! labels and bucket layouts), with times converted to wall-clock seconds.

use kvroute_core::{HashAlgo, Nanos};
use kvroute_metrics::{CacheConfig, FinishedReason, FinishedRequest, VllmMetrics};
use kvroute_sim::{EngineCounters, Finished, Profile};
use std::collections::HashMap;

/// vLLM-named metrics of one emulated engine.
#[derive(Debug)]
pub struct EngineMetrics {
    vllm: VllmMetrics,
    /// Wall-clock time of each output token, per live request.
    token_times: HashMap<u64, Vec<Nanos>>,
}

impl EngineMetrics {
    /// Zeroed metrics for an engine with `profile`, publishing `algo` hashes.
    pub fn new(profile: &Profile, algo: HashAlgo) -> EngineMetrics {
        let mut vllm = VllmMetrics::new(u64::from(profile.limits.max_model_len));
        vllm.cache_config = Some(CacheConfig {
            block_size: profile.limits.block_size,
            num_gpu_blocks: Some(profile.limits.num_blocks as u64),
            hash_algo: Some(algo.to_string()),
            enable_prefix_caching: Some(true),
        });
        EngineMetrics {
            vllm,
            token_times: HashMap::new(),
        }
    }

    pub(crate) fn on_token(&mut self, id: u64, wall: Nanos) {
        self.token_times.entry(id).or_default().push(wall);
    }

    pub(crate) fn forget(&mut self, id: u64) {
        self.token_times.remove(&id);
    }

    /// Record a finished request; `wall` maps engine time to wall time.
    pub(crate) fn on_finished(&mut self, f: &Finished, wall: impl Fn(Nanos) -> Nanos) {
        let times = self.token_times.remove(&f.id).unwrap_or_default();
        self.vllm.record_finished(&FinishedRequest {
            arrival: wall(f.arrival),
            queued: wall(f.arrival),
            scheduled: wall(f.first_scheduled),
            token_times: &times,
            finished: wall(f.finish),
            prompt_tokens: u64::from(f.prompt_tokens),
            cached_tokens: u64::from(f.cached_tokens),
            reason: FinishedReason::Length,
        });
    }

    /// Mirror the engine's cumulative counters that vLLM counts at scheduling time.
    pub(crate) fn set_counters(&mut self, c: &EngineCounters) {
        self.vllm.prefix_cache_queries = c.prefix_cache_queries as f64;
        self.vllm.prefix_cache_hits = c.prefix_cache_hits as f64;
        self.vllm.num_preemptions = c.preemptions as f64;
    }

    pub(crate) fn set_gauges(&mut self, running: u32, waiting: u32, kv_usage: f64) {
        self.vllm.num_requests_running = f64::from(running);
        self.vllm.num_requests_waiting = f64::from(waiting);
        self.vllm.kv_cache_usage_perc = kv_usage;
    }

    /// The `/metrics` page.
    pub fn render(&self, model_name: &str) -> String {
        self.vllm.render(model_name)
    }
}
