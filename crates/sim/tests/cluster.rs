//! The discrete-event cluster: determinism, conservation, and that routing
//! and staleness actually change what happens.

use kvroute_core::Nanos;
use kvroute_directory::{Freshness, Mode};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{Cluster, ClusterConfig, Driver, Profile, RunResult};
use kvroute_workload::{Session, Turn};

/// `n` conversations of `turns` turns: turn k's prompt is turn k−1's prompt,
/// an answer and a new question (so turns share a growing prefix).
fn sessions(n: u64, turns: usize, gap_ms: u64) -> Vec<Session> {
    (0..n)
        .map(|s| {
            let mut prompt: Vec<u32> = (0..300).map(|t| (s * 7919 + t) as u32 % 30_000).collect();
            let mut ts = Vec::new();
            for k in 0..turns {
                ts.push(Turn {
                    messages: vec![],
                    prompt_text: None,
                    prompt_tokens: prompt.clone(),
                    max_tokens: 20,
                });
                prompt.extend((0..150).map(|t| (s * 31 + k as u64 * 1000 + t) as u32 % 30_000));
            }
            Session {
                id: s,
                arrival: Nanos::from_millis(s * gap_ms),
                turns: ts,
                think_time: Nanos::from_millis(500),
            }
        })
        .collect()
}

fn config(policy: &str, instances: usize) -> ClusterConfig {
    let mut p = Profile::load("llama3.2-3b-rtx5080").unwrap();
    p.limits.num_blocks = 2_000;
    ClusterConfig::new(instances, p, PolicyConfig::parse(policy).unwrap())
}

fn run(c: ClusterConfig, s: Vec<Session>) -> RunResult {
    Cluster::new(c, s.into_iter().map(Ok::<_, String>))
        .unwrap()
        .run()
        .unwrap()
}

fn csv(r: &RunResult) -> String {
    let mut w = csv::Writer::from_writer(vec![]);
    for rec in &r.records {
        w.serialize(rec).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

#[test]
fn every_request_finishes_and_runs_are_deterministic() {
    for policy in ["power_of_two", "weighted:temperature=0.1", "cache_affinity"] {
        let a = run(config(policy, 4), sessions(30, 4, 200));
        let b = run(config(policy, 4), sessions(30, 4, 200));
        assert_eq!(a.records.len(), 120, "{policy}");
        assert!(a.records.iter().all(|r| r.ok()));
        assert_eq!(csv(&a), csv(&b), "{policy}: same seed, same CSV");
    }
}

#[test]
fn cache_affinity_hits_more_than_round_robin_on_multi_turn() {
    let rr = run(config("round_robin", 4), sessions(40, 5, 300));
    let ca = run(config("cache_affinity", 4), sessions(40, 5, 300));
    assert!(
        ca.summary.cache_hit_rate > rr.summary.cache_hit_rate + 0.3,
        "cache_affinity {} vs round_robin {}",
        ca.summary.cache_hit_rate,
        rr.summary.cache_hit_rate
    );
    assert!(ca.summary.ttft.mean < rr.summary.ttft.mean);
    // In exact mode with live events, predictions are what the engine hit.
    let (pred, hit): (u32, u32) = ca.records.iter().fold((0, 0), |(p, h), r| {
        (p + r.predicted_cached_tokens, h + r.cached_tokens)
    });
    assert!(
        pred.abs_diff(hit) <= hit / 20,
        "predicted {pred} vs engine {hit}"
    );
}

#[test]
fn staleness_changes_decisions() {
    let fresh = run(config("cache_affinity", 4), sessions(40, 5, 300));
    let mut c = config("cache_affinity", 4);
    c.directory_freshness = Freshness::Periodic(Nanos::from_secs(30));
    let stale = run(c, sessions(40, 5, 300));
    let placements = |r: &RunResult| {
        r.records
            .iter()
            .map(|x| (x.id, x.instance))
            .collect::<Vec<_>>()
    };
    assert_ne!(placements(&fresh), placements(&stale));
    assert!(stale.summary.cache_hit_rate < fresh.summary.cache_hit_rate);
}

#[test]
fn predicted_mode_and_polled_metrics_work() {
    let mut c = config("weighted", 3);
    c.directory_mode = Mode::Predicted;
    c.metrics_interval = Nanos::from_secs(1);
    let r = run(c, sessions(20, 3, 100));
    assert_eq!(r.records.len(), 60);
    assert!(r.summary.predicted_hit_rate > 0.3);
}

#[test]
fn closed_loop_keeps_concurrency() {
    let mut c = config("least_request", 2);
    c.driver = Driver::Closed { concurrency: 3 };
    let r = run(c, sessions(10, 2, 0));
    assert_eq!(r.records.len(), 20);
    // Each session's span: its first arrival to its last answer.
    let mut spans: Vec<(f64, f64)> = (0..10)
        .map(|s| {
            let mine = r.records.iter().filter(|x| x.session == s);
            let start = mine
                .clone()
                .map(|x| x.arrival)
                .fold(f64::INFINITY, f64::min);
            let end = mine.map(|x| x.finish).fold(0.0, f64::max);
            (start, end)
        })
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    // At every session start, exactly the sessions not yet over are open:
    // never more than 3, and 3 while enough sessions remain.
    let mut max_open = 0;
    for (k, &(start, _)) in spans.iter().enumerate() {
        let open = spans[..=k].iter().filter(|&&(_, end)| end > start).count();
        assert!(open <= 3, "{open} sessions open at {start}");
        max_open = max_open.max(open);
    }
    assert_eq!(max_open, 3, "the loop keeps 3 sessions going");
    // The 4th session starts only when one of the first three has ended.
    let first_end = spans[..3].iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    assert!(spans[3].0 >= first_end - 1e-9);
}

#[test]
fn overlong_prompts_fail_cleanly() {
    let mut s = sessions(1, 1, 0);
    s[0].turns[0].prompt_tokens = vec![1; 5000];
    let r = run(config("round_robin", 2), s);
    assert_eq!(r.records.len(), 1);
    assert!(
        r.records[0].error.contains("max_model_len"),
        "{}",
        r.records[0].error
    );
    assert_eq!(r.summary.failed, 1);
}

#[test]
fn the_frontend_delay_counts_in_ttft_only() {
    let run_with = |front: f64| {
        let mut c = config("round_robin", 1);
        c.profile.frontend.per_request = front;
        run(c, sessions(1, 1, 0))
    };
    let (a, b) = (run_with(0.0), run_with(0.25));
    let (ra, rb) = (&a.records[0], &b.records[0]);
    assert!(
        (rb.ttft() - ra.ttft() - 0.25).abs() < 1e-6,
        "{} vs {}",
        rb.ttft(),
        ra.ttft()
    );
    assert!((rb.e2e() - ra.e2e() - 0.25).abs() < 1e-6);
    assert_eq!(
        ra.queue_time, rb.queue_time,
        "the scheduler saw the request as soon as it cleared the front end"
    );
}

#[test]
fn requests_longer_than_max_model_len_are_counted_by_cause() {
    // Four 3-turn sessions (prompts of 300, 450, 600 tokens, 20 out); with
    // max_model_len 400 every session's second turn is refused and its
    // third is never sent.
    let mut c = config("round_robin", 2);
    c.profile.limits.max_model_len = 400;
    let r = run(c, sessions(4, 3, 100));
    let s = &r.summary;
    assert_eq!((s.requests, s.failed), (8, 4));
    assert_eq!(s.rejected.too_long, 4);
    assert_eq!(s.rejected.total(), 4);
    assert_eq!(s.rejected.dropped_turns, 4);
    assert_eq!(s.rejected.max_model_len, 400);
    assert_eq!(s.rejected_share(), 0.5);
    assert_eq!(s.ttft.n, 4, "latencies cover the requests that ran");
    let refused: Vec<_> = r.records.iter().filter(|r| !r.ok()).collect();
    assert!(refused
        .iter()
        .all(|r| r.turn == 1 && r.dropped_turns == 1 && r.error.contains("max_model_len 400")));
    assert_eq!(
        s.rejected.describe(s.requests).unwrap(),
        "4 of 8 requests (50.0 %): 4 longer than max_model_len 400; \
         4 later turns of their sessions never sent"
    );
}
