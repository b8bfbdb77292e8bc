//! The admin API (auth, add/drain/undrain/remove), /health, /v1/models,
//! /metrics, engine metric polls, and graceful shutdown.

use crate::common::*;
use kvroute_core::InstanceId;
use kvroute_routing::InstanceState;

const TOKEN: &str = "s3cret-token";

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

async fn admin(c: &TestClient, r: &Router, method: &str, path: &str, body: &str) -> Answer {
    let (k, v) = auth();
    send(
        c,
        method,
        &r.url(path),
        &[(k, v.as_str()), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn admin_is_disabled_without_a_token() {
    let a = backend(Behavior::default()).await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    let ans = send(
        &c,
        "GET",
        &r.url("/admin/instances"),
        &[("authorization", "Bearer x")],
        "",
    )
    .await;
    assert_eq!(ans.status, 404);
    r.shutdown().await;
}

#[tokio::test]
async fn admin_requires_the_right_token() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.admin_token = Some(TOKEN.into());
    let r = router(cfg).await;
    let c = client();
    let url = r.url("/admin/instances");
    assert_eq!(send(&c, "GET", &url, &[], "").await.status, 401);
    assert_eq!(
        send(&c, "GET", &url, &[("authorization", "Bearer wrong")], "")
            .await
            .status,
        401
    );
    assert_eq!(
        send(&c, "GET", &url, &[("authorization", TOKEN)], "")
            .await
            .status,
        401
    );
    let ans = send(
        &c,
        "DELETE",
        &r.url("/admin/instances/0"),
        &[("authorization", "Bearer s3cret-tokeN")],
        "",
    )
    .await;
    assert_eq!(ans.status, 401);
    assert_eq!(r.gw.healthy_count(), 1, "nothing was removed");
    let ans = admin(&c, &r, "GET", "/admin/instances", "").await;
    assert_eq!(ans.status, 200);
    let list = ans.json();
    assert_eq!(list[0]["url"], a.url());
    assert_eq!(list[0]["state"], "healthy");
    assert_eq!(list[0]["directory"]["mode"], "predicted");
    r.shutdown().await;
}

#[tokio::test]
async fn admin_adds_drains_undrains_and_removes_instances() {
    let a = backend(Behavior::default()).await;
    let b = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.admin_token = Some(TOKEN.into());
    let r = router(cfg).await;
    let c = client();

    let ans = admin(
        &c,
        &r,
        "POST",
        "/admin/instances",
        &format!(r#"{{"url": "{}"}}"#, b.url()),
    )
    .await;
    assert_eq!(ans.status, 201, "{}", ans.text());
    assert_eq!(ans.json()["id"], 1);
    let dup = admin(
        &c,
        &r,
        "POST",
        "/admin/instances",
        &format!(r#"{{"url": "{}/"}}"#, b.url()),
    )
    .await;
    assert_eq!(dup.status, 409);
    let bad = admin(&c, &r, "POST", "/admin/instances", r#"{"url": "ftp://x"}"#).await;
    assert_eq!(bad.status, 400);
    let bad = admin(
        &c,
        &r,
        "POST",
        "/admin/instances",
        r#"{"url": "http://127.0.0.1:1", "kv_events": "tcp://x"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);

    // The new instance takes requests once a probe has found it answering.
    r.eventually(5.0, "b probed healthy", |r| r.gw.healthy_count() == 2)
        .await;
    for i in 0..4 {
        post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("{i}"), false),
        )
        .await;
    }
    assert_eq!((a.requests(), b.requests()), (2, 2));

    let ans = admin(&c, &r, "POST", "/admin/instances/0/drain", "").await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.json()["state"], "draining");
    for i in 0..3 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("d{i}"), false),
        )
        .await;
        assert_eq!(ans.header("x-kvroute-instance"), b.url());
    }
    let ans = admin(&c, &r, "POST", "/admin/instances/0/undrain", "").await;
    assert_eq!(ans.json()["state"], "healthy");

    let ans = admin(&c, &r, "DELETE", "/admin/instances/1", "").await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.json()["state"], "removed");
    let st = r.gw.dispatcher().instance(InstanceId(1)).unwrap().state();
    assert_eq!(st, InstanceState::Removed);
    for i in 0..3 {
        let ans = post(
            &c,
            &r.url("/v1/completions"),
            &completion(&format!("r{i}"), false),
        )
        .await;
        assert_eq!(ans.header("x-kvroute-instance"), a.url());
    }
    assert_eq!(
        admin(&c, &r, "DELETE", "/admin/instances/1", "")
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&c, &r, "POST", "/admin/instances/9/drain", "")
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&c, &r, "POST", "/admin/instances/x/drain", "")
            .await
            .status,
        404
    );
    // A removed URL can be added again (with a new id).
    let ans = admin(
        &c,
        &r,
        "POST",
        "/admin/instances",
        &format!(r#"{{"url": "{}"}}"#, b.url()),
    )
    .await;
    assert_eq!(ans.json()["id"], 2);
    let list = admin(&c, &r, "GET", "/admin/instances", "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    r.shutdown().await;
}

#[tokio::test]
async fn models_health_metrics_and_other_paths() {
    let a = backend(Behavior::default()).await;
    let r = router(config("cache_affinity", &[&a])).await;
    let c = client();
    let m = send(&c, "GET", &r.url("/v1/models"), &[], "").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.json()["data"][0]["id"], "fake-model");
    let h = send(&c, "GET", &r.url("/health"), &[], "").await;
    assert_eq!(h.status, 200);
    // Only the engines' public paths are forwarded.
    let version = send(&c, "GET", &r.url("/version"), &[], "").await;
    assert_eq!(version.header("x-kvroute-instance"), a.url());
    for (method, path) in [
        ("GET", "/no/such/path"),
        ("POST", "/reset_prefix_cache"),
        ("POST", "/collective_rpc"),
        ("POST", "/v1/load_lora_adapter"),
    ] {
        let other = send(&c, method, &r.url(path), &[], "").await;
        assert_eq!(other.status, 404, "{method} {path}");
        assert_eq!(other.json()["error"]["code"], "not_found");
        assert!(other.headers.get("x-kvroute-instance").is_none());
    }
    post(
        &c,
        &r.url("/v1/completions"),
        &completion("count me", false),
    )
    .await;
    let page = send(&c, "GET", &r.url("/metrics"), &[], "").await;
    assert_eq!(page.status, 200);
    let text = page.text();
    for needle in [
        "kvroute_requests_total{worker=\"",
        "outcome=\"finished\"} 1",
        "kvroute_route_decision_seconds_bucket",
        "kvroute_routed_requests_total{worker=",
        "kvroute_route_decisions_total{reason=\"cache_miss\"} 1",
        "kvroute_inflight_requests{worker=",
        "kvroute_instance_state{worker=",
        "kvroute_directory_mode{worker=",
        "kvroute_directory_blocks{worker=",
        "kvroute_predicted_cached_tokens_total{worker=",
        "kvroute_engine_prefix_cache_hits_total{worker=",
        "kvroute_kv_event_gaps_total{worker=",
        "kvroute_request_duration_seconds_bucket{le=",
        "kvroute_http_requests_total{",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(
        page.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!text.contains("# EOF") && !text.contains("_created"));
    assert!(
        text.contains("# TYPE kvroute_retries_total counter"),
        "{text}"
    );
    promtool_check(text);
    // OpenMetrics on request.
    let om = send(
        &c,
        "GET",
        &r.url("/metrics"),
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        "",
    )
    .await;
    assert!(om
        .header("content-type")
        .starts_with("application/openmetrics-text"));
    assert!(om.text().ends_with("# EOF\n"), "{}", om.text());
    r.shutdown().await;

    let mut cfg = config("round_robin", &[&a]);
    cfg.model = Some("my-model".into());
    let r = router(cfg).await;
    let m = send(&c, "GET", &r.url("/v1/models"), &[], "").await;
    assert_eq!(m.json()["data"][0]["id"], "my-model");
    r.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let gate = Arc::new(Semaphore::new(0));
    let a = backend(Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Default::default()
    })
    .await;
    let r = router(config("round_robin", &[&a])).await;
    let c = client();
    let url = r.url("/v1/completions");
    let req = tokio::spawn({
        let c = c.clone();
        async move { post(&c, &url, &completion("long", true)).await }
    });
    r.eventually(5.0, "stream started", |r| r.inflight(0) == 1)
        .await;
    let gw = Arc::clone(&r.gw);
    let addr = r.addr;
    let shut = tokio::spawn(r.shutdown());
    // Shutdown has begun once the listener is closed; the stream holds it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still open"
        );
        tokio::task::yield_now().await;
    }
    assert!(!shut.is_finished(), "shutdown waits for the stream");
    gate.add_permits(1);
    let ans = req.await.unwrap();
    assert!(ans.text().ends_with("data: [DONE]\n\n"), "{}", ans.text());
    shut.await.unwrap();
    let i = gw.dispatcher().instance(InstanceId(0)).unwrap();
    assert_eq!(i.inflight(), 0);
    assert_eq!(
        i.counters
            .finished
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn engine_metrics_are_polled_into_the_dispatcher() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vllm-metrics.txt"
    ))
    .unwrap();
    let a = backend(Behavior {
        metrics_page: Some(page),
        ..Default::default()
    })
    .await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.metrics_interval_secs = 0.05;
    let r = router(cfg).await;
    r.eventually(5.0, "gauges polled", |r| {
        let i = r.gw.dispatcher().instance(InstanceId(0)).unwrap();
        i.gauges().running == 3
    })
    .await;
    let i = r.gw.dispatcher().instance(InstanceId(0)).unwrap();
    assert_eq!(i.gauges().waiting, 2);
    assert!((i.gauges().kv_usage - 0.25).abs() < 1e-9);
    let entry = r.gw.engine(InstanceId(0)).unwrap();
    let up = entry.ext();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(up.engine.prefix_cache_hits.load(Relaxed), 640);
    assert_eq!(up.engine.prefix_cache_queries.load(Relaxed), 1000);
    assert_eq!(up.engine.num_gpu_blocks.load(Relaxed), 512);
    // Engine blocks of 16 tokens, router blocks of 4: 4x as many directory entries.
    assert_eq!(
        r.gw.dispatcher()
            .directory()
            .with_index(|ix| ix.capacity(InstanceId(0))),
        2048
    );
    r.shutdown().await;
}

/// `promtool check metrics` on a page (Prometheus' own linter, from the
/// Debian package; required in CI, skipped without it elsewhere).
fn promtool_check(page: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs promtool (Debian package prometheus; scripts/test.sh installs it)"
        );
        eprintln!("skipped: promtool not installed");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

#[tokio::test]
async fn sampled_decisions_are_explained() {
    let (a, b) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let mut cfg = config("weighted", &[&a, &b]);
    cfg.admin_token = Some(TOKEN.into());
    cfg.proxy.explain_every = 2;
    let r = router(cfg).await;
    let c = client();
    for i in 0..6 {
        let prompt = format!("a prompt long enough for a few blocks, number {}", i % 2);
        post(&c, &r.url("/v1/completions"), &completion(&prompt, false)).await;
    }
    let ans = admin(&c, &r, "GET", "/admin/decisions", "").await;
    assert_eq!(ans.status, 200);
    let list = ans.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "every 2nd of 6 decisions: {list:?}");
    for d in list {
        assert_eq!(d["policy"], "weighted");
        let cands = d["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 2);
        for c in cands {
            assert!(c["score"].is_number());
            assert!(c["matched_blocks"].is_number());
            for t in ["cached_fraction_beyond_shared", "requests"] {
                assert!(c["terms"].get(t).is_some(), "{t} in {c}");
            }
        }
    }
    // The same prompt again: its earlier engine is the one believed to hold it.
    let newest = &list[0]["candidates"];
    assert!(newest
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["matched_blocks"].as_u64().unwrap() > 0));
    r.shutdown().await;
}

/// A second replica warms its directory from the first one's
/// `/admin/snapshot` (and from a file of it): same blocks for the same
/// engines; a snapshot hashed differently, or not a snapshot, is refused;
/// an unreachable peer means a cold start, not a failure.
#[tokio::test]
async fn a_new_replica_warms_its_directory_from_a_snapshot() {
    let a = backend(Behavior::default()).await;
    let b = backend(Behavior::default()).await;
    let mut cfg = config("cache_affinity", &[&a, &b]);
    cfg.admin_token = Some(TOKEN.into());
    let r = router(cfg.clone()).await;
    let c = client();
    for i in 0..6 {
        let prompt = format!(
            "shared system prompt for tenant {} and a question {i}",
            i % 2
        );
        let ans = post(&c, &r.url("/v1/completions"), &completion(&prompt, false)).await;
        assert_eq!(ans.status, 200);
    }
    let dir = r.gw.dispatcher().directory();
    let held: Vec<u64> = (0..2).map(|i| dir.instance_blocks(InstanceId(i))).collect();
    assert!(held.iter().sum::<u64>() > 0, "{held:?}");
    let (k, v) = auth();
    let snap = send(&c, "GET", &r.url("/admin/snapshot"), &[(k, v.as_str())], "").await;
    assert_eq!(snap.status, 200);
    assert_eq!(snap.header("content-type"), "application/octet-stream");
    assert_eq!(
        send(&c, "GET", &r.url("/admin/snapshot"), &[], "")
            .await
            .status,
        401,
        "the snapshot is behind the admin token"
    );

    // From the peer's admin URL.
    let mut peer = cfg.clone();
    peer.directory.warm_start = Some(r.url("/admin/snapshot"));
    let gw = kvroute_gateway::Gateway::new(peer).unwrap();
    gw.warm_start().await.unwrap();
    for i in 0..2u32 {
        let id = InstanceId(i);
        assert_eq!(
            gw.dispatcher().directory().export(id),
            dir.export(id),
            "instance {i}"
        );
    }

    // From a file.
    let file = std::env::temp_dir().join(format!("kvroute-snapshot-{}.bin", std::process::id()));
    std::fs::write(&file, &snap.body).unwrap();
    let mut from_file = cfg.clone();
    from_file.directory.warm_start = Some(file.display().to_string());
    let gw = kvroute_gateway::Gateway::new(from_file.clone()).unwrap();
    gw.warm_start().await.unwrap();
    assert_eq!(
        gw.dispatcher().directory().instance_blocks(InstanceId(0)),
        held[0]
    );

    // Another block size: refused, naming both hashings.
    let mut other = from_file.clone();
    other.hashing.block_size = 8;
    let gw = kvroute_gateway::Gateway::new(other).unwrap();
    let e = gw.warm_start().await.unwrap_err().to_string();
    assert!(e.contains("block 4") && e.contains("block 8"), "{e}");
    // Not a snapshot: refused.
    std::fs::write(&file, b"{\"not\": \"a snapshot\"}").unwrap();
    let gw = kvroute_gateway::Gateway::new(from_file).unwrap();
    let e = gw.warm_start().await.unwrap_err().to_string();
    assert!(e.contains("not a kvroute directory snapshot"), "{e}");
    std::fs::remove_file(&file).unwrap();
    // A peer that is gone: a cold start.
    let mut gone = cfg.clone();
    gone.directory.warm_start = Some(format!("http://127.0.0.1:{}/admin/snapshot", free_port()));
    let gw = kvroute_gateway::Gateway::new(gone).unwrap();
    gw.warm_start().await.unwrap();
    assert_eq!(
        gw.dispatcher().directory().instance_blocks(InstanceId(0)),
        0
    );
    r.shutdown().await;
}
