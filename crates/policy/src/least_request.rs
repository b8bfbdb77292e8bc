//! `least_request`: the instance with the fewest requests this router has in
//! flight to it.
//!
//! Load-only baseline. Only the router's own in-flight count is used (always
//! fresh, no polling); ties rotate so an idle cluster is still shared.

use crate::registry::PolicySpec;
use crate::select::{argmin_from, load_terms, Rotor};
use kvroute_core::{
    CandidateScore, ClusterView, Decision, PickError, Policy, Reason, RouteRequest,
};
use serde::{Deserialize, Serialize};

/// `least_request` has no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeastRequestConfig {}

impl PolicySpec for LeastRequestConfig {
    fn build(&self) -> Box<dyn Policy> {
        Box::new(LeastRequest::new(self))
    }
}

/// Fewest in-flight requests.
#[derive(Debug, Default)]
pub struct LeastRequest {
    rotor: Rotor,
}

impl LeastRequest {
    /// The policy.
    pub fn new(_config: &LeastRequestConfig) -> LeastRequest {
        LeastRequest::default()
    }
}

impl Policy for LeastRequest {
    fn name(&self) -> &'static str {
        "least_request"
    }

    fn uses_directory(&self) -> bool {
        false
    }

    fn pick(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        let instance = argmin_from(view.instances(), self.rotor.next(), |id| {
            view.load(id).inflight
        })
        .ok_or(PickError::NoInstance)?;
        Ok(Decision {
            instance,
            cached_blocks: 0,
            reason: Reason::LeastLoaded,
        })
    }

    /// Every eligible instance; score = −in-flight (ties rotate).
    fn explain(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Vec<CandidateScore> {
        view.instances()
            .iter()
            .map(|&id| {
                let l = view.load(id);
                load_terms(CandidateScore::new(id, 0), &l).score(-f64::from(l.inflight))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::{InstanceId, StaticView};

    #[test]
    fn picks_fewest_inflight() {
        let v = StaticView::idle(3)
            .with_inflight(0, 2)
            .with_inflight(1, 1)
            .with_inflight(2, 5);
        let p = LeastRequest::default();
        assert_eq!(
            p.pick(&RouteRequest::default(), &v).unwrap().instance,
            InstanceId(1)
        );
    }

    #[test]
    fn explain_scores_by_inflight() {
        let v = StaticView::idle(2).with_inflight(0, 3);
        let e = LeastRequest::default().explain(&RouteRequest::default(), &v);
        assert_eq!((e[0].score, e[1].score), (-3.0, 0.0));
    }

    #[test]
    fn idle_ties_are_shared() {
        let v = StaticView::idle(3);
        let p = LeastRequest::default();
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[p
                .pick(&RouteRequest::default(), &v)
                .unwrap()
                .instance
                .index()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }
}
