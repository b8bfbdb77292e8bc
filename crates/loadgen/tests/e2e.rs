//! Multi-turn ShareGPT replay against emulated vLLM engines.

use crate::util::{engine, sharegpt};
use kvroute_loadgen::{run, Api, LoadgenConfig, Pacing, RequestRecord, RunReport};
use kvroute_workload::{ArrivalSpec, Session};
use std::collections::BTreeMap;

/// Checks every replay must pass: one row per turn, all successful, output
/// lengths as requested, turn order kept (turn k+1 sent after turn k ended
/// plus the think time), and the engine counted exactly our requests.
fn check_replay(report: &RunReport, sessions: &[Session], think_s: f64) {
    let turns: usize = sessions.iter().map(|s| s.turns.len()).sum();
    assert_eq!(report.records.len(), turns, "one row per request");
    assert!(!report.interrupted);
    let mut by_session: BTreeMap<u64, Vec<&RequestRecord>> = BTreeMap::new();
    for r in &report.records {
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.status, 200);
        assert!(!r.warmup);
        let s = &sessions[r.session as usize];
        let turn = &s.turns[r.turn as usize];
        assert_eq!(r.max_tokens, turn.max_tokens);
        assert_eq!(
            r.output_tokens, turn.max_tokens,
            "ignore_eos + max_tokens: {r:?}"
        );
        assert!(r.ttft > 0.0 && r.ttft <= r.e2e, "{r:?}");
        assert!(
            r.cached_tokens.is_some(),
            "usage.prompt_tokens_details read"
        );
        by_session.entry(r.session).or_default().push(r);
    }
    assert_eq!(by_session.len(), sessions.len());
    for (sid, rows) in &mut by_session {
        rows.sort_by_key(|r| r.turn);
        let want: Vec<u32> = (0..sessions[*sid as usize].turns.len() as u32).collect();
        assert_eq!(rows.iter().map(|r| r.turn).collect::<Vec<_>>(), want);
        for w in rows.windows(2) {
            let ended = w[0].start + w[0].e2e;
            assert!(
                w[1].start >= ended + think_s - 1e-3,
                "session {sid}: turn {} sent at {:.4} before turn {} ended at {:.4} + think",
                w[1].turn,
                w[1].start,
                w[0].turn,
                ended
            );
            assert!(w[1].id > w[0].id);
        }
    }
    let total = report.engine_total.as_ref().expect("engine report");
    let ttft = total.ttft_seconds.as_ref().unwrap();
    assert_eq!(
        ttft.count as usize, turns,
        "engine TTFT count = requests sent"
    );
    assert_eq!(report.client.requests, turns);
    assert_eq!(report.client.ok, turns);
    assert!(report.client.ttft.mean.is_some());
}

/// Later turns re-send the conversation: the engine hits its prefix cache.
fn check_cache_hits(report: &RunReport) {
    let total = report.engine_total.as_ref().unwrap();
    assert!(
        total.prefix_cache_hits_tokens.unwrap_or(0.0) > 0.0,
        "engine prefix-cache hits: {total:?}"
    );
    let later_cached: u32 = report
        .records
        .iter()
        .filter(|r| r.turn > 0)
        .filter_map(|r| r.cached_tokens)
        .sum();
    assert!(later_cached > 0, "later turns report cached tokens");
    assert!(report.client.cache_hit_rate.unwrap() > 0.0);
}

#[tokio::test]
async fn open_loop_completions_multi_turn() {
    let (a, b) = (engine(40.0).await, engine(40.0).await);
    let think = 0.01;
    let sessions = sharegpt(5, 3, 2048, 12, think, ArrivalSpec::Poisson { rate: 25.0 });
    let mut config = LoadgenConfig::new(a.url());
    config.api = Api::Completions;
    config.engines = vec![a.url(), b.url()];
    let report = run(config, sessions.clone(), std::future::pending())
        .await
        .unwrap();
    check_replay(&report, &sessions, think);
    check_cache_hits(&report);
    // Sessions started at their arrival times (open loop).
    for s in &sessions {
        let first = report
            .records
            .iter()
            .find(|r| r.session == s.id && r.turn == 0)
            .unwrap();
        assert!(first.start + 1e-3 >= s.arrival.as_secs_f64(), "{first:?}");
    }
    // Completions with the rendered text: the engine counts our tokens.
    for r in &report.records {
        let turn = &sessions[r.session as usize].turns[r.turn as usize];
        assert_eq!(r.prompt_tokens as usize, turn.prompt_tokens.len());
    }
    // Engine b received nothing; the total is engine a's.
    let eb = report.engines[1].report.as_ref().unwrap();
    assert_eq!(eb.ttft_seconds.as_ref().map_or(0.0, |t| t.count), 0.0);
    assert_eq!(report.client.per_instance.len(), 1);
    let table = report.to_string();
    assert!(table.contains("ttft"), "{table}");
}

#[tokio::test]
async fn closed_loop_chat_multi_turn() {
    let e = engine(40.0).await;
    let sessions = sharegpt(5, 3, 2048, 12, 0.0, ArrivalSpec::default());
    let mut config = LoadgenConfig::new(e.url());
    config.pacing = Pacing::Closed { concurrency: 2 };
    config.engines = vec![e.url()];
    let report = run(config, sessions.clone(), std::future::pending())
        .await
        .unwrap();
    check_replay(&report, &sessions, 0.0);
    check_cache_hits(&report);
    // Never more than two sessions in flight.
    let mut spans: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for r in &report.records {
        let s = spans.entry(r.session).or_insert((f64::MAX, 0.0));
        s.0 = s.0.min(r.start);
        s.1 = s.1.max(r.start + r.e2e);
    }
    for (sid, (start, _)) in &spans {
        let overlapping = spans
            .values()
            .filter(|(s, e)| *s <= *start && *e > *start + 1e-4)
            .count();
        assert!(overlapping <= 2, "session {sid}: {overlapping} in flight");
    }
}

#[tokio::test]
async fn probe_mode_engine_times_match_the_client() {
    let e = engine(10.0).await;
    // Token ids, not text: the emulator's own request handling before its
    // engine sees a request (chat template, tokenizer; unoptimised in debug
    // builds, several ms for long prompts) is in the client's TTFT but not in
    // the engine's. Without it the two differ by transport and timer jitter.
    let mut sessions = sharegpt(3, 2, 400, 8, 0.0, ArrivalSpec::default());
    for t in sessions.iter_mut().flat_map(|s| s.turns.iter_mut()) {
        t.messages.clear();
        t.prompt_text = None;
    }
    let mut config = LoadgenConfig::new(e.url());
    config.probe = true;
    config.num_requests = Some(4);
    // Open loop asked for, probe forces one at a time.
    config.pacing = Pacing::Open {
        max_in_flight: None,
    };
    let report = run(config, sessions, std::future::pending()).await.unwrap();
    assert_eq!(report.records.len(), 4);
    assert_eq!(report.run.pacing, Pacing::Closed { concurrency: 1 });
    for w in report.records.windows(2) {
        assert!(w[1].start >= w[0].start + w[0].e2e, "one at a time");
    }
    for r in &report.records {
        assert!(r.ok(), "{r:?}");
        let et = r.engine_ttft.expect("engine_ttft in probe mode");
        let ee = r.engine_e2e.expect("engine_e2e in probe mode");
        eprintln!(
            "client ttft {:.2} ms, engine {:.2} ms; client e2e {:.2} ms, engine {:.2} ms",
            r.ttft * 1e3,
            et * 1e3,
            r.e2e * 1e3,
            ee * 1e3
        );
        // The engine sees the request a little after the client sent it
        // and the first token a little before the client reads it.
        assert!(
            et > 0.0 && et <= r.ttft + 0.001,
            "ttft {} vs engine {et}",
            r.ttft
        );
        assert!(r.ttft - et < 0.008, "ttft {} vs engine {et}", r.ttft);
        // After the first token both sides time the same decode steps.
        let (client_decode, engine_decode) = (r.e2e - r.ttft, ee - et);
        assert!(
            (client_decode - engine_decode).abs() < 0.008,
            "decode {client_decode} vs engine {engine_decode}"
        );
    }
    // Without --engine the target itself was scraped for the run report too.
    assert_eq!(report.engines.len(), 1);
    assert_eq!(
        report.engine_total.unwrap().ttft_seconds.unwrap().count,
        4.0
    );
}
