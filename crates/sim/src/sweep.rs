//! [`Sweep`]: a grid of cluster runs (policies × weights × staleness ×
//! instance counts × rates × seeds), run in parallel with rayon, one summary
//! row each, its refused requests by cause first after the request counts.
//! Every point is deterministic for its seed, so the CSV is the same however
//! many threads run it.

use crate::cluster::{Cluster, ClusterConfig, RunResult, SimError};
use crate::summary::{Rejections, Summary};
use kvroute_core::Nanos;
use kvroute_directory::Freshness;
use kvroute_policy::PolicyConfig;
use kvroute_workload::Session;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Label for the workload (the caller's name for it).
    pub workload: String,
    /// Policy spec (`name:key=value,...`).
    pub policy: String,
    /// Instances.
    pub instances: usize,
    /// Offered load: sessions per second (open loop), or 0 for the workload's own times.
    pub rate: f64,
    /// The arrival process the rate drives (`poisson`, `gamma:cv=3`, `trace`).
    pub arrival: String,
    /// Directory sync interval, seconds (0: live).
    pub sync_secs: f64,
    /// Metrics poll interval, seconds (0: live).
    pub metrics_secs: f64,
    /// Seed for policy RNGs and arrivals.
    pub seed: u64,
}

/// One row of the sweep CSV: the point and its summary, flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// Workload label.
    pub workload: String,
    /// Policy spec.
    pub policy: String,
    /// Instances.
    pub instances: usize,
    /// Offered sessions per second.
    pub rate: f64,
    /// Arrival process.
    pub arrival: String,
    /// Directory sync interval, seconds.
    pub sync_secs: f64,
    /// Metrics poll interval, seconds.
    pub metrics_secs: f64,
    /// Seed.
    pub seed: u64,
    /// Requests measured.
    pub requests: usize,
    /// Failed requests.
    pub failed: usize,
    /// Requests refused before they ran, all causes (see [`Rejections`]).
    pub rejected: usize,
    /// Refused: longer than `max_model_len`.
    pub rejected_too_long: usize,
    /// Refused: empty prompt.
    pub rejected_empty_prompt: usize,
    /// Refused: no instance to route to.
    pub rejected_no_instance: usize,
    /// Refused: another reason.
    pub rejected_other: usize,
    /// Later turns of refused requests' sessions, never sent.
    pub dropped_turns: usize,
    /// The profile's `max_model_len`.
    pub max_model_len: u32,
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
    /// E2E p90, s.
    pub e2e_p90: f64,
    /// E2E p99, s.
    pub e2e_p99: f64,
    /// Queue time mean, s.
    pub queue_mean: f64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Requests per second within the SLO.
    pub goodput_rps: f64,
    /// Engine-side prefix-cache hit rate (tokens).
    pub cache_hit_rate: f64,
    /// Router-predicted hit rate (tokens).
    pub predicted_hit_rate: f64,
    /// CV of per-instance busy time.
    pub busy_cv: f64,
    /// CV of per-instance request counts.
    pub requests_cv: f64,
    /// Preemptions.
    pub preemptions: u64,
}

impl SweepRow {
    /// The row's refused requests, by cause.
    pub fn rejections(&self) -> Rejections {
        Rejections {
            too_long: self.rejected_too_long,
            empty_prompt: self.rejected_empty_prompt,
            no_instance: self.rejected_no_instance,
            other: self.rejected_other,
            dropped_turns: self.dropped_turns,
            max_model_len: self.max_model_len,
        }
    }

    fn new(p: &SweepPoint, s: &Summary) -> SweepRow {
        SweepRow {
            workload: p.workload.clone(),
            policy: p.policy.clone(),
            instances: p.instances,
            rate: p.rate,
            arrival: p.arrival.clone(),
            sync_secs: p.sync_secs,
            metrics_secs: p.metrics_secs,
            seed: p.seed,
            requests: s.requests,
            failed: s.failed,
            rejected: s.rejected.total(),
            rejected_too_long: s.rejected.too_long,
            rejected_empty_prompt: s.rejected.empty_prompt,
            rejected_no_instance: s.rejected.no_instance,
            rejected_other: s.rejected.other,
            dropped_turns: s.rejected.dropped_turns,
            max_model_len: s.rejected.max_model_len,
            ttft_mean: s.ttft.mean.unwrap_or(f64::NAN),
            ttft_p50: s.ttft.p50.unwrap_or(f64::NAN),
            ttft_p90: s.ttft.p90.unwrap_or(f64::NAN),
            ttft_p99: s.ttft.p99.unwrap_or(f64::NAN),
            tpot_mean: s.tpot.mean.unwrap_or(f64::NAN),
            tpot_p99: s.tpot.p99.unwrap_or(f64::NAN),
            e2e_mean: s.e2e.mean.unwrap_or(f64::NAN),
            e2e_p90: s.e2e.p90.unwrap_or(f64::NAN),
            e2e_p99: s.e2e.p99.unwrap_or(f64::NAN),
            queue_mean: s.queue.mean.unwrap_or(f64::NAN),
            throughput_rps: s.throughput_rps,
            goodput_rps: s.goodput_rps,
            cache_hit_rate: s.cache_hit_rate,
            predicted_hit_rate: s.predicted_hit_rate,
            busy_cv: s.busy_cv,
            requests_cv: s.requests_cv,
            preemptions: s.preemptions,
        }
    }
}

/// A grid of runs sharing a base configuration.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Everything not varied by the grid.
    pub base: ClusterConfig,
    /// The points.
    pub points: Vec<SweepPoint>,
}

impl Sweep {
    /// The full cross product of the given axes; `arrival` names the
    /// arrival process every rate drives.
    #[allow(clippy::too_many_arguments)]
    pub fn grid(
        base: ClusterConfig,
        workload: &str,
        arrival: &str,
        policies: &[String],
        instances: &[usize],
        rates: &[f64],
        sync_secs: &[f64],
        metrics_secs: &[f64],
        seeds: &[u64],
    ) -> Sweep {
        let mut points = Vec::new();
        for p in policies {
            for &n in instances {
                for &r in rates {
                    for &s in sync_secs {
                        for &m in metrics_secs {
                            for &seed in seeds {
                                points.push(SweepPoint {
                                    workload: workload.to_string(),
                                    policy: p.clone(),
                                    instances: n,
                                    rate: r,
                                    arrival: arrival.to_string(),
                                    sync_secs: s,
                                    metrics_secs: m,
                                    seed,
                                });
                            }
                        }
                    }
                }
            }
        }
        Sweep { base, points }
    }

    /// The configuration of one point.
    pub fn config(&self, p: &SweepPoint) -> Result<ClusterConfig, SimError> {
        let mut c = self.base.clone();
        c.instances = p.instances;
        c.policy = PolicyConfig::parse(&p.policy)
            .map_err(|e| SimError::Config(e.to_string()))?
            .with_seed(p.seed);
        c.directory_freshness = Freshness::periodic_secs(p.sync_secs);
        c.metrics_interval = Nanos::from_secs_f64(p.metrics_secs);
        Ok(c)
    }

    /// Run every point in parallel. `sessions(point)` gives each point its
    /// workload (already timed); `done()` is called after each run (progress).
    pub fn run<F, D>(&self, sessions: F, done: D) -> Result<Vec<(SweepRow, RunResult)>, SimError>
    where
        F: Fn(&SweepPoint) -> Arc<Vec<Session>> + Sync,
        D: Fn() + Sync,
    {
        self.points
            .par_iter()
            .map(|p| {
                let c = self.config(p)?;
                let s = sessions(p);
                let r = run_shared(c, s)?;
                done();
                Ok((SweepRow::new(p, &r.summary), r))
            })
            .collect()
    }
}

/// Run one configuration over a shared workload (sessions are cloned lazily,
/// one at a time, as the simulation pulls them).
pub fn run_shared(
    config: ClusterConfig,
    sessions: Arc<Vec<Session>>,
) -> Result<RunResult, SimError> {
    let n = sessions.len();
    let iter = (0..n).map(move |i| Ok::<_, String>(sessions[i].clone()));
    Cluster::new(config, iter)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use kvroute_workload::Turn;

    #[test]
    fn rows_carry_the_rejections_by_cause() {
        let mut profile = Profile::load("vllm-cpu-tiny").unwrap();
        profile.limits.max_model_len = 64;
        let base = ClusterConfig::new(1, profile, PolicyConfig::by_name("round_robin").unwrap());
        let grid = Sweep::grid(
            base,
            "w",
            "poisson",
            &["round_robin".to_string()],
            &[1],
            &[1.0],
            &[0.0],
            &[0.0],
            &[0],
        );
        let turn = |len: u32| Turn {
            messages: Vec::new(),
            prompt_text: None,
            prompt_tokens: (1..=len).collect(),
            max_tokens: 4,
        };
        let sessions = Arc::new(vec![
            Session::single(0, Nanos::ZERO, turn(100)),
            Session::single(1, Nanos::from_secs(1), turn(10)),
        ]);
        let rows = grid.run(|_| sessions.clone(), || {}).unwrap();
        let (row, run) = &rows[0];
        assert_eq!((row.requests, row.failed, row.rejected), (2, 1, 1));
        assert_eq!((row.rejected_too_long, row.max_model_len), (1, 64));
        assert_eq!(row.arrival, "poisson");
        assert_eq!(row.rejections(), run.summary.rejected);
    }
}
