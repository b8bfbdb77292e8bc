//! Invariants every policy keeps, on random cluster views.

use kvroute_core::{BlockHash, InstanceId, InstanceLoad, Policy, RouteRequest, StaticView};
use kvroute_policy::{PolicyConfig, WeightedConfig, POLICY_NAMES};
use proptest::prelude::*;

fn view() -> impl Strategy<Value = StaticView> {
    (1usize..12).prop_flat_map(|n| {
        (
            prop::collection::vec((0u32..20, 0u32..10, 0.0f64..1.0, 0u32..30, 0u64..5000), n),
            prop::collection::vec(0u32..12, n),
            prop::collection::vec(0u64..1000, n),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(move |(loads, matched, cached, eligible)| {
                let mut v = StaticView::idle(n);
                v.loads = loads
                    .into_iter()
                    .map(
                        |(running, waiting, kv_usage, inflight, pending_prefill_tokens)| {
                            InstanceLoad {
                                running,
                                waiting,
                                kv_usage,
                                inflight,
                                pending_prefill_tokens,
                                ..Default::default()
                            }
                        },
                    )
                    .collect();
                v.matched = matched;
                v.cached = cached;
                v.instances = (0..n as u32)
                    .map(InstanceId)
                    .filter(|i| eligible[i.index()])
                    .collect();
                if v.instances.is_empty() {
                    v.instances.push(InstanceId(0));
                }
                v
            })
    })
}

fn request() -> impl Strategy<Value = RouteRequest> {
    (
        prop::collection::vec(any::<u64>(), 0..12),
        0u32..16,
        any::<u64>(),
    )
        .prop_map(|(h, tail, id)| RouteRequest {
            id: kvroute_core::RequestId(id),
            prompt_tokens: h.len() as u32 * 16 + tail,
            block_hashes: h.into_iter().map(BlockHash).collect(),
            block_size: 16,
            ..Default::default()
        })
}

proptest! {
    #[test]
    fn every_policy_picks_an_eligible_instance(v in view(), r in request()) {
        for &name in POLICY_NAMES {
            let p = PolicyConfig::by_name(name).unwrap().build();
            let d = p.pick(&r, &v).unwrap();
            prop_assert!(v.instances.contains(&d.instance), "{} picked {}", name, d.instance);
        }
    }

    #[test]
    fn every_policy_is_deterministic_for_a_seed(
        v in view(),
        reqs in prop::collection::vec(request(), 1..20),
        seed in any::<u64>(),
    ) {
        for &name in POLICY_NAMES {
            let run = || {
                let p = PolicyConfig::by_name(name).unwrap().with_seed(seed).build();
                reqs.iter().map(|r| p.pick(r, &v).unwrap().instance).collect::<Vec<_>>()
            };
            prop_assert_eq!(run(), run(), "{}", name);
        }
    }

    #[test]
    fn explaining_changes_no_decision(
        v in view(),
        reqs in prop::collection::vec(request(), 1..12),
    ) {
        for &name in POLICY_NAMES {
            let plain = PolicyConfig::by_name(name).unwrap().build();
            let explained = PolicyConfig::by_name(name).unwrap().build();
            for r in &reqs {
                let e = explained.explain(r, &v);
                prop_assert!(!e.is_empty(), "{} explains nothing", name);
                prop_assert!(e.iter().all(|c| v.instances.contains(&c.instance)), "{}", name);
                prop_assert!(e.iter().all(|c| c.score.is_finite()), "{}: {:?}", name, e);
                let (a, b) = (plain.pick(r, &v).unwrap(), explained.pick(r, &v).unwrap());
                prop_assert_eq!(a, b, "{}", name);
                plain.on_routed(r, &a);
                explained.on_routed(r, &b);
            }
        }
    }

    #[test]
    fn cache_affinity_picks_a_max_overlap_instance(v in view(), r in request()) {
        let p = PolicyConfig::by_name("cache_affinity").unwrap().build();
        let d = p.pick(&r, &v).unwrap();
        let best = v.instances.iter().map(|i| v.matched[i.index()]).max().unwrap();
        prop_assert_eq!(v.matched[d.instance.index()], best);
    }

    #[test]
    fn weighted_with_alpha_zero_picks_least_loaded(v in view(), r in request()) {
        let p = PolicyConfig::Weighted(WeightedConfig {
            alpha: 0.0,
            beta: 1.0,
            gamma: 0.0,
            ..Default::default()
        })
        .build();
        let d = p.pick(&r, &v).unwrap();
        let min = v.instances.iter().map(|i| v.loads[i.index()].requests()).min().unwrap();
        prop_assert_eq!(v.loads[d.instance.index()].requests(), min);
    }

    #[test]
    fn round_robin_is_fair(n in 1usize..20, rounds in 1usize..10) {
        let p = PolicyConfig::by_name("round_robin").unwrap().build();
        let v = StaticView::idle(n);
        let mut count = vec![0usize; n];
        for _ in 0..n * rounds {
            count[p.pick(&RouteRequest::default(), &v).unwrap().instance.index()] += 1;
        }
        prop_assert!(count.iter().all(|&c| c == rounds), "{:?}", count);
    }
}

#[test]
fn no_instance_is_an_error_for_every_policy() {
    let mut v = StaticView::idle(2);
    v.instances.clear();
    for &name in POLICY_NAMES {
        let p: Box<dyn Policy> = PolicyConfig::by_name(name).unwrap().build();
        assert!(p.pick(&RouteRequest::default(), &v).is_err(), "{name}");
    }
}
