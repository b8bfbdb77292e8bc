//! How busy an instance is: [`InstanceLoad`].
//!
//! Two sources are combined. The engine's own gauges (`vllm:num_requests_running`,
//! `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`) are exact but only
//! as fresh as the last poll; the router's own counts (requests it has in
//! flight to the instance, prefill tokens it sent that have not produced a first
//! token yet) are always fresh but blind to other routers' traffic.

use crate::time::Nanos;
use serde::{Deserialize, Serialize};

/// An engine's own load gauges from one `/metrics` poll
/// (`vllm:num_requests_running`, `vllm:num_requests_waiting`,
/// `vllm:kv_cache_usage_perc`, or SGLang's), and when they were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineGauges {
    /// Requests running (summed over data-parallel engines).
    pub running: u32,
    /// Requests waiting (summed over data-parallel engines).
    pub waiting: u32,
    /// KV-cache usage `0..=1` (averaged over data-parallel engines).
    pub kv_usage: f64,
    /// When they were read (`Nanos::ZERO`: not yet stamped).
    pub observed_at: Nanos,
}

/// One instance's load as a policy sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceLoad {
    /// Requests the engine reports running (last poll).
    pub running: u32,
    /// Requests the engine reports waiting (last poll).
    pub waiting: u32,
    /// KV-cache usage reported by the engine, `0..=1` (last poll).
    pub kv_usage: f64,
    /// Requests this router has sent and not seen finish (always fresh).
    pub inflight: u32,
    /// Uncached prompt tokens this router has sent that have not produced a
    /// first token yet (always fresh).
    pub pending_prefill_tokens: u64,
    /// When the engine gauges were observed (`Nanos::ZERO`: never).
    pub observed_at: Nanos,
}

impl InstanceLoad {
    /// Write the engine-reported fields (`running`, `waiting`, `kv_usage`,
    /// `observed_at`), leaving the router's own counts alone.
    pub fn set_engine(&mut self, g: EngineGauges) {
        self.running = g.running;
        self.waiting = g.waiting;
        self.kv_usage = g.kv_usage;
        self.observed_at = g.observed_at;
    }

    /// The engine-reported fields.
    pub fn engine(&self) -> EngineGauges {
        EngineGauges {
            running: self.running,
            waiting: self.waiting,
            kv_usage: self.kv_usage,
            observed_at: self.observed_at,
        }
    }

    /// Queue length in requests: the larger of what the engine last reported
    /// (`running + waiting`) and what this router has in flight. The engine's
    /// figure sees other clients; the router's sees requests sent since the
    /// last poll. Both count requests, so they can be compared.
    pub fn requests(&self) -> u32 {
        self.inflight.max(self.running.saturating_add(self.waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_takes_the_fresher_view() {
        let mut l = InstanceLoad {
            running: 3,
            waiting: 2,
            inflight: 1,
            ..Default::default()
        };
        assert_eq!(l.requests(), 5);
        l.inflight = 9;
        assert_eq!(l.requests(), 9);
    }
}
