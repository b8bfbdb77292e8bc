//! Streams: chunks pass through unbuffered, and in-flight accounting ends
//! right on every path (finished, client gone, engine failed, idle timeout).

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

async fn open_stream(
    c: &TestClient,
    url: &str,
    prompt: &str,
) -> http::Response<hyper::body::Incoming> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(completion(prompt, true))))
        .unwrap();
    c.request(req).await.unwrap()
}

async fn next_data(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5 s")?
            .ok()?;
        if let Ok(d) = f.into_data() {
            return Some(d);
        }
    }
}

#[tokio::test]
async fn streams_are_passed_through_unbuffered() {
    let gate = Arc::new(Semaphore::new(0));
    let a = backend(Behavior {
        gate: Some(Arc::clone(&gate)),
        chunks: 4,
        ..Default::default()
    })
    .await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    let resp = open_stream(&c, &r.url("/v1/completions"), "stream me").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.headers()["x-kvroute-instance"].to_str().unwrap(),
        a.url()
    );
    let mut body = resp.into_body();
    let first = next_data(&mut body).await.unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    // The engine is still holding the rest of the stream.
    assert_eq!(a.seen.streams_finished.load(Ordering::SeqCst), 0);
    assert_eq!(r.inflight(0), 1);
    let pending =
        r.gw.dispatcher()
            .instance(kvroute_core::InstanceId(0))
            .unwrap()
            .pending_prefill_tokens();
    assert_eq!(pending, 0, "the first chunk ended the prefill");
    gate.add_permits(1);
    let mut rest = Vec::new();
    while let Some(d) = next_data(&mut body).await {
        rest.extend_from_slice(&d);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    assert_eq!(rest.matches("data: {").count(), 3);
    r.eventually(2.0, "finished", |r| r.counter(0, "finished") == 1)
        .await;
    assert_eq!(r.total_inflight(), 0);
    r.shutdown().await;
}

#[tokio::test]
async fn a_client_disconnect_mid_stream_cancels_the_request() {
    let gate = Arc::new(Semaphore::new(0));
    let a = backend(Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Default::default()
    })
    .await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    let resp = open_stream(&c, &r.url("/v1/completions"), "bye").await;
    let mut body = resp.into_body();
    next_data(&mut body).await.unwrap();
    assert_eq!(r.inflight(0), 1);
    drop(body);
    drop(c);
    r.eventually(5.0, "cancelled", |r| r.counter(0, "cancelled") == 1)
        .await;
    assert_eq!(r.total_inflight(), 0);
    assert_eq!(r.counter(0, "finished") + r.counter(0, "failed"), 0);
    gate.add_permits(1);
    r.shutdown().await;
}

#[tokio::test]
async fn an_engine_failing_mid_stream_ends_it_with_an_error_event() {
    let a = backend(Behavior {
        die_after_first_chunk: true,
        ..Default::default()
    })
    .await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    let ans = post(&c, &r.url("/v1/completions"), &completion("die", true)).await;
    assert_eq!(ans.status, 200);
    let text = ans.text();
    assert!(text.starts_with("data: {\"id\""), "{text}");
    assert!(text.contains("data: {\"error\":"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let last_event = text
        .split("\n\n")
        .filter(|e| e.starts_with("data: {"))
        .last()
        .unwrap();
    let err: serde_json::Value =
        serde_json::from_str(last_event.trim_start_matches("data: ")).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    r.eventually(2.0, "failed", |r| r.counter(0, "failed") == 1)
        .await;
    assert_eq!(r.total_inflight(), 0);
    assert_eq!(r.gw.metrics().errors("stream"), 1);
    r.shutdown().await;
}

#[tokio::test]
async fn a_silent_stream_times_out() {
    let gate = Arc::new(Semaphore::new(0));
    let a = backend(Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Default::default()
    })
    .await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.proxy.stream_idle_timeout_secs = 0.3;
    let r = router(cfg).await;
    let c = client();
    let t0 = std::time::Instant::now();
    let ans = post(&c, &r.url("/v1/completions"), &completion("quiet", true)).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(
        ans.text().contains("no data from the engine"),
        "{}",
        ans.text()
    );
    assert_eq!(r.counter(0, "failed"), 1);
    assert_eq!(r.total_inflight(), 0);
    assert_eq!(r.gw.metrics().errors("stream_timeout"), 1);
    gate.add_permits(1);
    r.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_streams_all_end_accounted() {
    let a = backend(Behavior {
        chunk_delay: Duration::from_millis(2),
        chunks: 5,
        ..Default::default()
    })
    .await;
    let b = backend(Behavior::default()).await;
    let r = router(config("least_request", &[&a, &b])).await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (c, url) = (c.clone(), r.url("/v1/completions"));
        tasks.push(tokio::spawn(async move {
            post(
                &c,
                &url,
                &completion(&format!("concurrent {i}"), i % 3 != 0),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    r.eventually(2.0, "all finished", |r| {
        r.counter(0, "finished") + r.counter(1, "finished") == 40
    })
    .await;
    assert_eq!(r.total_inflight(), 0);
    r.shutdown().await;
}
