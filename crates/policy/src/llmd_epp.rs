//! `llmd_epp`: the default scheduling profile of the Gateway API Inference
//! Extension's endpoint picker (EPP), as llm-d ships it (a row to beat).
//!
//! Read from kubernetes-sigs/gateway-api-inference-extension v1.3.0
//! (616745e9): `config/charts/inferencepool/templates/epp-config.yaml` (the
//! three scorers and their weights), `pkg/epp/config/loader/defaults.go`
//! (`max-score-picker`, single profile), `pkg/epp/scheduling/framework/
//! scheduler_profile.go` (`runScorerPlugins`: Σ weight × score clamped to
//! [0, 1]), `pkg/epp/scheduling/framework/plugins/scorer/queue.go`,
//! `.../scorer/kvcache_utilization.go`, `.../multi/prefix/plugin.go` and
//! `indexer.go`, `.../picker/max_score_picker.go`; and from
//! llm-d/llm-d-inference-scheduler @520af478 `pkg/epp/config/loader/
//! defaults.go` (`loadDefaultConfig`: the same scorers, weights 2 / 2 / 3).
//!
//! ```text
//! score_i = queue_weight  × queue_i            queue_i  = (max_j w_j − w_i) / (max_j w_j − min_j w_j),
//!                                                          1 when all are equal; w = waiting requests
//!         + kv_weight     × (1 − kv_usage_i)
//!         + prefix_weight × prefix_i           prefix_i = min(matched_i, 256) / min(prompt blocks, 256)
//! pick: the maximum; ties uniformly at random
//! ```
//!
//! Defaults: queue 2, KV-cache utilisation 2, prefix 3; no filters. `w_i` is
//! the engine's `vllm:num_requests_waiting` and `kv_usage_i` its
//! `vllm:kv_cache_usage_perc`, as last polled (the EPP's metrics scrape).
//!
//! Differences: the EPP's prefix scorer hashes the request *text* in blocks
//! of 64 characters (or, auto-tuned, the engine's block size × 4
//! characters) into its own LRU index, updated after each pick for the
//! chosen endpoint; here `matched_i` comes from kvroute's directory in
//! token blocks of the engine's size — in predicted mode the directory is
//! the same kind of routing-time index, in exact mode it follows the
//! engines' caches. The 256-block cap (`MaxPrefixBlocksToMatch`) is kept in
//! kvroute's blocks. The picker shuffles then sorts; here ties are drawn
//! from the policy's seeded generator.
//!
//! **Shared prompts concentrate — faithfully.** A prompt everyone shares
//! scores `prefix ≈ 1` on the instances holding it and 0 elsewhere: 3 points
//! that only a waiting queue (2 points, and only once the holder has more
//! waiting requests than others) together with a KV-usage gap of more than
//! 0.44 can outweigh. Until the engine makes requests wait, every request
//! goes to the holders while other instances idle. That is the default,
//! because this row stands for the original. With
//! `discount_shared_prefix = true` (opt-in) the prefix score counts only
//! blocks beyond the prefix a hot share of recent traffic has in common
//! ([`SharedPrefix`]): `(matched − shared) / (blocks − shared)`.

use crate::registry::PolicySpec;
use crate::select::load_terms;
use crate::shared::SharedPrefix;
use kvroute_core::{
    CandidateScore, ClusterView, Decision, PickError, Policy, Reason, RouteRequest, SeededRng,
};
use serde::{Deserialize, Serialize};

/// Parameters of `llmd_epp` (the EPP defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmdEppConfig {
    /// Weight of the queue scorer.
    pub queue_weight: f64,
    /// Weight of the KV-cache utilisation scorer.
    pub kv_weight: f64,
    /// Weight of the prefix-cache scorer.
    pub prefix_weight: f64,
    /// Leading blocks the prefix scorer looks at, at most.
    pub max_prefix_blocks: u32,
    /// Score the prefix beyond the prefix most traffic shares (opt-in; not
    /// in the original).
    pub discount_shared_prefix: bool,
    /// RNG seed for ties.
    pub seed: u64,
}

impl Default for LlmdEppConfig {
    fn default() -> Self {
        LlmdEppConfig {
            queue_weight: 2.0,
            kv_weight: 2.0,
            prefix_weight: 3.0,
            max_prefix_blocks: 256,
            discount_shared_prefix: false,
            seed: 0x5eed,
        }
    }
}

impl PolicySpec for LlmdEppConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(LlmdEpp::new(self))
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// The EPP's weighted scorers and max-score picker.
#[derive(Debug)]
pub struct LlmdEpp {
    config: LlmdEppConfig,
    rng: SeededRng,
    shared: SharedPrefix,
}

/// One candidate's scorer outputs (each in [0, 1]) and total.
#[derive(Debug, Clone, Copy)]
struct Scores {
    matched: u32,
    waiting: u32,
    queue: f64,
    kv: f64,
    prefix: f64,
    total: f64,
}

impl LlmdEpp {
    /// The policy.
    pub fn new(config: &LlmdEppConfig) -> LlmdEpp {
        LlmdEpp {
            config: config.clone(),
            rng: SeededRng::new(config.seed),
            shared: SharedPrefix::default(),
        }
    }

    fn scores(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<Scores> {
        let c = &self.config;
        let ids = view.instances();
        let overlap = view.overlap(&req.block_hashes);
        let loads: Vec<_> = ids.iter().map(|&i| view.load(i)).collect();
        let min_w = loads.iter().map(|l| l.waiting).min().unwrap_or(0);
        let max_w = loads.iter().map(|l| l.waiting).max().unwrap_or(0);
        let cap = c.max_prefix_blocks.max(1);
        let total_blocks = (req.block_hashes.len() as u32).min(cap);
        let shared = if c.discount_shared_prefix {
            (self.shared.key(&req.block_hashes, 1).shared as u32).min(total_blocks)
        } else {
            0
        };
        ids.iter()
            .zip(&loads)
            .map(|(&id, l)| {
                let matched = overlap.get(id);
                let queue = if max_w == min_w {
                    1.0
                } else {
                    f64::from(max_w - l.waiting) / f64::from(max_w - min_w)
                };
                let kv = (1.0 - l.kv_usage).clamp(0.0, 1.0);
                let prefix = if total_blocks == shared {
                    0.0
                } else {
                    f64::from(matched.min(total_blocks).saturating_sub(shared))
                        / f64::from(total_blocks - shared)
                };
                Scores {
                    matched,
                    waiting: l.waiting,
                    queue,
                    kv,
                    prefix,
                    total: c.queue_weight * queue + c.kv_weight * kv + c.prefix_weight * prefix,
                }
            })
            .collect()
    }
}

impl Policy for LlmdEpp {
    fn name(&self) -> &'static str {
        "llmd_epp"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let s = self.scores(req, view);
        let best = s.iter().map(|x| x.total).fold(f64::NEG_INFINITY, f64::max);
        let tied: Vec<usize> = (0..s.len()).filter(|&k| s[k].total == best).collect();
        let k = match tied.len() {
            0 => 0,
            1 => tied[0],
            n => tied[self.rng.below(n)],
        };
        Ok(Decision {
            instance: ids[k],
            cached_blocks: s[k].matched,
            reason: Reason::BestScore,
        })
    }

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        if self.config.discount_shared_prefix {
            self.shared.observe(&req.block_hashes, 1);
        }
    }

    /// Every eligible instance with the three scorer outputs; score = the
    /// weighted total (ties: a seeded draw).
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let s = self.scores(req, view);
        view.instances()
            .iter()
            .zip(s)
            .map(|(&id, x)| {
                let c = CandidateScore::new(id, x.matched)
                    .term("waiting", f64::from(x.waiting))
                    .term("queue_score", x.queue)
                    .term("kv_cache_score", x.kv)
                    .term("prefix_score", x.prefix);
                load_terms(c, &view.load(id)).score(x.total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{BlockHash, InstanceId, StaticView};

    fn req(blocks: u64) -> RouteRequest {
        RouteRequest {
            block_hashes: (0..blocks).map(BlockHash).collect(),
            block_size: 16,
            prompt_tokens: blocks as u32 * 16,
            ..Default::default()
        }
    }

    fn policy() -> LlmdEpp {
        LlmdEpp::new(&LlmdEppConfig::default())
    }

    #[test]
    fn the_prefix_scorer_weighs_three() {
        let v = StaticView::idle(2).with_matched(1, 5);
        let e = policy().explain(&req(10), &v);
        // 2 × 1 (queues equal) + 2 × 1 (idle KV) + 3 × 0.5.
        assert_eq!((e[0].score, e[1].score), (4.0, 5.5));
        assert_eq!(policy().pick(&req(10), &v).unwrap().instance, InstanceId(1));
    }

    #[test]
    fn a_waiting_queue_outweighs_a_partial_prefix() {
        let mut v = StaticView::idle(3).with_matched(0, 5);
        v.loads[0].waiting = 4;
        v.loads[1].waiting = 2;
        let e = policy().explain(&req(10), &v);
        assert_eq!(e[0].get("queue_score"), Some(0.0));
        assert_eq!(e[1].get("queue_score"), Some(0.5));
        // i0: 0 + 2 + 1.5 = 3.5; i2: 2 + 2 = 4.
        assert_eq!(policy().pick(&req(10), &v).unwrap().instance, InstanceId(2));
    }

    #[test]
    fn kv_usage_lowers_the_score() {
        let mut v = StaticView::idle(2);
        v.loads[0].kv_usage = 0.5;
        assert_eq!(policy().pick(&req(4), &v).unwrap().instance, InstanceId(1));
    }

    #[test]
    fn the_prefix_is_capped_at_256_blocks() {
        let v = StaticView::idle(2).with_matched(0, 300);
        let e = policy().explain(&req(400), &v);
        assert_eq!(e[0].get("prefix_score"), Some(1.0));
    }

    #[test]
    fn discounting_the_shared_prefix_scores_what_follows_it() {
        let p = LlmdEpp::new(&LlmdEppConfig {
            discount_shared_prefix: true,
            ..Default::default()
        });
        let shared_req = |id: u64| {
            let mut r = req(24);
            for (i, h) in r.block_hashes.iter_mut().enumerate().skip(20) {
                *h = BlockHash(kvroute_core::mix64((id << 8) | i as u64));
            }
            r
        };
        let idle = StaticView::idle(2);
        for id in 0..60 {
            let r = shared_req(id);
            let d = p.pick(&r, &idle).unwrap();
            p.on_routed(&r, &d);
        }
        // Instance 0 holds the shared 20 blocks and 2 more; 1 holds only 20.
        let v = StaticView::idle(2).with_matched(0, 22).with_matched(1, 20);
        let e = p.explain(&shared_req(999), &v);
        assert_eq!(
            (e[0].get("prefix_score"), e[1].get("prefix_score")),
            (Some(0.5), Some(0.0))
        );
        // Faithful default: 22/24 against 20/24.
        let e = policy().explain(&shared_req(999), &v);
        assert!((e[1].get("prefix_score").unwrap() - 20.0 / 24.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_drawn_at_random() {
        let p = policy();
        let v = StaticView::idle(4);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[p.pick(&req(3), &v).unwrap().instance.index()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 60), "{seen:?}");
    }
}
