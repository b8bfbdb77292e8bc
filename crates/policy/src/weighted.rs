//! `weighted`: the scoring formula — cache reuse weighed against load.
//!
//! For each eligible instance `i`:
//!
//! ```text
//! score_i = α · cached_i − β · load_i − γ · kv_i
//!
//! cached_i = (matched_i − shared) tokens / (prompt − shared) tokens      ∈ [0, 1]
//! load_i   = requests_i / max(max_j requests_j, load_floor)            ∈ [0, 1]
//! kv_i     = KV-cache usage reported by the engine                     ∈ [0, 1]
//! ```
//!
//! `shared` is the prefix a hot share of recent traffic has in common
//! ([`SharedPrefix`]: a system prompt, a tool preamble; 0 when none), so the
//! cached fraction counts only what the instance holds of the part that
//! distinguishes the request (0 for a prompt made of the shared prefix
//! alone). Counted over the whole prompt, a long system prompt made the
//! first instance to cache it worth up to α more than any other, more than
//! the load term can ever weigh (β ≤ 0.5 by default), so every request
//! went there. Until `SharedPrefix` has seen 20 requests the fraction is
//! over the whole prompt, as before.
//!
//! `requests` is the larger of the engine's `running + waiting` and the
//! router's in-flight count. `load_floor` keeps a one-request difference on an
//! idle cluster from looking like total imbalance. With `temperature = 0` the
//! highest score wins (ties: least load, then rotation); with `temperature > 0`
//! the instance is sampled with probability ∝ `exp(score / temperature)`.
//!
//! `α = 0` gives a load balancer, `β = γ = 0` gives pure cache affinity; the
//! study sweeps the space in between.

use crate::registry::PolicySpec;
use crate::select::{load_key, Rotor};
use crate::shared::{Key, SharedPrefix};
use kvroute_core::{
    CandidateScore, ClusterView, Decision, InstanceId, InstanceLoad, Overlap, PickError, Policy,
    Reason, RouteRequest, SeededRng,
};
use serde::{Deserialize, Serialize};

/// Parameters of `weighted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightedConfig {
    /// Weight of the cached fraction of the prompt (α).
    pub alpha: f64,
    /// Weight of the normalised request load (β).
    pub beta: f64,
    /// Weight of the engine's KV-cache usage (γ).
    pub gamma: f64,
    /// Loads are normalised by at least this many requests.
    pub load_floor: u32,
    /// Softmax temperature; 0 picks the maximum.
    pub temperature: f64,
    /// RNG seed for sampling.
    pub seed: u64,
}

impl Default for WeightedConfig {
    fn default() -> Self {
        WeightedConfig {
            alpha: 1.0,
            beta: 0.5,
            gamma: 0.1,
            load_floor: 4,
            temperature: 0.0,
            seed: 0x5eed,
        }
    }
}

impl PolicySpec for WeightedConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(Weighted::new(self))
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// The weighted score.
#[derive(Debug)]
pub struct Weighted {
    config: WeightedConfig,
    rotor: Rotor,
    rng: SeededRng,
    shared: SharedPrefix,
}

/// One decision's inputs, read once.
struct Inputs {
    key: Key,
    overlap: Overlap,
    loads: Vec<InstanceLoad>,
    norm: f64,
}

/// The cached fraction of what lies beyond the shared prefix.
fn cached_beyond(req: &RouteRequest, key: &Key, matched: u32) -> f64 {
    let shared = req.blocks_to_tokens(key.shared as u32);
    let rest = req.prompt_tokens.saturating_sub(shared);
    if rest == 0 {
        0.0
    } else {
        f64::from(req.blocks_to_tokens(matched).saturating_sub(shared)) / f64::from(rest)
    }
}

impl Weighted {
    /// The policy.
    pub fn new(config: &WeightedConfig) -> Weighted {
        Weighted {
            config: config.clone(),
            rotor: Rotor::default(),
            rng: SeededRng::new(config.seed),
            shared: SharedPrefix::default(),
        }
    }

    fn inputs(&self, req: &RouteRequest, view: &dyn ClusterView) -> Inputs {
        let c = &self.config;
        let ids = view.instances();
        let overlap = if c.alpha != 0.0 {
            view.overlap(&req.block_hashes)
        } else {
            Default::default()
        };
        // One pass over the loads; everything after reads this copy.
        let loads: Vec<_> = ids.iter().map(|&i| view.load(i)).collect();
        let max_reqs = loads.iter().map(|l| l.requests()).max().unwrap_or(0);
        Inputs {
            key: self.shared.key(&req.block_hashes, 1),
            overlap,
            loads,
            norm: f64::from(max_reqs.max(c.load_floor).max(1)),
        }
    }

    /// (cached, load, kv, score) of the `k`-th instance.
    fn terms(&self, req: &RouteRequest, x: &Inputs, id: InstanceId, k: usize) -> [f64; 4] {
        let c = &self.config;
        let l = &x.loads[k];
        let cached = cached_beyond(req, &x.key, x.overlap.get(id));
        let load = f64::from(l.requests()) / x.norm;
        let kv = l.kv_usage.clamp(0.0, 1.0);
        [
            cached,
            load,
            kv,
            c.alpha * cached - c.beta * load - c.gamma * kv,
        ]
    }
}

impl Policy for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let c = &self.config;
        let x = self.inputs(req, view);
        let score = |k: usize| self.terms(req, &x, ids[k], k)[3];

        let (instance, reason) = if c.temperature > 0.0 && ids.len() > 1 {
            let scores: Vec<f64> = (0..ids.len()).map(score).collect();
            let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores
                .iter()
                .map(|s| ((s - top) / c.temperature).exp())
                .collect();
            let mut u = self.rng.unit() * weights.iter().sum::<f64>();
            let mut pick = ids[ids.len() - 1];
            for (&id, w) in ids.iter().zip(&weights) {
                if u < *w {
                    pick = id;
                    break;
                }
                u -= w;
            }
            (pick, Reason::Sampled)
        } else {
            // Highest score; ties: fewest requests, least pending prefill, rotation.
            let n = ids.len();
            let start = self.rotor.next();
            let mut best: Option<(usize, (f64, u32, u64))> = None;
            for j in 0..n {
                let k = (start + j) % n;
                let (reqs, prefill) = load_key(&x.loads[k]);
                let key = (-score(k), reqs, prefill);
                if best.as_ref().is_none_or(|(_, b)| key < *b) {
                    best = Some((k, key));
                }
            }
            let (k, _) = best.ok_or(PickError::NoInstance)?;
            (ids[k], Reason::BestScore)
        };
        Ok(Decision {
            instance,
            cached_blocks: x.overlap.get(instance),
            reason,
        })
    }

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        self.shared.observe(&req.block_hashes, 1);
    }

    /// Every eligible instance with its three terms; score = the weighted
    /// score (with a temperature, the softmax samples ∝ `exp(score / T)`).
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let x = self.inputs(req, view);
        view.instances()
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let [cached, load, kv, score] = self.terms(req, &x, id, k);
                CandidateScore::new(id, x.overlap.get(id))
                    .term("shared_prefix_blocks", x.key.shared as f64)
                    .term("cached_fraction_beyond_shared", cached)
                    .term("requests", f64::from(x.loads[k].requests()))
                    .term("load", load)
                    .term("kv_usage", kv)
                    .score(score)
            })
            .collect()
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

    fn weighted(alpha: f64, beta: f64, gamma: f64) -> Weighted {
        Weighted::new(&WeightedConfig {
            alpha,
            beta,
            gamma,
            ..Default::default()
        })
    }

    #[test]
    fn cache_wins_when_load_is_close() {
        let v = StaticView::idle(2)
            .with_matched(1, 8)
            .with_inflight(1, 3)
            .with_inflight(0, 2);
        let d = weighted(1.0, 0.5, 0.0).pick(&req(), &v).unwrap();
        assert_eq!((d.instance, d.cached_blocks), (InstanceId(1), 8));
    }

    #[test]
    fn load_wins_when_imbalance_is_large() {
        let v = StaticView::idle(2).with_matched(1, 2).with_inflight(1, 20);
        let d = weighted(1.0, 0.5, 0.0).pick(&req(), &v).unwrap();
        assert_eq!(d.instance, InstanceId(0));
    }

    #[test]
    fn kv_usage_counts() {
        let mut v = StaticView::idle(2);
        v.loads[0].kv_usage = 0.9;
        assert_eq!(
            weighted(1.0, 0.5, 1.0).pick(&req(), &v).unwrap().instance,
            InstanceId(1)
        );
    }

    #[test]
    fn alpha_zero_is_a_load_balancer() {
        let v = StaticView::idle(3)
            .with_matched(0, 10)
            .with_inflight(0, 5)
            .with_inflight(1, 1)
            .with_inflight(2, 4);
        assert_eq!(
            weighted(0.0, 1.0, 0.0).pick(&req(), &v).unwrap().instance,
            InstanceId(1)
        );
    }

    /// `shared` blocks common to every prompt, then 4 of its own.
    fn shared_req(shared: usize, id: u64) -> RouteRequest {
        let mut h = 0x77_u64;
        let hashes: Vec<kvroute_core::BlockHash> = (0..shared + 4)
            .map(|i| {
                let block = if i < shared {
                    i as u64
                } else {
                    (id << 32) | i as u64
                };
                h = kvroute_core::mix64(h ^ block);
                kvroute_core::BlockHash(h)
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
    fn the_shared_prefix_counts_for_nothing_once_detected() {
        let p = weighted(1.0, 0.5, 0.0);
        let idle = StaticView::idle(2);
        // Before the detector has seen traffic the whole match counts.
        let v = StaticView::idle(2).with_matched(0, 50).with_inflight(0, 3);
        assert_eq!(
            p.pick(&shared_req(50, 1), &v).unwrap().instance,
            InstanceId(0)
        );
        for id in 0..60 {
            let r = shared_req(50, id);
            let d = p.pick(&r, &idle).unwrap();
            p.on_routed(&r, &d);
        }
        // After, the holder of the shared prompt is just a busier instance.
        assert_eq!(
            p.pick(&shared_req(50, 999), &v).unwrap().instance,
            InstanceId(1)
        );
        // A match past the shared prefix still counts: 2 of 4 own blocks.
        let v = v.with_matched(0, 52);
        let e = p.explain(&shared_req(50, 999), &v);
        assert_eq!(e[0].get("cached_fraction_beyond_shared"), Some(0.5));
        assert_eq!(
            p.pick(&shared_req(50, 999), &v).unwrap().instance,
            InstanceId(0)
        );
    }

    #[test]
    fn explain_scores_are_the_formula() {
        let v = StaticView::idle(2).with_matched(1, 5).with_inflight(0, 4);
        let e = weighted(1.0, 0.5, 0.0).explain(&req(), &v);
        // i0: −0.5 · 4/4; i1: 1 · 80/160.
        assert_eq!((e[0].score, e[1].score), (-0.5, 0.5));
    }

    #[test]
    fn softmax_prefers_but_does_not_always_take_the_best() {
        let p = Weighted::new(&WeightedConfig {
            temperature: 0.2,
            ..Default::default()
        });
        let v = StaticView::idle(2).with_matched(1, 10);
        let hits = (0..1000)
            .filter(|_| p.pick(&req(), &v).unwrap().instance == InstanceId(1))
            .count();
        assert!(hits > 900 && hits < 1000, "{hits}");
    }
}
