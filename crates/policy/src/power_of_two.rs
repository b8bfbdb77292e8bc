//! `power_of_two`: sample two distinct instances at random; the less loaded
//! one wins ("the power of two choices").
//!
//! Load-only baseline. Load is compared in one unit — requests (the larger of
//! the engine's `running + waiting` and the router's in-flight count) — with
//! pending prefill tokens as the tie-breaker. Mixing units (tokens on one
//! side, requests on the other) is a known peer bug this avoids by
//! construction.

use crate::registry::PolicySpec;
use crate::select::{explain_by_load, load_key};
use kvroute_core::{
    CandidateScore, ClusterView, Decision, PickError, Policy, Reason, RouteRequest, SeededRng,
};
use serde::{Deserialize, Serialize};

/// Parameters of `power_of_two`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerOfTwoConfig {
    /// RNG seed (runs replay exactly for a seed).
    pub seed: u64,
}

impl Default for PowerOfTwoConfig {
    fn default() -> Self {
        PowerOfTwoConfig { seed: 0x5eed }
    }
}

impl PolicySpec for PowerOfTwoConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(PowerOfTwo::new(self))
    }

    fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }
}

/// Two random choices.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SeededRng,
}

impl PowerOfTwo {
    /// The policy with its seed.
    pub fn new(config: &PowerOfTwoConfig) -> PowerOfTwo {
        PowerOfTwo {
            rng: SeededRng::new(config.seed),
        }
    }
}

impl Policy for PowerOfTwo {
    fn name(&self) -> &'static str {
        "power_of_two"
    }

    fn uses_directory(&self) -> bool {
        false
    }

    fn pick(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        let (instance, reason) = match ids.len() {
            0 => return Err(PickError::NoInstance),
            1 => (ids[0], Reason::OnlyChoice),
            n => {
                let a = self.rng.below(n);
                let b = (a + 1 + self.rng.below(n - 1)) % n; // distinct from a
                let (ia, ib) = (ids[a], ids[b]);
                let pick = if load_key(&view.load(ib)) < load_key(&view.load(ia)) {
                    ib
                } else {
                    ia
                };
                (pick, Reason::PowerOfTwo)
            }
        };
        Ok(Decision {
            instance,
            cached_blocks: 0,
            reason,
        })
    }

    /// Every eligible instance with its load; score = −requests. Which two
    /// are compared is drawn at pick time, so the explanation does not name
    /// them (drawing here would change the next pick).
    fn explain(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        explain_by_load(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{InstanceId, StaticView};

    #[test]
    fn never_picks_the_busiest_of_two() {
        let v = StaticView::idle(2).with_inflight(0, 9);
        let p = PowerOfTwo::new(&PowerOfTwoConfig::default());
        for _ in 0..50 {
            assert_eq!(
                p.pick(&RouteRequest::default(), &v).unwrap().instance,
                InstanceId(1)
            );
        }
    }

    #[test]
    fn single_instance() {
        let p = PowerOfTwo::new(&PowerOfTwoConfig::default());
        let d = p
            .pick(&RouteRequest::default(), &StaticView::idle(1))
            .unwrap();
        assert_eq!((d.instance, d.reason), (InstanceId(0), Reason::OnlyChoice));
    }

    #[test]
    fn spreads_over_many() {
        let p = PowerOfTwo::new(&PowerOfTwoConfig::default());
        let v = StaticView::idle(8);
        let mut seen = [0; 8];
        for _ in 0..800 {
            seen[p
                .pick(&RouteRequest::default(), &v)
                .unwrap()
                .instance
                .index()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
