//! Which instance gets which request: round robin alternates, multi-turn
//! conversations stay where their prefix is cached, and the request and
//! response pass through unchanged.

use crate::common::*;
use std::collections::{HashMap, HashSet};

#[tokio::test]
async fn round_robin_alternates_between_two_backends() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let r = router(config("round_robin", &[&a, &b])).await;
    let c = client();
    let mut order = Vec::new();
    for i in 0..6 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("hello {i}"), false),
        )
        .await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        assert_eq!(ans.header("x-kvroute-policy"), "round_robin");
        assert_eq!(ans.header("x-kvroute-reason"), "round_robin");
        order.push(ans.header("x-kvroute-instance").to_string());
    }
    for w in order.windows(2) {
        assert_ne!(w[0], w[1], "{order:?}");
    }
    assert_eq!((a.requests(), b.requests()), (3, 3));
    assert_eq!(r.total_inflight(), 0);
    assert_eq!(r.counter(0, "finished") + r.counter(1, "finished"), 6);
    r.shutdown().await;
}

#[tokio::test]
async fn body_is_forwarded_byte_for_byte_with_a_request_id() {
    let a = backend(Behavior::default()).await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    // Odd spacing, unicode, escapes, unknown fields: all must reach the engine unchanged.
    let body = "{ \"model\" : \"fake-model\",\n \"prompt\":\"caf\\u00e9 \\\"quoted\\\" ✓\", \"extra\": [1, {\"x\": null}] }";
    let ans = post(&c, &r.url("/v1/completions"), body).await;
    assert_eq!(ans.status, 200);
    assert_eq!(a.seen.bodies.lock()[0].as_ref(), body.as_bytes());
    let rid = ans.header("x-request-id").to_string();
    assert_eq!(a.seen.request_ids.lock()[0], rid);
    // A client's own request id is kept.
    let ans = send(
        &c,
        "POST",
        &r.url("/v1/completions"),
        &[("x-request-id", "client-42")],
        completion("x", false),
    )
    .await;
    assert_eq!(ans.header("x-request-id"), "client-42");
    assert_eq!(a.seen.request_ids.lock()[1], "client-42");
    r.shutdown().await;
}

/// A prompt of exactly `n` bytes that starts with `prefix`.
fn pad(prefix: &str, n: usize) -> String {
    let mut s = prefix.to_string();
    while s.len() < n {
        s.push('.');
    }
    s.truncate(n);
    s
}

#[tokio::test]
async fn multi_turn_sessions_stay_on_one_instance() {
    let bs = [
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    ];
    let r = router(config("cache_affinity", &[&bs[0], &bs[1], &bs[2]])).await;
    let c = client();
    let mut history: Vec<String> = (0..6)
        .map(|s| pad(&format!("conversation {s}: system prompt"), 64))
        .collect();
    let mut homes: HashMap<usize, HashSet<String>> = HashMap::new();
    for turn in 0..5 {
        for (s, h) in history.iter_mut().enumerate() {
            let prev_len = h.len();
            h.push_str(&pad(&format!(" user turn {turn} of {s}"), 32));
            let ans = post(&c, &r.url("/v1/completions"), &completion(h, false)).await;
            assert_eq!(ans.status, 200);
            homes
                .entry(s)
                .or_default()
                .insert(ans.header("x-kvroute-instance").to_string());
            let cached: usize = ans.header("x-kvroute-cached-tokens").parse().unwrap();
            if turn == 0 {
                assert_eq!(cached, 0);
                assert_eq!(ans.header("x-kvroute-reason"), "cache_miss");
            } else {
                // Pseudo-tokens are 4 bytes: everything sent before is cached.
                assert_eq!(cached, prev_len / 4, "session {s} turn {turn}");
                assert_eq!(ans.header("x-kvroute-reason"), "cache_hit");
            }
        }
    }
    for (s, h) in &homes {
        assert_eq!(h.len(), 1, "session {s} moved: {h:?}");
    }
    let used: HashSet<&String> = homes.values().flatten().collect();
    assert_eq!(
        used.len(),
        3,
        "new conversations spread over idle instances"
    );
    assert_eq!(r.total_inflight(), 0);
    r.shutdown().await;
}

#[tokio::test]
async fn chat_turns_share_a_prefix_without_a_template() {
    let bs = [
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    ];
    let r = router(config("cache_affinity", &[&bs[0], &bs[1]])).await;
    let c = client();
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a helpful assistant that answers briefly."}),
    ];
    let mut home = None;
    for turn in 0..4 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question number {turn}: what is {turn} squared?")}));
        let body = serde_json::json!({"model": "m", "messages": messages}).to_string();
        let ans = post(&c, &r.url("/v1/chat/completions"), &body).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        let inst = ans.header("x-kvroute-instance").to_string();
        if turn > 0 {
            assert!(
                ans.header("x-kvroute-cached-tokens")
                    .parse::<u32>()
                    .unwrap()
                    > 0
            );
        }
        assert_eq!(home.get_or_insert(inst.clone()), &inst);
        messages.push(
            serde_json::json!({"role": "assistant", "content": format!("It is {}.", turn * turn)}),
        );
    }
    r.shutdown().await;
}

#[tokio::test]
async fn http2_clients_over_cleartext_are_served() {
    let a = backend(Behavior::default()).await;
    let r = router(config("round_robin", &[&a])).await;
    // Prior-knowledge h2c, as gRPC-style and HTTP/2-only clients speak it.
    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    for stream in [false, true] {
        let ans = post(&h2, &r.url("/v1/completions"), &completion("h2", stream)).await;
        assert_eq!(ans.status, 200, "{}", ans.text());
        if stream {
            assert!(ans.text().contains("data: [DONE]"), "{}", ans.text());
        }
    }
    let health = send(&h2, "GET", &r.url("/health"), &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(a.requests(), 2);
    // HTTP/1.1 on the same port still works.
    assert_eq!(
        post(
            &client(),
            &r.url("/v1/completions"),
            &completion("h1", false)
        )
        .await
        .status,
        200
    );
    r.shutdown().await;
}
