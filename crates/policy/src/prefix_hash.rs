//! `prefix_hash`: stateless affinity — the first `prefix_blocks` blocks of
//! what distinguishes a prompt name a home instance by rendezvous hashing,
//! with a bounded-load spill.
//!
//! * key = the chain hash of block `shared + prefix_blocks − 1`, where
//!   `shared` is the prefix a hot share of recent traffic has in common
//!   ([`SharedPrefix`]: a system prompt, a tool preamble; 0 when there is
//!   none) — or of the last full block for shorter prompts, or the session
//!   id; a request with none of these goes to the least-loaded instance;
//! * instances are ranked by `mix64(key ^ mix64(instance))` (rendezvous / HRW
//!   hashing: adding or removing an instance moves only its own share);
//! * *bounded load* (Mirrokni et al., "Consistent Hashing with Bounded Loads"):
//!   an instance accepts the request only if its load after taking it stays
//!   within `ceil(load_factor · (total + 1) / n)` requests; otherwise the
//!   request spills to the next instance in its ranking. One hot prefix can
//!   therefore never sink an instance.
//!
//! Why past the shared prefix: keyed on the first blocks alone, every request
//! of a trace whose prompts all start with one system prompt had the same key,
//! hence the same home and the same spill order — 16 instances were loaded in
//! one fixed order (busy CV 0.49). The chain hash just past the shared prefix
//! still covers it (a request only shares a home with requests that share the
//! system prompt *and* what follows), so conversations and documents keep
//! their home; the prompt everyone shares no longer picks it. Until
//! `SharedPrefix` has seen enough traffic (20 requests) the key is the first
//! blocks, as before.
//!
//! Needs no directory: affinity comes from the hash, so it works with any
//! engine. The shared-prefix detector is the router's only state; after a
//! restart it relearns from the first requests.

use crate::registry::PolicySpec;
use crate::select::{least_loaded, Rotor};
use crate::shared::SharedPrefix;
use kvroute_core::{
    mix64, CandidateScore, ClusterView, Decision, InstanceId, PickError, Policy, Reason,
    RouteRequest,
};
use serde::{Deserialize, Serialize};

/// Parameters of `prefix_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixHashConfig {
    /// How many leading blocks past the shared prefix define the key (≥ 1).
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

impl PolicySpec for PrefixHashConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(PrefixHash::new(self))
    }
}

/// Rendezvous-hash affinity with bounded load.
#[derive(Debug)]
pub struct PrefixHash {
    config: PrefixHashConfig,
    rotor: Rotor,
    shared: SharedPrefix,
}

impl PrefixHash {
    /// The policy.
    pub fn new(config: &PrefixHashConfig) -> PrefixHash {
        PrefixHash {
            config: config.clone(),
            rotor: Rotor::default(),
            shared: SharedPrefix::default(),
        }
    }

    /// The routing key: past the hot shared prefix, else the session.
    fn key(&self, req: &RouteRequest) -> (Option<u64>, usize) {
        let k = self
            .shared
            .key(&req.block_hashes, self.config.prefix_blocks);
        let key = k
            .hash(&req.block_hashes)
            .or_else(|| req.prefix_key(self.config.prefix_blocks));
        (key, k.shared)
    }

    /// The load bound: `ceil(load_factor · (Σ requests + 1) / n)`.
    fn bound(&self, view: &dyn ClusterView) -> u64 {
        let ids = view.instances();
        let total: u64 = ids
            .iter()
            .map(|&i| u64::from(view.load(i).requests()))
            .sum();
        (self.config.load_factor.max(1.0) * (total + 1) as f64 / ids.len().max(1) as f64).ceil()
            as u64
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
        let (Some(key), _) = self.key(req) else {
            let instance = least_loaded(view, &self.rotor).ok_or(PickError::NoInstance)?;
            return Ok(Decision {
                instance,
                cached_blocks: 0,
                reason: Reason::LeastLoaded,
            });
        };
        let bound = self.bound(view);
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

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        self.shared
            .observe(&req.block_hashes, self.config.prefix_blocks);
    }

    /// Every eligible instance in its rendezvous rank `r` (0 = home) with its
    /// load and the bound; score = `−r` for an instance within the bound,
    /// `−(n + r)` for one over it, so the pick scores highest. Without a key,
    /// candidates are scored by load.
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let ids = view.instances();
        let (Some(key), shared) = self.key(req) else {
            return crate::select::explain_by_load(view);
        };
        let bound = self.bound(view);
        let mut ranked: Vec<(u64, InstanceId)> =
            ids.iter().map(|&i| (rendezvous(key, i), i)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let n = ids.len() as f64;
        ranked
            .iter()
            .enumerate()
            .map(|(r, &(_, id))| {
                let l = view.load(id);
                let fits = u64::from(l.requests()) < bound;
                CandidateScore::new(id, 0)
                    .term("shared_prefix_blocks", shared as f64)
                    .term("rank", r as f64)
                    .term("requests", f64::from(l.requests()))
                    .term("load_bound", bound as f64)
                    .score(if fits { -(r as f64) } else { -(n + r as f64) })
            })
            .collect()
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

    /// `shared` blocks common to every prompt, then 6 of its own.
    fn shared_req(shared: usize, id: u64) -> RouteRequest {
        let mut h = 0xabcd_u64;
        let hashes = (0..shared + 6)
            .map(|i| {
                let block = if i < shared {
                    i as u64
                } else {
                    (id << 32) | i as u64
                };
                h = mix64(h ^ block);
                BlockHash(h)
            })
            .collect::<Vec<_>>();
        RouteRequest {
            prompt_tokens: hashes.len() as u32 * 16,
            block_hashes: hashes,
            block_size: 16,
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
        let e = p.explain(&req(7), &busy);
        let best = e.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
        assert_eq!(best.instance, d.instance);
    }

    #[test]
    fn no_key_goes_least_loaded() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let v = StaticView::idle(2).with_inflight(0, 3);
        let d = p.pick(&RouteRequest::default(), &v).unwrap();
        assert_eq!((d.instance.0, d.reason), (1, Reason::LeastLoaded));
    }

    #[test]
    fn a_prompt_everyone_shares_no_longer_names_the_home() {
        let p = PrefixHash::new(&PrefixHashConfig::default());
        let v = StaticView::idle(16);
        let mut seen = [0u32; 16];
        for id in 0..400 {
            let r = shared_req(100, id);
            let d = p.pick(&r, &v).unwrap();
            p.on_routed(&r, &d);
            if id >= 100 {
                seen[d.instance.index()] += 1;
            }
        }
        // 300 requests after warm-up over 16 homes: every instance is a home.
        assert!(seen.iter().all(|&c| c >= 5), "{seen:?}");
        // A turn that extends a request keeps its home.
        let r = shared_req(100, 5);
        let mut longer = r.clone();
        longer.block_hashes.push(BlockHash(1));
        assert_eq!(
            p.pick(&r, &v).unwrap().instance,
            p.pick(&longer, &v).unwrap().instance
        );
    }
}
