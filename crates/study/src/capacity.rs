//! Capacity under SLO: the highest arrival rate at which a policy keeps a
//! regime's p90 TTFT and p90 TPOT within the SLO with nothing failed —
//! DualMap's headline metric — found by a search over rate.
//!
//! # The search
//!
//! From a starting rate (round-robin's capacity for the other policies, a
//! rough estimate for round-robin itself) the rate doubles while the SLO is
//! met, or halves until it is, giving a bracket `lo` (met) < `hi` (missed);
//! then geometric bisection narrows it until `hi / lo ≤ 1 +`
//! [`TOLERANCE`]. The capacity is `lo`. Doubling stops at the highest rate
//! the workload can offer ([`Regime::max_rate`]): a finite sample arriving
//! faster than that is a burst, not a load, and the SLO holding there says
//! only that the sample is too small; such a search is `capped` and its
//! capacity a lower bound, kept out of ratios and verdicts. Each probe is a full simulated run
//! with the job's seed, so the same (regime, policy, seed) always gives the
//! same capacity; the spread over seeds is the noise the verdicts weigh.

use crate::regime::Regime;
use crate::sims::{self, Job, SimRow};
use crate::StudyError;
use serde::{Deserialize, Serialize};

/// Relative width of the final bracket.
pub const TOLERANCE: f64 = 0.05;
/// Doublings or halvings tried before giving up on a bracket.
const MAX_STEPS: usize = 12;

/// One capacity search's outcome (a CSV row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CapacityRow {
    /// Engine profile.
    pub profile: String,
    /// Workload.
    pub workload: String,
    /// Instances.
    pub instances: usize,
    /// Policy spec.
    pub policy: String,
    /// Seed.
    pub seed: u64,
    /// Capacity, sessions per second (0 when the SLO is missed even at the
    /// lowest rate tried).
    pub sessions_per_s: f64,
    /// Capacity, requests per second (sessions × requests per session).
    pub requests_per_s: f64,
    /// The lowest rate found to miss the SLO (∞ when none did).
    pub missed_at: f64,
    /// Probes run.
    pub probes: usize,
    /// Whether the bracket closed (false: the SLO held at every rate tried,
    /// or failed at every one).
    pub bracketed: bool,
    /// The SLO still held at the highest rate the workload can offer
    /// ([`Regime::max_rate`]): the capacity is at least `sessions_per_s`.
    pub capped: bool,
}

/// A capacity and the runs that found it.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// The outcome.
    pub row: CapacityRow,
    /// Every probe, in the order run.
    pub probes: Vec<SimRow>,
}

/// Search the capacity of `job`'s policy in `regime`, starting at `start`
/// sessions per second (see the module docs). `job.rate` is ignored.
pub fn search(regime: &Regime, job: &Job, start: f64) -> Result<Capacity, StudyError> {
    let mut probes = Vec::new();
    let mut probe = |rate: f64| -> Result<bool, StudyError> {
        let j = Job {
            rate,
            load: f64::NAN,
            ..job.clone()
        };
        let r = sims::run(regime, &j)?;
        let ok = r.meets_slo;
        probes.push(r);
        Ok(ok)
    };
    let max_rate = regime.max_rate();
    let start = if start.is_finite() && start > 0.0 {
        start
    } else {
        regime.rough_capacity()
    }
    .min(max_rate);
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut capped = false;
    if probe(start)? {
        lo = start;
        for _ in 0..MAX_STEPS {
            if lo >= max_rate {
                capped = true;
                break;
            }
            let r = (lo * 2.0).min(max_rate);
            if probe(r)? {
                lo = r;
            } else {
                hi = r;
                break;
            }
        }
    } else {
        hi = start;
        for _ in 0..MAX_STEPS {
            let r = hi / 2.0;
            if probe(r)? {
                lo = r;
                break;
            }
            hi = r;
        }
    }
    let bracketed = lo > 0.0 && hi.is_finite();
    if bracketed {
        while hi / lo > 1.0 + TOLERANCE {
            let mid = (lo * hi).sqrt();
            if probe(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(Capacity {
        row: CapacityRow {
            profile: regime.profile.name.clone(),
            workload: regime.workload.name.clone(),
            instances: regime.instances,
            policy: job.policy.clone(),
            seed: job.seed,
            sessions_per_s: lo,
            requests_per_s: lo * regime.turns_per_session,
            missed_at: hi,
            probes: probes.len(),
            bracketed,
            capped,
        },
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workload;
    use kvroute_sim::Profile;
    use kvroute_workload::{Session, Turn};
    use std::sync::Arc;

    /// Sessions of one 1k-token prompt each; eight share their first half.
    fn workload() -> Arc<Workload> {
        let sessions = (0..160u32)
            .map(|i| {
                let mut toks: Vec<u32> = (0..512).map(|t| 100 + (i % 8) * 1000 + t).collect();
                toks.extend((0..512).map(|t| 20_000 + i * 600 + t));
                Session::single(
                    u64::from(i),
                    kvroute_core::Nanos::ZERO,
                    Turn {
                        messages: vec![],
                        prompt_text: None,
                        prompt_tokens: toks,
                        max_tokens: 16,
                    },
                )
            })
            .collect();
        Arc::new(Workload {
            name: "t".into(),
            spec: "test".into(),
            multi_turn: false,
            sessions: Arc::new(sessions),
            vocab: 150_000,
        })
    }

    #[test]
    fn a_sample_too_small_to_load_the_cluster_is_capped_not_measured() {
        let p = Profile::load("llama3-8b-a100").unwrap();
        let w = workload();
        let few = Arc::new(Workload {
            sessions: Arc::new(w.sessions[..12].to_vec()),
            ..Workload::clone(&w)
        });
        let r = Regime::new(&p, &few, 16).unwrap();
        let job = Job::new("capacity", "round_robin", 1, f64::NAN, 0.0);
        let a = search(&r, &job, 0.0).unwrap();
        assert!(a.row.capped && !a.row.bracketed, "{:?}", a.row);
        assert_eq!(a.row.sessions_per_s, r.max_rate());
        assert!(a.probes.iter().all(|p| p.rate <= r.max_rate()));
        // The full sample is not capped on two instances.
        let r = Regime::new(&p, &w, 2).unwrap();
        assert!(!search(&r, &job, 0.0).unwrap().row.capped);
    }

    #[test]
    fn search_brackets_within_tolerance_and_is_deterministic() {
        let p = Profile::load("llama3-8b-a100").unwrap();
        let r = Regime::new(&p, &workload(), 2).unwrap();
        let job = Job::new("capacity", "round_robin", 1, f64::NAN, 0.0);
        let a = search(&r, &job, 0.0).unwrap();
        assert!(a.row.bracketed, "{:?}", a.row);
        assert!(a.row.sessions_per_s > 0.0);
        assert!(a.row.missed_at / a.row.sessions_per_s <= 1.0 + TOLERANCE + 1e-9);
        // The bracket's ends are probes that met and missed the SLO.
        let met = |rate: f64| {
            a.probes
                .iter()
                .find(|p| p.rate == rate)
                .map(|p| p.meets_slo)
        };
        assert_eq!(met(a.row.sessions_per_s), Some(true));
        assert_eq!(met(a.row.missed_at), Some(false));
        let b = search(&r, &job, 0.0).unwrap();
        assert_eq!(a.row.sessions_per_s, b.row.sessions_per_s);
        // Starting elsewhere brackets the same boundary within tolerance
        // (the SLO is met or missed monotonically here).
        let c = search(&r, &job, a.row.sessions_per_s * 3.0).unwrap();
        let ratio = c.row.sessions_per_s / a.row.sessions_per_s;
        assert!(
            (1.0 / (1.0 + TOLERANCE)..=1.0 + TOLERANCE).contains(&ratio),
            "{ratio}"
        );
    }
}
