//! `round_robin`: each request to the next eligible instance in turn.
//!
//! Load-only baseline. The rotation is over the *eligible* list, so an
//! instance taken out for health reasons is skipped without disturbing the
//! others' share.

use crate::registry::PolicySpec;
use crate::select::Rotor;
use kvroute_core::{
    CandidateScore, ClusterView, Decision, PickError, Policy, Reason, RouteRequest,
};
use serde::{Deserialize, Serialize};

/// `round_robin` has no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinConfig {}

impl PolicySpec for RoundRobinConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(RoundRobin::new(self))
    }
}

/// Strict rotation.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Rotor,
}

impl RoundRobin {
    /// A rotation starting at the first instance.
    pub fn new(_config: &RoundRobinConfig) -> RoundRobin {
        RoundRobin::default()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn uses_directory(&self) -> bool {
        false
    }

    fn pick(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let ids = view.instances();
        if ids.is_empty() {
            return Err(PickError::NoInstance);
        }
        Ok(Decision {
            instance: ids[self.next.next() % ids.len()],
            cached_blocks: 0,
            reason: Reason::RoundRobin,
        })
    }

    /// Every eligible instance; score = −(turns until its turn), so the next
    /// one in rotation scores 0.
    fn explain(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        let ids = view.instances();
        let n = ids.len().max(1);
        let next = self.next.peek() % n;
        ids.iter()
            .enumerate()
            .map(|(k, &id)| {
                let turns = (k + n - next) % n;
                CandidateScore::new(id, 0)
                    .term("turns_away", turns as f64)
                    .score(-(turns as f64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{InstanceId, StaticView};

    #[test]
    fn alternates() {
        let p = RoundRobin::default();
        let v = StaticView::idle(2);
        let r = RouteRequest::default();
        let got: Vec<u32> = (0..4).map(|_| p.pick(&r, &v).unwrap().instance.0).collect();
        assert_eq!(got, vec![0, 1, 0, 1]);
    }

    #[test]
    fn explain_names_the_next_in_turn_without_advancing() {
        let p = RoundRobin::default();
        let v = StaticView::idle(3);
        let r = RouteRequest::default();
        p.pick(&r, &v).unwrap();
        let e = p.explain(&r, &v);
        let best = e.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
        assert_eq!(best.instance, InstanceId(1));
        assert_eq!(p.pick(&r, &v).unwrap().instance, InstanceId(1));
    }

    #[test]
    fn empty_cluster_is_an_error() {
        let v = StaticView::idle(0);
        assert_eq!(
            RoundRobin::default().pick(&RouteRequest::default(), &v),
            Err(PickError::NoInstance)
        );
        let _ = InstanceId(0);
    }
}
