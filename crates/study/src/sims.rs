//! Simulated runs: one [`Job`] (a policy at a rate, with a seed) in one
//! [`Regime`], giving a [`SimRow`].
//!
//! Every run is one `kvroute_sim::Cluster` over the regime's workload,
//! re-timed with Poisson arrivals at the job's rate; the first tenth of the
//! arrival span warms the caches up and is not summarised. Runs are independent
//! and deterministic, so they are spread over all cores with rayon.

use crate::regime::Regime;
use crate::StudyError;
use kvroute_core::Nanos;
use kvroute_directory::{Freshness, Mode};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{Cluster, ClusterConfig};
use kvroute_workload::{Session, Turn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One simulated run's identity and outcome (a CSV row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimRow {
    /// Which study.
    pub study: String,
    /// Engine profile.
    pub profile: String,
    /// Workload name.
    pub workload: String,
    /// Policy spec.
    pub policy: String,
    /// Where the policy's directory entries came from (exact, predicted).
    pub directory: String,
    /// Instances.
    pub instances: usize,
    /// Seed of the arrivals and the policy.
    pub seed: u64,
    /// Offered load as a fraction of round-robin's capacity (NaN when the
    /// run is part of a capacity search).
    pub load: f64,
    /// Sessions per second offered.
    pub rate: f64,
    /// Directory sync interval, seconds.
    pub sync_secs: f64,
    /// Metrics poll interval, seconds.
    pub metrics_secs: f64,
    /// The regime's TTFT SLO, seconds.
    pub slo_ttft: f64,
    /// The regime's TPOT SLO, seconds.
    pub slo_tpot: f64,
    /// Requests measured.
    pub requests: usize,
    /// Failed (including rejected: longer than the engine accepts).
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
    /// TPOT p90, s.
    pub tpot_p90: f64,
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
    /// Whether the run met the SLO: p90 TTFT and p90 TPOT within it, and
    /// nothing failed.
    pub meets_slo: bool,
}

impl SimRow {
    /// The run's outcome against its regime's SLO.
    pub fn meets(&self) -> bool {
        self.meets_slo
    }
}

/// A run to do.
#[derive(Debug, Clone)]
pub struct Job {
    /// Study name.
    pub study: &'static str,
    /// Policy spec.
    pub policy: String,
    /// Seed of the arrivals and the policy.
    pub seed: u64,
    /// Load fraction (for the row; NaN in capacity searches).
    pub load: f64,
    /// Sessions per second.
    pub rate: f64,
    /// Directory sync interval.
    pub sync_secs: f64,
    /// Metrics poll interval.
    pub metrics_secs: f64,
    /// Independent copies of the workload run at once (scale study).
    pub copies: usize,
    /// Where directory entries come from (None: the policy's own default,
    /// [`directory_mode`]).
    pub mode: Option<Mode>,
    /// Share of the arrival span that warms the caches up and is not
    /// summarised (0.1 by default; 0 to compare with a live run, which
    /// counts everything).
    pub warmup_fraction: f64,
}

impl Job {
    /// A job with live directory and metrics, one copy.
    pub fn new(study: &'static str, policy: &str, seed: u64, load: f64, rate: f64) -> Job {
        Job {
            study,
            policy: policy.to_string(),
            seed,
            load,
            rate,
            sync_secs: 0.0,
            metrics_secs: 0.0,
            copies: 1,
            mode: None,
            warmup_fraction: 0.1,
        }
    }
}

/// The directory a policy runs with in the studies: what it is deployed
/// with. kvroute's own policies and Dynamo's router read the engines' KV
/// events (exact); DualMap, Preble and llm-d's endpoint picker keep a
/// router-side model of what they routed (predicted); SGLang's port keeps
/// its own approximate tree and reads neither (the mode does not matter).
pub fn directory_mode(policy: &str) -> Mode {
    let name = policy.split(':').next().unwrap_or(policy);
    match name {
        "dualmap" | "preble_e2" | "llmd_epp" => Mode::Predicted,
        _ => Mode::Exact,
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

/// Run one job in a regime.
pub fn run(regime: &Regime, job: &Job) -> Result<SimRow, StudyError> {
    let w = &regime.workload;
    let policy = PolicyConfig::parse(&job.policy)
        .map_err(|e| StudyError::Config(e.to_string()))?
        .with_seed(job.seed);
    let mode = job.mode.unwrap_or_else(|| directory_mode(&job.policy));
    let mut c = ClusterConfig::new(regime.instances, regime.profile.clone(), policy);
    c.directory_mode = mode;
    c.directory_freshness = Freshness::periodic_secs(job.sync_secs);
    c.metrics_interval = Nanos::from_secs_f64(job.metrics_secs);
    // The first arrivals warm the caches up; not summarised.
    let span = (w.sessions.len() * job.copies.max(1)) as f64 / job.rate.max(1e-9);
    c.warmup = Nanos::from_secs_f64(job.warmup_fraction.clamp(0.0, 0.9) * span);
    c.slo = regime.slo;
    let sessions = timed(
        w.sessions.clone(),
        job.copies,
        w.vocab,
        Some(job.rate),
        job.seed,
    )
    .map(Ok::<_, String>);
    let r = Cluster::new(c, sessions)
        .and_then(Cluster::run)
        .map_err(|e| StudyError::Sim(e.to_string()))?;
    let s = r.summary;
    let meets = s.failed == 0
        && s.requests > 0
        && s.ttft.p90.is_some_and(|p| p <= regime.slo.ttft_secs)
        && s.tpot.p90.is_none_or(|p| p <= regime.slo.tpot_secs);
    Ok(SimRow {
        study: job.study.to_string(),
        profile: regime.profile.name.clone(),
        workload: w.name.clone(),
        policy: job.policy.clone(),
        directory: mode.as_str().to_string(),
        instances: regime.instances,
        seed: job.seed,
        load: job.load,
        rate: job.rate,
        sync_secs: job.sync_secs,
        metrics_secs: job.metrics_secs,
        slo_ttft: regime.slo.ttft_secs,
        slo_tpot: regime.slo.tpot_secs,
        requests: s.requests,
        failed: s.failed,
        ttft_mean: s.ttft.mean.unwrap_or(f64::NAN),
        ttft_p50: s.ttft.p50.unwrap_or(f64::NAN),
        ttft_p90: s.ttft.p90.unwrap_or(f64::NAN),
        ttft_p99: s.ttft.p99.unwrap_or(f64::NAN),
        tpot_mean: s.tpot.mean.unwrap_or(f64::NAN),
        tpot_p90: s.tpot.p90.unwrap_or(f64::NAN),
        tpot_p99: s.tpot.p99.unwrap_or(f64::NAN),
        e2e_mean: s.e2e.mean.unwrap_or(f64::NAN),
        e2e_p50: s.e2e.p50.unwrap_or(f64::NAN),
        e2e_p90: s.e2e.p90.unwrap_or(f64::NAN),
        e2e_p99: s.e2e.p99.unwrap_or(f64::NAN),
        goodput_rps: s.goodput_rps,
        throughput_rps: s.throughput_rps,
        hit_rate: s.cache_hit_rate,
        busy_cv: s.busy_cv,
        preemptions: s.preemptions,
        meets_slo: meets,
    })
}

/// Run jobs in parallel (rayon), keeping their order.
pub fn run_all(jobs: &[(Arc<Regime>, Job)]) -> Result<Vec<SimRow>, StudyError> {
    jobs.par_iter().map(|(r, j)| run(r, j)).collect()
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
