//! A per-instance LRU list of block hashes over a slab (no allocation per
//! block once warm): the recency order a bounded directory evicts by.

use kvroute_core::BlockHash;

/// "No node": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: BlockHash,
    prev: u32,
    next: u32,
}

/// Doubly linked recency list; `head` is most recently used.
#[derive(Debug, Clone)]
pub(crate) struct LruList {
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for LruList {
    fn default() -> Self {
        LruList {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl LruList {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Add `hash` as most recently used; returns its node.
    pub(crate) fn push_front(&mut self, hash: BlockHash) -> u32 {
        let node = Node {
            hash,
            prev: NIL,
            next: self.head,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if self.head != NIL {
            self.nodes[self.head as usize].prev = idx;
        } else {
            self.tail = idx;
        }
        self.head = idx;
        self.len += 1;
        idx
    }

    /// Make `idx` most recently used.
    pub(crate) fn touch(&mut self, idx: u32) {
        if self.head == idx {
            return;
        }
        self.detach(idx);
        let n = &mut self.nodes[idx as usize];
        n.prev = NIL;
        n.next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = idx;
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    /// Remove `idx`; returns its hash.
    pub(crate) fn remove(&mut self, idx: u32) -> BlockHash {
        self.detach(idx);
        self.free.push(idx);
        self.len -= 1;
        self.nodes[idx as usize].hash
    }

    /// Remove and return the least recently used hash.
    pub(crate) fn pop_back(&mut self) -> Option<BlockHash> {
        (self.tail != NIL).then(|| self.remove(self.tail))
    }

    /// Hashes from least to most recently used.
    pub(crate) fn iter_lru(&self) -> impl Iterator<Item = BlockHash> + '_ {
        let mut cur = self.tail;
        std::iter::from_fn(move || {
            (cur != NIL).then(|| {
                let n = self.nodes[cur as usize];
                cur = n.prev;
                n.hash
            })
        })
    }

    fn detach(&mut self, idx: u32) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_follows_use() {
        let mut l = LruList::default();
        let a = l.push_front(BlockHash(1));
        l.push_front(BlockHash(2));
        l.push_front(BlockHash(3));
        l.touch(a);
        let order: Vec<u64> = l.iter_lru().map(|h| h.0).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(l.pop_back(), Some(BlockHash(2)));
        assert_eq!(l.len(), 2);
        l.push_front(BlockHash(4)); // reuses the freed slot
        assert_eq!(l.nodes.len(), 3);
        let order: Vec<u64> = l.iter_lru().map(|h| h.0).collect();
        assert_eq!(order, vec![3, 1, 4]);
    }
}
