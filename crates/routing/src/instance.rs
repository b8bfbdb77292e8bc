//! [`InstanceTable`]: the instances a dispatcher routes to, each with its
//! lifecycle state, the engine's last reported gauges, and the router's own
//! always-fresh counts.

use kvroute_core::{EngineGauges, InstanceId, InstanceLoad, Nanos};
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

/// Why an instance is out of rotation besides the admin's say, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health(u8);

impl Health {
    /// Taking requests as far as health goes.
    pub const OK: Health = Health(0);
    /// Health probes fail (or none has succeeded yet).
    pub const FAILING: u8 = 1;
    /// Ejected for failing requests (outlier detection).
    pub const EJECTED: u8 = 2;

    /// Health with these reason bits set.
    pub fn with(bits: u8) -> Health {
        Health(bits)
    }

    /// Whether any reason is set.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

pub(crate) const ACTIVE: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const REMOVED: u8 = 2;

/// One instance: its lifecycle (the admin's say and its health), the
/// engine's last reported gauges, the router's own always-fresh counts, and
/// `ext`, whatever the owner of the dispatcher keeps per instance (the live
/// router: its address, connection and feed statistics; the simulator:
/// nothing).
///
/// The state is derived, in this order: removed (admin) > draining (admin) >
/// unhealthy (failing probes or ejected) > healthy. Only the [`Dispatcher`]
/// changes it, under its table lock, so probes and admin calls cannot race.
///
/// [`Dispatcher`]: crate::Dispatcher
#[derive(Debug)]
pub struct Instance<X = ()> {
    id: InstanceId,
    name: String,
    admin: AtomicU8,
    health: AtomicU8,
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
    ext: X,
}

impl<X> Instance<X> {
    pub(crate) fn new(id: InstanceId, name: String, health: Health, ext: X) -> Instance<X> {
        Instance {
            id,
            name,
            admin: AtomicU8::new(ACTIVE),
            health: AtomicU8::new(health.0),
            inflight: AtomicU32::new(0),
            pending_prefill: AtomicU64::new(0),
            running: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            kv_usage_bits: AtomicU64::new(0f64.to_bits()),
            observed_at: AtomicU64::new(0),
            counters: InstanceCounters::default(),
            ext,
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

    /// What the dispatcher's owner keeps for it.
    pub fn ext(&self) -> &X {
        &self.ext
    }

    /// Its state.
    pub fn state(&self) -> InstanceState {
        match self.admin.load(Ordering::Acquire) {
            REMOVED => InstanceState::Removed,
            DRAINING => InstanceState::Draining,
            _ if self.health.load(Ordering::Acquire) != 0 => InstanceState::Unhealthy,
            _ => InstanceState::Healthy,
        }
    }

    /// Its health reasons.
    pub fn health(&self) -> Health {
        Health(self.health.load(Ordering::Acquire))
    }

    /// Whether it was removed (for good).
    pub fn is_removed(&self) -> bool {
        self.admin.load(Ordering::Acquire) == REMOVED
    }

    /// Whether the admin drains it.
    pub fn is_draining(&self) -> bool {
        self.admin.load(Ordering::Acquire) == DRAINING
    }

    pub(crate) fn set_admin(&self, v: u8) {
        self.admin.store(v, Ordering::Release);
    }

    /// Set or clear health bit(s); whether anything changed.
    pub(crate) fn set_health_bits(&self, bits: u8, on: bool) -> bool {
        let old = if on {
            self.health.fetch_or(bits, Ordering::AcqRel)
        } else {
            self.health.fetch_and(!bits, Ordering::AcqRel)
        };
        (old & bits != 0) != on
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
        let mut load = InstanceLoad {
            inflight: self.inflight(),
            pending_prefill_tokens: self.pending_prefill_tokens(),
            ..Default::default()
        };
        load.set_engine(self.gauges());
        load
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
#[derive(Debug)]
pub struct InstanceTable<X = ()> {
    pub(crate) all: Vec<Arc<Instance<X>>>,
    pub(crate) eligible: Vec<InstanceId>,
}

impl<X> Default for InstanceTable<X> {
    fn default() -> Self {
        InstanceTable {
            all: Vec::new(),
            eligible: Vec::new(),
        }
    }
}

impl<X> InstanceTable<X> {
    pub(crate) fn refresh_eligible(&mut self) {
        self.eligible = self
            .all
            .iter()
            .filter(|i| i.state() == InstanceState::Healthy)
            .map(|i| i.id)
            .collect();
    }

    /// An instance by id.
    pub fn get(&self, id: InstanceId) -> Option<&Arc<Instance<X>>> {
        self.all.get(id.index())
    }

    /// Every instance ever added, by id.
    pub fn all(&self) -> &[Arc<Instance<X>>] {
        &self.all
    }

    /// The ones taking requests.
    pub fn eligible(&self) -> &[InstanceId] {
        &self.eligible
    }
}
