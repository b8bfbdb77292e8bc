//! The two traits every router and simulator shares: [`ClusterView`] (what a
//! policy may look at) and [`Policy`] (what it decides).
//!
//! `pick` is synchronous and takes `&self`: a decision is pure computation over
//! a consistent view, never I/O, so it can run inline on an async task or in a
//! discrete-event loop alike. Policies with state (a rotation counter, a seeded
//! RNG) keep it in atomics. Lifecycle hooks are part of the trait, so callers
//! never need to downcast to reach a particular policy.

use crate::decision::Decision;
use crate::explain::CandidateScore;
use crate::ids::{BlockHash, InstanceId, RequestId};
use crate::load::InstanceLoad;
use crate::request::RouteRequest;
use crate::time::Nanos;
use std::fmt;

/// The cluster as one routing decision sees it.
pub trait ClusterView {
    /// Instances a request may be sent to now (healthy and not draining), in a
    /// stable order. Never contains duplicates.
    fn instances(&self) -> &[InstanceId];

    /// An instance's load.
    fn load(&self, id: InstanceId) -> InstanceLoad;

    /// How many leading blocks of `hashes` each instance holds, per the cache
    /// directory. Computed on demand: a policy that never calls it (and says
    /// so through [`Policy::uses_directory`]) never pays for it.
    fn overlap(&self, hashes: &[BlockHash]) -> Overlap;

    /// Blocks the directory believes `id` holds in total (its cache size).
    fn cached_blocks(&self, id: InstanceId) -> u64;

    /// The current time on the caller's clock.
    fn now(&self) -> Nanos;
}

/// Matched prefix length per instance, in blocks, indexed by [`InstanceId`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlap {
    matched: Vec<u32>,
}

impl Overlap {
    /// From a dense vector indexed by instance id.
    pub fn from_dense(matched: Vec<u32>) -> Overlap {
        Overlap { matched }
    }

    /// Leading blocks `id` holds (zero for unknown instances).
    #[inline]
    pub fn get(&self, id: InstanceId) -> u32 {
        self.matched.get(id.index()).copied().unwrap_or(0)
    }

    /// The longest match among `among`.
    pub fn max_over(&self, among: &[InstanceId]) -> u32 {
        among.iter().map(|&i| self.get(i)).max().unwrap_or(0)
    }

    /// The dense vector.
    pub fn as_slice(&self) -> &[u32] {
        &self.matched
    }
}

/// How a routed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The engine finished it.
    Finished,
    /// The engine or the connection to it failed.
    Failed,
    /// The client went away, or the request was dropped before finishing.
    Cancelled,
}

/// A routed request that ended, as reported to [`Policy::on_completed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request.
    pub request: RequestId,
    /// Where it was sent.
    pub instance: InstanceId,
    /// How it ended.
    pub outcome: Outcome,
    /// Time from routing to the first token, on the router's clock (`None`:
    /// no token came).
    pub ttft: Option<Nanos>,
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// Every instance is unhealthy, draining or absent.
    #[error("no instance is available")]
    NoInstance,
}

/// A routing policy.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The registry name (`"round_robin"`, `"weighted"`, ...).
    fn name(&self) -> &'static str;

    /// Choose an instance for `req`. Must return one of `view.instances()`.
    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError>;

    /// The candidates `pick` would weigh for `req`, each with its matched
    /// blocks, the named terms and the score it ranks by (higher preferred).
    /// Side-effect free: no rotation advances, no random number is drawn, no
    /// state changes, so it can be called at any time (logs, admin API)
    /// without changing later decisions. Empty for a policy that does not
    /// explain itself.
    fn explain(&self, _req: &RouteRequest, _view: &dyn ClusterView) -> Vec<CandidateScore> {
        Vec::new()
    }

    /// Whether the policy reads the cache directory. A policy that does not
    /// (load-only) spares the caller every directory read and write for its
    /// decisions: no overlap is computed and routing predicts nothing.
    fn uses_directory(&self) -> bool {
        true
    }

    /// Called once the request has been dispatched to `decision.instance`.
    fn on_routed(&self, _req: &RouteRequest, _decision: &Decision) {}

    /// Called exactly once per routed request when it ends, on every path
    /// (finished, failed, cancelled).
    fn on_completed(&self, _done: &Completion) {}
}
