//! A policy's answer: [`Decision`], with a [`Reason`] for logs and metrics.

use crate::ids::InstanceId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where to send a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The chosen instance.
    pub instance: InstanceId,
    /// Leading prompt blocks the chosen instance is believed to hold.
    pub cached_blocks: u32,
    /// The branch of the policy that decided (a metric label).
    pub reason: Reason,
}

/// Which branch of a policy made a decision. Kept as a closed set so it can
/// label a Prometheus counter without unbounded cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Next in rotation.
    RoundRobin,
    /// Fewest requests (ties rotated).
    LeastLoaded,
    /// The lower-loaded of two random candidates.
    PowerOfTwo,
    /// The prefix's home instance (hash affinity).
    Affinity,
    /// The home instance was over its load bound; the next one in hash order.
    Spill,
    /// The instance with the longest cached prefix.
    CacheHit,
    /// No instance held any of the prefix (or, for policies that look past
    /// a prefix most traffic shares, any of the prompt beyond it).
    CacheMiss,
    /// Highest score of a weighted formula.
    BestScore,
    /// Sampled from a softmax over scores.
    Sampled,
    /// Loads were imbalanced, so load won over cache.
    Rebalance,
    /// A latency SLO would be missed, so load won over cache.
    SloFallback,
    /// Preble: the cached part outweighs the rest; go where it is cached.
    Exploit,
    /// Preble: the uncached part dominates; go where the prefill work is least.
    Explore,
    /// Only one instance was eligible.
    OnlyChoice,
}

impl Reason {
    /// Snake-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RoundRobin => "round_robin",
            Reason::LeastLoaded => "least_loaded",
            Reason::PowerOfTwo => "power_of_two",
            Reason::Affinity => "affinity",
            Reason::Spill => "spill",
            Reason::CacheHit => "cache_hit",
            Reason::CacheMiss => "cache_miss",
            Reason::BestScore => "best_score",
            Reason::Sampled => "sampled",
            Reason::Rebalance => "rebalance",
            Reason::SloFallback => "slo_fallback",
            Reason::Exploit => "exploit",
            Reason::Explore => "explore",
            Reason::OnlyChoice => "only_choice",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
