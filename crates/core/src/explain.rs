//! [`CandidateScore`]: why a policy would send a request to an instance —
//! what [`Policy::explain`](crate::Policy::explain) returns, one per
//! candidate, for logs and the router's admin API.
//!
//! A candidate carries the prefix it is believed to hold, the named inputs the
//! policy weighed (loads, cache terms, costs) and the value the policy ranks
//! candidates by. Scores are oriented so that **higher is preferred**: a
//! policy that minimises a cost reports the cost negated, so an operator can
//! always read "the best candidate has the highest score". Ties among equal
//! scores are broken as each policy documents (load, rotation, a seeded draw);
//! a sampling policy picks at random with probabilities that grow with the
//! score.

use crate::ids::InstanceId;
use serde::Serialize;

/// One named input of a policy's decision (`"inflight"`, `"cached_fraction"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Term {
    /// What it is (snake case, stable: a log field).
    pub name: &'static str,
    /// Its value, in the unit its name says.
    pub value: f64,
}

/// One candidate instance as a policy weighs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateScore {
    /// The instance.
    pub instance: InstanceId,
    /// Leading prompt blocks the policy believes it holds.
    pub matched_blocks: u32,
    /// The named terms the policy weighed, in the order it weighs them.
    pub terms: Vec<Term>,
    /// What the policy ranks candidates by; higher is preferred.
    pub score: f64,
}

impl CandidateScore {
    /// A candidate with no terms yet and a score of zero.
    pub fn new(instance: InstanceId, matched_blocks: u32) -> CandidateScore {
        CandidateScore {
            instance,
            matched_blocks,
            terms: Vec::new(),
            score: 0.0,
        }
    }

    /// Add a term.
    pub fn term(mut self, name: &'static str, value: f64) -> CandidateScore {
        self.terms.push(Term { name, value });
        self
    }

    /// Set the score.
    pub fn score(mut self, score: f64) -> CandidateScore {
        self.score = score;
        self
    }

    /// The value of the term called `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|t| t.name == name).map(|t| t.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_reads_terms() {
        let c = CandidateScore::new(InstanceId(3), 7)
            .term("inflight", 2.0)
            .term("cached_fraction", 0.5)
            .score(-1.5);
        assert_eq!(c.get("inflight"), Some(2.0));
        assert_eq!(c.get("missing"), None);
        assert_eq!((c.matched_blocks, c.score), (7, -1.5));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"name\":\"cached_fraction\""), "{json}");
    }
}
