//! `sglang_cache_aware`: SGLang router's `cache_aware` policy, reproduced on
//! block hashes (a row to beat).
//!
//! SGLang's rule (sgl-model-gateway `policies/cache_aware.rs`), with its
//! defaults as shipped in sglang-router 0.3.2:
//!
//! * loads are the router's in-flight request counts;
//! * if `max − min > balance_abs_threshold` **and** `max > min ×
//!   balance_rel_threshold`, the system is imbalanced: send to the least-loaded
//!   instance;
//! * otherwise find the instance with the longest cached prefix; if the
//!   matched fraction of the prompt exceeds `cache_threshold`, send there;
//! * else send to the instance caching the least ("smallest tree"), to grow
//!   cache where there is room.
//!
//! SGLang matches characters in a radix tree built from request text; here the
//! match is on block hashes from the directory (in predicted mode the directory
//! is filled at routing time exactly as SGLang's tree is). Unlike SGLang, ties
//! are broken by load then rotation, and the imbalance test uses the same
//! (eligible) instances as the pick.

use crate::select::{argmin_from, Rotor};
use kvroute_core::{ClusterView, Decision, PickError, Policy, Reason, RouteRequest};
use serde::{Deserialize, Serialize};

/// Parameters of `sglang_cache_aware` (SGLang's names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SglangCacheAwareConfig {
    /// Minimum matched fraction of the prompt for cache routing.
    pub cache_threshold: f64,
    /// Absolute in-flight difference that, with the relative one, means imbalance.
    pub balance_abs_threshold: u32,
    /// Relative in-flight ratio that, with the absolute one, means imbalance.
    pub balance_rel_threshold: f64,
}

impl Default for SglangCacheAwareConfig {
    fn default() -> Self {
        SglangCacheAwareConfig {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
        }
    }
}

/// SGLang's cache-aware rule.
#[derive(Debug)]
pub struct SglangCacheAware {
    config: SglangCacheAwareConfig,
    rotor: Rotor,
}

impl SglangCacheAware {
    /// The policy.
    pub fn new(config: &SglangCacheAwareConfig) -> SglangCacheAware {
        SglangCacheAware {
            config: config.clone(),
            rotor: Rotor::default(),
        }
    }
}

impl Policy for SglangCacheAware {
    fn name(&self) -> &'static str {
        "sglang_cache_aware"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let c = &self.config;
        let start = self.rotor.next();
        let inflight = |id| view.load(id).inflight;
        let min = ids.iter().map(|&i| inflight(i)).min().unwrap_or(0);
        let max = ids.iter().map(|&i| inflight(i)).max().unwrap_or(0);
        let imbalanced = max - min > c.balance_abs_threshold
            && f64::from(max) > f64::from(min) * c.balance_rel_threshold;
        let overlap = view.overlap(&req.block_hashes);
        let (instance, reason) = if imbalanced {
            let i = argmin_from(ids, start, inflight).ok_or(PickError::NoInstance)?;
            (i, Reason::Rebalance)
        } else {
            let best = argmin_from(ids, start, |id| (u32::MAX - overlap.get(id), inflight(id)))
                .ok_or(PickError::NoInstance)?;
            if req.cached_fraction(overlap.get(best)) > c.cache_threshold {
                (best, Reason::CacheHit)
            } else {
                let smallest = argmin_from(ids, start, |id| (view.cached_blocks(id), inflight(id)))
                    .ok_or(PickError::NoInstance)?;
                (smallest, Reason::CacheMiss)
            }
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
    use kvroute_core::{InstanceId, StaticView};

    fn req() -> RouteRequest {
        RouteRequest {
            block_size: 16,
            prompt_tokens: 160,
            ..Default::default()
        }
    }

    #[test]
    fn imbalance_overrides_cache() {
        let v = StaticView::idle(2)
            .with_matched(0, 10)
            .with_inflight(0, 100)
            .with_inflight(1, 10);
        let d = SglangCacheAware::new(&Default::default())
            .pick(&req(), &v)
            .unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(1), Reason::Rebalance));
    }

    #[test]
    fn both_thresholds_needed_for_imbalance() {
        // 100 vs 70: abs diff 30 < 64 → balanced, cache wins.
        let v = StaticView::idle(2)
            .with_matched(0, 10)
            .with_inflight(0, 100)
            .with_inflight(1, 70);
        let d = SglangCacheAware::new(&Default::default())
            .pick(&req(), &v)
            .unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(0), Reason::CacheHit));
    }

    #[test]
    fn low_match_goes_to_smallest_cache() {
        let mut v = StaticView::idle(3).with_matched(0, 2); // 32/160 = 0.2 < 0.3
        v.cached = vec![500, 100, 300];
        let d = SglangCacheAware::new(&Default::default())
            .pick(&req(), &v)
            .unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(1), Reason::CacheMiss));
    }
}
