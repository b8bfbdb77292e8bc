//! [`Directory`]: a [`PrefixIndex`] shared by routing (many readers) and its
//! feeds (routing predictions, engine KV events), seen with a chosen
//! [`Freshness`].
//!
//! ```text
//!  record_routed ─┐                     ┌─ Freshness::Live: applied at once
//!  apply(event) ──┼─▶ write(now, op) ──┤
//!  clear ─────────┘                     └─ Periodic / Delayed: queued, applied by tick(now)
//!                                                   │
//!  overlap(now, hashes) ── tick(now), then read ◀────┘
//! ```
//!
//! Staleness is modelled where it happens in a real deployment: in what the
//! readers can see. `Periodic(T)` publishes all writes at sync points `k·T`,
//! so readers see the index as of the last sync (0..T old, like a directory
//! refreshed every T seconds); `Delayed(T)` shows every write exactly T late
//! (like a lagging event stream).
//!
//! Locking: the index sits behind a `parking_lot::RwLock`. Reads (a prefix
//! match: microseconds) take the read lock; writes take the write lock for
//! one request's blocks or one event, never across I/O. The staleness queue
//! has its own mutex, touched only by writers and by a sync that is due (an
//! atomic check guards the fast path).

use crate::index::PrefixIndex;
use kvroute_core::{BlockHash, InstanceId, KvEvent, Nanos, Overlap};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// How fresh the readers' view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", content = "secs")]
pub enum Freshness {
    /// Every write is visible immediately.
    #[default]
    Live,
    /// Writes become visible at sync points every `T` (`Nanos`).
    Periodic(Nanos),
    /// Each write becomes visible `T` after it was made.
    Delayed(Nanos),
}

impl Freshness {
    /// `Periodic(secs)`, or `Live` for zero.
    pub fn periodic_secs(secs: f64) -> Freshness {
        if secs <= 0.0 {
            Freshness::Live
        } else {
            Freshness::Periodic(Nanos::from_secs_f64(secs))
        }
    }
}

/// Where an instance's entries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// From routing: a request's blocks are assumed cached where it was sent.
    #[default]
    Predicted,
    /// From the engine's KV events only; routing predictions are ignored.
    Exact,
}

impl Mode {
    /// Snake-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Predicted => "predicted",
            Mode::Exact => "exact",
        }
    }
}

/// One write to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A request's blocks were sent to an instance (predicted mode).
    Routed(InstanceId, Vec<BlockHash>),
    /// The engine reported a cache change (exact mode).
    Event(InstanceId, KvEvent),
    /// Forget an instance's blocks (removed, restarted, or resynchronising).
    Clear(InstanceId),
}

/// What applying writes did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Blocks inserted or refreshed.
    pub stored: u64,
    /// Blocks removed.
    pub removed: u64,
    /// Removals of blocks the directory did not know (stored before it subscribed).
    pub unknown_removed: u64,
    /// Instances cleared.
    pub cleared: u64,
}

impl ApplyStats {
    fn add(&mut self, o: ApplyStats) {
        self.stored += o.stored;
        self.removed += o.removed;
        self.unknown_removed += o.unknown_removed;
        self.cleared += o.cleared;
    }
}

#[derive(Debug, Default)]
struct Pending {
    ops: VecDeque<(Nanos, Op)>,
    stats: ApplyStats,
}

/// The shared cache directory.
#[derive(Debug)]
pub struct Directory {
    index: RwLock<PrefixIndex>,
    modes: RwLock<Vec<Mode>>,
    freshness: Freshness,
    pending: Mutex<Pending>,
    /// Earliest time a sync has anything to do (`u64::MAX`: nothing queued).
    next_due: AtomicU64,
}

impl Directory {
    /// An empty directory.
    pub fn new(freshness: Freshness) -> Directory {
        Directory {
            index: RwLock::new(PrefixIndex::new()),
            modes: RwLock::new(Vec::new()),
            freshness,
            pending: Mutex::new(Pending::default()),
            next_due: AtomicU64::new(u64::MAX),
        }
    }

    /// The freshness it was built with.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// Set where `id`'s entries come from.
    pub fn set_mode(&self, id: InstanceId, mode: Mode) {
        let mut modes = self.modes.write();
        if modes.len() <= id.index() {
            modes.resize(id.index() + 1, Mode::default());
        }
        modes[id.index()] = mode;
    }

    /// Where `id`'s entries come from.
    pub fn mode(&self, id: InstanceId) -> Mode {
        self.modes
            .read()
            .get(id.index())
            .copied()
            .unwrap_or_default()
    }

    /// Bound `id` to `blocks` entries (the engine's KV-cache size in blocks).
    pub fn set_capacity(&self, id: InstanceId, blocks: usize) {
        self.index.write().set_capacity(id, blocks);
    }

    /// A request with these blocks was sent to `id`. Recorded only when `id`
    /// is in [`Mode::Predicted`]. With [`Freshness::Live`], the blocks that
    /// were new to `id` are appended to `new` (so a request that fails
    /// before the engine saw it can [`retract`](Directory::retract) them).
    pub fn record_routed(
        &self,
        now: Nanos,
        id: InstanceId,
        hashes: &[BlockHash],
        new: Option<&mut Vec<BlockHash>>,
    ) -> ApplyStats {
        if hashes.is_empty() || self.mode(id) != Mode::Predicted {
            return ApplyStats::default();
        }
        if self.freshness == Freshness::Live {
            self.index.write().insert_chain(id, hashes, new);
            return ApplyStats {
                stored: hashes.len() as u64,
                ..Default::default()
            };
        }
        self.write(now, Op::Routed(id, hashes.to_vec()))
    }

    /// Take back predicted blocks of a request that never reached the
    /// engine (the `new` list of [`record_routed`](Directory::record_routed)).
    pub fn retract(&self, id: InstanceId, hashes: &[BlockHash]) {
        if hashes.is_empty() || self.mode(id) != Mode::Predicted {
            return;
        }
        let mut ix = self.index.write();
        for &h in hashes {
            ix.remove(id, h);
        }
    }

    /// Insert `hashes` for `id` in this order (the last most recently used),
    /// straight into the index.
    pub(crate) fn insert_in_order(&self, id: InstanceId, hashes: &[BlockHash]) {
        self.index.write().insert_in_order(id, hashes);
    }

    /// The engine behind `id` reported a cache change.
    pub fn apply(&self, now: Nanos, id: InstanceId, event: KvEvent) -> ApplyStats {
        self.write(now, Op::Event(id, event))
    }

    /// Forget `id`'s blocks.
    pub fn clear(&self, now: Nanos, id: InstanceId) -> ApplyStats {
        self.write(now, Op::Clear(id))
    }

    /// Apply (or queue, per the freshness) one write. Returns what was applied
    /// now, including queued writes that became due.
    pub fn write(&self, now: Nanos, op: Op) -> ApplyStats {
        match self.freshness {
            Freshness::Live => apply_op(&mut self.index.write(), op),
            Freshness::Periodic(_) | Freshness::Delayed(_) => {
                {
                    let mut p = self.pending.lock();
                    p.ops.push_back((now, op));
                    let due = self.visible_at(now);
                    self.next_due.fetch_min(due.0, Ordering::AcqRel);
                }
                self.tick(now)
            }
        }
    }

    /// Make every write that is due by `now` visible.
    pub fn tick(&self, now: Nanos) -> ApplyStats {
        if now.0 < self.next_due.load(Ordering::Acquire) {
            return ApplyStats::default();
        }
        let mut p = self.pending.lock();
        let visible_up_to = match self.freshness {
            Freshness::Live => now,
            Freshness::Periodic(t) if t.0 > 0 => Nanos(now.0 - now.0 % t.0),
            Freshness::Periodic(_) => now,
            Freshness::Delayed(t) => now.saturating_sub(t),
        };
        let mut stats = ApplyStats::default();
        {
            let mut index = self.index.write();
            while p.ops.front().is_some_and(|(t, _)| *t <= visible_up_to) {
                if let Some((_, op)) = p.ops.pop_front() {
                    stats.add(apply_op(&mut index, op));
                }
            }
        }
        p.stats.add(stats);
        let next = match p.ops.front() {
            None => u64::MAX,
            Some(&(t, _)) => self.visible_at(t).0,
        };
        self.next_due.store(next, Ordering::Release);
        stats
    }

    /// Leading blocks of `hashes` each instance holds, as visible at `now`.
    pub fn overlap(&self, now: Nanos, hashes: &[BlockHash]) -> Overlap {
        self.tick(now);
        self.index.read().match_prefix(hashes)
    }

    /// Blocks `id` holds (visible view).
    pub fn instance_blocks(&self, id: InstanceId) -> u64 {
        self.index.read().instance_len(id) as u64
    }

    /// (block, instance) entries in total (visible view).
    pub fn entries(&self) -> u64 {
        self.index.read().entries() as u64
    }

    /// Writes waiting to become visible.
    pub fn pending_writes(&self) -> usize {
        self.pending.lock().ops.len()
    }

    /// Totals of everything applied through the staleness queue.
    pub fn queued_stats(&self) -> ApplyStats {
        self.pending.lock().stats
    }

    /// Run `f` on the visible index (tests, snapshots, debugging).
    pub fn with_index<R>(&self, f: impl FnOnce(&PrefixIndex) -> R) -> R {
        f(&self.index.read())
    }

    /// When a write made at `t` becomes visible: the first sync point at or
    /// after `t` (`Periodic`), or `t` plus the lag (`Delayed`).
    fn visible_at(&self, t: Nanos) -> Nanos {
        match self.freshness {
            Freshness::Periodic(p) if p.0 > 0 => Nanos(t.0.div_ceil(p.0).saturating_mul(p.0)),
            Freshness::Delayed(d) => t.saturating_add(d),
            Freshness::Live | Freshness::Periodic(_) => t,
        }
    }
}

fn apply_op(index: &mut PrefixIndex, op: Op) -> ApplyStats {
    let mut s = ApplyStats::default();
    match op {
        Op::Routed(id, hashes) => {
            index.insert_chain(id, &hashes, None);
            s.stored = hashes.len() as u64;
        }
        Op::Event(id, KvEvent::BlockStored { block_hashes, .. }) => {
            for &h in &block_hashes {
                index.insert(id, h);
            }
            s.stored = block_hashes.len() as u64;
        }
        Op::Event(id, KvEvent::BlockRemoved { block_hashes }) => {
            for &h in &block_hashes {
                if index.remove(id, h) {
                    s.removed += 1;
                } else {
                    s.unknown_removed += 1;
                }
            }
        }
        Op::Event(id, KvEvent::AllBlocksCleared) | Op::Clear(id) => {
            index.clear(id);
            s.cleared = 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: InstanceId = InstanceId(0);
    const B: InstanceId = InstanceId(1);

    fn hs(v: &[u64]) -> Vec<BlockHash> {
        v.iter().map(|&x| BlockHash(x)).collect()
    }

    fn secs(s: u64) -> Nanos {
        Nanos::from_secs(s)
    }

    #[test]
    fn live_sees_writes_at_once() {
        let d = Directory::new(Freshness::Live);
        d.record_routed(secs(0), A, &hs(&[1, 2]), None);
        assert_eq!(d.overlap(secs(0), &hs(&[1, 2, 3])).get(A), 2);
    }

    #[test]
    fn exact_mode_ignores_predictions_but_takes_events() {
        let d = Directory::new(Freshness::Live);
        d.set_mode(A, Mode::Exact);
        d.record_routed(secs(0), A, &hs(&[1, 2]), None);
        assert_eq!(d.overlap(secs(0), &hs(&[1])).get(A), 0);
        let ev = KvEvent::BlockStored {
            block_hashes: hs(&[1, 2]),
            parent_block_hash: None,
            token_ids: vec![],
            block_size: 16,
        };
        assert_eq!(d.apply(secs(0), A, ev).stored, 2);
        assert_eq!(d.overlap(secs(0), &hs(&[1, 2])).get(A), 2);
        let rm = d.apply(
            secs(0),
            A,
            KvEvent::BlockRemoved {
                block_hashes: hs(&[2, 9]),
            },
        );
        assert_eq!((rm.removed, rm.unknown_removed), (1, 1));
        assert_eq!(d.overlap(secs(0), &hs(&[1, 2])).get(A), 1);
        d.apply(secs(0), A, KvEvent::AllBlocksCleared);
        assert_eq!(d.instance_blocks(A), 0);
    }

    #[test]
    fn periodic_publishes_at_sync_points() {
        let d = Directory::new(Freshness::Periodic(secs(5)));
        d.record_routed(Nanos::from_millis(1_000), A, &hs(&[1]), None);
        assert_eq!(d.overlap(Nanos::from_millis(4_999), &hs(&[1])).get(A), 0);
        assert_eq!(d.overlap(secs(5), &hs(&[1])).get(A), 1);
        // A write exactly at a sync point is visible at that point.
        d.record_routed(secs(10), B, &hs(&[1]), None);
        assert_eq!(d.overlap(secs(10), &hs(&[1])).get(B), 1);
        d.record_routed(Nanos::from_millis(10_001), B, &hs(&[2]), None);
        assert_eq!(d.pending_writes(), 1);
        assert_eq!(d.overlap(secs(14), &hs(&[1, 2])).get(B), 1);
        assert_eq!(d.overlap(secs(15), &hs(&[1, 2])).get(B), 2);
    }

    #[test]
    fn delayed_shows_each_write_exactly_late() {
        let d = Directory::new(Freshness::Delayed(secs(2)));
        d.record_routed(secs(1), A, &hs(&[1]), None);
        d.record_routed(secs(2), A, &hs(&[1, 2]), None);
        assert_eq!(d.overlap(Nanos::from_millis(2_999), &hs(&[1, 2])).get(A), 0);
        assert_eq!(d.overlap(secs(3), &hs(&[1, 2])).get(A), 1);
        assert_eq!(d.overlap(secs(4), &hs(&[1, 2])).get(A), 2);
        assert_eq!(d.pending_writes(), 0);
    }
}
