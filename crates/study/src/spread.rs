//! Seeds and noise: every point of the studies is run with several seeds
//! (arrivals and policy randomness); a [`Spread`] is their median and range,
//! and [`compare`] says whether two policies differ beyond the noise.
//!
//! # The noise rule
//!
//! Runs with the same seed see the same arrivals, so two policies are
//! compared seed by seed: the ratios `a_s / b_s`. The difference is outside
//! the noise when **every** seed's ratio lies beyond `1 ± tol` on the same
//! side (`tol` is the capacity search's tolerance, 5 %, for capacities); the
//! chance of that under no real difference is `2 / 2^seeds` (25 % with 3
//! seeds, a weak test), so a verdict that rests on a difference also gives
//! the ratio's range.

use std::fmt;

/// Median and range of one quantity over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest.
    pub lo: f64,
    /// Largest.
    pub hi: f64,
    /// Values (non-finite ones are left out).
    pub n: usize,
}

impl Spread {
    /// Median and range of the finite values of `xs` (NaN when none).
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
                n: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            lo: v[0],
            hi: v[n - 1],
            n,
        }
    }

    /// Whether there is a value.
    pub fn is_finite(&self) -> bool {
        self.median.is_finite()
    }
}

impl fmt::Display for Spread {
    /// `1.84 [1.71–1.93]` with the requested precision (default 2); `—`
    /// without values; only the value with a single seed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(2);
        if !self.is_finite() {
            return write!(f, "—");
        }
        if self.n == 1 || self.lo == self.hi {
            return write!(f, "{:.p$}", self.median);
        }
        write!(f, "{:.p$} [{:.p$}–{:.p$}]", self.median, self.lo, self.hi)
    }
}

/// How `a` compares with `b` over paired seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diff {
    /// Every seed's ratio above `1 + tol`.
    Higher,
    /// Every seed's ratio below `1 / (1 + tol)`.
    Lower,
    /// Neither: the difference lies inside the noise.
    InsideNoise,
}

impl Diff {
    /// `higher`, `lower`, `inside the noise`.
    pub fn as_str(self) -> &'static str {
        match self {
            Diff::Higher => "higher",
            Diff::Lower => "lower",
            Diff::InsideNoise => "inside the noise",
        }
    }
}

/// The ratios `a_s / b_s` over seeds present in both (pairs with a
/// non-finite or non-positive member are skipped), their spread, and
/// whether they differ beyond the noise (see the module docs).
pub fn compare(a: &[(u64, f64)], b: &[(u64, f64)], tol: f64) -> (Spread, Diff) {
    let ratios: Vec<f64> = a
        .iter()
        .filter_map(|&(s, x)| {
            let y = b.iter().find(|(t, _)| *t == s)?.1;
            (x.is_finite() && y.is_finite() && y > 0.0 && x >= 0.0).then_some(x / y)
        })
        .collect();
    let s = Spread::of(ratios.iter().copied());
    let diff = if ratios.is_empty() {
        Diff::InsideNoise
    } else if ratios.iter().all(|&r| r > 1.0 + tol) {
        Diff::Higher
    } else if ratios.iter().all(|&r| r < 1.0 / (1.0 + tol)) {
        Diff::Lower
    } else {
        Diff::InsideNoise
    };
    (s, diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.median, s.lo, s.hi, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of([1.0, 4.0]).median, 2.5);
        assert!(!Spread::of([]).is_finite());
        assert_eq!(
            format!("{}", Spread::of([1.0, 2.0, 3.0])),
            "2.00 [1.00–3.00]"
        );
        assert_eq!(format!("{:.1}", Spread::of([1.0])), "1.0");
        assert_eq!(format!("{}", Spread::of([])), "—");
    }

    #[test]
    fn compare_is_paired_and_needs_every_seed() {
        let a = [(0, 2.0), (1, 2.2), (2, 1.9)];
        let b = [(0, 1.0), (1, 1.0), (2, 1.0)];
        assert_eq!(compare(&a, &b, 0.05).1, Diff::Higher);
        assert_eq!(compare(&b, &a, 0.05).1, Diff::Lower);
        // One seed inside the tolerance: inside the noise.
        let c = [(0, 2.0), (1, 1.02), (2, 1.9)];
        assert_eq!(compare(&c, &b, 0.05).1, Diff::InsideNoise);
        // Unpaired seeds are ignored.
        let (s, d) = compare(&[(7, 9.0), (0, 1.5)], &b, 0.05);
        assert_eq!((s.n, d), (1, Diff::Higher));
        assert_eq!(compare(&[], &b, 0.05).1, Diff::InsideNoise);
    }
}
