//! [`SeqTracker`]: notices lost and restarted event streams.
//!
//! vLLM numbers its batches 0, 1, 2, … per publisher. A jump forward means
//! batches were lost (a slow subscriber, a dropped connection): the directory
//! no longer knows what was stored or evicted in between. A jump backwards
//! means the engine restarted with an empty cache.

/// What a sequence number says about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// The first batch seen.
    First,
    /// The expected next batch.
    InOrder,
    /// Batches `expected..got` were lost.
    Gap {
        /// The sequence number that should have come.
        expected: i64,
        /// The one that came.
        got: i64,
    },
    /// The number went backwards: the publisher restarted.
    Restart {
        /// The sequence number that should have come.
        expected: i64,
        /// The one that came.
        got: i64,
    },
}

/// Tracks one publisher's sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: Option<i64>,
    gaps: u64,
    lost: u64,
    restarts: u64,
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// Record `seq` and classify it.
    pub fn observe(&mut self, seq: i64) -> SeqStatus {
        let status = match self.next {
            None => SeqStatus::First,
            Some(n) if seq == n => SeqStatus::InOrder,
            Some(n) if seq > n => {
                self.gaps += 1;
                // Both come off the network: subtract without overflowing.
                let missing = (i128::from(seq) - i128::from(n)).min(i128::from(u64::MAX));
                self.lost = self.lost.saturating_add(missing as u64);
                SeqStatus::Gap {
                    expected: n,
                    got: seq,
                }
            }
            Some(n) => {
                self.restarts += 1;
                SeqStatus::Restart {
                    expected: n,
                    got: seq,
                }
            }
        };
        self.next = Some(seq.saturating_add(1));
        status
    }

    /// Gaps seen.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Batches lost in gaps.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Restarts seen.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The next expected sequence number.
    pub fn expected(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_streams() {
        let mut t = SeqTracker::new();
        assert_eq!(t.observe(5), SeqStatus::First);
        assert_eq!(t.observe(6), SeqStatus::InOrder);
        assert_eq!(
            t.observe(9),
            SeqStatus::Gap {
                expected: 7,
                got: 9
            }
        );
        assert_eq!(
            t.observe(0),
            SeqStatus::Restart {
                expected: 10,
                got: 0
            }
        );
        assert_eq!(t.observe(1), SeqStatus::InOrder);
        assert_eq!((t.gaps(), t.lost(), t.restarts()), (1, 2, 1));
    }

    #[test]
    fn extreme_sequence_numbers_do_not_overflow() {
        let mut t = SeqTracker::new();
        t.observe(i64::MIN);
        assert!(matches!(t.observe(i64::MAX), SeqStatus::Gap { .. }));
        assert_eq!(t.lost(), u64::MAX - 1);
        assert_eq!(t.expected(), Some(i64::MAX));
        assert_eq!(t.observe(i64::MAX), SeqStatus::InOrder);
        assert!(matches!(t.observe(0), SeqStatus::Restart { .. }));
        assert!(matches!(t.observe(i64::MAX), SeqStatus::Gap { .. }));
        assert_eq!(t.lost(), u64::MAX);
    }
}
