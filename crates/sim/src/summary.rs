//! Per-request records of a run and the summary computed from them: latency
//! percentiles, throughput, goodput under an SLO, cache hit rate, and load
//! imbalance.

use serde::{Deserialize, Serialize};

/// One request's outcome (a row of the per-request CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub id: u64,
    /// Session id.
    pub session: u64,
    /// Turn within the session (0-based).
    pub turn: u32,
    /// Instance that served it.
    pub instance: u32,
    /// Arrival at the router, seconds.
    pub arrival: f64,
    /// First token, seconds (NaN if it failed).
    pub first_token: f64,
    /// Last token, seconds (NaN if it failed).
    pub finish: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens the engine served from its prefix cache.
    pub cached_tokens: u32,
    /// Prompt tokens the router's directory predicted cached.
    pub predicted_cached_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Time from arrival to first scheduling, seconds.
    pub queue_time: f64,
    /// Preemptions suffered.
    pub preemptions: u32,
    /// Empty if it succeeded, else why it failed.
    pub error: String,
}

impl RequestRecord {
    /// Time to first token, seconds.
    pub fn ttft(&self) -> f64 {
        self.first_token - self.arrival
    }
    /// Time per output token after the first, seconds (None for one-token outputs).
    pub fn tpot(&self) -> Option<f64> {
        (self.output_tokens > 1)
            .then(|| (self.finish - self.first_token) / f64::from(self.output_tokens - 1))
    }
    /// End-to-end latency, seconds.
    pub fn e2e(&self) -> f64 {
        self.finish - self.arrival
    }
    /// Whether it finished.
    pub fn ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// Mean and percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Stats {
    /// From samples (NaN when empty). Percentiles are nearest-rank.
    pub fn of(mut xs: Vec<f64>) -> Stats {
        xs.retain(|x| x.is_finite());
        if xs.is_empty() {
            return Stats {
                n: 0,
                mean: f64::NAN,
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
            };
        }
        xs.sort_by(f64::total_cmp);
        let q = |p: f64| xs[(((xs.len() as f64) * p).ceil() as usize).clamp(1, xs.len()) - 1];
        Stats {
            n: xs.len(),
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
        }
    }
}

/// A latency objective for goodput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// TTFT at most, seconds.
    pub ttft_secs: f64,
    /// TPOT at most, seconds.
    pub tpot_secs: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            ttft_secs: 2.0,
            tpot_secs: 0.2,
        }
    }
}

/// The summary of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests measured (after warm-up).
    pub requests: usize,
    /// Of those, failed.
    pub failed: usize,
    /// TTFT, seconds.
    pub ttft: Stats,
    /// TPOT, seconds.
    pub tpot: Stats,
    /// End-to-end latency, seconds.
    pub e2e: Stats,
    /// Queueing before first scheduling, seconds.
    pub queue: Stats,
    /// Completed requests per second over the measured window.
    pub throughput_rps: f64,
    /// Output tokens per second over the measured window.
    pub output_tps: f64,
    /// Requests per second that met the SLO.
    pub goodput_rps: f64,
    /// Σ cached prompt tokens / Σ prompt tokens (engine-side).
    pub cache_hit_rate: f64,
    /// Σ predicted cached tokens / Σ prompt tokens (router-side).
    pub predicted_hit_rate: f64,
    /// Coefficient of variation of per-instance busy time.
    pub busy_cv: f64,
    /// Coefficient of variation of per-instance request counts.
    pub requests_cv: f64,
    /// Preemptions.
    pub preemptions: u64,
}

/// Coefficient of variation (std / mean); 0 for an empty or zero sample.
pub fn cv(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    var.sqrt() / mean
}

impl Summary {
    /// Summarise `records` (all of them: filter warm-up first), given each
    /// instance's busy time in seconds and the run's measured window.
    pub fn of(records: &[RequestRecord], busy_secs: &[f64], window_secs: f64, slo: Slo) -> Summary {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
        let window = window_secs.max(1e-9);
        let prompt: u64 = ok.iter().map(|r| u64::from(r.prompt_tokens)).sum();
        let cached: u64 = ok.iter().map(|r| u64::from(r.cached_tokens)).sum();
        let predicted: u64 = ok
            .iter()
            .map(|r| u64::from(r.predicted_cached_tokens))
            .sum();
        let good = ok
            .iter()
            .filter(|r| r.ttft() <= slo.ttft_secs && r.tpot().is_none_or(|t| t <= slo.tpot_secs))
            .count();
        let mut per_instance = vec![0f64; busy_secs.len()];
        for r in records {
            if let Some(c) = per_instance.get_mut(r.instance as usize) {
                *c += 1.0;
            }
        }
        let ratio = |a: u64| {
            if prompt == 0 {
                0.0
            } else {
                a as f64 / prompt as f64
            }
        };
        Summary {
            requests: records.len(),
            failed: records.len() - ok.len(),
            ttft: Stats::of(ok.iter().map(|r| r.ttft()).collect()),
            tpot: Stats::of(ok.iter().filter_map(|r| r.tpot()).collect()),
            e2e: Stats::of(ok.iter().map(|r| r.e2e()).collect()),
            queue: Stats::of(ok.iter().map(|r| r.queue_time).collect()),
            throughput_rps: ok.len() as f64 / window,
            output_tps: ok.iter().map(|r| f64::from(r.output_tokens)).sum::<f64>() / window,
            goodput_rps: good as f64 / window,
            cache_hit_rate: ratio(cached),
            predicted_hit_rate: ratio(predicted),
            busy_cv: cv(busy_secs),
            requests_cv: cv(&per_instance),
            preemptions: records.iter().map(|r| u64::from(r.preemptions)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::of((1..=100).map(f64::from).collect());
        assert_eq!((s.p50, s.p90, s.p99, s.mean), (50.0, 90.0, 99.0, 50.5));
        assert!(Stats::of(vec![]).mean.is_nan());
        assert_eq!(Stats::of(vec![3.0]).p99, 3.0);
    }

    #[test]
    fn cv_of_equal_and_skewed() {
        assert_eq!(cv(&[2.0, 2.0]), 0.0);
        assert!((cv(&[0.0, 2.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cv(&[]), 0.0);
    }
}
