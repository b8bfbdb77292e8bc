//! [`BlockPool`]: a paged KV cache with prefix caching, as vLLM V1's
//! `BlockPool` + `FreeKVCacheBlockQueue` do it.
//!
//! * `num_blocks` physical blocks of `block_size` tokens; each has a reference
//!   count and, once full and computed, a block hash.
//! * A hashed block stays in the prefix cache after its last user frees it: it
//!   goes to the tail of the free queue, still findable by hash.
//! * New blocks are taken from the head of the free queue; taking a block that
//!   still has a hash evicts it from the prefix cache (a `BlockRemoved` event).
//! * A request frees its blocks in reverse order, so within one request the
//!   tail blocks are evicted before the prefix (vLLM does the same).
//! * A cache hit on a free block takes it out of the free queue (ref 0 → 1).
//!
//! Every change to the prefix cache is recorded as a [`KvEvent`], exactly the
//! events vLLM publishes.

use kvroute_core::{BlockHash, KvEvent};
use std::collections::HashMap;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
    in_free: bool,
}

/// The physical block pool of one engine.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, u32>,
    events: Vec<KvEvent>,
    block_size: u32,
    evictions: u64,
}

impl BlockPool {
    /// `num_blocks` empty blocks, all free.
    pub fn new(num_blocks: usize, block_size: u32) -> BlockPool {
        let n = num_blocks as u32;
        let blocks = (0..n)
            .map(|i| Block {
                ref_cnt: 0,
                hash: None,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == n { NIL } else { i + 1 },
                in_free: true,
            })
            .collect();
        BlockPool {
            blocks,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n - 1 },
            num_free: num_blocks,
            cached: HashMap::new(),
            events: Vec::new(),
            block_size,
            evictions: 0,
        }
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks in the free queue (including cached ones with no user).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks in use by requests (vLLM's `kv_cache_usage_perc`).
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            0.0
        } else {
            1.0 - self.num_free as f64 / self.blocks.len() as f64
        }
    }

    /// Blocks currently findable by hash.
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// Cached blocks evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The block holding `hash`, if cached.
    pub fn lookup(&self, hash: BlockHash) -> Option<u32> {
        self.cached.get(&hash).copied()
    }

    /// The longest run of leading `hashes` that are cached, at most `max_blocks`.
    pub fn longest_hit(&self, hashes: &[BlockHash], max_blocks: usize) -> Vec<u32> {
        hashes
            .iter()
            .take(max_blocks)
            .map_while(|h| self.lookup(*h))
            .collect()
    }

    /// How many of `blocks` are free (ref 0) and would leave the free queue if touched.
    pub fn count_free_among(&self, blocks: &[u32]) -> usize {
        blocks
            .iter()
            .filter(|&&b| self.blocks[b as usize].ref_cnt == 0)
            .count()
    }

    /// Take a reference on cached blocks (a prefix hit).
    pub fn touch(&mut self, blocks: &[u32]) {
        for &b in blocks {
            if self.blocks[b as usize].ref_cnt == 0 {
                self.unlink(b);
            }
            self.blocks[b as usize].ref_cnt += 1;
        }
    }

    /// Take `k` new blocks from the head of the free queue, evicting cached
    /// contents. `None` (and nothing taken) if fewer than `k` are free.
    pub fn allocate(&mut self, k: usize) -> Option<Vec<u32>> {
        if k > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(k);
        let mut removed = Vec::new();
        for _ in 0..k {
            let b = self.head;
            self.unlink(b);
            let block = &mut self.blocks[b as usize];
            block.ref_cnt = 1;
            if let Some(h) = block.hash.take() {
                if self.cached.get(&h) == Some(&b) {
                    self.cached.remove(&h);
                    removed.push(h);
                    self.evictions += 1;
                }
            }
            out.push(b);
        }
        if !removed.is_empty() {
            self.events.push(KvEvent::BlockRemoved {
                block_hashes: removed,
            });
        }
        Some(out)
    }

    /// Release a request's blocks, given in the request's order; they join
    /// the free queue last block first.
    pub fn free(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let block = &mut self.blocks[b as usize];
            debug_assert!(block.ref_cnt > 0, "double free of block {b}");
            block.ref_cnt = block.ref_cnt.saturating_sub(1);
            if block.ref_cnt == 0 {
                self.push_tail(b);
            }
        }
    }

    /// Mark `blocks[i]` as holding the block with hash `hashes[i]` (full and
    /// computed), making them findable. Emits one `BlockStored`.
    /// `parent` is the hash of the block before `blocks[0]`; `tokens` their ids.
    pub fn cache(
        &mut self,
        blocks: &[u32],
        hashes: &[BlockHash],
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) {
        let mut stored = Vec::with_capacity(blocks.len());
        for (&b, &h) in blocks.iter().zip(hashes) {
            let block = &mut self.blocks[b as usize];
            if block.hash.is_some() {
                continue;
            }
            block.hash = Some(h);
            // A duplicate computed concurrently keeps the first copy findable.
            self.cached.entry(h).or_insert(b);
            stored.push(h);
        }
        if !stored.is_empty() {
            self.events.push(KvEvent::BlockStored {
                block_hashes: stored,
                parent_block_hash: parent,
                token_ids: tokens.to_vec(),
                block_size: self.block_size,
            });
        }
    }

    /// Drop every cached hash (vLLM's `reset_prefix_cache`); blocks in use keep
    /// their contents but stop being findable.
    pub fn reset_prefix_cache(&mut self) {
        for block in &mut self.blocks {
            block.hash = None;
        }
        self.cached.clear();
        self.events.push(KvEvent::AllBlocksCleared);
    }

    /// Take the events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }

    /// Hashes of free cached blocks from next-to-evict to last (tests).
    pub fn eviction_order(&self) -> Vec<BlockHash> {
        let mut out = Vec::new();
        let mut cur = self.head;
        while cur != NIL {
            if let Some(h) = self.blocks[cur as usize].hash {
                out.push(h);
            }
            cur = self.blocks[cur as usize].next;
        }
        out
    }

    fn unlink(&mut self, b: u32) {
        let (prev, next) = {
            let blk = &self.blocks[b as usize];
            debug_assert!(blk.in_free);
            (blk.prev, blk.next)
        };
        if prev != NIL {
            self.blocks[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.blocks[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        let blk = &mut self.blocks[b as usize];
        blk.prev = NIL;
        blk.next = NIL;
        blk.in_free = false;
        self.num_free -= 1;
    }

    fn push_tail(&mut self, b: u32) {
        let tail = self.tail;
        {
            let blk = &mut self.blocks[b as usize];
            blk.prev = tail;
            blk.next = NIL;
            blk.in_free = true;
        }
        if tail != NIL {
            self.blocks[tail as usize].next = b;
        } else {
            self.head = b;
        }
        self.tail = b;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: u64) -> BlockHash {
        BlockHash(v)
    }

    #[test]
    fn freed_blocks_stay_cached_until_reused() {
        let mut p = BlockPool::new(4, 2);
        let a = p.allocate(2).unwrap();
        p.cache(&a, &[h(1), h(2)], None, &[0, 1, 2, 3]);
        p.free(&a);
        assert_eq!(p.num_free(), 4);
        assert_eq!(p.longest_hit(&[h(1), h(2), h(3)], 10), a);
        // Two untouched blocks are used first, then the request's tail block.
        let b = p.allocate(3).unwrap();
        assert_eq!(
            p.longest_hit(&[h(1), h(2)], 10).len(),
            1,
            "block 2 evicted first"
        );
        assert!(b.contains(&a[1]));
        let evs = p.drain_events();
        assert!(
            matches!(&evs[0], KvEvent::BlockStored { block_hashes, .. } if block_hashes.len() == 2)
        );
        assert_eq!(
            evs[1],
            KvEvent::BlockRemoved {
                block_hashes: vec![h(2)]
            }
        );
    }

    #[test]
    fn touching_a_free_cached_block_takes_it_out_of_the_queue() {
        let mut p = BlockPool::new(3, 2);
        let a = p.allocate(1).unwrap();
        p.cache(&a, &[h(7)], None, &[1, 2]);
        p.free(&a);
        assert_eq!(p.count_free_among(&a), 1);
        p.touch(&a);
        assert_eq!(p.num_free(), 2);
        assert!(p.allocate(3).is_none(), "only two free");
        let rest = p.allocate(2).unwrap();
        assert!(!rest.contains(&a[0]));
        assert_eq!(p.lookup(h(7)), Some(a[0]));
    }

    #[test]
    fn shared_blocks_free_only_when_last_user_leaves() {
        let mut p = BlockPool::new(2, 2);
        let a = p.allocate(1).unwrap();
        p.cache(&a, &[h(1)], None, &[1, 2]);
        p.touch(&a); // a second request hits it
        p.free(&a);
        assert_eq!(p.num_free(), 1);
        p.free(&a);
        assert_eq!(p.num_free(), 2);
        assert!((p.usage() - 0.0).abs() < 1e-12);
    }
}
