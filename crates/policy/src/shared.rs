//! [`SharedPrefix`]: finds the prompt prefix that a large share of recent
//! traffic has in common (a system prompt, a tool preamble), so cache-aware
//! policies can key and score on what *distinguishes* requests instead.
//!
//! Why: a policy that keys on the first few blocks, or that prefers the
//! instance holding the longest match, sends every request to the first
//! instance that cached a prompt all requests share — on a trace whose
//! requests all start with one system prompt, `dualmap` put everything on 2
//! of 16 instances and `cache_affinity` kept 6 idle. The prefix everyone
//! shares says nothing about where a request should go: once every instance
//! has it cached it is a hit anywhere.
//!
//! The detector is DualMap's hot-prefix expansion (its `LazyPrefixTable` and
//! `HotPrefixDetector`: a sliding window of the last 200 routing keys, a key
//! is *hot* at ≥ 6.12 % of the window once it holds ≥ 20 keys, an expansion
//! is dropped once fewer than 2 % of the window pass through it), with one
//! change: DualMap deepens a hot key by one 512-token trace block per
//! request; here an expansion jumps straight to the depth where the requests
//! passing through it diverge (their longest common prefix, found by binary
//! search on the chained block hashes), so a 8k-token system prompt is
//! skipped at once instead of after 16 requests.
//!
//! ```text
//! lookup(hashes):  d = base
//!                  while an expansion exists for hashes[d-1] and has been confirmed:
//!                      shared = its common depth (capped by the prompt);  d = shared + base
//!                  → Key { depth: d (capped), shared }
//! observe(hashes): count the key at its depth in the window (and the expansions passed)
//!                  key hot and no expansion yet → expansion { representative: hashes, common: len }
//!                  each request through an expansion: common = min(common, LCP(representative, hashes))
//! ```
//!
//! Block hashes are chained (hash *i* covers blocks `0..=i`), so two prompts
//! share `d` blocks exactly when their hashes at `d − 1` are equal, and the
//! common prefix of two chains is found by binary search.

use kvroute_core::BlockHash;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Detector parameters (DualMap's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedPrefixConfig {
    /// Routing keys remembered.
    pub window: usize,
    /// Share of the window at which a key is hot.
    pub hot_ratio: f64,
    /// Keys in the window before anything can be hot.
    pub min_samples: usize,
    /// An expansion passed by a smaller share of the window is dropped.
    pub shrink_ratio: f64,
    /// Expansions kept at most (the oldest go first).
    pub max_expansions: usize,
    /// Blocks of a representative prompt kept per expansion.
    pub max_blocks: usize,
}

impl Default for SharedPrefixConfig {
    fn default() -> Self {
        SharedPrefixConfig {
            window: 200,
            hot_ratio: 0.0612,
            min_samples: 20,
            shrink_ratio: 0.02,
            max_expansions: 4096,
            max_blocks: 16_384,
        }
    }
}

/// Where a request's distinguishing part starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Key {
    /// Leading blocks shared with a hot share of recent traffic (0: none).
    pub shared: usize,
    /// Depth of the routing key: `base` blocks past the shared prefix,
    /// capped by the prompt (0 for a prompt without a full block).
    pub depth: usize,
}

impl Key {
    /// The routing key: the chain hash at `depth`, if the prompt has a block.
    pub fn hash(&self, hashes: &[BlockHash]) -> Option<u64> {
        self.depth
            .checked_sub(1)
            .and_then(|i| hashes.get(i))
            .map(|h| h.0)
    }

    /// Matched blocks beyond the shared prefix.
    pub fn beyond(&self, matched: u32) -> u32 {
        matched.saturating_sub(self.shared as u32)
    }
}

#[derive(Debug)]
struct Expansion {
    /// A prompt that passed through it, truncated to `max_blocks`.
    representative: Vec<BlockHash>,
    /// Longest prefix common to every prompt seen through it (blocks).
    common: usize,
    /// Prompts compared with the representative so far.
    confirmations: u32,
    /// Window entries that passed through it.
    passes: usize,
    /// Insertion order, for eviction.
    born: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Keyed by the chain hash at the depth where it was found hot.
    expansions: HashMap<u64, Expansion>,
    /// Per window entry: the routing key and the expansions passed.
    window: VecDeque<(u64, Vec<u64>)>,
    counts: HashMap<u64, usize>,
    born: u64,
}

/// The detector; cheap to query, updated once per routed request.
#[derive(Debug)]
pub struct SharedPrefix {
    config: SharedPrefixConfig,
    /// Held for a few hash-map operations per request, never across I/O.
    state: Mutex<State>,
}

impl Default for SharedPrefix {
    fn default() -> Self {
        SharedPrefix::new(SharedPrefixConfig::default())
    }
}

/// Longest common prefix (blocks) of two chains: equal at `i` implies equal
/// before `i`, so binary search.
fn lcp(a: &[BlockHash], b: &[BlockHash]) -> usize {
    let (mut lo, mut hi) = (0, a.len().min(b.len()));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if a[mid - 1] == b[mid - 1] {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

impl SharedPrefix {
    /// A detector with `config`.
    pub fn new(config: SharedPrefixConfig) -> SharedPrefix {
        SharedPrefix {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of a prompt: `base` blocks past its hot shared prefix.
    pub fn key(&self, hashes: &[BlockHash], base: usize) -> Key {
        let st = self.lock();
        Self::walk(&st, hashes, base.max(1), &mut |_| {})
    }

    fn walk(st: &State, hashes: &[BlockHash], base: usize, passed: &mut dyn FnMut(u64)) -> Key {
        let len = hashes.len();
        let mut shared = 0;
        let mut depth = base.min(len);
        // Each step goes strictly deeper, so this ends within `len` steps.
        while depth > shared {
            let h = hashes[depth - 1].0;
            let Some(e) = st.expansions.get(&h) else {
                break;
            };
            // Passing an unconfirmed expansion refines it, but its depth is
            // used only once a second prompt has been compared with it.
            passed(h);
            if e.confirmations == 0 {
                break;
            }
            let next_shared = e.common.min(len);
            if next_shared <= shared {
                break;
            }
            shared = next_shared;
            depth = (shared + base).min(len);
        }
        Key { shared, depth }
    }

    /// Record a routed prompt; returns its key (as [`key`](Self::key) would
    /// have before the call).
    pub fn observe(&self, hashes: &[BlockHash], base: usize) -> Key {
        let base = base.max(1);
        let c = self.config;
        let mut st = self.lock();
        let mut passed = Vec::new();
        let key = Self::walk(&st, hashes, base, &mut |h| passed.push(h));
        let Some(k) = key.hash(hashes) else {
            return key;
        };
        // Refine the expansions this prompt passed through.
        for h in &passed {
            if let Some(e) = st.expansions.get_mut(h) {
                e.common = e.common.min(lcp(&e.representative, hashes));
                e.confirmations = e.confirmations.saturating_add(1);
                e.passes += 1;
            }
        }
        // The window.
        *st.counts.entry(k).or_default() += 1;
        st.window.push_back((k, passed));
        if st.window.len() > c.window {
            if let Some((old, old_passed)) = st.window.pop_front() {
                if let Some(n) = st.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        st.counts.remove(&old);
                    }
                }
                for h in old_passed {
                    if let Some(e) = st.expansions.get_mut(&h) {
                        e.passes = e.passes.saturating_sub(1);
                    }
                }
            }
        }
        let n = st.window.len();
        if n >= c.min_samples {
            // Drop expansions the traffic no longer passes through.
            let floor = (c.shrink_ratio * n as f64).ceil() as usize;
            if n == c.window {
                st.expansions
                    .retain(|_, e| e.confirmations == 0 || e.passes >= floor);
            }
            // The key hot and not expanded yet: expand it.
            let count = st.counts.get(&k).copied().unwrap_or(0);
            let hot = count as f64 >= c.hot_ratio * n as f64;
            let unexpanded = !st.expansions.contains_key(&k);
            if hot && unexpanded && key.depth < hashes.len() {
                if st.expansions.len() >= c.max_expansions {
                    let oldest = st
                        .expansions
                        .iter()
                        .min_by_key(|(_, e)| e.born)
                        .map(|(h, _)| *h);
                    if let Some(h) = oldest {
                        st.expansions.remove(&h);
                    }
                }
                st.born += 1;
                let born = st.born;
                st.expansions.insert(
                    k,
                    Expansion {
                        representative: hashes[..hashes.len().min(c.max_blocks)].to_vec(),
                        common: hashes.len().min(c.max_blocks),
                        confirmations: 0,
                        passes: 0,
                        born,
                    },
                );
            }
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chained prompt: `shared` blocks common to all (id 0), then blocks
    /// specific to `id`.
    fn prompt(shared: usize, id: u64, own: usize) -> Vec<BlockHash> {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut out = Vec::new();
        for i in 0..shared + own {
            let block = if i < shared {
                i as u64
            } else {
                (id << 32) | i as u64
            };
            h = kvroute_core::mix64(h ^ block);
            out.push(BlockHash(h));
        }
        out
    }

    #[test]
    fn common_prefix_by_binary_search() {
        let a = prompt(10, 1, 5);
        let b = prompt(10, 2, 5);
        assert_eq!(lcp(&a, &b), 10);
        assert_eq!(lcp(&a, &a), 15);
        assert_eq!(lcp(&a, &a[..3]), 3);
        assert_eq!(lcp(&a, &prompt(0, 3, 4)), 0);
    }

    #[test]
    fn a_prefix_everyone_shares_is_skipped_once_hot() {
        let sp = SharedPrefix::default();
        let mut keys = Vec::new();
        for id in 0..60 {
            keys.push(sp.observe(&prompt(200, id, 8), 4));
        }
        // Before the window fills nothing is hot: the key is the 4th block,
        // the same for everyone.
        assert_eq!(
            keys[0],
            Key {
                shared: 0,
                depth: 4
            }
        );
        // After: 200 blocks shared, the key 4 blocks into each prompt's own part.
        let last = keys.last().unwrap();
        assert_eq!(
            *last,
            Key {
                shared: 200,
                depth: 204
            }
        );
        let k1 = sp.key(&prompt(200, 1000, 8), 4);
        let k2 = sp.key(&prompt(200, 1001, 8), 4);
        assert_eq!(
            k1.hash(&prompt(200, 1000, 8)),
            Some(prompt(200, 1000, 8)[203].0)
        );
        assert_ne!(
            k1.hash(&prompt(200, 1000, 8)),
            k2.hash(&prompt(200, 1001, 8))
        );
        assert_eq!(k1.beyond(205), 5);
    }

    #[test]
    fn many_groups_below_the_hot_share_keep_their_group_key() {
        // 64 groups, each 1/64 of traffic (< 6.12 %): no expansion, so
        // requests of a group keep sharing their key (cache affinity).
        let sp = SharedPrefix::default();
        let group = |g: u64, q: u64| {
            let mut p = prompt(0, g, 100);
            let tail = p[99].0;
            p.extend(
                prompt(0, 1_000_000 + q, 4)
                    .iter()
                    .map(|h| BlockHash(h.0 ^ tail)),
            );
            p
        };
        for i in 0..640 {
            sp.observe(&group(i % 64, i), 4);
        }
        let k = sp.key(&group(3, 9999), 4);
        assert_eq!(
            k,
            Key {
                shared: 0,
                depth: 4
            }
        );
    }

    #[test]
    fn expansions_fade_when_the_traffic_moves_on() {
        let sp = SharedPrefix::default();
        for id in 0..100 {
            sp.observe(&prompt(50, id, 4), 4);
        }
        assert_eq!(sp.key(&prompt(50, 7777, 4), 4).shared, 50);
        // 300 requests without that prefix push it out of the window.
        for id in 0..300 {
            sp.observe(&prompt(0, 10_000 + id, 60), 4);
        }
        assert_eq!(sp.key(&prompt(50, 7778, 4), 4).shared, 0);
    }

    #[test]
    fn nested_shared_prefixes() {
        // A preamble shared by all; half the traffic then shares a tool list.
        let sp = SharedPrefix::default();
        let p = |id: u64, tools: bool| {
            let mut v = prompt(40, 0, 0);
            let mut h = v[39].0;
            let tool_blocks = if tools { 30 } else { 0 };
            for i in 0..tool_blocks {
                h = kvroute_core::mix64(h ^ (0xabc0_0000 + i));
                v.push(BlockHash(h));
            }
            for i in 0..6 {
                h = kvroute_core::mix64(h ^ ((id << 20) + i));
                v.push(BlockHash(h));
            }
            v
        };
        for id in 0..400 {
            sp.observe(&p(id, id % 2 == 0), 2);
        }
        assert_eq!(sp.key(&p(9001, true), 2).shared, 70);
        assert_eq!(sp.key(&p(9002, false), 2).shared, 40);
    }
}
