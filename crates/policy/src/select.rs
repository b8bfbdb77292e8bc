//! Selection helpers shared by the policies: load comparison and fair
//! tie-breaking.
//!
//! Ties are broken by a rotating start offset, never by "first in the list":
//! peers that kept the first of equal candidates sent every request to one
//! worker whenever the cluster was idle.

pub(crate) use kvroute_core::FastMap;
use kvroute_core::{CandidateScore, ClusterView, InstanceId, InstanceLoad};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A rotating offset for tie-breaking.
#[derive(Debug, Default)]
pub(crate) struct Rotor(AtomicUsize);

impl Rotor {
    /// The next offset (wraps freely; callers reduce it modulo their length).
    pub(crate) fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// The offset the next call to [`next`](Self::next) returns, without
    /// advancing (for side-effect-free explanations).
    pub(crate) fn peek(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The load key policies compare: requests first, then pending prefill work.
pub(crate) fn load_key(l: &InstanceLoad) -> (u32, u64) {
    (l.requests(), l.pending_prefill_tokens)
}

/// The candidate minimising `key`, scanning from `start` so that ties rotate.
pub(crate) fn argmin_from<K: PartialOrd>(
    candidates: &[InstanceId],
    start: usize,
    mut key: impl FnMut(InstanceId) -> K,
) -> Option<InstanceId> {
    let n = candidates.len();
    let mut best: Option<(InstanceId, K)> = None;
    for k in 0..n {
        let id = candidates[(start + k) % n];
        let v = key(id);
        if best.as_ref().is_none_or(|(_, b)| v < *b) {
            best = Some((id, v));
        }
    }
    best.map(|(id, _)| id)
}

/// The load terms every explanation carries.
pub(crate) fn load_terms(c: CandidateScore, l: &InstanceLoad) -> CandidateScore {
    c.term("requests", f64::from(l.requests()))
        .term("inflight", f64::from(l.inflight))
        .term("pending_prefill_tokens", l.pending_prefill_tokens as f64)
}

/// Candidates ranked by load alone: score = −requests.
pub(crate) fn explain_by_load(view: &dyn ClusterView) -> Vec<CandidateScore> {
    view.instances()
        .iter()
        .map(|&id| {
            let l = view.load(id);
            load_terms(CandidateScore::new(id, 0), &l).score(-f64::from(l.requests()))
        })
        .collect()
}

/// The least-loaded eligible instance (ties rotate).
pub(crate) fn least_loaded(view: &dyn ClusterView, rotor: &Rotor) -> Option<InstanceId> {
    argmin_from(view.instances(), rotor.next(), |id| {
        load_key(&view.load(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_rotate() {
        let ids = [InstanceId(0), InstanceId(1), InstanceId(2)];
        let picks: Vec<_> = (0..3)
            .map(|s| argmin_from(&ids, s, |_| 0).unwrap())
            .collect();
        assert_eq!(picks, ids);
        assert_eq!(argmin_from(&ids, 2, |i| i.0 % 2), Some(InstanceId(2)));
        assert_eq!(argmin_from(&[], 0, |_: InstanceId| 0), None);
    }
}
