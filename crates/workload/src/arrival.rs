//! Open-loop arrival processes: [`ArrivalSpec`], [`Arrivals`], [`WithArrivals`].
//!
//! An arrival process (re)assigns each session's `arrival`, the time its first
//! turn is sent, in order of the sessions:
//!
//! * `poisson { rate }` — exponential gaps with mean `1/rate` seconds;
//! * `gamma { rate, cv }` — Gamma gaps with mean `1/rate` and coefficient of
//!   variation `cv` (shape `1/cv²`): `cv > 1` is bursty, `cv = 1` is Poisson,
//!   `cv < 1` is more regular than Poisson and `cv = 0` is a constant rate;
//! * `trace { time_scale }` — keep the workload's own arrivals (Mooncake and
//!   Azure timestamps) multiplied by `time_scale` (`0.5` replays twice as
//!   fast). Synthetic workloads (ShareGPT, RAG) have every arrival at zero, so
//!   under `trace` they arrive all at once — which is what a closed-loop
//!   driver, pacing sessions by its concurrency cap and `think_time`, wants.
//!
//! The first session of `poisson`/`gamma` arrives at time zero; later ones
//! after one gap each. Draws are seeded, so a (spec, seed) pair always gives
//! the same times. [`Arrivals::for_workload`] is the generator
//! [`build_workload`](crate::build_workload) times a workload of a given seed
//! with, so sessions built once and re-timed through it arrive exactly as if
//! they had been built with that arrival process (what `sim sweep` does for
//! each of its rates, and `sim run` for its one).

use crate::error::WorkloadError;
use crate::request::Session;
use crate::rng::{stream, WorkloadRng};
use kvroute_core::{mix64, Nanos};
use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};

/// An arrival process, as written in a config:
/// `{kind = "poisson", rate = 4.0}`, `{kind = "gamma", rate = 4.0, cv = 3.0}`,
/// `{kind = "trace", time_scale = 1.0}`. Rates are sessions per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArrivalSpec {
    /// Exponential inter-arrival gaps.
    Poisson {
        /// Sessions per second (> 0).
        rate: f64,
    },
    /// Gamma inter-arrival gaps.
    Gamma {
        /// Sessions per second (> 0).
        rate: f64,
        /// Coefficient of variation of the gaps (≥ 0).
        cv: f64,
    },
    /// The workload's own arrival times, scaled.
    Trace {
        /// Multiplier of the recorded times (≥ 0). Default 1.
        #[serde(default = "one")]
        time_scale: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl Default for ArrivalSpec {
    /// `trace { time_scale = 1 }`: keep the workload's arrivals.
    fn default() -> Self {
        ArrivalSpec::Trace { time_scale: 1.0 }
    }
}

#[derive(Debug, Clone)]
enum Gap {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
    Constant(f64),
}

/// A seeded arrival-time generator for one [`ArrivalSpec`].
#[derive(Debug, Clone)]
pub struct Arrivals {
    gap: Option<Gap>,
    time_scale: f64,
    rng: WorkloadRng,
    /// Seconds since the start of the run of the last arrival (`None` before the first).
    last: Option<f64>,
}

impl Arrivals {
    /// A generator for `spec`, seeded with `seed`; rejects out-of-range settings.
    pub fn new(spec: &ArrivalSpec, seed: u64) -> Result<Arrivals, WorkloadError> {
        let positive_rate = |rate: f64| {
            if rate > 0.0 && rate.is_finite() {
                Ok(rate)
            } else {
                Err(WorkloadError::setting(
                    "rate",
                    format!("must be a positive number of sessions per second, got {rate}"),
                ))
            }
        };
        let (gap, time_scale) = match *spec {
            ArrivalSpec::Poisson { rate } => {
                let rate = positive_rate(rate)?;
                let exp =
                    Exp::new(rate).map_err(|e| WorkloadError::setting("rate", e.to_string()))?;
                (Some(Gap::Exp(exp)), 1.0)
            }
            ArrivalSpec::Gamma { rate, cv } => {
                let rate = positive_rate(rate)?;
                if !(cv >= 0.0 && cv.is_finite()) {
                    return Err(WorkloadError::setting(
                        "cv",
                        format!("must be ≥ 0, got {cv}"),
                    ));
                }
                let gap = if cv == 0.0 {
                    Gap::Constant(1.0 / rate)
                } else {
                    let shape = 1.0 / (cv * cv);
                    let scale = cv * cv / rate;
                    Gap::Gamma(Gamma::new(shape, scale).map_err(|e| {
                        WorkloadError::setting("cv", format!("{e} (rate {rate}, cv {cv})"))
                    })?)
                };
                (Some(gap), 1.0)
            }
            ArrivalSpec::Trace { time_scale } => {
                if !(time_scale >= 0.0 && time_scale.is_finite()) {
                    return Err(WorkloadError::setting(
                        "time_scale",
                        format!("must be ≥ 0, got {time_scale}"),
                    ));
                }
                (None, time_scale)
            }
        };
        Ok(Arrivals {
            gap,
            time_scale,
            rng: WorkloadRng::new(seed, stream::ARRIVALS),
            last: None,
        })
    }

    /// The generator that [`build_workload`](crate::build_workload) assigns
    /// `spec`'s arrivals with for a workload built with `seed` (the
    /// workload's seed, from which the arrival stream is derived).
    pub fn for_workload(spec: &ArrivalSpec, seed: u64) -> Result<Arrivals, WorkloadError> {
        Arrivals::new(spec, workload_arrival_seed(seed))
    }

    /// The arrival time of the next session, whose workload-assigned arrival
    /// is `recorded` (used by `trace` only).
    pub fn next_arrival(&mut self, recorded: Nanos) -> Nanos {
        let Some(gap) = &self.gap else {
            return Nanos::from_secs_f64(recorded.as_secs_f64() * self.time_scale);
        };
        let t = match self.last {
            None => 0.0,
            Some(last) => {
                last + match gap {
                    Gap::Exp(d) => d.sample(&mut self.rng),
                    Gap::Gamma(d) => d.sample(&mut self.rng),
                    Gap::Constant(c) => *c,
                }
            }
        };
        self.last = Some(t);
        Nanos::from_secs_f64(t)
    }
}

/// The seed of a workload's arrival stream, from the workload's seed.
pub(crate) fn workload_arrival_seed(seed: u64) -> u64 {
    mix64(seed ^ mix64(stream::ARRIVALS))
}

/// Sessions from `inner` with arrivals assigned by an [`Arrivals`] process.
/// Errors pass through untouched and consume no arrival.
#[derive(Debug, Clone)]
pub struct WithArrivals<I> {
    inner: I,
    arrivals: Arrivals,
}

impl<I> WithArrivals<I> {
    /// Wrap `inner`.
    pub fn new(inner: I, spec: &ArrivalSpec, seed: u64) -> Result<WithArrivals<I>, WorkloadError> {
        Ok(WithArrivals {
            inner,
            arrivals: Arrivals::new(spec, seed)?,
        })
    }

    /// The wrapped iterator.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: Iterator<Item = Result<Session, WorkloadError>>> Iterator for WithArrivals<I> {
    type Item = Result<Session, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next()?.map(|mut s| {
            s.arrival = self.arrivals.next_arrival(s.arrival);
            s
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// Rescale the sessions' arrival times so they arrive at exactly `rate`
/// sessions per second on average: the first stays at zero, the last moves
/// to `(n − 1) / rate`, the gaps keep their proportions. `vllm bench serve`
/// rescales its Poisson/gamma draws this way (so its runs offer the same
/// mean rate whatever the seed); loadgen's `--normalize-arrivals` does it to
/// compare with it. No-op with fewer than two sessions, a non-positive rate,
/// or sessions all arriving at once.
pub fn normalize_rate(sessions: &mut [Session], rate: f64) {
    let last = sessions
        .iter()
        .map(|s| s.arrival)
        .max()
        .unwrap_or(Nanos::ZERO);
    if sessions.len() < 2 || !(rate > 0.0 && rate.is_finite()) || last == Nanos::ZERO {
        return;
    }
    let factor = (sessions.len() - 1) as f64 / rate / last.as_secs_f64();
    for s in sessions {
        s.arrival = Nanos::from_secs_f64(s.arrival.as_secs_f64() * factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean and coefficient of variation of `n` gaps.
    fn gap_stats(spec: &ArrivalSpec, n: usize, seed: u64) -> (f64, f64) {
        let mut a = Arrivals::new(spec, seed).unwrap();
        let times: Vec<f64> = (0..=n)
            .map(|_| a.next_arrival(Nanos::ZERO).as_secs_f64())
            .collect();
        assert_eq!(times[0], 0.0);
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn poisson_has_mean_one_over_rate_and_cv_one() {
        let (mean, cv) = gap_stats(&ArrivalSpec::Poisson { rate: 4.0 }, 20_000, 1);
        assert!((mean - 0.25).abs() < 0.01, "{mean}");
        assert!((cv - 1.0).abs() < 0.05, "{cv}");
    }

    #[test]
    fn gamma_hits_its_cv() {
        for (target, tol) in [(0.5, 0.03), (1.0, 0.05), (2.0, 0.15), (4.0, 0.5)] {
            let (mean, cv) = gap_stats(
                &ArrivalSpec::Gamma {
                    rate: 10.0,
                    cv: target,
                },
                40_000,
                2,
            );
            assert!(
                (mean - 0.1).abs() < 0.1 * 0.05 * target.max(1.0),
                "cv {target}: mean {mean}"
            );
            assert!((cv - target).abs() < tol, "cv {target}: got {cv}");
        }
        let (mean, cv) = gap_stats(&ArrivalSpec::Gamma { rate: 2.0, cv: 0.0 }, 10, 0);
        assert!((mean - 0.5).abs() < 1e-9 && cv < 1e-6);
    }

    #[test]
    fn normalized_arrivals_keep_their_shape_at_the_exact_rate() {
        let mut a = Arrivals::new(&ArrivalSpec::Poisson { rate: 8.0 }, 3).unwrap();
        let mut sessions: Vec<Session> = (0..200)
            .map(|i| Session {
                id: i,
                arrival: a.next_arrival(Nanos::ZERO),
                turns: Vec::new(),
                think_time: Nanos::ZERO,
            })
            .collect();
        let before: Vec<f64> = sessions.iter().map(|s| s.arrival.as_secs_f64()).collect();
        normalize_rate(&mut sessions, 8.0);
        let after: Vec<f64> = sessions.iter().map(|s| s.arrival.as_secs_f64()).collect();
        assert_eq!(after[0], 0.0);
        assert!((after[199] - 199.0 / 8.0).abs() < 1e-6, "{}", after[199]);
        let factor = after[199] / before[199];
        for (b, a) in before.iter().zip(&after) {
            assert!((b * factor - a).abs() < 1e-6, "proportions kept");
        }
        // Nothing to scale: all at once, or one session.
        let mut once = sessions.clone();
        once.iter_mut().for_each(|s| s.arrival = Nanos::ZERO);
        normalize_rate(&mut once, 8.0);
        assert!(once.iter().all(|s| s.arrival == Nanos::ZERO));
        normalize_rate(&mut sessions[..1], 8.0);
    }

    #[test]
    fn trace_scales_recorded_times() {
        let mut a = Arrivals::new(&ArrivalSpec::Trace { time_scale: 0.5 }, 9).unwrap();
        assert_eq!(
            a.next_arrival(Nanos::from_secs(3)),
            Nanos::from_millis(1500)
        );
        assert_eq!(a.next_arrival(Nanos::from_secs(1)), Nanos::from_millis(500));
    }

    #[test]
    fn seeded_and_validated() {
        let spec = ArrivalSpec::Gamma { rate: 3.0, cv: 2.0 };
        let draw = |seed| {
            let mut a = Arrivals::new(&spec, seed).unwrap();
            (0..5)
                .map(|_| a.next_arrival(Nanos::ZERO))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        for (bad, setting) in [
            (ArrivalSpec::Poisson { rate: 0.0 }, "rate"),
            (ArrivalSpec::Poisson { rate: f64::NAN }, "rate"),
            (
                ArrivalSpec::Gamma {
                    rate: 1.0,
                    cv: -1.0,
                },
                "cv",
            ),
            (
                ArrivalSpec::Trace {
                    time_scale: f64::INFINITY,
                },
                "time_scale",
            ),
        ] {
            match Arrivals::new(&bad, 0) {
                Err(WorkloadError::InvalidSetting { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn with_arrivals_assigns_in_order_and_passes_errors() {
        let turn = crate::request::Turn {
            messages: Vec::new(),
            prompt_text: None,
            prompt_tokens: vec![1],
            max_tokens: 1,
        };
        let items = vec![
            Ok(Session::single(0, Nanos::ZERO, turn.clone())),
            Err(WorkloadError::setting("x", "boom")),
            Ok(Session::single(1, Nanos::ZERO, turn)),
        ];
        let spec = ArrivalSpec::Gamma { rate: 1.0, cv: 0.0 };
        let out: Vec<_> = WithArrivals::new(items.into_iter(), &spec, 0)
            .unwrap()
            .collect();
        assert_eq!(out[0].as_ref().unwrap().arrival, Nanos::ZERO);
        assert!(out[1].is_err());
        assert_eq!(out[2].as_ref().unwrap().arrival, Nanos::from_secs(1));
    }

    #[test]
    fn spec_from_json() {
        let s: ArrivalSpec =
            serde_json::from_str(r#"{"kind": "gamma", "rate": 2, "cv": 3}"#).unwrap();
        assert_eq!(s, ArrivalSpec::Gamma { rate: 2.0, cv: 3.0 });
        let s: ArrivalSpec = serde_json::from_str(r#"{"kind": "trace"}"#).unwrap();
        assert_eq!(s, ArrivalSpec::default());
        assert!(serde_json::from_str::<ArrivalSpec>(
            r#"{"kind": "poisson", "rate": 1, "burst": 2}"#
        )
        .is_err());
    }
}
