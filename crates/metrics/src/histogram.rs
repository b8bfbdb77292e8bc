//! A Prometheus classic histogram as numbers: [`Histogram`].
//!
//! Buckets are cumulative `(le, count)` pairs in ascending `le`, normally
//! ending with `le = +Inf` (whose count equals [`Histogram::count`]), exactly
//! as they appear on a `/metrics` page. Four operations matter for kvroute:
//!
//! * [`delta`](Histogram::delta): the observations made during a run, from a
//!   scrape before and one after. A counter reset (the engine restarted, so a
//!   count went down or the bucket layout changed) cannot be undone from two
//!   snapshots; the delta is then the after-value — everything since the
//!   restart — with [`reset`](Histogram::reset) set so reports can say so.
//! * [`merge`](Histogram::merge): totals across instances, bucket-wise.
//! * [`mean`](Histogram::mean): exact, `sum / count`.
//! * [`quantile`](Histogram::quantile): PromQL `histogram_quantile`, i.e.
//!   linear interpolation inside the bucket holding the rank, which is only
//!   as precise as the bucket layout (vLLM's TTFT buckets jump from 0.1 s to
//!   0.25 s, for instance). Prefer the mean when comparing runs.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Cumulative bucket counts plus sum and count of the observations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(le, cumulative count)` in ascending `le`; the last one is normally
    /// `le = +Inf`. In JSON each bucket is `[le, count]` with `+Inf` written as
    /// the string `"+Inf"` (JSON has no infinity).
    #[serde(with = "buckets_serde")]
    pub buckets: Vec<(f64, f64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
    /// True if this is a [`delta`](Histogram::delta) across a counter reset
    /// (it then holds only what happened since the reset), or a
    /// [`merge`](Histogram::merge) of such a delta.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Histogram {
    /// A histogram from cumulative buckets (sorted here by `le`), sum and count.
    pub fn new(mut buckets: Vec<(f64, f64)>, sum: f64, count: f64) -> Histogram {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram {
            buckets,
            sum,
            count,
            reset: false,
        }
    }

    /// An empty histogram with the given finite upper bounds (ascending) and a
    /// final `+Inf` bucket, ready for [`observe`](Histogram::observe).
    pub fn with_bounds(finite_bounds: &[f64]) -> Histogram {
        let mut buckets: Vec<(f64, f64)> = finite_bounds
            .iter()
            .filter(|b| b.is_finite())
            .map(|&b| (b, 0.0))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.dedup_by(|a, b| a.0 == b.0);
        buckets.push((f64::INFINITY, 0.0));
        Histogram::new(buckets, 0.0, 0.0)
    }

    /// Record one observation: every bucket with `le >= value` counts it.
    /// NaN is ignored (it belongs to no bucket).
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        for (le, c) in &mut self.buckets {
            if value <= *le {
                *c += 1.0;
            }
        }
        self.sum += value;
        self.count += 1.0;
    }

    /// True when nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.count == 0.0
    }

    /// The upper bounds, ascending (including `+Inf` if present).
    pub fn bounds(&self) -> impl Iterator<Item = f64> + '_ {
        self.buckets.iter().map(|b| b.0)
    }

    /// True if both have exactly the same bucket upper bounds.
    pub fn same_bounds(&self, other: &Histogram) -> bool {
        self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| a.0 == b.0)
    }

    /// The mean observation, exactly `sum / count`; `None` when `count` is 0.
    pub fn mean(&self) -> Option<f64> {
        if self.count > 0.0 {
            Some(self.sum / self.count)
        } else {
            None
        }
    }

    /// The cumulative count at `le`: the count of the largest own bound
    /// `<= le` (0 below the first bound). Exact at the histogram's own bounds.
    pub fn cumulative_at(&self, le: f64) -> f64 {
        let i = self.buckets.partition_point(|b| b.0 <= le);
        if i == 0 {
            0.0
        } else {
            self.buckets[i - 1].1
        }
    }

    /// [`quantile`](Histogram::quantile), capped by Markov's inequality: for
    /// non-negative observations at most a share `1 − q` can reach
    /// `mean / (1 − q)`, so the true `q`-quantile is no larger. Bucket
    /// interpolation alone puts the median of a thousand 0.1 ms queue waits
    /// at 150 ms when the first bucket ends at 0.3 s; the cap brings it to
    /// 0.2 ms. The estimate stays in the bucket holding the sample quantile
    /// (the cap is at least that quantile, so at least the bucket's lower
    /// edge). Latency histograms only: a negative sum disables the cap.
    pub fn quantile_bounded(&self, q: f64) -> Option<f64> {
        let est = self.quantile(q)?;
        match self.mean() {
            Some(m) if m >= 0.0 && (0.0..1.0).contains(&q) => Some(est.min(m / (1.0 - q))),
            _ => Some(est),
        }
    }

    /// The `q`-quantile (`0 <= q <= 1`) estimated from the buckets with the
    /// semantics of PromQL `histogram_quantile` (Prometheus
    /// `promql/quantile.go`, `bucketQuantile`):
    ///
    /// * buckets with equal `le` are added together; counts that differ from
    ///   the previous bucket by a relative 1e-12 or less are treated as equal,
    ///   and any decrease is flattened (monotonic envelope);
    /// * the rank is `q * count(+Inf bucket)`; the answer lies in the first
    ///   bucket whose cumulative count reaches the rank, interpolated linearly
    ///   between its lower bound (the previous `le`, or 0 for the first
    ///   bucket) and its `le`;
    /// * if that is the `+Inf` bucket, the largest finite `le` is returned;
    /// * if it is the first bucket and its `le <= 0`, that `le` is returned.
    ///
    /// Where Prometheus returns NaN this returns `None`: no observations, no
    /// `+Inf` bucket, fewer than two buckets, `q` NaN, and `q = 0` when the
    /// first bucket is empty (0/0). Like Prometheus, `q < 0` gives `-Inf` and
    /// `q > 1` gives `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q.is_nan() {
            return None;
        }
        if q < 0.0 {
            return Some(f64::NEG_INFINITY);
        }
        if q > 1.0 {
            return Some(f64::INFINITY);
        }
        let mut b = self.buckets.clone();
        b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(Ordering::Equal));
        match b.last() {
            Some(last) if last.0 == f64::INFINITY => {}
            _ => return None,
        }
        coalesce(&mut b);
        correct_precision_errors(&mut b, 1e-12);
        ensure_monotonic(&mut b);
        if b.len() < 2 {
            return None;
        }
        let n = b.len();
        let observations = b[n - 1].1;
        if observations == 0.0 || observations.is_nan() {
            return None;
        }
        let mut rank = q * observations;
        // First index in 0..n-1 whose count reaches the rank (Go's sort.Search).
        let i = b[..n - 1].partition_point(|x| {
            !matches!(
                x.1.partial_cmp(&rank),
                Some(Ordering::Greater | Ordering::Equal)
            )
        });
        if i == n - 1 {
            return Some(b[n - 2].0);
        }
        if i == 0 && b[0].0 <= 0.0 {
            return Some(b[0].0);
        }
        let end = b[i].0;
        let mut count = b[i].1;
        let mut start = 0.0;
        if i > 0 {
            start = b[i - 1].0;
            count -= b[i - 1].1;
            rank -= b[i - 1].1;
        }
        let v = start + (end - start) * (rank / count);
        if v.is_nan() {
            None
        } else {
            Some(v)
        }
    }

    /// True if `self` cannot have grown from `before` without a reset: the
    /// count or any bucket went down, or the bucket layout changed. An empty
    /// `before` (nothing observed, e.g. the metric did not exist yet) is never
    /// a reset.
    pub fn is_reset_since(&self, before: &Histogram) -> bool {
        if before.count == 0.0 && before.sum == 0.0 && before.buckets.iter().all(|b| b.1 == 0.0) {
            return false;
        }
        if !self.same_bounds(before) || self.count < before.count {
            return true;
        }
        self.buckets
            .iter()
            .zip(&before.buckets)
            .any(|(a, b)| a.1 < b.1)
    }

    /// The observations made between `before` and `self` (a later snapshot of
    /// the same series): bucket-wise differences of the cumulative counts, and
    /// of sum and count.
    ///
    /// On a reset ([`is_reset_since`](Histogram::is_reset_since)) the true
    /// delta is unknowable; the result is `self` (everything since the reset)
    /// with [`reset`](Histogram::reset) set. If `before` is empty the result is
    /// `self` unflagged.
    pub fn delta(&self, before: &Histogram) -> Histogram {
        if self.is_reset_since(before) {
            return self.since_reset();
        }
        if before.buckets.is_empty() || !self.same_bounds(before) {
            // `before` is empty (see is_reset_since): nothing to subtract.
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|(a, b)| (a.0, a.1 - b.1))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
            reset: self.reset,
        }
    }

    /// `self` flagged as a post-reset value: what [`delta`](Histogram::delta)
    /// returns when it detects a reset, for callers that detect one by other
    /// means (e.g. a changed `_created` timestamp).
    pub fn since_reset(&self) -> Histogram {
        Histogram {
            reset: true,
            ..self.clone()
        }
    }

    /// Add `other`'s observations (e.g. another instance's) to `self`.
    ///
    /// With identical bucket layouts this is exact. Otherwise the result has
    /// the union of both layouts, and at each bound each side contributes the
    /// cumulative count of its largest own bound not above it
    /// ([`cumulative_at`](Histogram::cumulative_at)) — exact at the bounds
    /// both share, an undercount in between. vLLM uses fixed layouts per
    /// metric (token-count histograms depend on `max_model_len`), so the
    /// exact path is the normal one.
    pub fn merge(&mut self, other: &Histogram) {
        let reset = self.reset || other.reset;
        if other.buckets.is_empty() && other.count == 0.0 {
            self.sum += other.sum;
            self.reset = reset;
            return;
        }
        if self.buckets.is_empty() && self.count == 0.0 {
            let sum = self.sum;
            *self = other.clone();
            self.sum += sum;
            self.reset = reset;
            return;
        }
        if self.same_bounds(other) {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
        } else {
            let mut bounds: Vec<f64> = self.bounds().chain(other.bounds()).collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            self.buckets = bounds
                .into_iter()
                .map(|le| (le, self.cumulative_at(le) + other.cumulative_at(le)))
                .collect();
        }
        self.sum += other.sum;
        self.count += other.count;
        self.reset = reset;
    }
}

/// Merge buckets with the same upper bound (input sorted).
fn coalesce(b: &mut Vec<(f64, f64)>) {
    b.dedup_by(|next, kept| {
        if next.0 == kept.0 {
            kept.1 += next.1;
            true
        } else {
            false
        }
    });
}

/// Treat relative differences up to `tolerance` as float noise (Prometheus
/// `correctPrecisionErrors`).
fn correct_precision_errors(b: &mut [(f64, f64)], tolerance: f64) {
    let Some(first) = b.first() else { return };
    let mut prev = first.1;
    for x in b.iter_mut().skip(1) {
        let delta = (x.1 - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / x.1 <= tolerance {
            x.1 = prev;
        } else {
            prev = x.1;
        }
    }
}

/// Flatten decreases (Prometheus `ensureMonotonic`).
fn ensure_monotonic(b: &mut [(f64, f64)]) {
    let Some(first) = b.first() else { return };
    let mut max = first.1;
    for x in b.iter_mut().skip(1) {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
}

/// JSON-safe bucket encoding: `[[0.5, 3.0], ["+Inf", 4.0]]`.
mod buckets_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Le {
        Num(f64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(b: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(Le, f64)> = b
            .iter()
            .map(|&(le, c)| {
                let le = if le.is_finite() {
                    Le::Num(le)
                } else if le.is_nan() {
                    Le::Text("NaN".to_string())
                } else if le > 0.0 {
                    Le::Text("+Inf".to_string())
                } else {
                    Le::Text("-Inf".to_string())
                };
                (le, c)
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let v: Vec<(Le, f64)> = Vec::deserialize(d)?;
        v.into_iter()
            .map(|(le, c)| {
                let le = match le {
                    Le::Num(x) => x,
                    Le::Text(t) => match t.as_str() {
                        "+Inf" | "Inf" | "inf" | "+inf" => f64::INFINITY,
                        "-Inf" | "-inf" => f64::NEG_INFINITY,
                        "NaN" | "nan" => f64::NAN,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "bucket bound {other:?} is neither a number nor +Inf"
                            )))
                        }
                    },
                };
                Ok((le, c))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    /// 10 observations: 2 in (0,1], 3 in (1,2], 4 in (2,4], 1 above 4.
    fn h() -> Histogram {
        Histogram::new(
            vec![(1.0, 2.0), (2.0, 5.0), (4.0, 9.0), (INF, 10.0)],
            25.0,
            10.0,
        )
    }

    #[test]
    fn mean_is_exact_sum_over_count() {
        assert_eq!(h().mean(), Some(2.5));
        assert_eq!(Histogram::with_bounds(&[1.0]).mean(), None);
    }

    #[test]
    fn bounded_quantile_is_capped_by_the_mean() {
        let mut h = Histogram::with_bounds(&[0.3, 0.5, 1.0]);
        for _ in 0..1000 {
            h.observe(0.0001);
        }
        assert_eq!(h.quantile(0.5), Some(0.15));
        let p50 = h.quantile_bounded(0.5).unwrap();
        assert!((p50 - 0.0002).abs() < 1e-12, "{p50}");
        // Where the buckets say less, they win.
        let mut h = Histogram::with_bounds(&[0.1, 1.0, 10.0]);
        for v in [0.05, 0.05, 0.05, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.quantile_bounded(0.5), h.quantile(0.5));
    }

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        let h = h();
        // rank 5 → bucket (1,2] reaches exactly 5: its upper end.
        assert_eq!(h.quantile(0.5), Some(2.0));
        // rank 1 → first bucket (0,1] holding 2: 0 + 1 * 1/2.
        assert_eq!(h.quantile(0.1), Some(0.5));
        // rank 7 → bucket (2,4], 2 of its 4: 2 + 2 * 2/4.
        assert_eq!(h.quantile(0.7), Some(3.0));
        // rank 3 → (1,2], 1 of 3.
        let q = h.quantile(0.3).unwrap();
        assert!((q - (1.0 + 1.0 / 3.0)).abs() < 1e-12, "{q}");
    }

    #[test]
    fn quantile_in_the_inf_bucket_is_the_largest_finite_bound() {
        assert_eq!(h().quantile(0.95), Some(4.0));
        assert_eq!(h().quantile(1.0), Some(4.0));
    }

    #[test]
    fn quantile_special_cases_follow_prometheus() {
        let h = h();
        assert_eq!(h.quantile(-0.1), Some(f64::NEG_INFINITY));
        assert_eq!(h.quantile(1.1), Some(INF));
        assert_eq!(h.quantile(f64::NAN), None);
        // No observations.
        assert_eq!(Histogram::with_bounds(&[1.0, 2.0]).quantile(0.5), None);
        // No +Inf bucket.
        let no_inf = Histogram::new(vec![(1.0, 1.0), (2.0, 2.0)], 2.0, 2.0);
        assert_eq!(no_inf.quantile(0.5), None);
        // Only the +Inf bucket.
        let only_inf = Histogram::new(vec![(INF, 3.0)], 3.0, 3.0);
        assert_eq!(only_inf.quantile(0.5), None);
        // First bucket with le <= 0 returns that le.
        let neg = Histogram::new(vec![(-1.0, 5.0), (1.0, 6.0), (INF, 6.0)], 0.0, 6.0);
        assert_eq!(neg.quantile(0.5), Some(-1.0));
        // q = 0 with an empty first bucket is 0/0 in Prometheus.
        let empty_first = Histogram::new(vec![(1.0, 0.0), (2.0, 4.0), (INF, 4.0)], 6.0, 4.0);
        assert_eq!(empty_first.quantile(0.0), None);
        // q = 0 with a non-empty first bucket is its lower edge, 0.
        assert_eq!(h.quantile(0.0), Some(0.0));
    }

    #[test]
    fn quantile_flattens_non_monotonic_and_coalesces_duplicates() {
        // Bucket 2.0 dips below 1.0's count: the envelope makes it 4.
        let h = Histogram::new(
            vec![(1.0, 4.0), (2.0, 3.0), (4.0, 8.0), (INF, 8.0)],
            0.0,
            8.0,
        );
        // rank 4 → first bucket reaches 4 exactly.
        assert_eq!(h.quantile(0.5), Some(1.0));
        // rank 6 → (2,4] holds 4 (after flattening), 2 of them: 2 + 2 * 2/4.
        assert_eq!(h.quantile(0.75), Some(3.0));
        // Two series' buckets for the same le are added.
        let dup = Histogram::new(
            vec![(1.0, 1.0), (1.0, 1.0), (INF, 2.0), (INF, 2.0)],
            0.0,
            4.0,
        );
        assert_eq!(dup.quantile(0.25), Some(0.5));
    }

    #[test]
    fn observe_counts_cumulatively() {
        let mut h = Histogram::with_bounds(&[2.0, 1.0]);
        for v in [0.5, 1.0, 1.5, 7.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.buckets, vec![(1.0, 2.0), (2.0, 3.0), (INF, 4.0)]);
        assert_eq!(h.count, 4.0);
        assert_eq!(h.sum, 10.0);
    }

    #[test]
    fn delta_subtracts_bucketwise() {
        let before = Histogram::new(
            vec![(1.0, 1.0), (2.0, 2.0), (4.0, 2.0), (INF, 2.0)],
            2.0,
            2.0,
        );
        let d = h().delta(&before);
        assert_eq!(
            d.buckets,
            vec![(1.0, 1.0), (2.0, 3.0), (4.0, 7.0), (INF, 8.0)]
        );
        assert_eq!((d.sum, d.count), (23.0, 8.0));
        assert!(!d.reset);
    }

    #[test]
    fn delta_across_a_reset_is_the_after_value_flagged() {
        // The engine restarted: fewer observations than before.
        let before = Histogram::new(
            vec![(1.0, 5.0), (2.0, 9.0), (4.0, 20.0), (INF, 30.0)],
            90.0,
            30.0,
        );
        let d = h().delta(&before);
        assert!(d.reset);
        assert_eq!(d.buckets, h().buckets);
        assert_eq!((d.sum, d.count), (25.0, 10.0));
        // A changed layout is a reset too.
        let other_layout = Histogram::new(vec![(1.0, 1.0), (INF, 1.0)], 0.5, 1.0);
        assert!(h().delta(&other_layout).reset);
        // A single bucket going down is enough.
        let mut b = h();
        b.buckets[0].1 = 3.0;
        b.count = 9.0;
        assert!(h().is_reset_since(&b));
    }

    #[test]
    fn delta_from_nothing_is_the_after_value_unflagged() {
        let d = h().delta(&Histogram::default());
        assert_eq!(d, h());
        let d = h().delta(&Histogram::with_bounds(&[0.1]));
        assert_eq!(d, h());
    }

    #[test]
    fn merge_adds_same_layouts_exactly() {
        let mut a = h();
        a.merge(&h());
        assert_eq!(
            a.buckets,
            vec![(1.0, 4.0), (2.0, 10.0), (4.0, 18.0), (INF, 20.0)]
        );
        assert_eq!((a.sum, a.count, a.reset), (50.0, 20.0, false));
        let mut e = Histogram::default();
        e.merge(&h());
        assert_eq!(e, h());
        let mut f = h();
        f.merge(&Histogram::default());
        assert_eq!(f, h());
        let mut g = h();
        g.merge(&h().since_reset());
        assert!(g.reset);
    }

    #[test]
    fn merge_of_different_layouts_uses_the_union_of_bounds() {
        let mut a = Histogram::new(vec![(1.0, 1.0), (INF, 2.0)], 3.0, 2.0);
        let b = Histogram::new(vec![(2.0, 1.0), (INF, 1.0)], 1.5, 1.0);
        a.merge(&b);
        assert_eq!(a.buckets, vec![(1.0, 1.0), (2.0, 2.0), (INF, 3.0)]);
        assert_eq!((a.sum, a.count), (4.5, 3.0));
    }

    #[test]
    fn json_round_trip_keeps_inf() {
        let json = serde_json::to_string(&h()).unwrap();
        assert!(json.contains(r#"["+Inf",10.0]"#), "{json}");
        assert!(!json.contains("reset"), "{json}");
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h());
        let flagged: Histogram =
            serde_json::from_str(&serde_json::to_string(&h().since_reset()).unwrap()).unwrap();
        assert!(flagged.reset);
        assert!(
            serde_json::from_str::<Histogram>(r#"{"buckets":[["x",1.0]],"sum":0,"count":0}"#)
                .is_err()
        );
    }
}
