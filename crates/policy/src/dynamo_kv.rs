//! `dynamo_kv`: NVIDIA Dynamo's KV router cost, the classic
//! `DefaultWorkerSelector` (a row to beat).
//!
//! Read from ai-dynamo/dynamo @db19bd2a: `lib/llm/src/kv_router/scheduler.rs`
//! (`DefaultWorkerSelector::select_worker`, `softmax_sample`) and
//! `lib/llm/src/kv_router/sequence.rs` (`ActiveSequences::
//! potential_blocks_and_tokens`, `new_blocks`, `new_tokens`); defaults from
//! `KvRouterConfig::default()` (`overlap_score_weight` 1.0,
//! `router_temperature` 0.0, `router_track_active_blocks` on,
//! `router_track_output_blocks` off). Later Dynamo versions replaced this
//! formula (`lib/kv-router/src/scheduling/selector.rs`); this row is the
//! classic one at that commit.
//!
//! ```text
//! prefill_tokens_i = active_tokens_i + (prompt_tokens − overlap_i × block_size)
//! decode_blocks_i  = active_blocks_i + new_blocks_i
//! logit_i          = overlap_score_weight × prefill_tokens_i / block_size + decode_blocks_i
//!                                                                  (lower is better)
//! temperature 0: the instances with the least logit; ties → the smallest
//!                tree (blocks the directory says it holds), then random
//! temperature T: sample i with p ∝ exp(−(logit_i / (max − min)) / T)
//!                (uniform when all logits are equal)
//! ```
//!
//! * `overlap_i` — leading prompt blocks `i` holds, from the directory (as
//!   Dynamo's from its KV-event indexer); `tree_size` — all blocks it holds.
//! * `active_tokens_i` — uncached prompt tokens sent to `i` that have not
//!   produced a first token: the router's `pending_prefill_tokens`, the same
//!   quantity Dynamo tracks (`mark_prefill_completed` drops it at the first
//!   token).
//! * `active_blocks_i` — distinct prompt blocks of the requests in flight to
//!   `i` (reference-counted: a system prompt shared by ten requests counts
//!   once); `new_blocks_i` — this prompt's blocks not among them. The policy
//!   tracks these itself, adding a request's blocks in `on_routed` and
//!   removing them in `on_completed`, as Dynamo's `ActiveSequences` does
//!   with `add_request` and `free`. Output blocks are not tracked (Dynamo's
//!   default).
//!
//! Differences: random ties use the policy's seeded generator (Dynamo:
//! thread RNG); with a temperature, Dynamo's draw is over a hash map's
//! order, here over the eligible instances in order. Data-parallel ranks
//! are not modelled (one rank per instance).

use crate::registry::PolicySpec;
use crate::select::{load_terms, FastMap};
use kvroute_core::{
    BlockHash, CandidateScore, ClusterView, Completion, Decision, InstanceId, PickError, Policy,
    Reason, RequestId, RouteRequest, SeededRng,
};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Parameters of `dynamo_kv` (Dynamo's `KvRouterConfig` names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoKvConfig {
    /// Weight of the prefill blocks against the decode blocks.
    pub overlap_score_weight: f64,
    /// Softmax temperature; 0 takes the least logit.
    pub temperature: f64,
    /// RNG seed (ties and sampling).
    pub seed: u64,
}

impl Default for DynamoKvConfig {
    fn default() -> Self {
        DynamoKvConfig {
            overlap_score_weight: 1.0,
            temperature: 0.0,
            seed: 0x5eed,
        }
    }
}

impl PolicySpec for DynamoKvConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(DynamoKv::new(self))
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// One instance's in-flight prompt blocks, reference-counted.
#[derive(Debug, Default)]
struct Active {
    blocks: FastMap<BlockHash, u32>,
}

impl Active {
    fn new_blocks(&self, hashes: &[BlockHash]) -> usize {
        hashes
            .iter()
            .filter(|h| !self.blocks.contains_key(h))
            .count()
    }
}

#[derive(Debug, Default)]
struct State {
    /// By instance id.
    active: Vec<Active>,
    /// Blocks of requests routed and not completed, by request and instance
    /// (a retry of a request goes elsewhere).
    requests: FastMap<(RequestId, InstanceId), Vec<BlockHash>>,
}

/// Dynamo's classic KV-router cost.
#[derive(Debug)]
pub struct DynamoKv {
    config: DynamoKvConfig,
    rng: SeededRng,
    /// Held for a few map operations per request; never across I/O.
    state: Mutex<State>,
}

/// One candidate's terms.
#[derive(Debug, Clone, Copy)]
struct Terms {
    overlap: u32,
    prefill_blocks: f64,
    active_blocks: usize,
    new_blocks: usize,
    logit: f64,
}

impl DynamoKv {
    /// The policy.
    pub fn new(config: &DynamoKvConfig) -> DynamoKv {
        DynamoKv {
            config: config.clone(),
            rng: SeededRng::new(config.seed),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn terms(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<Terms> {
        let overlap = view.overlap(&req.block_hashes);
        let st = self.lock();
        let bs = f64::from(req.block_size.max(1));
        view.instances()
            .iter()
            .map(|&id| {
                let o = overlap.get(id);
                let new_tokens = req.prompt_tokens - req.blocks_to_tokens(o);
                let prefill_tokens = view.load(id).pending_prefill_tokens + u64::from(new_tokens);
                let prefill_blocks = prefill_tokens as f64 / bs;
                let (active_blocks, new_blocks) = match st.active.get(id.index()) {
                    Some(a) => (a.blocks.len(), a.new_blocks(&req.block_hashes)),
                    None => (0, req.block_hashes.len()),
                };
                Terms {
                    overlap: o,
                    prefill_blocks,
                    active_blocks,
                    new_blocks,
                    logit: self.config.overlap_score_weight * prefill_blocks
                        + (active_blocks + new_blocks) as f64,
                }
            })
            .collect()
    }
}

impl Policy for DynamoKv {
    fn name(&self) -> &'static str {
        "dynamo_kv"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let t = self.terms(req, view);
        let min = t.iter().map(|x| x.logit).fold(f64::INFINITY, f64::min);
        let max = t.iter().map(|x| x.logit).fold(f64::NEG_INFINITY, f64::max);
        let temp = self.config.temperature;
        let (k, reason) = if temp > 0.0 && ids.len() > 1 {
            let weights: Vec<f64> = if max == min {
                vec![1.0; t.len()]
            } else {
                let scaled: Vec<f64> = t.iter().map(|x| -(x.logit / (max - min)) / temp).collect();
                let top = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                scaled.iter().map(|s| (s - top).exp()).collect()
            };
            let mut u = self.rng.unit() * weights.iter().sum::<f64>();
            let mut pick = t.len() - 1;
            for (k, w) in weights.iter().enumerate() {
                if u < *w {
                    pick = k;
                    break;
                }
                u -= w;
            }
            (pick, Reason::Sampled)
        } else {
            let tied: Vec<usize> = (0..t.len()).filter(|&k| t[k].logit == min).collect();
            let k = match tied.len() {
                // Only with a non-finite weight in the configuration.
                0 => 0,
                1 => tied[0],
                _ => {
                    let size = |k: usize| view.cached_blocks(ids[k]);
                    let smallest = tied.iter().map(|&k| size(k)).min().unwrap_or(0);
                    let tied: Vec<usize> =
                        tied.into_iter().filter(|&k| size(k) == smallest).collect();
                    tied.get(self.rng.below(tied.len().max(1)))
                        .copied()
                        .unwrap_or(0)
                }
            };
            (k, Reason::BestScore)
        };
        Ok(Decision {
            instance: ids[k],
            cached_blocks: t[k].overlap,
            reason,
        })
    }

    fn on_routed(&self, req: &RouteRequest, decision: &Decision) {
        let mut st = self.lock();
        let i = decision.instance.index();
        if st.active.len() <= i {
            st.active.resize_with(i + 1, Active::default);
        }
        for &h in &req.block_hashes {
            *st.active[i].blocks.entry(h).or_default() += 1;
        }
        st.requests
            .insert((req.id, decision.instance), req.block_hashes.clone());
    }

    fn on_completed(&self, done: &Completion) {
        let mut st = self.lock();
        let Some(hashes) = st.requests.remove(&(done.request, done.instance)) else {
            return;
        };
        if let Some(a) = st.active.get_mut(done.instance.index()) {
            for h in hashes {
                if let Some(n) = a.blocks.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        a.blocks.remove(&h);
                    }
                }
            }
        }
    }

    /// Every eligible instance with the formula's terms; score = −logit
    /// (ties: smallest tree, then a seeded draw; with a temperature, sampled).
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let t = self.terms(req, view);
        view.instances()
            .iter()
            .zip(t)
            .map(|(&id, x)| {
                let c = CandidateScore::new(id, x.overlap)
                    .term("prefill_blocks", x.prefill_blocks)
                    .term("active_blocks", x.active_blocks as f64)
                    .term("new_blocks", x.new_blocks as f64)
                    .term("tree_blocks", view.cached_blocks(id) as f64)
                    .term("logit", x.logit);
                load_terms(c, &view.load(id)).score(-x.logit)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{Outcome, StaticView};

    fn req(id: u64, blocks: &[u64]) -> RouteRequest {
        RouteRequest {
            id: RequestId(id),
            block_hashes: blocks.iter().map(|&h| BlockHash(h)).collect(),
            block_size: 16,
            prompt_tokens: blocks.len() as u32 * 16,
            ..Default::default()
        }
    }

    fn policy() -> DynamoKv {
        DynamoKv::new(&DynamoKvConfig::default())
    }

    #[test]
    fn the_logit_is_prefill_plus_decode_blocks() {
        let p = policy();
        let mut v = StaticView::idle(2).with_matched(0, 6);
        v.loads[1].pending_prefill_tokens = 32;
        let e = p.explain(&req(1, &[1, 2, 3, 4, 5, 6, 7, 8]), &v);
        // i0: (8 − 6) prefill blocks + 8 new blocks; i1: 2 + 8 prefill + 8 new.
        assert_eq!(
            (e[0].get("logit"), e[1].get("logit")),
            (Some(10.0), Some(18.0))
        );
        let d = p.pick(&req(1, &[1, 2, 3, 4, 5, 6, 7, 8]), &v).unwrap();
        assert_eq!((d.instance, d.cached_blocks), (InstanceId(0), 6));
    }

    #[test]
    fn shared_active_blocks_count_once() {
        let p = policy();
        let v = StaticView::idle(2);
        // Two requests sharing 6 blocks in flight on instance 0.
        for id in 0..2 {
            let r = req(id, &[1, 2, 3, 4, 5, 6, 10 + id]);
            p.on_routed(
                &r,
                &Decision {
                    instance: InstanceId(0),
                    cached_blocks: 0,
                    reason: Reason::BestScore,
                },
            );
        }
        let e = p.explain(&req(5, &[1, 2, 3, 4, 5, 6, 20]), &v);
        assert_eq!(e[0].get("active_blocks"), Some(8.0));
        assert_eq!(e[0].get("new_blocks"), Some(1.0));
        assert_eq!(e[1].get("new_blocks"), Some(7.0));
        // Completion frees them.
        for id in 0..2 {
            p.on_completed(&Completion {
                request: RequestId(id),
                instance: InstanceId(0),
                outcome: Outcome::Finished,
                ttft: None,
            });
        }
        let e = p.explain(&req(5, &[1, 2, 3, 4, 5, 6, 20]), &v);
        assert_eq!(e[0].get("active_blocks"), Some(0.0));
    }

    #[test]
    fn ties_go_to_the_smallest_tree_then_random() {
        let p = policy();
        let mut v = StaticView::idle(3);
        v.cached = vec![50, 10, 10];
        let mut seen = [0; 3];
        for id in 0..60 {
            seen[p.pick(&req(id, &[1, 2]), &v).unwrap().instance.index()] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 10 && seen[2] > 10, "{seen:?}");
    }

    #[test]
    fn a_nonsense_weight_still_picks_an_instance() {
        let p = DynamoKv::new(&DynamoKvConfig {
            overlap_score_weight: f64::NAN,
            ..Default::default()
        });
        assert!(p.pick(&req(1, &[1, 2]), &StaticView::idle(3)).is_ok());
    }

    #[test]
    fn temperature_samples_and_prefers_low_logits() {
        let p = DynamoKv::new(&DynamoKvConfig {
            temperature: 0.2,
            ..Default::default()
        });
        let v = StaticView::idle(2).with_matched(1, 8);
        let hits = (0..500)
            .filter(|&id| {
                p.pick(&req(id, &[1, 2, 3, 4, 5, 6, 7, 8]), &v)
                    .unwrap()
                    .instance
                    == InstanceId(1)
            })
            .count();
        assert!(hits > 450 && hits < 500, "{hits}");
    }
}
