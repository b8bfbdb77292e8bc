//! `prefix_hash`: stateless affinity — the prompt's first `prefix_blocks`
//! blocks name a home instance by rendezvous hashing, with a bounded-load
//! spill.
//!
//! * key = the chain hash of block `prefix_blocks - 1` (it covers all the
//!   blocks before it), or of the last full block for shorter prompts, or the
//!   session id; a request with none of these goes to the least-loaded instance;
//! * instances are ranked by `mix64(key ^ mix64(instance))` (rendezvous / HRW
//!   hashing: adding or removing an instance moves only its own share);
//! * *bounded load* (Mirrokni et al., "Consistent Hashing with Bounded Loads"):
//!   an instance accepts the request only if its load after taking it stays
//!   within `ceil(load_factor · (total + 1) / n)` requests; otherwise the
//!   request spills to the next instance in its ranking. One hot prefix can
//!   therefore never sink an instance.
//!
//! Needs no directory: affinity comes from the hash, so it works with any
//! engine and survives router restarts.

use crate::select::{least_loaded, Rotor};
use kvroute_core::{
    mix64, ClusterView, Decision, InstanceId, PickError, Policy, Reason, RouteRequest,
};
use serde::{Deserialize, Serialize};

/// Parameters of `prefix_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixHashConfig {
    /// How many leading blocks define the prefix (≥ 1).
    pub prefix_blocks: usize,
    /// Bound on an instance's load relative to the mean (> 1; `c` in the paper).
    pub load_factor: f64,
}

impl Default for PrefixHashConfig {
    fn default() -> Self {
        PrefixHashConfig {
            prefix_blocks: 4,
            load_factor: 1.25,
        }
    }
}

/// Rendezvous-hash affinity with bounded load.
#[derive(Debug)]
pub struct PrefixHash {
    config: PrefixHashConfig,
    rotor: Rotor,
}

impl PrefixHash {
    /// The policy.
    pub fn new(config: &PrefixHashConfig) -> PrefixHash {
        PrefixHash {
            config: config.clone(),
            rotor: Rotor::default(),
        }
    }
}

/// The rendezvous weight of `id` for `key`.
pub(crate) fn rendezvous(key: u64, id: InstanceId) -> u64 {
    mix64(key ^ mix64(u64::from(id.0) ^ 0x0c0f_fee0_d15c_0b01))
}

impl Policy for PrefixHash {
    fn name(&self) -> &'static str {
        "prefix_hash"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let Some(key) = req.prefix_key(self.config.prefix_blocks) else {
            let instance = least_loaded(view, &self.rotor).ok_or(PickError::NoInstance)?;
            return Ok(Decision {
                instance,
                cached_blocks: 0,
                reason: Reason::LeastLoaded,
            });
        };
        let total: u64 = ids
            .iter()
            .map(|&i| u64::from(view.load(i).requests()))
            .sum();
        let bound = (self.config.load_factor.max(1.0) * (total + 1) as f64 / ids.len() as f64)
            .ceil() as u64;
        let fits = |id: InstanceId| u64::from(view.load(id).requests()) < bound;

        // Common case: the home instance has room. Only sort when it spills.
        let home = ids
            .iter()
            .copied()
            .max_by_key(|&i| rendezvous(key, i))
            .ok_or(PickError::NoInstance)?;
        if fits(home) {
            return Ok(Decision {
                instance: home,
                cached_blocks: 0,
                reason: Reason::Affinity,
            });
        }
        let mut ranked: Vec<(u64, InstanceId)> =
            ids.iter().map(|&i| (rendezvous(key, i), i)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // Some instance is always within the bound (the mean is below it), but
        // fall back to the home rather than trusting arithmetic on floats.
        let instance = ranked
            .iter()
            .map(|&(_, i)| i)
            .find(|&i| fits(i))
            .unwrap_or(home);
        Ok(Decision {
            instance,
            cached_blocks: 0,
            reason: Reason::Spill,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{BlockHash, StaticView};

    fn req(first: u64) -> RouteRequest {
        RouteRequest {
            block_hashes: (0..8).map(|i| BlockHash(first + i)).collect(),
            block_size: 16,
            prompt_tokens: 128,
            ..Default::default()
        }
    }

    #[test]
    fn same_prefix_same_home() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let v = StaticView::idle(8);
        let a = p.pick(&req(100), &v).unwrap();
        let mut other = req(100);
        other.block_hashes.truncate(5); // shares the first 4 blocks
        assert_eq!(p.pick(&other, &v).unwrap().instance, a.instance);
        assert_eq!(a.reason, Reason::Affinity);
    }

    #[test]
    fn distinct_prefixes_spread() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let v = StaticView::idle(4);
        let mut seen = [0; 4];
        for k in 0..400 {
            seen[p.pick(&req(k * 1000), &v).unwrap().instance.index()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 60), "{seen:?}");
    }

    #[test]
    fn hot_home_spills() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let idle = StaticView::idle(4);
        let home = p.pick(&req(7), &idle).unwrap().instance;
        let busy = StaticView::idle(4).with_inflight(home.0, 10);
        let d = p.pick(&req(7), &busy).unwrap();
        assert_ne!(d.instance, home);
        assert_eq!(d.reason, Reason::Spill);
    }

    #[test]
    fn no_key_goes_least_loaded() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let v = StaticView::idle(2).with_inflight(0, 3);
        let d = p.pick(&RouteRequest::default(), &v).unwrap();
        assert_eq!((d.instance.0, d.reason), (1, Reason::LeastLoaded));
    }
}
