//! `cache_affinity`: "pure cache" — the instance holding the longest prefix
//! of the prompt, whatever its load.
//!
//! * the instance with the most matched leading blocks wins;
//! * ties (including "nobody has anything") go to the least-loaded of the
//!   tied instances (requests, then pending prefill tokens), rotating on
//!   equal loads.
//!
//! This is the cache-maximising extreme: it never trades a hit for balance,
//! so a popular prefix concentrates its traffic on one instance.

use crate::select::{argmin_from, load_key, Rotor};
use kvroute_core::{ClusterView, Decision, PickError, Policy, Reason, RouteRequest};
use serde::{Deserialize, Serialize};

/// `cache_affinity` has no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheAffinityConfig {}

/// Longest prefix match, ties by load.
#[derive(Debug, Default)]
pub struct CacheAffinity {
    rotor: Rotor,
}

impl CacheAffinity {
    /// The policy.
    pub fn new(_config: &CacheAffinityConfig) -> CacheAffinity {
        CacheAffinity::default()
    }
}

impl Policy for CacheAffinity {
    fn name(&self) -> &'static str {
        "cache_affinity"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let overlap = view.overlap(&req.block_hashes);
        // Maximise matched blocks; among equals minimise load.
        let instance = argmin_from(view.instances(), self.rotor.next(), |id| {
            let (reqs, prefill) = load_key(&view.load(id));
            (u32::MAX - overlap.get(id), reqs, prefill)
        })
        .ok_or(PickError::NoInstance)?;
        let cached_blocks = overlap.get(instance);
        Ok(Decision {
            instance,
            cached_blocks,
            reason: if cached_blocks > 0 {
                Reason::CacheHit
            } else {
                Reason::CacheMiss
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{InstanceId, StaticView};

    #[test]
    fn longest_match_wins_over_load() {
        let v = StaticView::idle(3)
            .with_matched(0, 3)
            .with_matched(2, 5)
            .with_inflight(2, 50);
        let d = CacheAffinity::default()
            .pick(&RouteRequest::default(), &v)
            .unwrap();
        assert_eq!(
            (d.instance, d.cached_blocks, d.reason),
            (InstanceId(2), 5, Reason::CacheHit)
        );
    }

    #[test]
    fn equal_matches_go_to_least_loaded() {
        let v = StaticView::idle(3)
            .with_matched(0, 4)
            .with_matched(1, 4)
            .with_inflight(0, 2);
        let d = CacheAffinity::default()
            .pick(&RouteRequest::default(), &v)
            .unwrap();
        assert_eq!(d.instance, InstanceId(1));
    }

    #[test]
    fn miss_spreads() {
        let p = CacheAffinity::default();
        let v = StaticView::idle(2);
        let a = p.pick(&RouteRequest::default(), &v).unwrap();
        let b = p.pick(&RouteRequest::default(), &v).unwrap();
        assert_eq!(a.reason, Reason::CacheMiss);
        assert_ne!(a.instance, b.instance);
    }
}
