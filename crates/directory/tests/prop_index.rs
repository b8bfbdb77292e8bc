//! The index agrees with a naive reference model under random
//! insert/remove/clear/match sequences, and never exceeds a capacity.

use kvroute_core::{BlockHash, InstanceId};
use kvroute_directory::PrefixIndex;
use proptest::prelude::*;
use std::collections::VecDeque;

const CAPACITY: usize = 12;

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u64),
    InsertChain(u32, Vec<u64>),
    Remove(u32, u64),
    Clear(u32),
    Match(Vec<u64>),
}

fn op(instances: u32) -> impl Strategy<Value = Op> {
    let inst = 0..instances;
    let hash = 0u64..24; // small space: lots of sharing and collisions
    prop_oneof![
        4 => (inst.clone(), hash.clone()).prop_map(|(i, h)| Op::Insert(i, h)),
        3 => (inst.clone(), prop::collection::vec(hash.clone(), 0..8)).prop_map(|(i, c)| Op::InsertChain(i, c)),
        2 => (inst.clone(), hash.clone()).prop_map(|(i, h)| Op::Remove(i, h)),
        1 => inst.prop_map(Op::Clear),
        3 => prop::collection::vec(hash, 0..10).prop_map(Op::Match),
    ]
}

/// Per instance: blocks from least to most recently used.
#[derive(Default)]
struct Model {
    lru: Vec<VecDeque<u64>>,
}

impl Model {
    fn insert(&mut self, i: u32, h: u64) {
        let q = &mut self.lru[i as usize];
        q.retain(|&x| x != h);
        q.push_back(h);
        while q.len() > CAPACITY {
            q.pop_front();
        }
    }
    fn matched(&self, i: u32, hashes: &[u64]) -> u32 {
        let q = &self.lru[i as usize];
        hashes.iter().take_while(|h| q.contains(h)).count() as u32
    }
}

/// Runs `ops` on the index and the model, comparing after every step;
/// returns the most blocks matched through a bitset at any step.
fn check(instances: u32, ops: Vec<Op>) -> Result<usize, TestCaseError> {
    let mut widest = 0;
    {
        let mut ix = PrefixIndex::new();
        let mut model = Model {
            lru: vec![VecDeque::new(); instances as usize],
        };
        for i in 0..instances {
            ix.set_capacity(InstanceId(i), CAPACITY);
        }
        for op in ops {
            match op {
                Op::Insert(i, h) => {
                    ix.insert(InstanceId(i), BlockHash(h));
                    model.insert(i, h);
                }
                Op::InsertChain(i, c) => {
                    let hs: Vec<BlockHash> = c.iter().map(|&h| BlockHash(h)).collect();
                    ix.insert_chain(InstanceId(i), &hs, None);
                    for &h in c.iter().rev() {
                        model.insert(i, h);
                    }
                }
                Op::Remove(i, h) => {
                    let q = &mut model.lru[i as usize];
                    let had = q.contains(&h);
                    q.retain(|&x| x != h);
                    prop_assert_eq!(ix.remove(InstanceId(i), BlockHash(h)), had);
                }
                Op::Clear(i) => {
                    ix.clear(InstanceId(i));
                    model.lru[i as usize].clear();
                }
                Op::Match(q) => {
                    let hs: Vec<BlockHash> = q.iter().map(|&h| BlockHash(h)).collect();
                    let m = ix.match_prefix(&hs);
                    for i in 0..instances {
                        prop_assert_eq!(
                            m.get(InstanceId(i)),
                            model.matched(i, &q),
                            "instance {}",
                            i
                        );
                    }
                }
            }
            for i in 0..instances {
                let id = InstanceId(i);
                prop_assert!(ix.instance_len(id) <= CAPACITY);
                let order: Vec<u64> = ix.lru_order(id).iter().map(|h| h.0).collect();
                let want: Vec<u64> = model.lru[i as usize].iter().copied().collect();
                prop_assert_eq!(order, want, "LRU order of instance {}", i);
            }
            widest = widest.max(ix.widely_held_blocks());
        }
    }
    Ok(widest)
}

proptest! {
    #[test]
    fn index_matches_reference(ops in prop::collection::vec(op(4), 1..200)) {
        check(4, ops)?;
    }

    /// Enough instances that widely held blocks switch to the bitset path:
    /// every case starts with block 0 held by 30 instances (more than the
    /// 24 above which a block gets a bitset), then random operations.
    #[test]
    fn index_matches_reference_when_blocks_are_widely_shared(
        ops in prop::collection::vec(op(70), 1..600)
    ) {
        let mut all: Vec<Op> = (0..30).map(|i| Op::Insert(i, 0)).collect();
        all.push(Op::Match(vec![0, 1]));
        all.extend(ops);
        let widest = check(70, all)?;
        prop_assert!(widest >= 1, "the bitset path ran");
    }

    /// Overlap never increases when the query gets longer... per prefix: a
    /// query's match is the match of any longer query truncated to it.
    #[test]
    fn longer_queries_never_match_less(chain in prop::collection::vec(0u64..50, 1..30), extra in prop::collection::vec(0u64..50, 0..10)) {
        let mut ix = PrefixIndex::new();
        let hs: Vec<BlockHash> = chain.iter().map(|&h| BlockHash(h)).collect();
        ix.insert_chain(InstanceId(0), &hs, None);
        let short = ix.match_prefix(&hs).get(InstanceId(0));
        let mut long = hs.clone();
        long.extend(extra.iter().map(|&h| BlockHash(h)));
        let l = ix.match_prefix(&long).get(InstanceId(0));
        prop_assert!(l >= short);
        prop_assert_eq!(short.min(hs.len() as u32), short);
    }
}
