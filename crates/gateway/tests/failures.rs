//! Failures before the first byte reached the client: killed engines and
//! 5xx/429 answers are retried elsewhere, health probes take instances out
//! and back, and every attempt is accounted exactly once.

use crate::common::*;
use kvroute_core::InstanceId;
use kvroute_routing::InstanceState;

fn state(r: &Router, id: u32) -> InstanceState {
    r.gw.dispatcher().instance(InstanceId(id)).unwrap().state()
}

#[tokio::test]
async fn a_killed_backend_loses_no_request() {
    let (mut a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let r = router(config("round_robin", &[&a, &b])).await;
    let c = client();
    // Warm both (pooled connections to `a` go stale when it dies).
    for i in 0..4 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("warm {i}"), false),
        )
        .await;
        assert_eq!(ans.status, 200);
    }
    a.kill();
    for i in 0..10 {
        let stream = i % 2 == 0;
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("after {i}"), stream),
        )
        .await;
        assert_eq!(ans.status, 200, "request {i}: {}", ans.text());
        assert_eq!(ans.header("x-kvroute-instance"), b.url());
        if stream {
            assert!(ans.text().ends_with("data: [DONE]\n\n"), "{}", ans.text());
        }
    }
    assert_eq!(b.requests(), 2 + 10);
    assert!(
        r.counter(0, "failed") >= 1,
        "the attempts on the dead instance count as failed"
    );
    assert_eq!(r.total_inflight(), 0);
    assert!(r.gw.metrics().retries() >= 1);
    r.eventually(5.0, "dead instance taken out", |r| {
        state(r, 0) == InstanceState::Unhealthy
    })
    .await;
    r.shutdown().await;
}

#[tokio::test]
async fn engine_errors_are_retried_elsewhere_and_counted_as_failed() {
    for status in [500u16, 503, 429] {
        let a = backend(Behavior {
            fail_status: Some(status),
            ..Default::default()
        })
        .await;
        let b = backend(Behavior::default()).await;
        let r = router(config("round_robin", &[&a, &b])).await;
        let c = client();
        for i in 0..6 {
            let ans = post(
                &c,
                &r.url("/v1/completions"),
                &completion(&format!("p{i}"), i % 2 == 1),
            )
            .await;
            assert_eq!(ans.status, 200, "{status}: {}", ans.text());
            assert_eq!(ans.header("x-kvroute-instance"), b.url());
        }
        assert_eq!(b.requests(), 6);
        assert_eq!(r.counter(0, "failed"), a.requests() as u64);
        assert_eq!(r.counter(1, "finished"), 6);
        assert_eq!(r.total_inflight(), 0);
        assert_eq!(r.gw.metrics().retries(), a.requests() as u64);
        r.shutdown().await;
    }
}

#[tokio::test]
async fn when_every_instance_fails_the_last_error_is_passed_on() {
    let a = backend(Behavior {
        fail_status: Some(500),
        ..Default::default()
    })
    .await;
    let b = backend(Behavior {
        fail_status: Some(502),
        ..Default::default()
    })
    .await;
    let mut cfg = config("round_robin", &[&a, &b]);
    cfg.proxy.retries = 5;
    let r = router(cfg).await;
    let c = client();
    let ans = post(&c, &r.url("/v1/completions"), &completion("x", false)).await;
    assert!(ans.status.is_server_error());
    assert!(ans.text().contains("engine failure"), "{}", ans.text());
    // Each instance tried once, then nothing is left to try.
    assert_eq!((a.requests(), b.requests()), (1, 1));
    assert_eq!(r.counter(0, "failed") + r.counter(1, "failed"), 2);
    assert_eq!(r.total_inflight(), 0);

    // With retries exhausted the last attempt's answer is passed through and accounted.
    let mut cfg = config("round_robin", &[&a]);
    cfg.proxy.retries = 0;
    let r2 = router(cfg).await;
    let ans = post(&c, &r2.url("/v1/completions"), &completion("x", true)).await;
    assert_eq!(ans.status, 500);
    assert_eq!(r2.counter(0, "failed"), 1);
    assert_eq!(r2.total_inflight(), 0);
    r.shutdown().await;
    r2.shutdown().await;
}

#[tokio::test]
async fn no_backend_at_all_is_a_502_and_no_healthy_one_a_503() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config("round_robin", &[]);
    cfg.instances
        .push(kvroute_gateway::InstanceConfig::new(format!(
            "http://{dead}"
        )));
    // Without probes the instance is taken at its word: a connection error.
    let mut unprobed = cfg.clone();
    unprobed.health.interval_secs = 0.0;
    let r = router(unprobed).await;
    let c = client();
    let ans = post(&c, &r.url("/v1/completions"), &completion("x", false)).await;
    assert_eq!(ans.status, 502, "{}", ans.text());
    assert_eq!(ans.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(r.total_inflight(), 0);
    r.shutdown().await;
    // With probes it is never admitted: its first probe fails.
    let r = router(cfg).await;
    assert_eq!(state(&r, 0), InstanceState::Unhealthy);
    let ans = post(&c, &r.url("/v1/completions"), &completion("x", false)).await;
    assert_eq!(ans.status, 503);
    assert_eq!(ans.json()["error"]["code"], "no_instance");
    let h = send(&c, "GET", &r.url("/health"), &[], "").await;
    assert_eq!(h.status, 503);
    r.shutdown().await;
}

#[tokio::test]
async fn failing_health_probes_take_an_instance_out_and_back() {
    let a = backend(Behavior {
        unhealthy: true,
        ..Default::default()
    })
    .await;
    let b = backend(Behavior::default()).await;
    let r = router(config("round_robin", &[&a, &b])).await;
    r.eventually(5.0, "a unhealthy", |r| {
        state(r, 0) == InstanceState::Unhealthy
    })
    .await;
    let c = client();
    for i in 0..4 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("{i}"), false),
        )
        .await;
        assert_eq!(ans.header("x-kvroute-instance"), b.url());
    }
    let h = send(&c, "GET", &r.url("/health"), &[], "").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["healthy_instances"], 1);
    // `a` recovers: replace it with a healthy engine on the same port.
    let port = a.addr;
    drop(a);
    // The port is free once the dropped backend's listener has closed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let listener = loop {
        match tokio::net::TcpListener::bind(port).await {
            Ok(l) => break l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("port {port} never came free: {e}"),
        }
    };
    let _a2 = backend_on(listener, Behavior::default()).await;
    r.eventually(5.0, "a healthy again", |r| {
        state(r, 0) == InstanceState::Healthy
    })
    .await;
    r.shutdown().await;
}
