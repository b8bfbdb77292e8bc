//! Invariants of [`Histogram`]: quantiles are monotone in `q` and land in the
//! bucket of the true sample quantile, also when capped by the mean; delta and merge undo each other; a
//! merge of observation sets equals observing their union.

use kvroute_metrics::Histogram;
use proptest::prelude::*;

/// Distinct ascending finite bounds in (0, 100].
fn bounds() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::btree_set(1u32..=1000, 1..12)
        .prop_map(|s| s.into_iter().map(|x| f64::from(x) / 10.0).collect())
}

/// Observations in [0, 120): some land above every finite bound.
fn observations() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((0u32..1200).prop_map(|x| f64::from(x) / 10.0), 1..60)
}

fn observed(bounds: &[f64], obs: &[f64]) -> Histogram {
    let mut h = Histogram::with_bounds(bounds);
    for &v in obs {
        h.observe(v);
    }
    h
}

proptest! {
    #[test]
    fn quantiles_are_monotone_in_q(b in bounds(), obs in observations(),
                                   qs in prop::collection::vec(0.0f64..=1.0, 2..20)) {
        let h = observed(&b, &obs);
        let mut qs = qs;
        qs.sort_by(f64::total_cmp);
        let values: Vec<f64> = qs.iter().filter_map(|&q| h.quantile(q)).collect();
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "{:?} from {:?}", values, qs);
        }
        let largest = *b.last().unwrap();
        for v in values {
            prop_assert!((0.0..=largest).contains(&v), "{v} outside [0, {largest}]");
        }
    }

    #[test]
    fn quantile_lies_in_the_bucket_of_the_sample_quantile(b in bounds(), obs in observations(),
                                                          q in 0.001f64..=1.0) {
        let h = observed(&b, &obs);
        let est = h.quantile(q).unwrap();
        // The sample quantile: the smallest observation with at least q·n
        // observations at or below it.
        let mut sorted = obs.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = q * sorted.len() as f64;
        let exact = *sorted
            .iter()
            .find(|&&v| sorted.iter().filter(|&&w| w <= v).count() as f64 >= rank)
            .unwrap();
        let largest = *b.last().unwrap();
        if exact > largest {
            // In the +Inf bucket: Prometheus answers with the largest finite bound.
            prop_assert_eq!(est, largest);
        } else {
            let upper = *b.iter().find(|&&le| exact <= le).unwrap();
            let lower = b.iter().copied().filter(|&le| le < upper).fold(0.0, f64::max);
            prop_assert!(lower <= est && est <= upper,
                "estimate {est} outside ({lower}, {upper}] holding sample quantile {exact}");
        }
    }

    #[test]
    fn bounded_quantile_never_drops_below_the_sample_quantiles_bucket(
        b in bounds(), obs in observations(), q in 0.001f64..0.999) {
        let h = observed(&b, &obs);
        let (est, bounded) = (h.quantile(q).unwrap(), h.quantile_bounded(q).unwrap());
        prop_assert!(bounded <= est);
        let mut sorted = obs.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = q * sorted.len() as f64;
        let exact = *sorted
            .iter()
            .find(|&&v| sorted.iter().filter(|&&w| w <= v).count() as f64 >= rank)
            .unwrap();
        let mean = obs.iter().sum::<f64>() / obs.len() as f64;
        // Markov: the sample quantile is within the cap.
        prop_assert!(exact <= mean / (1.0 - q) + 1e-9, "{exact} > {mean}/(1-{q})");
        let largest = *b.last().unwrap();
        if exact <= largest {
            let upper = *b.iter().find(|&&le| exact <= le).unwrap();
            let lower = b.iter().copied().filter(|&le| le < upper).fold(0.0, f64::max);
            prop_assert!(lower - 1e-9 <= bounded && bounded <= upper,
                "bounded {bounded} outside ({lower}, {upper}] holding sample quantile {exact}");
        }
    }

    #[test]
    fn delta_undoes_merge(b in bounds(), first in observations(), second in observations()) {
        let before = observed(&b, &first);
        let mut after = before.clone();
        for &v in &second {
            after.observe(v);
        }
        let d = after.delta(&before);
        prop_assert!(!d.reset);
        prop_assert_eq!(&d.buckets, &observed(&b, &second).buckets);
        prop_assert_eq!(d.count, second.len() as f64);
        let mut back = before.clone();
        back.merge(&d);
        prop_assert_eq!(&back.buckets, &after.buckets);
        prop_assert_eq!(back.count, after.count);
        prop_assert!((back.sum - after.sum).abs() < 1e-6);
    }

    #[test]
    fn merge_equals_observing_the_union(b in bounds(), x in observations(), y in observations()) {
        let mut m = observed(&b, &x);
        m.merge(&observed(&b, &y));
        let mut all = x.clone();
        all.extend(&y);
        let u = observed(&b, &all);
        prop_assert_eq!(&m.buckets, &u.buckets);
        prop_assert_eq!(m.count, u.count);
        prop_assert!((m.sum - u.sum).abs() < 1e-6);
        prop_assert_eq!(m.mean().is_some(), true);
    }

    #[test]
    fn a_smaller_after_is_always_a_reset(b in bounds(), obs in observations(), drop in 1usize..10) {
        let before = observed(&b, &obs);
        let keep = obs.len().saturating_sub(drop);
        let after = observed(&b, &obs[..keep]);
        if keep < obs.len() {
            let d = after.delta(&before);
            prop_assert!(d.reset);
            prop_assert_eq!(d.count, keep as f64);
        }
    }
}
