//! The dispatcher's accounting: every path releases load exactly once, the
//! directory learns from routing, and ineligible instances are never chosen.

use kvroute_core::{
    BlockHash, ClusterView, Completion, Decision, InstanceId, ManualClock, Nanos, Outcome,
    PickError, Policy, Reason, RequestId, RouteRequest,
};
use kvroute_directory::{Directory, Freshness, Mode};
use kvroute_policy::PolicyConfig;
use kvroute_routing::{Dispatcher, InstanceState};
use proptest::prelude::*;
use std::sync::Arc;

fn dispatcher(policy: &str, n: usize) -> Dispatcher {
    let d = Dispatcher::new(
        PolicyConfig::parse(policy).unwrap().build(),
        Arc::new(Directory::new(Freshness::Live)),
        Arc::new(ManualClock::new(Nanos::ZERO)),
    );
    for i in 0..n {
        d.add_instance(format!("i{i}"));
    }
    d
}

fn req(id: u64, blocks: &[u64]) -> RouteRequest {
    RouteRequest {
        id: RequestId(id),
        block_hashes: blocks.iter().map(|&b| BlockHash(b)).collect(),
        block_size: 16,
        prompt_tokens: blocks.len() as u32 * 16 + 5,
        ..Default::default()
    }
}

fn total_inflight(d: &Dispatcher) -> u32 {
    d.with_table(|t| t.all().iter().map(|i| i.inflight()).sum())
}

fn total_pending(d: &Dispatcher) -> u64 {
    d.with_table(|t| t.all().iter().map(|i| i.pending_prefill_tokens()).sum())
}

#[test]
fn pending_prefill_is_released_at_first_token() {
    let d = dispatcher("round_robin", 1);
    let mut r = d.route(&req(1, &[1, 2])).unwrap();
    assert_eq!(total_pending(&d), 37);
    r.guard.first_token();
    assert_eq!((total_pending(&d), total_inflight(&d)), (0, 1));
    r.guard.finish(Outcome::Finished);
    assert_eq!(total_inflight(&d), 0);
    let c = &d.instance(InstanceId(0)).unwrap().counters;
    assert_eq!(c.finished.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn second_turn_is_predicted_cached_and_charged_less() {
    let d = dispatcher("cache_affinity", 3);
    let a = d.route(&req(1, &[1, 2])).unwrap();
    let b = d.route(&req(2, &[1, 2, 3])).unwrap();
    assert_eq!(b.decision.instance, a.decision.instance);
    assert_eq!(b.decision.cached_blocks, 2);
    assert_eq!(total_pending(&d), 37 + 21);
}

#[test]
fn load_only_policies_leave_the_directory_alone() {
    for policy in ["round_robin", "least_request", "power_of_two"] {
        let d = dispatcher(policy, 1);
        let _a = d.route(&req(1, &[1, 2])).unwrap();
        let b = d.route(&req(2, &[1, 2])).unwrap();
        assert_eq!(b.decision.cached_blocks, 0, "{policy}");
        assert_eq!(d.directory().instance_blocks(InstanceId(0)), 0, "{policy}");
    }
}

#[test]
fn exact_mode_instances_learn_only_from_events() {
    let d = dispatcher("cache_affinity", 1);
    d.set_directory_mode(InstanceId(0), Mode::Exact);
    let _a = d.route(&req(1, &[1, 2])).unwrap();
    assert_eq!(d.route(&req(2, &[1, 2])).unwrap().decision.cached_blocks, 0);
}

#[test]
fn excluded_unhealthy_draining_removed_are_never_picked() {
    let d = dispatcher("round_robin", 4);
    d.set_state(InstanceId(1), InstanceState::Unhealthy);
    d.set_state(InstanceId(2), InstanceState::Draining);
    d.set_state(InstanceId(3), InstanceState::Removed);
    assert!(
        !d.set_state(InstanceId(3), InstanceState::Healthy),
        "removed is final"
    );
    for k in 0..10 {
        assert_eq!(
            d.route(&req(k, &[])).unwrap().decision.instance,
            InstanceId(0)
        );
    }
    assert!(d.route_excluding(&req(99, &[]), &[InstanceId(0)]).is_err());
    d.set_state(InstanceId(1), InstanceState::Healthy);
    assert_eq!(
        d.route_excluding(&req(100, &[]), &[InstanceId(0)])
            .unwrap()
            .decision
            .instance,
        InstanceId(1)
    );
}

#[test]
fn a_request_failing_before_its_first_token_takes_its_predictions_back() {
    let d = dispatcher("cache_affinity", 2);
    let a = d.route(&req(1, &[1, 2])).unwrap();
    let id = a.decision.instance;
    a.guard.finish(Outcome::Finished);
    // Shares block 1 with the first request, adds 3 and 4.
    let b = d.route(&req(2, &[1, 2, 3, 4])).unwrap();
    assert_eq!(b.decision.instance, id);
    b.guard.finish(Outcome::Failed);
    let held = |h| d.directory().with_index(|ix| ix.contains(id, BlockHash(h)));
    assert!(
        held(1) && held(2),
        "blocks cached by an earlier request stay"
    );
    assert!(
        !held(3) && !held(4),
        "blocks only the failed request predicted are gone"
    );
    // A request that got its first token keeps its blocks even if it fails later.
    let mut c = d.route(&req(3, &[7, 8])).unwrap();
    c.guard.first_token();
    let cid = c.decision.instance;
    c.guard.finish(Outcome::Failed);
    assert!(d
        .directory()
        .with_index(|ix| ix.contains(cid, BlockHash(7))));
}

/// Sends everything to the first instance and remembers completions.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<Completion>>);

impl Policy for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn pick(&self, _req: &RouteRequest, view: &dyn ClusterView) -> Result<Decision, PickError> {
        Ok(Decision {
            instance: *view.instances().first().ok_or(PickError::NoInstance)?,
            cached_blocks: 0,
            reason: Reason::OnlyChoice,
        })
    }
    fn on_completed(&self, done: &Completion) {
        self.0.lock().unwrap().push(*done);
    }
}

#[test]
fn completions_carry_the_time_to_first_token() {
    let clock = Arc::new(ManualClock::new(Nanos::from_secs(10)));
    let recorder = Arc::new(Recorder::default());
    #[derive(Debug)]
    struct Shared(Arc<Recorder>);
    impl Policy for Shared {
        fn name(&self) -> &'static str {
            "shared"
        }
        fn pick(&self, r: &RouteRequest, v: &dyn ClusterView) -> Result<Decision, PickError> {
            self.0.pick(r, v)
        }
        fn on_completed(&self, done: &Completion) {
            self.0.on_completed(done)
        }
    }
    let d = Dispatcher::new(
        Box::new(Shared(recorder.clone())),
        Arc::new(Directory::new(Freshness::Live)),
        clock.clone(),
    );
    d.add_instance("a");
    let mut a = d.route(&req(1, &[1])).unwrap();
    let b = d.route(&req(2, &[2])).unwrap();
    clock.advance(Nanos::from_millis(250));
    a.guard.first_token();
    clock.advance(Nanos::from_millis(500));
    a.guard.first_token(); // only the first counts
    assert_eq!(a.guard.ttft(), Some(Nanos::from_millis(250)));
    a.guard.finish(Outcome::Finished);
    b.guard.finish(Outcome::Failed); // no token ever came
    let done = recorder.0.lock().unwrap().clone();
    assert_eq!(done[0].ttft, Some(Nanos::from_millis(250)));
    assert_eq!((done[1].request, done[1].ttft), (RequestId(2), None));
}

#[test]
fn explaining_is_read_only() {
    for policy in kvroute_policy::POLICY_NAMES {
        let (plain, explained) = (dispatcher(policy, 3), dispatcher(policy, 3));
        explained.set_state(InstanceId(1), InstanceState::Draining);
        plain.set_state(InstanceId(1), InstanceState::Draining);
        let mut guards = Vec::new();
        for id in 0..6 {
            let r = req(id, &[1, 2, id + 10]);
            let e = explained.explain(&r);
            assert!(!e.is_empty(), "{policy}");
            assert!(
                e.iter().all(|c| c.instance != InstanceId(1)),
                "{policy}: {e:?}"
            );
            let (a, b) = (plain.route(&r).unwrap(), explained.route(&r).unwrap());
            assert_eq!(a.decision, b.decision, "{policy}");
            guards.push((a, b));
        }
        assert_eq!(total_pending(&plain), total_pending(&explained), "{policy}");
    }
}

#[test]
fn removing_an_instance_forgets_its_blocks() {
    let d = dispatcher("cache_affinity", 2);
    let a = d.route(&req(1, &[7, 8])).unwrap().decision.instance;
    d.set_state(a, InstanceState::Removed);
    assert_eq!(d.directory().instance_blocks(a), 0);
}

proptest! {
    /// However requests end (finished, failed, cancelled, dropped, first
    /// token or not), load returns to zero.
    #[test]
    fn inflight_returns_to_zero(ends in prop::collection::vec((0u8..4, any::<bool>()), 1..60), policy in prop::sample::select(kvroute_policy::POLICY_NAMES)) {
        let d = dispatcher(policy, 3);
        let mut guards = Vec::new();
        for (k, &(end, first)) in ends.iter().enumerate() {
            let mut r = d.route(&req(k as u64, &[k as u64 % 5, 100 + k as u64])).unwrap();
            if first { r.guard.first_token(); }
            guards.push((end, r.guard));
        }
        prop_assert_eq!(total_inflight(&d), ends.len() as u32);
        for (end, g) in guards {
            match end {
                0 => g.finish(Outcome::Finished),
                1 => g.finish(Outcome::Failed),
                2 => g.finish(Outcome::Cancelled),
                _ => drop(g),
            }
        }
        prop_assert_eq!(total_inflight(&d), 0);
        prop_assert_eq!(total_pending(&d), 0);
    }
}
