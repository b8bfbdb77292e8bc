//! `cache_affinity`: "pure cache" — the instance holding the longest part
//! of the prompt beyond what most traffic shares, whatever its load.
//!
//! * `shared` = the prefix a hot share of recent traffic has in common
//!   ([`SharedPrefix`]: a system prompt, a tool preamble; 0 when none);
//! * the instance with the most matched blocks *beyond* `shared`
//!   (`max(matched − shared, 0)`) wins, whatever its load;
//! * ties (including "nobody holds anything beyond the shared prefix") go to
//!   the least-loaded of the tied instances (requests, then pending prefill
//!   tokens), rotating on equal loads. Holding the shared prefix breaks no
//!   tie: preferring its holders whenever loads are equal keeps it on a few
//!   instances while traffic is light, and the first burst then costs every
//!   other instance a full prefill of it at once.
//!
//! This is the cache-maximising extreme: it never trades a hit *on what
//! distinguishes the request* for balance, so a popular conversation or
//! document concentrates its traffic on one instance. What it no longer does
//! is let the prompt everyone shares decide: ranked by the whole match, every
//! request of a trace whose prompts all start with one system prompt went to
//! the first instance that cached it (6 of 16 instances stayed idle). Beyond
//! the shared prefix, each instance acquires the shared prompt on its first
//! request (one miss per instance) and then shares the traffic. Until
//! `SharedPrefix` has seen 20 requests it ranks by the whole match, as before.

use crate::registry::PolicySpec;
use crate::select::{argmin_from, load_key, load_terms, Rotor};
use crate::shared::SharedPrefix;
use kvroute_core::{
    CandidateScore, ClusterView, Decision, PickError, Policy, Reason, RouteRequest,
};
use serde::{Deserialize, Serialize};

/// `cache_affinity` has no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheAffinityConfig {}

impl PolicySpec for CacheAffinityConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(CacheAffinity::new(self))
    }
}

/// Longest match beyond the shared prefix, ties by load.
#[derive(Debug, Default)]
pub struct CacheAffinity {
    rotor: Rotor,
    shared: SharedPrefix,
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
        let key = self.shared.key(&req.block_hashes, 1);
        let overlap = view.overlap(&req.block_hashes);
        // Maximise matched blocks beyond the shared prefix; among equals
        // minimise load.
        let instance = argmin_from(view.instances(), self.rotor.next(), |id| {
            let (reqs, prefill) = load_key(&view.load(id));
            (u32::MAX - key.beyond(overlap.get(id)), reqs, prefill)
        })
        .ok_or(PickError::NoInstance)?;
        let cached_blocks = overlap.get(instance);
        Ok(Decision {
            instance,
            cached_blocks,
            reason: if key.beyond(cached_blocks) > 0 {
                Reason::CacheHit
            } else {
                Reason::CacheMiss
            },
        })
    }

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        self.shared.observe(&req.block_hashes, 1);
    }

    /// Every eligible instance; score = matched blocks beyond the shared
    /// prefix (ties: load, then rotation).
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let key = self.shared.key(&req.block_hashes, 1);
        let overlap = view.overlap(&req.block_hashes);
        view.instances()
            .iter()
            .map(|&id| {
                let m = overlap.get(id);
                let c = CandidateScore::new(id, m)
                    .term("shared_prefix_blocks", key.shared as f64)
                    .term("matched_beyond_shared", f64::from(key.beyond(m)));
                load_terms(c, &view.load(id)).score(f64::from(key.beyond(m)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{mix64, BlockHash, InstanceId, StaticView};

    /// `shared` blocks common to every prompt, then 4 of its own.
    fn shared_req(shared: usize, id: u64) -> RouteRequest {
        let mut h = 0x1234_u64;
        let hashes: Vec<BlockHash> = (0..shared + 4)
            .map(|i| {
                let block = if i < shared {
                    i as u64
                } else {
                    (id << 32) | i as u64
                };
                h = mix64(h ^ block);
                BlockHash(h)
            })
            .collect();
        RouteRequest {
            prompt_tokens: hashes.len() as u32 * 16,
            block_hashes: hashes,
            block_size: 16,
            ..Default::default()
        }
    }

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

    /// Warm the detector with prompts sharing 50 blocks.
    fn warmed() -> CacheAffinity {
        let p = CacheAffinity::default();
        let v = StaticView::idle(4);
        for id in 0..60 {
            let r = shared_req(50, id);
            let d = p.pick(&r, &v).unwrap();
            p.on_routed(&r, &d);
        }
        p
    }

    #[test]
    fn the_shared_prefix_alone_does_not_attract() {
        let p = warmed();
        // Instance 0 holds the shared prompt and is busier: load decides.
        let v = StaticView::idle(4).with_matched(0, 50).with_inflight(0, 3);
        let d = p.pick(&shared_req(50, 999), &v).unwrap();
        assert_ne!(d.instance, InstanceId(0));
        assert_eq!(d.reason, Reason::CacheMiss);
    }

    #[test]
    fn at_equal_load_holding_the_shared_prefix_breaks_no_tie() {
        let p = warmed();
        let v = StaticView::idle(4).with_matched(2, 50);
        let picks: Vec<InstanceId> = (0..4)
            .map(|id| p.pick(&shared_req(50, 900 + id), &v).unwrap().instance)
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{picks:?}");
    }

    #[test]
    fn a_match_beyond_the_shared_prefix_wins_whatever_the_load() {
        let p = warmed();
        let v = StaticView::idle(4)
            .with_matched(0, 50)
            .with_matched(3, 52)
            .with_inflight(3, 40);
        let d = p.pick(&shared_req(50, 999), &v).unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(3), Reason::CacheHit));
        let e = p.explain(&shared_req(50, 999), &v);
        assert_eq!(e[3].get("matched_beyond_shared"), Some(2.0));
        assert_eq!(e[0].score, 0.0);
    }
}
