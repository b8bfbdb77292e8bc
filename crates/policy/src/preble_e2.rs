//! `preble_e2`: Preble's E2 scheduler (Srivatsa et al., "Preble: Efficient
//! Distributed Prompt Scheduling for LLM Serving", ICLR 2025), its
//! per-request rule (a row to beat).
//!
//! * **Exploit** when the longest cached prefix anywhere is at least as long
//!   as the part of the prompt it does not cover (`cached ≥ uncached`): send
//!   to an instance holding that prefix — the least loaded of them.
//! * **Explore** otherwise: send to the instance with the least estimated
//!   work after taking the request:
//!   `cost_i = pending_prefill_i + running_cost_tokens × requests_i + uncached_i`,
//!   all in prefill-token equivalents (Preble's load cost over its recent
//!   window plus this request's prefill cost on `i`).
//!
//! Preble's eviction-cost term and its post-assignment load rebalancing need
//! engine internals a router does not have; they are left out.

use crate::select::{argmin_from, load_key, Rotor};
use kvroute_core::{ClusterView, Decision, PickError, Policy, Reason, RouteRequest};
use serde::{Deserialize, Serialize};

/// Parameters of `preble_e2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrebleE2Config {
    /// Prefill-token equivalent of one queued or running request (its decode work).
    pub running_cost_tokens: f64,
}

impl Default for PrebleE2Config {
    fn default() -> Self {
        PrebleE2Config {
            running_cost_tokens: 64.0,
        }
    }
}

/// Exploit long cached prefixes, explore otherwise.
#[derive(Debug)]
pub struct PrebleE2 {
    config: PrebleE2Config,
    rotor: Rotor,
}

impl PrebleE2 {
    /// The policy.
    pub fn new(config: &PrebleE2Config) -> PrebleE2 {
        PrebleE2 {
            config: config.clone(),
            rotor: Rotor::default(),
        }
    }
}

impl Policy for PrebleE2 {
    fn name(&self) -> &'static str {
        "preble_e2"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        let overlap = view.overlap(&req.block_hashes);
        let best = overlap.max_over(ids);
        let cached = req.blocks_to_tokens(best);
        let start = self.rotor.next();
        let (instance, reason) = if best > 0 && cached >= req.prompt_tokens - cached {
            let i = argmin_from(ids, start, |id| {
                let (reqs, prefill) = load_key(&view.load(id));
                (overlap.get(id) != best, reqs, prefill)
            })
            .ok_or(PickError::NoInstance)?;
            (i, Reason::Exploit)
        } else {
            let i = argmin_from(ids, start, |id| {
                let l = view.load(id);
                let uncached = req.prompt_tokens - req.blocks_to_tokens(overlap.get(id));
                l.pending_prefill_tokens as f64
                    + self.config.running_cost_tokens * f64::from(l.requests())
                    + f64::from(uncached)
            })
            .ok_or(PickError::NoInstance)?;
            (i, Reason::Explore)
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
    fn exploits_a_long_prefix_despite_load() {
        let v = StaticView::idle(3).with_matched(2, 6).with_inflight(2, 8); // 96 ≥ 64
        let d = PrebleE2::new(&Default::default()).pick(&req(), &v).unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(2), Reason::Exploit));
    }

    #[test]
    fn explores_when_the_prefix_is_short() {
        // 3 blocks = 48 tokens cached < 112 uncached → explore by cost.
        let v = StaticView::idle(2).with_matched(0, 3).with_inflight(0, 4);
        let d = PrebleE2::new(&Default::default()).pick(&req(), &v).unwrap();
        // cost0 = 64·4 + 112 = 368; cost1 = 160 → instance 1.
        assert_eq!((d.instance, d.reason), (InstanceId(1), Reason::Explore));
    }

    #[test]
    fn explore_counts_the_prefix_it_saves() {
        let v = StaticView::idle(2).with_matched(0, 3).with_inflight(0, 1);
        // cost0 = 64 + 112 = 176; cost1 = 160 → still 1; with no load on 0 → 0.
        let d = PrebleE2::new(&Default::default()).pick(&req(), &v).unwrap();
        assert_eq!(d.instance, InstanceId(1));
        let v = StaticView::idle(2).with_matched(0, 3);
        let d = PrebleE2::new(&Default::default()).pick(&req(), &v).unwrap();
        assert_eq!(d.instance, InstanceId(0));
    }
}
