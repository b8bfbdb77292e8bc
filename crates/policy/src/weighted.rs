//! `weighted`: the scoring formula — cache reuse weighed against load.
//!
//! For each eligible instance `i`:
//!
//! ```text
//! score_i = α · cached_i − β · load_i − γ · kv_i
//!
//! cached_i = (matched blocks on i × block size) / prompt tokens        ∈ [0, 1]
//! load_i   = requests_i / max(max_j requests_j, load_floor)            ∈ [0, 1]
//! kv_i     = KV-cache usage reported by the engine                     ∈ [0, 1]
//! ```
//!
//! `requests` is the larger of the engine's `running + waiting` and the
//! router's in-flight count. `load_floor` keeps a one-request difference on an
//! idle cluster from looking like total imbalance. With `temperature = 0` the
//! highest score wins (ties: least load, then rotation); with `temperature > 0`
//! the instance is sampled with probability ∝ `exp(score / temperature)`.
//!
//! `α = 0` gives a load balancer, `β = γ = 0` gives pure cache affinity; the
//! study sweeps the space in between.

use crate::select::{load_key, Rotor};
use kvroute_core::{ClusterView, Decision, PickError, Policy, Reason, RouteRequest, SeededRng};
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

/// The weighted score.
#[derive(Debug)]
pub struct Weighted {
    config: WeightedConfig,
    rotor: Rotor,
    rng: SeededRng,
}

impl Weighted {
    /// The policy.
    pub fn new(config: &WeightedConfig) -> Weighted {
        Weighted {
            config: config.clone(),
            rotor: Rotor::default(),
            rng: SeededRng::new(config.seed),
        }
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
        let overlap = if c.alpha != 0.0 {
            view.overlap(&req.block_hashes)
        } else {
            Default::default()
        };
        // One pass over the loads; everything after reads this copy.
        let loads: Vec<_> = ids.iter().map(|&i| view.load(i)).collect();
        let max_reqs = loads.iter().map(|l| l.requests()).max().unwrap_or(0);
        let norm = f64::from(max_reqs.max(c.load_floor).max(1));
        let score = |k: usize| {
            let l = &loads[k];
            c.alpha * req.cached_fraction(overlap.get(ids[k]))
                - c.beta * f64::from(l.requests()) / norm
                - c.gamma * l.kv_usage.clamp(0.0, 1.0)
        };

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
                let (reqs, prefill) = load_key(&loads[k]);
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
