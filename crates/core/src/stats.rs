//! [`Stats`]: count, mean, spread and nearest-rank percentiles of a sample —
//! one definition for the load generator's client timers, the simulator's
//! summaries and the studies. An empty sample has no mean or percentile
//! (`None`, written as JSON `null`), never a NaN standing in for one.

use serde::{Deserialize, Serialize};

/// Count, mean and percentiles of a sample (seconds for latencies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Samples (non-finite values are dropped).
    pub n: usize,
    /// Mean; `None` without samples.
    pub mean: Option<f64>,
    /// Population standard deviation (numpy's `std`); `None` without samples.
    #[serde(default)]
    pub std: Option<f64>,
    /// Median (nearest rank).
    pub p50: Option<f64>,
    /// 90th percentile (nearest rank).
    pub p90: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
}

impl Stats {
    /// From samples; NaN and infinities are ignored.
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Stats {
        let mut xs: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
        if xs.is_empty() {
            return Stats::default();
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let rank = |p: f64| xs[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        Stats {
            n,
            mean: Some(mean),
            std: Some(var.sqrt()),
            p50: Some(rank(0.5)),
            p90: Some(rank(0.9)),
            p99: Some(rank(0.99)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::of((1..=100).map(f64::from));
        assert_eq!(
            (s.n, s.mean, s.p50, s.p90, s.p99),
            (100, Some(50.5), Some(50.0), Some(90.0), Some(99.0))
        );
        // numpy.std(range(1, 101)) = 28.86607004772212
        assert!((s.std.unwrap() - 28.866_070_047_722_12).abs() < 1e-9);
        let one = Stats::of([3.0, f64::NAN]);
        assert_eq!((one.n, one.p50, one.p99), (1, Some(3.0), Some(3.0)));
        assert_eq!(Stats::of([]), Stats::default());
        // Unsorted input, small n: p90 of 4 values is the 4th (ceil(3.6)).
        let s = Stats::of([4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.p50, s.p90), (Some(2.0), Some(4.0)));
    }
}
