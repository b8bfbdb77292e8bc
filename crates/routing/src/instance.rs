//! [`InstanceTable`]: the instances a dispatcher routes to, each with its
//! lifecycle state, the engine's last reported gauges, and the router's own
//! always-fresh counts.

use kvroute_core::{InstanceId, InstanceLoad, Nanos};
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Whether an instance takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Takes requests.
    Healthy,
    /// Failing health checks; takes nothing until healthy again.
    Unhealthy,
    /// Finishing its in-flight requests; takes nothing new.
    Draining,
    /// Gone for good (its id is never reused).
    Removed,
}

impl InstanceState {
    fn from_u8(v: u8) -> InstanceState {
        match v {
            0 => InstanceState::Healthy,
            1 => InstanceState::Unhealthy,
            2 => InstanceState::Draining,
            _ => InstanceState::Removed,
        }
    }
    fn as_u8(self) -> u8 {
        self as u8
    }
    /// Snake-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Healthy => "healthy",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Draining => "draining",
            InstanceState::Removed => "removed",
        }
    }
}

/// The engine's own gauges, from its last `/metrics` poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineGauges {
    /// `vllm:num_requests_running`.
    pub running: u32,
    /// `vllm:num_requests_waiting`.
    pub waiting: u32,
    /// `vllm:kv_cache_usage_perc`, `0..=1`.
    pub kv_usage: f64,
    /// When they were read.
    pub observed_at: Nanos,
}

/// Per-request totals for one instance (monotonic counters).
#[derive(Debug, Default)]
pub struct InstanceCounters {
    /// Requests routed here.
    pub routed: AtomicU64,
    /// Requests that finished.
    pub finished: AtomicU64,
    /// Requests that failed.
    pub failed: AtomicU64,
    /// Requests cancelled or dropped.
    pub cancelled: AtomicU64,
    /// Prompt tokens routed here.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens the directory predicted were cached here.
    pub predicted_cached_tokens: AtomicU64,
}

/// One instance.
#[derive(Debug)]
pub struct Instance {
    id: InstanceId,
    name: String,
    state: AtomicU8,
    inflight: AtomicU32,
    pending_prefill: AtomicU64,
    /// Engine gauges, one atomic each: a reader may see fields from two
    /// consecutive polls, which is harmless and keeps the hot path lock-free.
    running: AtomicU32,
    waiting: AtomicU32,
    kv_usage_bits: AtomicU64,
    observed_at: AtomicU64,
    /// Totals.
    pub counters: InstanceCounters,
}

impl Instance {
    pub(crate) fn new(id: InstanceId, name: String) -> Instance {
        Instance {
            id,
            name,
            state: AtomicU8::new(InstanceState::Healthy.as_u8()),
            inflight: AtomicU32::new(0),
            pending_prefill: AtomicU64::new(0),
            running: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            kv_usage_bits: AtomicU64::new(0f64.to_bits()),
            observed_at: AtomicU64::new(0),
            counters: InstanceCounters::default(),
        }
    }

    /// Its id.
    pub fn id(&self) -> InstanceId {
        self.id
    }

    /// Its name (the caller's: a URL, "sim-3", ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its state.
    pub fn state(&self) -> InstanceState {
        InstanceState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: InstanceState) {
        self.state.store(s.as_u8(), Ordering::Release);
    }

    /// Requests in flight from this router.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }

    /// Uncached prompt tokens sent and not yet prefilled.
    pub fn pending_prefill_tokens(&self) -> u64 {
        self.pending_prefill.load(Ordering::Acquire)
    }

    /// The engine's last gauges.
    pub fn gauges(&self) -> EngineGauges {
        EngineGauges {
            running: self.running.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            kv_usage: f64::from_bits(self.kv_usage_bits.load(Ordering::Relaxed)),
            observed_at: Nanos(self.observed_at.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn set_gauges(&self, g: EngineGauges) {
        self.running.store(g.running, Ordering::Relaxed);
        self.waiting.store(g.waiting, Ordering::Relaxed);
        self.kv_usage_bits
            .store(g.kv_usage.to_bits(), Ordering::Relaxed);
        self.observed_at.store(g.observed_at.0, Ordering::Relaxed);
    }

    /// The load a policy sees.
    pub fn load(&self) -> InstanceLoad {
        let g = self.gauges();
        InstanceLoad {
            running: g.running,
            waiting: g.waiting,
            kv_usage: g.kv_usage,
            inflight: self.inflight(),
            pending_prefill_tokens: self.pending_prefill_tokens(),
            observed_at: g.observed_at,
        }
    }

    pub(crate) fn begin(&self, prefill_tokens: u64) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.pending_prefill
            .fetch_add(prefill_tokens, Ordering::AcqRel);
    }

    pub(crate) fn prefill_done(&self, prefill_tokens: u64) {
        self.pending_prefill
            .fetch_sub(prefill_tokens, Ordering::AcqRel);
    }

    pub(crate) fn end(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All instances, and the ones that may take requests.
#[derive(Debug, Default)]
pub struct InstanceTable {
    pub(crate) all: Vec<Arc<Instance>>,
    pub(crate) eligible: Vec<InstanceId>,
}

impl InstanceTable {
    pub(crate) fn refresh_eligible(&mut self) {
        self.eligible = self
            .all
            .iter()
            .filter(|i| i.state() == InstanceState::Healthy)
            .map(|i| i.id)
            .collect();
    }

    /// An instance by id.
    pub fn get(&self, id: InstanceId) -> Option<&Arc<Instance>> {
        self.all.get(id.index())
    }

    /// Every instance ever added, by id.
    pub fn all(&self) -> &[Arc<Instance>] {
        &self.all
    }

    /// The ones taking requests.
    pub fn eligible(&self) -> &[InstanceId] {
        &self.eligible
    }
}
