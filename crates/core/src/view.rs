//! [`StaticView`]: a [`ClusterView`] assembled by hand — for tests, benches,
//! and proxies that compute loads and overlaps themselves.

use crate::ids::{BlockHash, InstanceId};
use crate::load::InstanceLoad;
use crate::policy::{ClusterView, Overlap};
use crate::time::Nanos;

/// A fixed cluster: per-instance loads, a fixed overlap, cache sizes and a time.
#[derive(Debug, Clone, Default)]
pub struct StaticView {
    /// Eligible instances.
    pub instances: Vec<InstanceId>,
    /// Loads, indexed by instance id.
    pub loads: Vec<InstanceLoad>,
    /// Matched blocks per instance (returned for any query), indexed by id.
    pub matched: Vec<u32>,
    /// Directory cache size per instance, indexed by id.
    pub cached: Vec<u64>,
    /// The time.
    pub now: Nanos,
}

impl StaticView {
    /// `n` idle instances with ids `0..n` and no cached blocks.
    pub fn idle(n: usize) -> StaticView {
        StaticView {
            instances: (0..n as u32).map(InstanceId).collect(),
            loads: vec![InstanceLoad::default(); n],
            matched: vec![0; n],
            cached: vec![0; n],
            now: Nanos::ZERO,
        }
    }

    /// Set an instance's in-flight count.
    pub fn with_inflight(mut self, id: u32, inflight: u32) -> StaticView {
        self.loads[id as usize].inflight = inflight;
        self
    }

    /// Set an instance's matched blocks.
    pub fn with_matched(mut self, id: u32, blocks: u32) -> StaticView {
        self.matched[id as usize] = blocks;
        self
    }
}

impl ClusterView for StaticView {
    fn instances(&self) -> &[InstanceId] {
        &self.instances
    }
    fn load(&self, id: InstanceId) -> InstanceLoad {
        self.loads.get(id.index()).copied().unwrap_or_default()
    }
    fn overlap(&self, _hashes: &[BlockHash]) -> Overlap {
        Overlap::from_dense(self.matched.clone())
    }
    fn cached_blocks(&self, id: InstanceId) -> u64 {
        self.cached.get(id.index()).copied().unwrap_or(0)
    }
    fn now(&self) -> Nanos {
        self.now
    }
}
