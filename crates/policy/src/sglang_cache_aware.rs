//! `sglang_cache_aware`: the `cache_aware` policy of sglang-router 0.3.2,
//! ported with its own approximate prefix structure (a row to beat).
//!
//! Read from sgl-project/sglang `sgl-model-gateway/src/policies/cache_aware.rs`
//! (@b93974f) and `policies/tree.rs` (@03744db), with the defaults of
//! `python -m sglang_router.launch_router --help` for sglang-router 0.3.2
//! (`router_args.py`) and its low-match rule after PR #14650 (least load,
//! not smallest tree; 0.3.2's binary has `select_worker_min_load` and no
//! `get_smallest_tenant`).
//!
//! ```text
//! loads   = router in-flight requests per instance
//! if max − min > balance_abs_threshold and max > balance_rel_threshold × min:
//!     → least in-flight                                   (imbalanced)
//! else:
//!     d = deepest prefix of the prompt in the tree (any instance)
//!     if d × block_size / prompt_tokens > cache_threshold:
//!         → the tenant of that node: the instance that created it, if it
//!           still holds it, else the earliest remaining one   (cache hit)
//!     else → least in-flight                              (low match)
//! insert the whole prompt for the chosen instance (every branch), now
//! every eviction_interval_secs: evict each instance's least recently used
//!     leaves until it holds ≤ max_tree_size blocks
//! ```
//!
//! **Its own structure, not the directory.** SGLang routes on a radix tree
//! of the text it routed, updated at selection time and evicted by a
//! periodic per-tenant LRU; it never sees the engines' caches. This port
//! keeps the same kind of structure — per-instance sets of prompt blocks
//! with access times, inserted at selection, evicted every
//! `eviction_interval_secs` of `view.now()` (no thread: the pick that finds
//! the interval elapsed runs the eviction, so runs replay exactly) — so it
//! does not read the directory ([`Policy::uses_directory`] is false) and
//! behaves the same whether the router's directory is predicted or exact.
//! Its [`Decision::cached_blocks`] is what the tree believes.
//!
//! What differs from the original:
//!
//! * **Granularity.** Blocks of the engine's block size, keyed by chain hash,
//!   instead of characters of the request text; a match counts whole blocks
//!   (SGLang counts partially matched nodes character by character), so the
//!   match rate is lower by at most one block. `max_tree_size` is in blocks:
//!   the default 2^20 is SGLang's 2^26 characters per tenant at ~4
//!   characters per token and 16-token blocks.
//! * **Access times.** Inserting stamps the whole path with `view.now()`
//!   (the pre-0.3 tree; 0.3's stamps only the leaf and restamps one match in
//!   eight, from a process-wide counter).
//! * **Ties.** Among equally loaded instances the rotation decides (SGLang:
//!   the first in its worker list, a bias towards worker 0). The imbalance
//!   test looks at eligible instances only (SGLang: all workers, unhealthy
//!   ones included). If the hit tenant is not eligible, the earliest
//!   eligible holder of the node is taken, else the least loaded (SGLang:
//!   the first healthy worker).
//!
//! **Shared prompts concentrate — faithfully.** A prompt everyone shares
//! matches far above `cache_threshold` on the instance that first received
//! it, and the hit branch sends every such request to that node's creator,
//! load-blind, until in-flight counts differ by more than 64 and by 1.5×
//! (smg-project/smg#2161 describes the same behaviour of the original). That
//! is the default, because this row stands for the original. With
//! `discount_shared_prefix = true` (opt-in) the match rate counts only what
//! lies beyond the prefix a hot share of recent traffic has in common
//! ([`SharedPrefix`]): `(d − shared) / (prompt − shared)`, so a request whose
//! only match is the shared prompt is a low match and goes to the least
//! loaded instance, which acquires the shared prompt.

use crate::registry::PolicySpec;
use crate::select::{argmin_from, FastMap, Rotor};
use crate::shared::SharedPrefix;
use kvroute_core::{
    BlockHash, CandidateScore, ClusterView, Decision, InstanceId, Nanos, PickError, Policy, Reason,
    RouteRequest,
};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

/// Parameters of `sglang_cache_aware` (SGLang's names and 0.3.2 defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SglangCacheAwareConfig {
    /// Minimum matched fraction of the prompt for cache routing.
    pub cache_threshold: f64,
    /// Absolute in-flight difference that, with the relative one, means imbalance.
    pub balance_abs_threshold: u32,
    /// Relative in-flight ratio that, with the absolute one, means imbalance.
    pub balance_rel_threshold: f64,
    /// Seconds between two LRU evictions of the tree.
    pub eviction_interval_secs: f64,
    /// Blocks each instance may hold in the tree after an eviction.
    pub max_tree_size: u64,
    /// Measure the match rate past the prefix most traffic shares (opt-in;
    /// not in the original).
    pub discount_shared_prefix: bool,
}

impl Default for SglangCacheAwareConfig {
    fn default() -> Self {
        SglangCacheAwareConfig {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            eviction_interval_secs: 60.0,
            max_tree_size: 1 << 20,
            discount_shared_prefix: false,
        }
    }
}

impl PolicySpec for SglangCacheAwareConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(SglangCacheAware::new(self))
    }
}

/// An instance's presence on a block of the tree.
#[derive(Debug, Clone, Copy)]
struct Tenant {
    id: InstanceId,
    /// Last access: (time, insertion sequence) — the sequence orders equal times.
    access: (Nanos, u64),
    /// Children of this block that also carry this tenant (0: a leaf for it).
    children: u32,
}

/// One block of the tree: a prompt prefix, named by its chain hash.
#[derive(Debug)]
struct Node {
    parent: Option<BlockHash>,
    /// In order of attachment.
    tenants: Vec<Tenant>,
    /// SGLang's `last_tenant`: the instance that created the node, replaced
    /// by the earliest remaining tenant when it is evicted from it.
    creator: InstanceId,
}

impl Node {
    fn tenant(&self, id: InstanceId) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
    fn tenant_mut(&mut self, id: InstanceId) -> Option<&mut Tenant> {
        self.tenants.iter_mut().find(|t| t.id == id)
    }
}

/// The approximate tree: every block routed, with the instances it was
/// routed to. A tenant on a block is on all the block's ancestors (inserts
/// cover whole paths, evictions remove leaves first), so which blocks exist
/// is prefix-closed and the deepest match is found by binary search.
#[derive(Debug, Default)]
struct Tree {
    nodes: FastMap<BlockHash, Node>,
    /// Blocks per instance, indexed by instance id.
    sizes: Vec<u64>,
    seq: u64,
    /// When the last eviction ran (`None`: before the first pick).
    last_eviction: Option<Nanos>,
}

impl Tree {
    /// Deepest `d` such that `hashes[..d]` is in the tree (held by anyone).
    fn deepest(&self, hashes: &[BlockHash]) -> usize {
        self.deepest_where(hashes, |_| true)
    }

    /// Deepest `d` such that `hashes[d - 1]` exists and satisfies `held`
    /// (monotone along the path: held at `d` implies held before).
    fn deepest_where(&self, hashes: &[BlockHash], held: impl Fn(&Node) -> bool) -> usize {
        let (mut lo, mut hi) = (0, hashes.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.nodes.get(&hashes[mid - 1]).is_some_and(&held) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Blocks of `hashes` that `id` holds, from the start.
    fn matched_by(&self, hashes: &[BlockHash], id: InstanceId) -> u32 {
        self.deepest_where(hashes, |n| n.tenant(id).is_some()) as u32
    }

    fn size(&self, id: InstanceId) -> u64 {
        self.sizes.get(id.index()).copied().unwrap_or(0)
    }

    /// Insert the whole path for `id`, stamping it with `now`.
    fn insert(&mut self, hashes: &[BlockHash], id: InstanceId, now: Nanos) {
        if self.sizes.len() <= id.index() {
            self.sizes.resize(id.index() + 1, 0);
        }
        for (i, &h) in hashes.iter().enumerate() {
            self.seq += 1;
            let access = (now, self.seq);
            let parent = i.checked_sub(1).map(|p| hashes[p]);
            let node = self.nodes.entry(h).or_insert_with(|| Node {
                parent,
                tenants: Vec::new(),
                creator: id,
            });
            if let Some(t) = node.tenant_mut(id) {
                t.access = access;
                continue;
            }
            node.tenants.push(Tenant {
                id,
                access,
                children: 0,
            });
            self.sizes[id.index()] += 1;
            if let Some(p) = parent.and_then(|p| self.nodes.get_mut(&p)) {
                if let Some(t) = p.tenant_mut(id) {
                    t.children += 1;
                }
            }
        }
    }

    /// SGLang's `evict_tenant_by_size`: per instance, remove least recently
    /// used leaves until it holds at most `max` blocks.
    fn evict(&mut self, max: u64) {
        if self.sizes.iter().all(|&s| s <= max) {
            return;
        }
        let mut heap = BinaryHeap::new();
        for (&h, node) in &self.nodes {
            for t in &node.tenants {
                if t.children == 0 && self.size(t.id) > max {
                    heap.push(Reverse((t.access, t.id, h)));
                }
            }
        }
        while let Some(Reverse((_, id, h))) = heap.pop() {
            if self.size(id) <= max {
                continue;
            }
            let Some(node) = self.nodes.get_mut(&h) else {
                continue;
            };
            let Some(k) = node.tenants.iter().position(|t| t.id == id) else {
                continue;
            };
            if node.tenants[k].children > 0 {
                continue;
            }
            node.tenants.remove(k);
            if node.creator == id {
                if let Some(first) = node.tenants.first() {
                    node.creator = first.id;
                }
            }
            let parent = node.parent;
            if node.tenants.is_empty() {
                self.nodes.remove(&h);
            }
            self.sizes[id.index()] -= 1;
            let Some(ph) = parent else {
                continue;
            };
            if let Some(t) = self.nodes.get_mut(&ph).and_then(|p| p.tenant_mut(id)) {
                t.children = t.children.saturating_sub(1);
                if t.children == 0 {
                    heap.push(Reverse((t.access, id, ph)));
                }
            }
        }
    }
}

/// SGLang's cache-aware rule on its own approximate tree.
#[derive(Debug)]
pub struct SglangCacheAware {
    config: SglangCacheAwareConfig,
    rotor: Rotor,
    /// Held for one decision's lookups and insert (and, once per interval,
    /// an eviction); never across I/O.
    tree: Mutex<Tree>,
    shared: SharedPrefix,
}

/// The branch a decision takes, and what it saw.
struct Branch {
    imbalanced: bool,
    /// Deepest match in the tree (any instance), blocks.
    deepest: usize,
    /// The match rate the threshold is applied to.
    rate: f64,
    /// Shared-prefix blocks discounted (0 unless opted in).
    shared: usize,
    /// The hit branch's tenant, if the branch is a hit and one is eligible.
    tenant: Option<InstanceId>,
}

impl SglangCacheAware {
    /// The policy.
    pub fn new(config: &SglangCacheAwareConfig) -> SglangCacheAware {
        SglangCacheAware {
            config: config.clone(),
            rotor: Rotor::default(),
            tree: Mutex::new(Tree::default()),
            shared: SharedPrefix::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn branch(&self, tree: &Tree, req: &RouteRequest, view: &dyn ClusterView) -> Branch {
        let c = &self.config;
        let ids = view.instances();
        let inflight = |id| view.load(id).inflight;
        let min = ids.iter().map(|&i| inflight(i)).min().unwrap_or(0);
        let max = ids.iter().map(|&i| inflight(i)).max().unwrap_or(0);
        let imbalanced = max - min > c.balance_abs_threshold
            && f64::from(max) > f64::from(min) * c.balance_rel_threshold;
        let deepest = tree.deepest(&req.block_hashes);
        let shared = if c.discount_shared_prefix {
            self.shared.key(&req.block_hashes, 1).shared
        } else {
            0
        };
        let shared_tokens = req.blocks_to_tokens(shared as u32);
        let rest = req.prompt_tokens.saturating_sub(shared_tokens);
        let rate = if rest == 0 {
            0.0
        } else {
            f64::from(
                req.blocks_to_tokens(deepest as u32)
                    .saturating_sub(shared_tokens),
            ) / f64::from(rest)
        };
        let tenant = (!imbalanced && deepest > 0 && rate > c.cache_threshold)
            .then(|| tree.nodes.get(&req.block_hashes[deepest - 1]))
            .flatten()
            .and_then(|node| {
                let eligible = |id: &InstanceId| ids.contains(id);
                Some(node.creator)
                    .filter(|&c| node.tenant(c).is_some() && eligible(&c))
                    .or_else(|| node.tenants.iter().map(|t| t.id).find(eligible))
            });
        Branch {
            imbalanced,
            deepest,
            rate,
            shared,
            tenant,
        }
    }
}

impl Policy for SglangCacheAware {
    fn name(&self) -> &'static str {
        "sglang_cache_aware"
    }

    /// Reads its own tree, never the directory.
    fn uses_directory(&self) -> bool {
        false
    }

    fn pick(&self, req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        let now = view.now();
        let mut tree = self.lock();
        let interval = Nanos::from_secs_f64(self.config.eviction_interval_secs);
        match tree.last_eviction {
            None => tree.last_eviction = Some(now),
            Some(t) if now.saturating_sub(t) >= interval => {
                tree.evict(self.config.max_tree_size);
                tree.last_eviction = Some(now);
            }
            Some(_) => {}
        }
        let b = self.branch(&tree, req, view);
        let start = self.rotor.next();
        let least =
            || argmin_from(ids, start, |id| view.load(id).inflight).ok_or(PickError::NoInstance);
        let (instance, reason) = if b.imbalanced {
            (least()?, Reason::Rebalance)
        } else if let Some(t) = b.tenant {
            (t, Reason::CacheHit)
        } else if b.rate > self.config.cache_threshold {
            // A hit whose holders are all ineligible.
            (least()?, Reason::LeastLoaded)
        } else {
            (least()?, Reason::CacheMiss)
        };
        let cached_blocks = if Some(instance) == b.tenant {
            b.deepest as u32
        } else {
            tree.matched_by(&req.block_hashes, instance)
        };
        tree.insert(&req.block_hashes, instance, now);
        Ok(Decision {
            instance,
            cached_blocks,
            reason,
        })
    }

    fn on_routed(&self, req: &RouteRequest, _decision: &Decision) {
        if self.config.discount_shared_prefix {
            self.shared.observe(&req.block_hashes, 1);
        }
    }

    /// Every eligible instance with its in-flight count, its own match in
    /// the tree and its tree size. Score: imbalanced or low match → −in-flight
    /// (ties rotate); hit → the instance's own matched fraction, plus 1 for
    /// the hit tenant.
    fn explain(&self, req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let tree = self.lock();
        let b = self.branch(&tree, req, view);
        let by_load = b.imbalanced || b.tenant.is_none();
        view.instances()
            .iter()
            .map(|&id| {
                let inflight = view.load(id).inflight;
                let matched = tree.matched_by(&req.block_hashes, id);
                let own_rate = req.cached_fraction(matched);
                CandidateScore::new(id, matched)
                    .term("inflight", f64::from(inflight))
                    .term("tree_blocks", tree.size(id) as f64)
                    .term("imbalanced", f64::from(u8::from(b.imbalanced)))
                    .term("deepest_match_blocks", b.deepest as f64)
                    .term("shared_prefix_blocks", b.shared as f64)
                    .term("match_rate", b.rate)
                    .term("cache_threshold", self.config.cache_threshold)
                    .score(if by_load {
                        -f64::from(inflight)
                    } else {
                        own_rate + f64::from(u8::from(Some(id) == b.tenant))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{mix64, StaticView};

    /// A prompt of `shared` blocks common to all, then `own` blocks of `id`.
    fn prompt(shared: usize, id: u64, own: usize) -> RouteRequest {
        let mut h = 0x5151_u64;
        let hashes: Vec<BlockHash> = (0..shared + own)
            .map(|i| {
                h = mix64(
                    h ^ if i < shared {
                        i as u64
                    } else {
                        (id << 32) | i as u64
                    },
                );
                BlockHash(h)
            })
            .collect();
        RouteRequest {
            prompt_tokens: hashes.len() as u32 * 16,
            block_hashes: hashes,
            block_size: 16,
            ..Default::default()
        }
    }

    fn policy() -> SglangCacheAware {
        SglangCacheAware::new(&Default::default())
    }

    #[test]
    fn imbalance_overrides_cache() {
        let p = policy();
        let r = prompt(10, 1, 0);
        let v = StaticView::idle(2);
        assert_eq!(p.pick(&r, &v).unwrap().instance, InstanceId(0));
        // Instance 0 holds the prompt but has 100 in flight against 10.
        let v = StaticView::idle(2)
            .with_inflight(0, 100)
            .with_inflight(1, 10);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(1), Reason::Rebalance));
    }

    #[test]
    fn both_thresholds_needed_for_imbalance() {
        let p = policy();
        let r = prompt(10, 1, 0);
        p.pick(&r, &StaticView::idle(2)).unwrap(); // i0 holds it
                                                   // 100 vs 70: abs diff 30 < 64 → balanced, cache wins.
        let v = StaticView::idle(2)
            .with_inflight(0, 100)
            .with_inflight(1, 70);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!(
            (d.instance, d.reason, d.cached_blocks),
            (InstanceId(0), Reason::CacheHit, 10)
        );
    }

    #[test]
    fn a_hit_goes_to_the_creator_whatever_the_load() {
        let p = policy();
        let v = StaticView::idle(3);
        let first = p.pick(&prompt(20, 1, 2), &v).unwrap().instance;
        // Other requests sharing 20 of 22 blocks go to the creator, load-blind.
        let busy = StaticView::idle(3).with_inflight(first.0, 30);
        for id in 2..6 {
            let d = p.pick(&prompt(20, id, 2), &busy).unwrap();
            assert_eq!((d.instance, d.reason), (first, Reason::CacheHit));
        }
    }

    #[test]
    fn an_ineligible_creator_hands_the_hit_to_another_holder() {
        let p = policy();
        let r = prompt(10, 1, 0);
        let v = StaticView::idle(3);
        let a = p.pick(&r, &v).unwrap().instance;
        // Imbalance sends a copy elsewhere: the node gets a second tenant.
        let busy = StaticView::idle(3).with_inflight(a.0, 100);
        let b = p.pick(&r, &busy).unwrap().instance;
        assert_ne!(a, b);
        // The creator drains: the other holder takes the hit.
        let mut v = StaticView::idle(3);
        v.instances.retain(|&i| i != a);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!((d.instance, d.reason), (b, Reason::CacheHit));
        // No holder eligible: least in flight.
        v.instances.retain(|&i| i != b);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!(d.reason, Reason::LeastLoaded);
    }

    #[test]
    fn low_match_goes_to_least_inflight() {
        let p = policy();
        let v = StaticView::idle(3);
        p.pick(&prompt(2, 0, 8), &v).unwrap();
        // Shares 2 of 10 blocks: 0.2 ≤ 0.3 → least in flight.
        let v = StaticView::idle(3).with_inflight(0, 2).with_inflight(2, 1);
        let d = p.pick(&prompt(2, 1, 8), &v).unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(1), Reason::CacheMiss));
    }

    #[test]
    fn inserts_at_selection_and_reports_its_own_belief() {
        let p = policy();
        let v = StaticView::idle(2).with_matched(1, 99); // the directory is ignored
        let r = prompt(6, 1, 2);
        let d = p.pick(&r, &v).unwrap();
        assert_eq!(d.cached_blocks, 0);
        assert!(!p.uses_directory());
        let again = p.pick(&r, &v).unwrap();
        assert_eq!((again.instance, again.cached_blocks), (d.instance, 8));
    }

    #[test]
    fn periodic_lru_eviction_to_max_tree_size() {
        let p = SglangCacheAware::new(&SglangCacheAwareConfig {
            max_tree_size: 10,
            eviction_interval_secs: 60.0,
            ..Default::default()
        });
        let mut v = StaticView::idle(1);
        let (old, new) = (prompt(0, 1, 8), prompt(0, 2, 8));
        p.pick(&old, &v).unwrap();
        v.now = Nanos::from_secs(1);
        p.pick(&new, &v).unwrap();
        assert_eq!(p.lock().size(InstanceId(0)), 16);
        // Not yet due: nothing evicted.
        v.now = Nanos::from_secs(59);
        p.pick(&new, &v).unwrap();
        assert_eq!(p.lock().size(InstanceId(0)), 16);
        // Due: the least recently used leaves go first, down to 10 blocks
        // (the eviction runs before this pick's insert).
        v.now = Nanos::from_secs(61);
        let d = p.pick(&new, &v).unwrap();
        assert_eq!(d.cached_blocks, 8);
        let t = p.lock();
        assert_eq!(t.size(InstanceId(0)), 10);
        assert_eq!(t.matched_by(&new.block_hashes, InstanceId(0)), 8);
        assert_eq!(t.matched_by(&old.block_hashes, InstanceId(0)), 2);
    }

    #[test]
    fn eviction_keeps_the_tree_prefix_closed() {
        let mut t = Tree::default();
        let a = prompt(4, 1, 4).block_hashes;
        let b = prompt(4, 2, 4).block_hashes;
        t.insert(&a, InstanceId(0), Nanos(1));
        t.insert(&b, InstanceId(0), Nanos(2));
        t.evict(6);
        assert_eq!(t.size(InstanceId(0)), 6);
        // a's own blocks went first (older), and only from the leaf up.
        assert_eq!(t.matched_by(&a, InstanceId(0)), 4);
        assert_eq!(t.matched_by(&b, InstanceId(0)), 6 - 4 + 4);
        assert_eq!(t.deepest(&b), 6);
    }

    #[test]
    fn an_evicted_creator_hands_the_node_on() {
        let mut t = Tree::default();
        let a = prompt(4, 1, 0).block_hashes;
        t.insert(&a, InstanceId(0), Nanos(1));
        t.insert(&a, InstanceId(1), Nanos(2));
        t.insert(&prompt(0, 9, 30).block_hashes, InstanceId(0), Nanos(3));
        // Instance 0 is over 10 blocks: its older path goes first, whole.
        t.evict(10);
        assert_eq!(t.matched_by(&a, InstanceId(0)), 0);
        assert_eq!(t.size(InstanceId(0)), 10);
        assert_eq!(t.nodes[&a[3]].creator, InstanceId(1));
    }

    #[test]
    fn by_default_a_shared_prompt_stays_with_its_creator() {
        let p = policy();
        let v = StaticView::idle(4);
        let mut seen = [0; 4];
        for id in 0..100 {
            let r = prompt(50, id, 4);
            let d = p.pick(&r, &v).unwrap();
            p.on_routed(&r, &d);
            seen[d.instance.index()] += 1;
        }
        assert_eq!(seen.iter().filter(|&&c| c > 0).count(), 1, "{seen:?}");
    }

    #[test]
    fn discounting_the_shared_prefix_spreads_it() {
        let p = SglangCacheAware::new(&SglangCacheAwareConfig {
            discount_shared_prefix: true,
            ..Default::default()
        });
        let v = StaticView::idle(4);
        let mut seen = [0; 4];
        for id in 0..100 {
            let r = prompt(50, id, 4);
            let d = p.pick(&r, &v).unwrap();
            p.on_routed(&r, &d);
            if id >= 40 {
                seen[d.instance.index()] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c > 5), "{seen:?}");
        // A request that matches past the shared prompt is still a hit.
        let r = prompt(50, 7, 4);
        let e = p.explain(&r, &StaticView::idle(4));
        assert!(e.iter().any(|c| c.score > 1.0), "{e:?}");
    }
}
