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
use kvroute_core::{BlockHash, BuildMix, InstanceId, Overlap};
use smallvec::SmallVec;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    instance: InstanceId,
    node: u32,
}

/// Hash-table probes issued together: independent lookups whose cache misses
/// the CPU overlaps (a 1 M-block index lives in DRAM, and one miss costs
/// 100–400 ns), instead of one dependent miss after another.
const PROBE_BATCH: usize = 8;

/// A block is held by this many instances before it also gets a bitset.
const BITSET_ABOVE: usize = 24;
/// ... and loses it again below this many (hysteresis).
const BITSET_BELOW: usize = 12;

/// The instances holding one block: a list sorted by instance (with each
/// one's LRU node), plus a bitset once the block is widely shared (a system
/// prompt held by hundreds of instances), so matching intersects words
/// instead of walking long lists.
#[derive(Debug, Clone, Default)]
struct Holders {
    list: SmallVec<[Holder; 2]>,
    bits: Option<Box<[u64]>>,
}

impl Holders {
    fn find(&self, id: InstanceId) -> Result<usize, usize> {
        self.list.binary_search_by_key(&id, |h| h.instance)
    }

    fn contains(&self, id: InstanceId) -> bool {
        match &self.bits {
            Some(b) => bit(b, id),
            None => self.find(id).is_ok(),
        }
    }

    fn insert_at(&mut self, pos: usize, holder: Holder) {
        self.list.insert(pos, holder);
        match &mut self.bits {
            Some(b) => {
                if b.len() <= holder.instance.index() / 64 {
                    let mut grown = vec![0u64; holder.instance.index() / 64 + 1];
                    grown[..b.len()].copy_from_slice(b);
                    *b = grown.into_boxed_slice();
                }
                b[holder.instance.index() / 64] |= 1 << (holder.instance.0 % 64);
            }
            None if self.list.len() > BITSET_ABOVE => {
                let top = self.list.last().map_or(0, |h| h.instance.index());
                let mut b = vec![0u64; top / 64 + 1];
                for h in &self.list {
                    b[h.instance.index() / 64] |= 1 << (h.instance.0 % 64);
                }
                self.bits = Some(b.into_boxed_slice());
            }
            None => {}
        }
    }

    /// Remove `id`; returns its LRU node.
    fn remove(&mut self, id: InstanceId) -> Option<u32> {
        let pos = self.find(id).ok()?;
        let node = self.list.remove(pos).node;
        if self.list.len() < BITSET_BELOW {
            self.bits = None;
        } else if let Some(b) = &mut self.bits {
            b[id.index() / 64] &= !(1 << (id.0 % 64));
        }
        Some(node)
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[inline]
fn bit(words: &[u64], id: InstanceId) -> bool {
    words
        .get(id.index() / 64)
        .is_some_and(|w| w & (1 << (id.0 % 64)) != 0)
}

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
        self.instances
            .get(id.index())
            .map_or(usize::MAX, |b| b.capacity)
    }

    /// Record that `id` holds `hash`, making it most recently used.
    /// Returns whether it is new to `id`.
    pub fn insert(&mut self, id: InstanceId, hash: BlockHash) -> bool {
        self.ensure(id);
        let new = self.insert_unbounded(id, hash);
        self.enforce_capacity(id);
        new
    }

    /// Record that `id` holds a whole prompt's chain of blocks. They are
    /// touched from last to first, so the prefix ends up most recently used
    /// and, like vLLM's free queue, the tail of a prompt is evicted first.
    /// Appends the hashes that were new to `id` to `new` when given.
    ///
    /// Evictions happen once, after the whole chain is in: the same blocks
    /// leave as with one insert at a time (the chain is newer than anything
    /// else the instance holds), except that a block the chain itself
    /// touches is never evicted and re-added on the way.
    pub fn insert_chain(
        &mut self,
        id: InstanceId,
        hashes: &[BlockHash],
        mut new: Option<&mut Vec<BlockHash>>,
    ) {
        self.ensure(id);
        // Probe the whole chain first, in batches of independent lookups:
        // their misses overlap, and the inserts below find the lines cached.
        // Reserving for the blocks not yet indexed keeps a rehash out of the
        // loop.
        let known = self.probe(hashes);
        self.blocks.reserve(hashes.len() - known);
        for &h in hashes.iter().rev() {
            if self.insert_unbounded(id, h) {
                if let Some(n) = new.as_deref_mut() {
                    n.push(h);
                }
            }
        }
        self.enforce_capacity(id);
    }

    /// Record that `id` holds `hashes`, inserted in this order (the last
    /// one most recently used), then evict down to its capacity once.
    pub fn insert_in_order(&mut self, id: InstanceId, hashes: &[BlockHash]) {
        self.ensure(id);
        for &h in hashes {
            self.insert_unbounded(id, h);
        }
        self.enforce_capacity(id);
    }

    /// [`insert`](PrefixIndex::insert) without the capacity check; `id`
    /// must exist.
    fn insert_unbounded(&mut self, id: InstanceId, hash: BlockHash) -> bool {
        let lru = &mut self.instances[id.index()].lru;
        let holders = self.blocks.entry(hash).or_default();
        match holders.find(id) {
            Ok(pos) => {
                lru.touch(holders.list[pos].node);
                false
            }
            Err(pos) => {
                let node = lru.push_front(hash);
                holders.insert_at(pos, Holder { instance: id, node });
                true
            }
        }
    }

    /// How many of `hashes` are indexed, looked up [`PROBE_BATCH`] at a time.
    fn probe(&self, hashes: &[BlockHash]) -> usize {
        let mut known = 0;
        for chunk in hashes.chunks(PROBE_BATCH) {
            let mut found = [false; PROBE_BATCH];
            for (f, h) in found.iter_mut().zip(chunk) {
                *f = self.blocks.contains_key(h);
            }
            known += found.iter().filter(|f| **f).count();
        }
        known
    }

    /// Record that `id` no longer holds `hash`. Returns whether it did.
    pub fn remove(&mut self, id: InstanceId, hash: BlockHash) -> bool {
        let Entry::Occupied(mut e) = self.blocks.entry(hash) else {
            return false;
        };
        let Some(node) = e.get_mut().remove(id) else {
            return false;
        };
        if e.get().is_empty() {
            e.remove();
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
            self.forget(id, hash);
        }
    }

    /// For each instance, how many leading blocks of `hashes` it holds.
    ///
    /// While many instances are still matching (a shared system prompt), the
    /// survivors are a bitset intersected word by word with each block's
    /// holders; once few remain, a short list checked against each block.
    pub fn match_prefix(&self, hashes: &[BlockHash]) -> Overlap {
        let n = self.instances.len();
        let mut out = vec![0u32; n];
        let Some(first) = hashes.first().and_then(|h| self.blocks.get(h)) else {
            return Overlap::from_dense(out);
        };
        let mut depth = 1;
        let mut alive: SmallVec<[InstanceId; 8]> = SmallVec::new();
        if first.list.len() > BITSET_ABOVE {
            // Wide phase: survivors as a bitset.
            let words = n.div_ceil(64);
            let mut cur: SmallVec<[u64; 16]> = SmallVec::from_elem(0, words);
            let mut next: SmallVec<[u64; 16]> = SmallVec::from_elem(0, words);
            for h in &first.list {
                cur[h.instance.index() / 64] |= 1 << (h.instance.0 % 64);
            }
            let mut count = first.list.len();
            while depth < hashes.len() && count > BITSET_ABOVE {
                match self.blocks.get(&hashes[depth]) {
                    None => next.iter_mut().for_each(|w| *w = 0),
                    Some(Holders { bits: Some(b), .. }) => {
                        for (w, x) in next.iter_mut().enumerate() {
                            *x = cur[w] & b.get(w).copied().unwrap_or(0);
                        }
                    }
                    Some(Holders { list, bits: None }) => {
                        next.iter_mut().for_each(|w| *w = 0);
                        for h in list {
                            let (w, m) = (h.instance.index() / 64, 1u64 << (h.instance.0 % 64));
                            next[w] |= cur[w] & m;
                        }
                    }
                }
                count = 0;
                for w in 0..words {
                    let mut dropped = cur[w] & !next[w];
                    while dropped != 0 {
                        out[w * 64 + dropped.trailing_zeros() as usize] = depth as u32;
                        dropped &= dropped - 1;
                    }
                    count += next[w].count_ones() as usize;
                }
                std::mem::swap(&mut cur, &mut next);
                depth += 1;
            }
            for (w, &word) in cur.iter().enumerate() {
                let mut rest = word;
                while rest != 0 {
                    alive.push(InstanceId((w * 64) as u32 + rest.trailing_zeros()));
                    rest &= rest - 1;
                }
            }
        } else {
            alive.extend(first.list.iter().map(|h| h.instance));
        }
        // Narrow phase: few survivors, each checked against each block. The
        // blocks are looked up PROBE_BATCH at a time (independent probes
        // whose misses overlap), then walked in order.
        'narrow: while depth < hashes.len() && !alive.is_empty() {
            let end = (depth + PROBE_BATCH).min(hashes.len());
            let mut found: [Option<&Holders>; PROBE_BATCH] = [None; PROBE_BATCH];
            for (f, h) in found.iter_mut().zip(&hashes[depth..end]) {
                *f = self.blocks.get(h);
            }
            for holders in &found[..end - depth] {
                let d = depth as u32;
                alive.retain(|i| {
                    let keep = holders.is_some_and(|hs| hs.contains(*i));
                    if !keep {
                        out[i.index()] = d;
                    }
                    keep
                });
                depth += 1;
                if alive.is_empty() {
                    break 'narrow;
                }
            }
        }
        for &i in &alive {
            out[i.index()] = depth as u32;
        }
        Overlap::from_dense(out)
    }

    /// Whether `id` holds `hash`.
    pub fn contains(&self, id: InstanceId, hash: BlockHash) -> bool {
        self.blocks.get(&hash).is_some_and(|hs| hs.contains(id))
    }

    /// Blocks `id` holds.
    pub fn instance_len(&self, id: InstanceId) -> usize {
        self.instances.get(id.index()).map_or(0, |b| b.lru.len())
    }

    /// Distinct blocks held by any instance.
    pub fn distinct_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks held widely enough to be matched through a bitset (more than
    /// 24 holders) right now.
    pub fn widely_held_blocks(&self) -> usize {
        self.blocks.values().filter(|h| h.bits.is_some()).count()
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

    fn forget(&mut self, id: InstanceId, hash: BlockHash) {
        Self::forget_in(&mut self.blocks, id, hash);
    }

    /// Drop `id` from `hash`'s holders (its LRU node is the caller's business).
    fn forget_in(
        blocks: &mut HashMap<BlockHash, Holders, BuildMix>,
        id: InstanceId,
        hash: BlockHash,
    ) {
        // One probe: the entry is removed through the slot it was found in.
        if let Entry::Occupied(mut e) = blocks.entry(hash) {
            e.get_mut().remove(id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    fn ensure(&mut self, id: InstanceId) {
        if self.instances.len() <= id.index() {
            self.instances
                .resize_with(id.index() + 1, InstanceBlocks::default);
        }
    }

    fn enforce_capacity(&mut self, id: InstanceId) {
        let inst = &mut self.instances[id.index()];
        while inst.lru.len() > inst.capacity {
            // Victims in batches: their entries are probed together (the
            // misses overlap) before each is dropped.
            let mut victims: SmallVec<[BlockHash; PROBE_BATCH]> = SmallVec::new();
            while victims.len() < PROBE_BATCH && inst.lru.len() > inst.capacity {
                match inst.lru.pop_back() {
                    Some(v) => victims.push(v),
                    None => break,
                }
            }
            if victims.is_empty() {
                break;
            }
            let mut present = [false; PROBE_BATCH];
            for (p, v) in present.iter_mut().zip(&victims) {
                *p = self.blocks.contains_key(v);
            }
            for (&v, &p) in victims.iter().zip(&present) {
                self.evictions += 1;
                if p {
                    Self::forget_in(&mut self.blocks, id, v);
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
        ix.insert_chain(A, &[h(1), h(2), h(3)], None);
        ix.insert_chain(B, &[h(1), h(2)], None);
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
        ix.insert_chain(A, &[h(1), h(2), h(3)], None);
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
    fn widely_shared_blocks_match_through_the_bitset() {
        let mut ix = PrefixIndex::new();
        for i in 0..100 {
            ix.insert_chain(InstanceId(i), &[h(1), h(2)], None);
            if i % 3 == 0 {
                ix.insert(InstanceId(i), h(3));
            }
            if i % 30 == 0 {
                ix.insert(InstanceId(i), h(4));
            }
        }
        assert!(ix.blocks[&h(1)].bits.is_some());
        assert!(ix.blocks[&h(4)].bits.is_none());
        let m = ix.match_prefix(&[h(1), h(2), h(3), h(4), h(5)]);
        for i in 0..100 {
            let want = if i % 30 == 0 {
                4
            } else if i % 3 == 0 {
                3
            } else {
                2
            };
            assert_eq!(m.get(InstanceId(i)), want, "instance {i}");
        }
        for i in 0..95 {
            ix.clear(InstanceId(i));
        }
        assert!(
            ix.blocks[&h(1)].bits.is_none(),
            "bitset dropped when few remain"
        );
        assert_eq!(ix.match_prefix(&[h(1), h(2)]).get(InstanceId(99)), 2);
    }

    #[test]
    fn remove_and_clear_leave_nothing_behind() {
        let mut ix = PrefixIndex::new();
        ix.insert_chain(A, &[h(1), h(2)], None);
        ix.insert_chain(B, &[h(1), h(2)], None);
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
