//! [`PrefixIndex`]: block hash → instances holding it, bounded per instance.
//!
//! ```text
//!   blocks: HashMap<BlockHash, [(instance, lru node)]>     one entry per distinct block
//!   lru[i]: recency list of instance i's blocks (slab)     capacity-bounded, evicts LRU
//! ```
//!
//! `match_prefix` walks the request's hashes once, intersecting the holder
//! lists as it goes, and stops as soon as no instance is left: O(prompt blocks
//! × holders per block), independent of how many blocks are indexed or how many
//! instances hold nothing.

use crate::lru::LruList;
use kvroute_core::{mix64, BlockHash, InstanceId, Overlap};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Block hashes are already uniform (SHA-256 or xxh3 output); one multiply-mix
/// guards against hand-made sequential hashes in tests and traces.
#[derive(Default, Clone, Copy)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix64(v);
    }
}

type BuildMix = BuildHasherDefault<MixHasher>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    instance: InstanceId,
    node: u32,
}

/// Holders of one block, sorted by instance.
type Holders = SmallVec<[Holder; 2]>;

#[derive(Debug, Clone)]
struct InstanceBlocks {
    lru: LruList,
    capacity: usize,
}

impl Default for InstanceBlocks {
    fn default() -> Self {
        InstanceBlocks {
            lru: LruList::default(),
            capacity: usize::MAX,
        }
    }
}

/// Which instances hold which blocks.
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    blocks: HashMap<BlockHash, Holders, BuildMix>,
    instances: Vec<InstanceBlocks>,
    evictions: u64,
}

impl PrefixIndex {
    /// An empty index.
    pub fn new() -> PrefixIndex {
        PrefixIndex::default()
    }

    /// Bound `id` to `blocks` entries (evicting its least recently used blocks
    /// now if it holds more). `usize::MAX` means unbounded, the default.
    pub fn set_capacity(&mut self, id: InstanceId, blocks: usize) {
        self.ensure(id);
        self.instances[id.index()].capacity = blocks.max(1);
        self.enforce_capacity(id);
    }

    /// The capacity of `id`.
    pub fn capacity(&self, id: InstanceId) -> usize {
        self.instances.get(id.index()).map_or(usize::MAX, |b| b.capacity)
    }

    /// Record that `id` holds `hash`, making it most recently used.
    pub fn insert(&mut self, id: InstanceId, hash: BlockHash) {
        self.ensure(id);
        let lru = &mut self.instances[id.index()].lru;
        let holders = self.blocks.entry(hash).or_default();
        match holders.binary_search_by_key(&id, |h| h.instance) {
            Ok(pos) => lru.touch(holders[pos].node),
            Err(pos) => {
                let node = lru.push_front(hash);
                holders.insert(pos, Holder { instance: id, node });
            }
        }
        self.enforce_capacity(id);
    }

    /// Record that `id` holds a whole prompt's chain of blocks. They are
    /// touched from last to first, so the prefix ends up most recently used
    /// and, like vLLM's free queue, the tail of a prompt is evicted first.
    pub fn insert_chain(&mut self, id: InstanceId, hashes: &[BlockHash]) {
        for &h in hashes.iter().rev() {
            self.insert(id, h);
        }
    }

    /// Record that `id` no longer holds `hash`. Returns whether it did.
    pub fn remove(&mut self, id: InstanceId, hash: BlockHash) -> bool {
        let Some(holders) = self.blocks.get_mut(&hash) else {
            return false;
        };
        let Ok(pos) = holders.binary_search_by_key(&id, |h| h.instance) else {
            return false;
        };
        let node = holders.remove(pos).node;
        if holders.is_empty() {
            self.blocks.remove(&hash);
        }
        self.instances[id.index()].lru.remove(node);
        true
    }

    /// Forget everything `id` holds.
    pub fn clear(&mut self, id: InstanceId) {
        let Some(inst) = self.instances.get_mut(id.index()) else {
            return;
        };
        let lru = std::mem::take(&mut inst.lru);
        for hash in lru.iter_lru() {
            if let Some(holders) = self.blocks.get_mut(&hash) {
                holders.retain(|h| h.instance != id);
                if holders.is_empty() {
                    self.blocks.remove(&hash);
                }
            }
        }
    }

    /// For each instance, how many leading blocks of `hashes` it holds.
    pub fn match_prefix(&self, hashes: &[BlockHash]) -> Overlap {
        let mut out = vec![0u32; self.instances.len()];
        let Some(first) = hashes.first().and_then(|h| self.blocks.get(h)) else {
            return Overlap::from_dense(out);
        };
        let mut alive: SmallVec<[InstanceId; 8]> = first.iter().map(|h| h.instance).collect();
        let mut next: SmallVec<[InstanceId; 8]> = SmallVec::new();
        for (depth, h) in hashes.iter().enumerate().skip(1) {
            next.clear();
            match self.blocks.get(h) {
                None => {
                    for &i in &alive {
                        out[i.index()] = depth as u32;
                    }
                }
                Some(holders) => {
                    // Sorted merge: survivors go to `next`, the rest stop at `depth`.
                    let mut j = 0;
                    for &i in &alive {
                        while j < holders.len() && holders[j].instance < i {
                            j += 1;
                        }
                        if j < holders.len() && holders[j].instance == i {
                            next.push(i);
                        } else {
                            out[i.index()] = depth as u32;
                        }
                    }
                }
            }
            std::mem::swap(&mut alive, &mut next);
            if alive.is_empty() {
                return Overlap::from_dense(out);
            }
        }
        for &i in &alive {
            out[i.index()] = hashes.len() as u32;
        }
        Overlap::from_dense(out)
    }

    /// Whether `id` holds `hash`.
    pub fn contains(&self, id: InstanceId, hash: BlockHash) -> bool {
        self.blocks
            .get(&hash)
            .is_some_and(|hs| hs.binary_search_by_key(&id, |h| h.instance).is_ok())
    }

    /// Blocks `id` holds.
    pub fn instance_len(&self, id: InstanceId) -> usize {
        self.instances.get(id.index()).map_or(0, |b| b.lru.len())
    }

    /// Distinct blocks held by any instance.
    pub fn distinct_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// (block, instance) entries in total.
    pub fn entries(&self) -> usize {
        self.instances.iter().map(|b| b.lru.len()).sum()
    }

    /// Blocks evicted for capacity since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// `id`'s blocks from least to most recently used (tests and debugging).
    pub fn lru_order(&self, id: InstanceId) -> Vec<BlockHash> {
        self.instances
            .get(id.index())
            .map(|b| b.lru.iter_lru().collect())
            .unwrap_or_default()
    }

    fn ensure(&mut self, id: InstanceId) {
        if self.instances.len() <= id.index() {
            self.instances.resize_with(id.index() + 1, InstanceBlocks::default);
        }
    }

    fn enforce_capacity(&mut self, id: InstanceId) {
        let inst = &mut self.instances[id.index()];
        while inst.lru.len() > inst.capacity {
            let Some(victim) = inst.lru.pop_back() else {
                break;
            };
            self.evictions += 1;
            if let Some(holders) = self.blocks.get_mut(&victim) {
                holders.retain(|h| h.instance != id);
                if holders.is_empty() {
                    self.blocks.remove(&victim);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: u64) -> BlockHash {
        BlockHash(v)
    }
    const A: InstanceId = InstanceId(0);
    const B: InstanceId = InstanceId(1);
    const C: InstanceId = InstanceId(2);

    #[test]
    fn match_stops_at_first_missing_block() {
        let mut ix = PrefixIndex::new();
        ix.insert_chain(A, &[h(1), h(2), h(3)]);
        ix.insert_chain(B, &[h(1), h(2)]);
        ix.insert(C, h(2)); // holds block 2 but not block 1: no prefix match
        let m = ix.match_prefix(&[h(1), h(2), h(3), h(4)]);
        assert_eq!((m.get(A), m.get(B), m.get(C)), (3, 2, 0));
        assert_eq!(ix.match_prefix(&[h(9)]).get(A), 0);
        assert_eq!(ix.match_prefix(&[]).get(A), 0);
    }

    #[test]
    fn capacity_evicts_least_recent_and_prefix_last() {
        let mut ix = PrefixIndex::new();
        ix.set_capacity(A, 3);
        ix.insert_chain(A, &[h(1), h(2), h(3)]);
        assert_eq!(ix.lru_order(A), vec![h(3), h(2), h(1)]);
        ix.insert(A, h(4));
        assert!(!ix.contains(A, h(3)), "the deepest block goes first");
        assert_eq!(ix.instance_len(A), 3);
        assert_eq!(ix.evictions(), 1);
        ix.set_capacity(A, 1);
        assert_eq!(ix.lru_order(A), vec![h(4)]);
        assert_eq!(ix.distinct_blocks(), 1);
    }

    #[test]
    fn remove_and_clear_leave_nothing_behind() {
        let mut ix = PrefixIndex::new();
        ix.insert_chain(A, &[h(1), h(2)]);
        ix.insert_chain(B, &[h(1), h(2)]);
        assert!(ix.remove(A, h(1)));
        assert!(!ix.remove(A, h(1)));
        assert!(!ix.remove(C, h(2)));
        ix.clear(B);
        assert_eq!(ix.distinct_blocks(), 1);
        assert!(ix.contains(A, h(2)));
        ix.clear(A);
        assert_eq!(ix.distinct_blocks(), 0);
        assert_eq!(ix.entries(), 0);
    }
}
