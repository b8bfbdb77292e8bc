//! `dualmap`: DualMap's dual-mapping scheduler (Yuan et al., "DualMap:
//! Enabling Both Cache Affinity and Load Balancing for Distributed LLM
//! Serving", arXiv 2602.06502, ICLR 2026), its routing rule (a row to beat),
//! read from the authors' code (A-zhudong/DualMap:
//! `dualmap/scheduler/global_scheduler/double_hash_global_scheduler.py`,
//! `dualmap/scheduler/utils/double_hash_global_scheduler_utils.py`,
//! `dualmap/scheduler/utils/lazy_prefix_table.py`, `start_up.py`).
//!
//! * **Adaptive key.** The key is the chain hash of block
//!   `shared + prefix_blocks − 1`, where `shared` is the prefix a hot share
//!   of recent traffic has in common ([`SharedPrefix`], DualMap's own
//!   `HotPrefixDetector` + lazy expansion: window 200, hot at 6.12 %, shrink
//!   below 2 %). A prefix everyone shares therefore never names the
//!   candidates; what follows it does. (DualMap deepens a hot key one trace
//!   block per request; `SharedPrefix` jumps straight to where the requests
//!   diverge — see its doc.)
//! * **Two independent hashes** map the key to two candidate instances:
//!   rendezvous hashing with two salts (DualMap: two consistent-hash rings,
//!   `uhashring` default and ketama). If both hashes pick the same instance
//!   the second candidate is the runner-up of the second ranking (DualMap:
//!   the next instance id).
//! * **Cache affinity first.** The affine candidate is the one with more
//!   matched blocks; ties: fewer requests (DualMap: fewer running-request
//!   blocks), then a seeded random choice (DualMap: `random.sample`, seed 42).
//! * **SLO-aware switch.** Each candidate's TTFT estimate is
//!   `(pending prefill tokens + uncached prompt tokens) ×
//!   prefill_secs_per_token`. If the affine candidate's estimate exceeds
//!   `ttft_slo_secs × balance_ttft_fraction` (DualMap:
//!   `dh_first_balance_ttft_thredhold` = SLO/2 = 2.5 s at its 5 s SLO), the
//!   request goes to the candidate with the lower estimate (same ties).
//!
//! The estimate's inputs: pending prefill is the router's own count of
//! uncached tokens sent and not yet answered (DualMap's
//! `replica_pending_tokens`, also router-side; vLLM's gauges count requests,
//! not tokens); `prefill_secs_per_token` comes from the configuration, else
//! from the engine profile (`PolicyConfig::with_engine_estimates`, which the
//! simulator calls with its profile's prefill cost), else DualMap's 1.27e-4
//! s/token (`PREFILL_TPOT`, measured on the authors' hardware).
//!
//! **Not ported: hotspot-aware rebalancing.** DualMap migrates requests that
//! are still waiting in the *router's* per-instance queues to their other
//! candidate when an instance's pending TTFT exceeds the SLO or its oldest
//! queued request waited 3 s (`rebalance`). kvroute has no router-side
//! queue: a request is handed to its engine as soon as it is routed, and
//! once there it cannot be moved. Porting the migration needs such a queue
//! (and DualMap's dispatch rule, which holds requests back while an engine
//! is busy); without it the rule above is all that applies. Also not ported:
//! the priority rank of requests predicted to exceed the 99th-percentile
//! TTFT (a queue discipline, for the same reason).

use crate::prefix_hash::rendezvous;
use crate::registry::{EngineEstimates, PolicySpec};
use crate::select::{least_loaded, load_terms, Rotor};
use crate::shared::SharedPrefix;
use kvroute_core::{
    mix64, CandidateScore, ClusterView, Decision, InstanceId, Overlap, PickError, Policy, Reason,
    RouteRequest, SeededRng,
};
use serde::{Deserialize, Serialize};

/// DualMap's `PREFILL_TPOT` (seconds per prefill token, `start_up.py`).
const DUALMAP_PREFILL_SECS_PER_TOKEN: f64 = 1.27e-4;
const SECOND_SALT: u64 = 0xd0a1_0a9e_5eed_0002;

/// Parameters of `dualmap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DualMapConfig {
    /// Blocks past the shared prefix that define the key for the two hashes.
    pub prefix_blocks: usize,
    /// TTFT service-level objective, seconds (DualMap: 5).
    pub ttft_slo_secs: f64,
    /// Switch to the lighter candidate above this fraction of the SLO
    /// (DualMap: 0.5).
    pub balance_ttft_fraction: f64,
    /// Estimated prefill time per uncached token, seconds; unset: from the
    /// engine profile, else 1.27e-4 (DualMap's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_secs_per_token: Option<f64>,
    /// RNG seed for ties.
    pub seed: u64,
}

impl Default for DualMapConfig {
    fn default() -> Self {
        DualMapConfig {
            prefix_blocks: 4,
            ttft_slo_secs: 5.0,
            balance_ttft_fraction: 0.5,
            prefill_secs_per_token: None,
            seed: 42,
        }
    }
}

impl PolicySpec for DualMapConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(DualMap::new(self))
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    fn set_engine_estimates(&mut self, e: &EngineEstimates) {
        self.prefill_secs_per_token
            .get_or_insert(e.prefill_secs_per_token);
    }
}

/// Two hash candidates, cache first, load under SLO pressure.
#[derive(Debug)]
pub struct DualMap {
    config: DualMapConfig,
    secs_per_token: f64,
    rotor: Rotor,
    rng: SeededRng,
    shared: SharedPrefix,
}

/// The highest-weighted instance for `key`, other than `not`.
fn top(ids: &[InstanceId], key: u64, not: Option<InstanceId>) -> Option<InstanceId> {
    ids.iter()
        .copied()
        .filter(|&i| Some(i) != not)
        .max_by_key(|&i| rendezvous(key, i))
}

/// One candidate as the rule sees it.
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: InstanceId,
    matched: u32,
    requests: u32,
    ttft_secs: f64,
}

/// What the rule decided, before any random tie-break.
enum Choice {
    One(InstanceId, Reason),
    /// The two candidates tie; pick one at random.
    Tie(Reason),
}

impl DualMap {
    /// The policy.
    pub fn new(config: &DualMapConfig) -> DualMap {
        DualMap {
            secs_per_token: config
                .prefill_secs_per_token
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(DUALMAP_PREFILL_SECS_PER_TOKEN),
            config: config.clone(),
            rotor: Rotor::default(),
            rng: SeededRng::new(config.seed),
            shared: SharedPrefix::default(),
        }
    }

    /// The two candidates (`None` without a key; the second is `None` with
    /// a single instance).
    fn candidates(
        &self,
        req: &RouteRequest,
        ids: &[InstanceId],
    ) -> Option<(InstanceId, Option<InstanceId>, usize)> {
        let k = self
            .shared
            .key(&req.block_hashes, self.config.prefix_blocks);
        let key = k
            .hash(&req.block_hashes)
            .or_else(|| req.prefix_key(self.config.prefix_blocks))?;
        let first = top(ids, key, None)?;
        let second = top(ids, mix64(key ^ SECOND_SALT), Some(first));
        Some((first, second, k.shared))
    }

    fn cand(
        &self,
        req: &RouteRequest,
        view: &dyn ClusterView,
        o: &Overlap,
        id: InstanceId,
    ) -> Cand {
        let l = view.load(id);
        let matched = o.get(id);
        let uncached = req.prompt_tokens - req.blocks_to_tokens(matched);
        Cand {
            id,
            matched,
            requests: l.requests(),
            ttft_secs: (l.pending_prefill_tokens + u64::from(uncached)) as f64
                * self.secs_per_token,
        }
    }

    fn threshold_secs(&self) -> f64 {
        self.config.ttft_slo_secs * self.config.balance_ttft_fraction
    }

    /// DualMap's rule on two candidates.
    fn choose(&self, a: Cand, b: Cand) -> Choice {
        // Affine: more matched blocks; ties: fewer requests; then random.
        let affine = match (b.matched.cmp(&a.matched), b.requests.cmp(&a.requests)) {
            (std::cmp::Ordering::Greater, _) => Some(b),
            (std::cmp::Ordering::Less, _) => Some(a),
            (_, std::cmp::Ordering::Less) => Some(b),
            (_, std::cmp::Ordering::Greater) => Some(a),
            _ => None,
        };
        let over = |c: &Cand| c.ttft_secs > self.threshold_secs();
        let over_slo = match affine {
            Some(c) => over(&c),
            // Tied candidates have the same match, hence the same uncached
            // part; either's estimate decides whether to switch.
            None => over(&a) || over(&b),
        };
        if over_slo {
            let lighter = match a.ttft_secs.total_cmp(&b.ttft_secs) {
                std::cmp::Ordering::Less => Some(a),
                std::cmp::Ordering::Greater => Some(b),
                std::cmp::Ordering::Equal => match a.requests.cmp(&b.requests) {
                    std::cmp::Ordering::Less => Some(a),
                    std::cmp::Ordering::Greater => Some(b),
                    std::cmp::Ordering::Equal => None,
                },
            };
            return match lighter {
                Some(c) => Choice::One(c.id, Reason::SloFallback),
                None => Choice::Tie(Reason::SloFallback),
            };
        }
        let reason = if a.matched.max(b.matched) > 0 {
            Reason::CacheHit
        } else {
            Reason::PowerOfTwo
        };
        match affine {
            Some(c) => Choice::One(c.id, reason),
            None => Choice::Tie(reason),
        }
    }
}

impl Policy for DualMap {
    fn name(&self) -> &'static str {
        "dualmap"
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        let Some((first, second, _)) = self.candidates(req, ids) else {
            let instance = least_loaded(view, &self.rotor).ok_or(PickError::NoInstance)?;
            return Ok(Decision {
                instance,
                cached_blocks: 0,
                reason: Reason::LeastLoaded,
            });
        };
        let overlap = view.overlap(&req.block_hashes);
        let Some(second) = second else {
            return Ok(Decision {
                instance: first,
                cached_blocks: overlap.get(first),
                reason: Reason::OnlyChoice,
            });
        };
        let (a, b) = (
            self.cand(req, view, &overlap, first),
            self.cand(req, view, &overlap, second),
        );
        let (instance, reason) = match self.choose(a, b) {
            Choice::One(i, r) => (i, r),
            Choice::Tie(r) => (
                if self.rng.below(2) == 0 {
                    first
                } else {
                    second
                },
                r,
            ),
        };
        Ok(Decision {
            instance,
            cached_blocks: overlap.get(instance),
            reason,
        })
    }

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        self.shared
            .observe(&req.block_hashes, self.config.prefix_blocks);
    }

    /// The two candidates with their match, load and TTFT estimate; score =
    /// matched blocks when the affine candidate is within the switch
    /// threshold, else −TTFT estimate (the switch's ranking). Ties: fewer
    /// requests, then a seeded draw. Without a key: every instance by load.
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let ids = view.instances();
        let Some((first, second, shared)) = self.candidates(req, ids) else {
            return crate::select::explain_by_load(view);
        };
        let overlap = view.overlap(&req.block_hashes);
        let cands: Vec<Cand> = std::iter::once(first)
            .chain(second)
            .map(|id| self.cand(req, view, &overlap, id))
            .collect();
        let switched = match cands.as_slice() {
            [a, b] => matches!(
                self.choose(*a, *b),
                Choice::One(_, Reason::SloFallback) | Choice::Tie(Reason::SloFallback)
            ),
            _ => false,
        };
        cands
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let base = CandidateScore::new(c.id, c.matched)
                    .term("candidate", (k + 1) as f64)
                    .term("shared_prefix_blocks", shared as f64)
                    .term("ttft_estimate_secs", c.ttft_secs)
                    .term("switch_threshold_secs", self.threshold_secs());
                load_terms(base, &view.load(c.id)).score(if switched {
                    -c.ttft_secs
                } else {
                    f64::from(c.matched)
                })
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
            block_hashes: (0..10).map(|i| BlockHash(first + i)).collect(),
            block_size: 16,
            prompt_tokens: 160,
            ..Default::default()
        }
    }

    fn policy() -> DualMap {
        DualMap::new(&DualMapConfig {
            prefill_secs_per_token: Some(1e-4),
            ..Default::default()
        })
    }

    /// The instances DualMap picks from for `r` among `n` idle ones, found
    /// from its picks alone: on an idle cluster every decision is a full tie
    /// drawn between its two candidates, so 64 draws show both (a miss has
    /// probability 2^-63). Ordered by id.
    fn candidates(r: &RouteRequest, n: usize) -> (InstanceId, InstanceId) {
        let p = policy();
        let v = StaticView::idle(n);
        let mut seen: Vec<InstanceId> = (0..64).map(|_| p.pick(r, &v).unwrap().instance).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2, "idle picks land on two instances: {seen:?}");
        (seen[0], seen[1])
    }

    #[test]
    fn two_candidates_per_prefix_whatever_the_others_hold() {
        let p = policy();
        let r = req(1);
        let (a, b) = candidates(&r, 8);
        // Every other instance holds the whole prompt: DualMap still looks
        // only at its two candidates.
        let mut v = StaticView::idle(8);
        for i in 0..8u32 {
            if InstanceId(i) != a && InstanceId(i) != b {
                v = v.with_matched(i, 10);
            }
        }
        for _ in 0..32 {
            let d = p.pick(&r, &v).unwrap().instance;
            assert!(d == a || d == b, "{d:?} is not a candidate");
        }
        // The key is the prompt's first blocks: another suffix, same pair.
        let mut other = req(1);
        other.block_hashes[9] = BlockHash(999);
        assert_eq!(candidates(&other, 8), (a, b));
    }

    #[test]
    fn candidates_move_little_when_the_fleet_changes_and_spread_evenly() {
        let mut kept = 0;
        let mut in_pair = [0u32; 8];
        for first in 0..200u64 {
            let r = req(first * 100);
            let (a, b) = candidates(&r, 8);
            in_pair[a.index()] += 1;
            in_pair[b.index()] += 1;
            // A ninth instance: a pair changes only by taking it in.
            let (c, d) = candidates(&r, 9);
            let new = InstanceId(8);
            let same = [c, d].iter().filter(|x| **x == a || **x == b).count();
            assert!(
                same == 2 || (same == 1 && (c == new || d == new)),
                "({a:?}, {b:?}) became ({c:?}, {d:?})"
            );
            kept += usize::from(same == 2);
        }
        // Expected share kept: 7/9 of pairs do not include the new one.
        assert!((130..=180).contains(&kept), "{kept} of 200 pairs kept");
        // 400 candidate slots over 8 instances: 50 each expected.
        for (i, n) in in_pair.iter().enumerate() {
            assert!(
                (25..=75).contains(n),
                "instance {i} in {n} pairs: {in_pair:?}"
            );
        }
    }

    #[test]
    fn picks_the_candidate_with_the_cache() {
        let p = policy();
        let r = req(1);
        let (_, b) = candidates(&r, 8);
        let v = StaticView::idle(8).with_matched(b.0, 10);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (b, Reason::CacheHit));
    }

    #[test]
    fn equal_matches_go_to_fewer_requests() {
        let p = policy();
        let r = req(1);
        let (a, b) = candidates(&r, 8);
        let v = StaticView::idle(8)
            .with_matched(a.0, 4)
            .with_matched(b.0, 4)
            .with_inflight(a.0, 2);
        assert_eq!(p.pick(&r, &v).unwrap().instance, b);
    }

    #[test]
    fn full_ties_are_drawn_from_the_seed() {
        let r = req(1);
        let picks = |seed| {
            let p = DualMap::new(&DualMapConfig {
                seed,
                ..Default::default()
            });
            (0..40)
                .map(|_| p.pick(&r, &StaticView::idle(8)).unwrap().instance)
                .collect::<Vec<_>>()
        };
        let a = picks(1);
        assert_eq!(a, picks(1));
        let (c1, c2) = candidates(&r, 8);
        assert!(a.contains(&c1) && a.contains(&c2), "{a:?}");
    }

    #[test]
    fn slo_pressure_moves_to_the_lighter_candidate() {
        let p = policy();
        let r = req(1);
        let (a, b) = candidates(&r, 8);
        let mut v = StaticView::idle(8).with_matched(b.0, 10);
        // 30,000 tokens queued = 3 s > 5 s × 0.5.
        v.loads[b.index()].pending_prefill_tokens = 30_000;
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (a, Reason::SloFallback));
        // 2 s is under the switch threshold: cache wins.
        v.loads[b.index()].pending_prefill_tokens = 20_000;
        assert_eq!(p.pick(&r, &v).unwrap().instance, b);
        let e = p.explain(&r, &v);
        assert_eq!(e.len(), 2);
        assert!((e[0].get("switch_threshold_secs").unwrap() - 2.5).abs() < 1e-12);
    }

    #[test]
    fn the_profile_sets_the_prefill_rate_unless_configured() {
        let mut c = DualMapConfig::default();
        c.set_engine_estimates(&EngineEstimates {
            prefill_secs_per_token: 3e-4,
            tpot_secs: 0.01,
        });
        assert_eq!(DualMap::new(&c).secs_per_token, 3e-4);
        assert_eq!(
            DualMap::new(&DualMapConfig::default()).secs_per_token,
            DUALMAP_PREFILL_SECS_PER_TOKEN
        );
    }

    #[test]
    fn without_a_key_least_loaded_and_alone_the_only_choice() {
        let p = policy();
        let v = StaticView::idle(3).with_inflight(0, 2).with_inflight(1, 1);
        let d = p.pick(&RouteRequest::default(), &v).unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(2), Reason::LeastLoaded));
        let d = p.pick(&req(1), &StaticView::idle(1)).unwrap();
        assert_eq!(d.reason, Reason::OnlyChoice);
    }

    #[test]
    fn a_prefix_everyone_shares_does_not_fix_the_candidates() {
        let p = policy();
        let v = StaticView::idle(16);
        let prompt = |id: u64| {
            let mut h = 7u64;
            let hashes: Vec<BlockHash> = (0..60u64)
                .map(|i| {
                    h = mix64(h ^ if i < 50 { i } else { (id << 32) | i });
                    BlockHash(h)
                })
                .collect();
            RouteRequest {
                prompt_tokens: 960,
                block_hashes: hashes,
                block_size: 16,
                ..Default::default()
            }
        };
        let mut seen = std::collections::HashSet::new();
        for id in 0..300 {
            let r = prompt(id);
            let d = p.pick(&r, &v).unwrap();
            p.on_routed(&r, &d);
            if id >= 100 {
                seen.insert(d.instance);
            }
        }
        assert_eq!(seen.len(), 16, "{seen:?}");
    }
}
