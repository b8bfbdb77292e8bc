//! The simulator-backed studies: capacity search, policies side by side,
//! the weights grid, staleness, and scale.
//!
//! Every run is one `kvroute_sim::Cluster` over a shared workload, re-timed
//! with Poisson arrivals at the study's rate. Runs are independent and
//! deterministic, so they are spread over all cores with rayon.

use crate::{StudyError, Workload};
use kvroute_core::Nanos;
use kvroute_directory::Freshness;
use kvroute_policy::PolicyConfig;
use kvroute_sim::{Cluster, ClusterConfig, Profile, Slo, Summary};
use kvroute_workload::{Session, Turn};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;

/// One simulated run's identity and outcome (a CSV row).
#[derive(Debug, Clone, Serialize)]
pub struct SimRow {
    /// Which study.
    pub study: String,
    /// Engine profile.
    pub profile: String,
    /// Workload name.
    pub workload: String,
    /// Policy spec.
    pub policy: String,
    /// Instances.
    pub instances: usize,
    /// Offered load as a fraction of capacity.
    pub load: f64,
    /// Sessions per second.
    pub rate: f64,
    /// Directory sync interval, seconds.
    pub sync_secs: f64,
    /// Metrics poll interval, seconds.
    pub metrics_secs: f64,
    /// Requests measured.
    pub requests: usize,
    /// Failed.
    pub failed: usize,
    /// TTFT mean, s.
    pub ttft_mean: f64,
    /// TTFT p50, s.
    pub ttft_p50: f64,
    /// TTFT p90, s.
    pub ttft_p90: f64,
    /// TTFT p99, s.
    pub ttft_p99: f64,
    /// TPOT mean, s.
    pub tpot_mean: f64,
    /// TPOT p99, s.
    pub tpot_p99: f64,
    /// E2E mean, s.
    pub e2e_mean: f64,
    /// E2E p50, s.
    pub e2e_p50: f64,
    /// E2E p90, s.
    pub e2e_p90: f64,
    /// E2E p99, s.
    pub e2e_p99: f64,
    /// Goodput, requests/s within the SLO.
    pub goodput_rps: f64,
    /// Throughput, requests/s.
    pub throughput_rps: f64,
    /// Engine prefix-cache hit rate.
    pub hit_rate: f64,
    /// CV of per-instance busy time.
    pub busy_cv: f64,
    /// Preemptions.
    pub preemptions: u64,
}

/// A run to do.
#[derive(Debug, Clone)]
pub struct Job {
    /// Study name.
    pub study: &'static str,
    /// Policy spec.
    pub policy: String,
    /// Instances.
    pub instances: usize,
    /// Load fraction (for the row).
    pub load: f64,
    /// Sessions per second.
    pub rate: f64,
    /// Directory sync interval.
    pub sync_secs: f64,
    /// Metrics poll interval.
    pub metrics_secs: f64,
    /// Replicas of the workload (scale study).
    pub replicas: usize,
}

impl Job {
    /// A job with live directory and metrics, one replica.
    pub fn new(study: &'static str, policy: &str, instances: usize, load: f64, rate: f64) -> Job {
        Job {
            study,
            policy: policy.to_string(),
            instances,
            load,
            rate,
            sync_secs: 0.0,
            metrics_secs: 0.0,
            replicas: 1,
        }
    }
}

/// Copy `k` of a session, sharing nothing with other copies: every token `t`
/// becomes `(t + k·7919) mod vocab`, so copies never hit each other's cache
/// while each keeps its own prefix structure. Text is dropped (the simulator
/// only reads token ids).
pub fn replica(s: &Session, k: usize, vocab: u32, id: u64) -> Session {
    let shift = (k as u64 * 7919) % u64::from(vocab.max(1));
    Session {
        id,
        arrival: s.arrival,
        think_time: s.think_time,
        turns: s
            .turns
            .iter()
            .map(|t| Turn {
                messages: Vec::new(),
                prompt_text: None,
                prompt_tokens: t
                    .prompt_tokens
                    .iter()
                    .map(|&x| ((u64::from(x) + shift) % u64::from(vocab.max(1))) as u32)
                    .collect(),
                max_tokens: t.max_tokens,
            })
            .collect(),
    }
}

/// `copies` replicas of a workload, interleaved (see [`timed`]).
pub fn replicate(sessions: &[Session], copies: usize, vocab: u32) -> Vec<Session> {
    timed(Arc::new(sessions.to_vec()), copies, vocab, None, 0).collect()
}

/// The sessions of `copies` replicas of `base`, made one at a time as the
/// simulation pulls them (a 1024-instance run replays hundreds of thousands
/// of sessions; only those in flight are in memory), with Poisson arrivals
/// at `rate` per second when given.
///
/// The copies are interleaved — session *i* is session *i / copies* of copy
/// *i mod copies* — so all of them run at once, each at `1/copies` of the
/// rate: `copies` independent tenants, each with the prefix structure (and
/// the hot spots) of the original at the original's rate. One after another
/// instead, each copy would come alone at the full rate for a stretch of
/// time that shrinks as copies are added, and a policy's hot spot would
/// depend on how long that stretch is rather than on the instance count.
pub fn timed(
    base: Arc<Vec<Session>>,
    copies: usize,
    vocab: u32,
    rate: Option<f64>,
    seed: u64,
) -> impl Iterator<Item = Session> {
    let rng = kvroute_core::SeededRng::new(seed ^ 0xa11);
    let mut t = 0.0f64;
    let n = base.len();
    (0..n * copies.max(1)).map(move |i| {
        let (k, j) = (i % copies.max(1), i / copies.max(1));
        let mut s = if k == 0 {
            let mut s = base[j].clone();
            s.id = i as u64;
            s
        } else {
            replica(&base[j], k, vocab, i as u64)
        };
        if let Some(rate) = rate {
            t += -(1.0 - rng.unit()).ln() / rate;
            s.arrival = Nanos::from_secs_f64(t);
        }
        s
    })
}

/// Give sessions Poisson arrivals at `rate` per second (seeded; the same
/// arrivals as [`timed`] gives for one copy).
pub fn poisson(sessions: &[Session], rate: f64, seed: u64) -> Vec<Session> {
    timed(Arc::new(sessions.to_vec()), 1, u32::MAX, Some(rate), seed)
        .zip(sessions)
        .map(|(mut t, s)| {
            t.id = s.id;
            t
        })
        .collect()
}

/// The context every simulated study shares.
#[derive(Debug, Clone)]
pub struct SimContext {
    /// Engine profile.
    pub profile: Profile,
    /// Seed.
    pub seed: u64,
    /// Warm-up excluded from summaries, seconds.
    pub warmup_secs: f64,
    /// Latency objective (goodput, capacity).
    pub slo: Slo,
}

impl SimContext {
    fn config(&self, job: &Job) -> Result<ClusterConfig, StudyError> {
        let policy = PolicyConfig::parse(&job.policy)
            .map_err(|e| StudyError::Config(e.to_string()))?
            .with_seed(self.seed);
        let mut c = ClusterConfig::new(job.instances, self.profile.clone(), policy);
        c.directory_freshness = Freshness::periodic_secs(job.sync_secs);
        c.metrics_interval = Nanos::from_secs_f64(job.metrics_secs);
        c.warmup = Nanos::from_secs_f64(self.warmup_secs);
        c.slo = self.slo;
        Ok(c)
    }

    /// Run one job on a workload.
    pub fn run(&self, w: &Workload, job: &Job) -> Result<(SimRow, Summary), StudyError> {
        let sessions = timed(
            w.sessions.clone(),
            job.replicas,
            w.vocab,
            Some(job.rate),
            self.seed,
        )
        .map(Ok::<_, String>);
        let r = Cluster::new(self.config(job)?, sessions)
            .and_then(Cluster::run)
            .map_err(|e| StudyError::Sim(e.to_string()))?;
        let s = r.summary;
        Ok((
            SimRow {
                study: job.study.to_string(),
                profile: self.profile.name.clone(),
                workload: w.name.clone(),
                policy: job.policy.clone(),
                instances: job.instances,
                load: job.load,
                rate: job.rate,
                sync_secs: job.sync_secs,
                metrics_secs: job.metrics_secs,
                requests: s.requests,
                failed: s.failed,
                ttft_mean: s.ttft.mean,
                ttft_p50: s.ttft.p50,
                ttft_p90: s.ttft.p90,
                ttft_p99: s.ttft.p99,
                tpot_mean: s.tpot.mean,
                tpot_p99: s.tpot.p99,
                e2e_mean: s.e2e.mean,
                e2e_p50: s.e2e.p50,
                e2e_p90: s.e2e.p90,
                e2e_p99: s.e2e.p99,
                goodput_rps: s.goodput_rps,
                throughput_rps: s.throughput_rps,
                hit_rate: s.cache_hit_rate,
                busy_cv: s.busy_cv,
                preemptions: s.preemptions,
            },
            s,
        ))
    }

    /// Run jobs in parallel, keeping their order.
    pub fn run_all(&self, w: &Workload, jobs: &[Job]) -> Result<Vec<SimRow>, StudyError> {
        jobs.par_iter()
            .map(|j| self.run(w, j).map(|(r, _)| r))
            .collect()
    }

    /// The SLO for a profile: TTFT within `ttft_secs`, TPOT within four
    /// times the profile's unloaded decode step (1,000 tokens of context).
    pub fn slo_for(profile: &Profile, ttft_secs: f64) -> Slo {
        let mut w = kvroute_sim::StepWork::default();
        w.add_decode(1000);
        let step = profile.latency.step_secs(&w);
        Slo {
            ttft_secs,
            tpot_secs: 4.0 * step,
        }
    }

    /// Capacity of `instances` instances on `w`: the highest session rate at
    /// which round-robin still serves 90 % of requests within the SLO
    /// (bisection on a log scale, in the simulator).
    pub fn capacity(&self, w: &Workload, instances: usize) -> Result<f64, StudyError> {
        let ok = |rate: f64| -> Result<bool, StudyError> {
            let (_, s) = self.run(
                w,
                &Job::new("capacity", "round_robin", instances, 0.0, rate),
            )?;
            Ok(s.failed == 0 && s.throughput_rps > 0.0 && s.goodput_rps >= 0.9 * s.throughput_rps)
        };
        let (mut lo, mut hi) = (0.01f64, 0.02f64);
        // Grow until the SLO breaks.
        while ok(hi)? {
            lo = hi;
            hi *= 2.0;
            if hi > 1e5 {
                return Err(StudyError::Sim("capacity search did not saturate".into()));
            }
        }
        if !ok(lo)? {
            return Err(StudyError::Sim(format!(
                "even {lo} sessions/s breaks the TTFT SLO"
            )));
        }
        for _ in 0..7 {
            let mid = (lo * hi).sqrt();
            if ok(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, toks: Vec<u32>) -> Session {
        Session {
            id,
            arrival: Nanos::ZERO,
            turns: vec![Turn {
                messages: vec![],
                prompt_text: None,
                prompt_tokens: toks,
                max_tokens: 3,
            }],
            think_time: Nanos::ZERO,
        }
    }

    #[test]
    fn replicas_share_nothing_but_keep_structure() {
        let r = replicate(&[s(0, vec![1, 2, 3]), s(1, vec![1, 2, 9])], 3, 100);
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].turns[0].prompt_tokens, vec![1, 2, 3]);
        assert_eq!(r[3].turns[0].prompt_tokens, vec![1, 2, 9]);
        // Interleaved: sessions 1 and 4 are copy 1 of the two originals.
        let (a, b) = (&r[1].turns[0].prompt_tokens, &r[4].turns[0].prompt_tokens);
        assert_eq!(a[..2], b[..2], "a copy keeps the sharing within it");
        assert_ne!(a[0], 1, "copies do not share with the original");
        assert_ne!(a[0], r[2].turns[0].prompt_tokens[0], "nor with each other");
        assert_eq!(
            r.iter().map(|x| x.id).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
    }

    #[test]
    fn poisson_rate_is_right() {
        let base: Vec<Session> = (0..4000).map(|i| s(i, vec![1])).collect();
        let t = poisson(&base, 8.0, 1);
        let span = t.last().unwrap().arrival.as_secs_f64();
        assert!((4000.0 / span - 8.0).abs() < 0.5, "{}", 4000.0 / span);
    }
}
