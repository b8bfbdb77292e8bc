//! `dualmap`: DualMap's dual-mapping scheduler (Chen et al., "DualMap:
//! Enabling Both Cache Affinity and Load Balancing for Distributed LLM
//! Serving", ICLR 2026), its routing rule (a row to beat).
//!
//! * two independent hash functions map the prompt's prefix (the chain hash of
//!   its first `prefix_blocks` blocks) to two candidate instances, chosen by
//!   rendezvous hashing with two salts, so requests sharing a prefix share
//!   candidates while distinct prefixes spread by the power of two choices;
//! * each candidate's TTFT is estimated as
//!   `(pending prefill tokens + this prompt's uncached tokens) × prefill_secs_per_token`;
//! * cache affinity first: the candidate with more matched blocks (ties: lower
//!   estimate) — unless its estimate exceeds `ttft_slo_secs`, in which case
//!   the candidate with the lower estimate is taken (SLO-aware routing).
//!
//! The paper's hotspot-aware rebalancing migrates queued requests between
//! engines; a router cannot do that, so it is not part of this policy.

use crate::prefix_hash::rendezvous;
use crate::select::{least_loaded, Rotor};
use kvroute_core::{
    mix64, ClusterView, Decision, InstanceId, PickError, Policy, Reason, RouteRequest,
};
use serde::{Deserialize, Serialize};

/// Parameters of `dualmap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DualMapConfig {
    /// Leading blocks that define the prefix for the two hashes.
    pub prefix_blocks: usize,
    /// TTFT service-level objective, seconds.
    pub ttft_slo_secs: f64,
    /// Estimated prefill time per uncached token, seconds.
    pub prefill_secs_per_token: f64,
}

impl Default for DualMapConfig {
    fn default() -> Self {
        DualMapConfig {
            prefix_blocks: 4,
            ttft_slo_secs: 1.0,
            prefill_secs_per_token: 1e-4,
        }
    }
}

/// Two hash candidates, cache first, load under SLO pressure.
#[derive(Debug)]
pub struct DualMap {
    config: DualMapConfig,
    rotor: Rotor,
}

impl DualMap {
    /// The policy.
    pub fn new(config: &DualMapConfig) -> DualMap {
        DualMap {
            config: config.clone(),
            rotor: Rotor::default(),
        }
    }
}

/// The highest-weighted instance for `key`, other than `not`.
fn top(ids: &[InstanceId], key: u64, not: Option<InstanceId>) -> Option<InstanceId> {
    ids.iter()
        .copied()
        .filter(|&i| Some(i) != not)
        .max_by_key(|&i| rendezvous(key, i))
}

impl Policy for DualMap {
    fn name(&self) -> &'static str {
        "dualmap"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        let c = &self.config;
        let Some(key) = req.prefix_key(c.prefix_blocks) else {
            let instance = least_loaded(view, &self.rotor).ok_or(PickError::NoInstance)?;
            return Ok(Decision {
                instance,
                cached_blocks: 0,
                reason: Reason::LeastLoaded,
            });
        };
        let first = top(ids, key, None).ok_or(PickError::NoInstance)?;
        let Some(second) = top(ids, mix64(key ^ 0xd0a1_0a9e_5eed_0002), Some(first)) else {
            return Ok(Decision {
                instance: first,
                cached_blocks: view.overlap(&req.block_hashes).get(first),
                reason: Reason::OnlyChoice,
            });
        };
        let overlap = view.overlap(&req.block_hashes);
        let estimate = |id: InstanceId| {
            let uncached = req.prompt_tokens - req.blocks_to_tokens(overlap.get(id));
            (view.load(id).pending_prefill_tokens + u64::from(uncached)) as f64
                * c.prefill_secs_per_token
        };
        let (ea, eb) = (estimate(first), estimate(second));
        let (ma, mb) = (overlap.get(first), overlap.get(second));
        let affine = if ma > mb || (ma == mb && ea <= eb) {
            first
        } else {
            second
        };
        let lighter = if ea <= eb { first } else { second };
        let (instance, reason) = if estimate(affine) > c.ttft_slo_secs && lighter != affine {
            (lighter, Reason::SloFallback)
        } else if overlap.get(affine) > 0 {
            (affine, Reason::CacheHit)
        } else {
            (affine, Reason::PowerOfTwo)
        };
        Ok(Decision {
            instance,
            cached_blocks: overlap.get(instance),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{BlockHash, StaticView};

    fn req(first: u64) -> RouteRequest {
        RouteRequest {
            block_hashes: (0..10).map(|i| BlockHash(first + i)).collect(),
            block_size: 16,
            prompt_tokens: 160,
            ..Default::default()
        }
    }

    fn candidates(p: &DualMap, r: &RouteRequest, n: usize) -> (InstanceId, InstanceId) {
        let v = StaticView::idle(n);
        let key = r.prefix_key(p.config.prefix_blocks).unwrap();
        let a = top(&v.instances, key, None).unwrap();
        let b = top(&v.instances, mix64(key ^ 0xd0a1_0a9e_5eed_0002), Some(a)).unwrap();
        (a, b)
    }

    #[test]
    fn picks_the_candidate_with_the_cache() {
        let p = DualMap::new(&DualMapConfig::default());
        let r = req(1);
        let (_, b) = candidates(&p, &r, 8);
        let v = StaticView::idle(8).with_matched(b.0, 10);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (b, Reason::CacheHit));
    }

    #[test]
    fn slo_pressure_moves_to_the_lighter_candidate() {
        let p = DualMap::new(&DualMapConfig::default());
        let r = req(1);
        let (a, b) = candidates(&p, &r, 8);
        let mut v = StaticView::idle(8).with_matched(b.0, 10);
        v.loads[b.index()].pending_prefill_tokens = 20_000; // 2 s of prefill queued
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (a, Reason::SloFallback));
    }

    #[test]
    fn never_leaves_the_two_candidates() {
        let p = DualMap::new(&DualMapConfig::default());
        for k in 0..50 {
            let r = req(k * 100);
            let (a, b) = candidates(&p, &r, 16);
            let got = p.pick(&r, &StaticView::idle(16)).unwrap().instance;
            assert!(got == a || got == b);
        }
    }
}
