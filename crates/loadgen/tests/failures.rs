//! Bad targets and misbehaving servers: clear errors before any load, and
//! error rows (never a crash, never a missing row) once it runs.

use crate::util::{dead_port, engine, scripted_session, Scripted};
use kvroute_loadgen::{run, ErrorKind, LoadgenConfig, LoadgenError, Pacing};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test]
async fn unreachable_target_fails_fast_with_a_clear_error() {
    let port = dead_port().await;
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let err = run(
        LoadgenConfig::new(url.clone()),
        vec![scripted_session(0, "ok", 2)],
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(err, LoadgenError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{url}/v1/models")), "{msg}");
    assert!(msg.contains("unreachable"), "{msg}");

    // A reachable target but an engine without /metrics.
    let e = engine(40.0).await;
    let mut config = LoadgenConfig::new(e.url());
    config.engines = vec![url.clone()];
    let err = run(
        config,
        vec![scripted_session(0, "ok", 2)],
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LoadgenError::EngineUnreachable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");

    // Bad URLs and settings are refused before any connection.
    let err = run(
        LoadgenConfig::new("ftp://x:1"),
        vec![],
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LoadgenError::InvalidUrl { .. }), "{err:?}");
    let mut config = LoadgenConfig::new(e.url());
    config.headers = vec![("bad header".into(), "x".into())];
    let err = run(config, vec![], std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadgenError::InvalidHeader { .. }), "{err:?}");
    let mut config = LoadgenConfig::new(e.url());
    config.ca_file = Some("/no/such/ca.pem".into());
    let err = run(config, vec![], std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    let mut config = LoadgenConfig::new(e.url());
    config.pacing = Pacing::Closed { concurrency: 0 };
    let err = run(config, vec![], std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
    // The model named by the engine is used by default; a wrong one is a 404 row.
    let mut config = LoadgenConfig::new(e.url());
    config.model = Some("no-such-model".into());
    let report = run(
        config,
        vec![scripted_session(0, "hi", 2)],
        std::future::pending(),
    )
    .await
    .unwrap();
    let r = &report.records[0];
    assert_eq!((r.status, r.error_kind), (404, Some(ErrorKind::Status)));
    assert!(r.error.contains("does not exist"), "{}", r.error);
}

#[tokio::test]
async fn server_failures_become_error_rows() {
    let server = Scripted::start().await;
    let modes = ["ok", "500", "cut", "error-event", "no-done", "hang", "ok"];
    let sessions: Vec<_> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| scripted_session(i as u64, m, 4))
        .collect();
    let mut config = LoadgenConfig::new(server.url());
    config.pacing = Pacing::Closed { concurrency: 3 };
    config.timeout = Duration::from_millis(300);
    let report = run(config, sessions, std::future::pending()).await.unwrap();
    assert_eq!(report.records.len(), modes.len(), "every request has a row");
    let by_mode: BTreeMap<&str, _> = report
        .records
        .iter()
        .map(|r| (modes[r.session as usize], r))
        .collect();
    let kind = |m: &str| by_mode[m].error_kind;
    assert_eq!(kind("ok"), None);
    assert_eq!(kind("500"), Some(ErrorKind::Status));
    assert_eq!(by_mode["500"].status, 500);
    assert!(
        by_mode["500"].error.contains("scripted failure"),
        "{}",
        by_mode["500"].error
    );
    assert_eq!(kind("cut"), Some(ErrorKind::Stream));
    assert_eq!(by_mode["cut"].status, 200);
    assert!(
        by_mode["cut"].ttft.is_finite(),
        "the token before the cut counts"
    );
    assert_eq!(kind("error-event"), Some(ErrorKind::Server));
    assert!(by_mode["error-event"]
        .error
        .contains("scripted error event"));
    assert_eq!(kind("no-done"), Some(ErrorKind::Stream));
    assert_eq!(kind("hang"), Some(ErrorKind::Timeout));
    assert!(by_mode["hang"].e2e >= 0.3 && by_mode["hang"].e2e < 1.0);

    // Router headers are read.
    let ok = by_mode["ok"];
    assert_eq!(ok.instance, "scripted-0");
    assert_eq!(ok.predicted_cached_tokens, Some(2));
    assert_eq!((ok.output_tokens, ok.prompt_tokens), (4, 3));
    assert!(ok.tpot.is_some() && ok.itl_mean.is_some());

    let c = &report.client;
    assert_eq!((c.requests, c.ok, c.failed), (7, 2, 5));
    assert_eq!(c.errors.get("stream"), Some(&2));
    assert_eq!(c.errors.get("timeout"), Some(&1));
    assert_eq!(c.statuses.get(&500), Some(&1));
    assert_eq!(c.per_instance["scripted-0"].requests, 6);
    let table = report.to_string();
    assert!(table.contains("timeout 1"), "{table}");
}

#[tokio::test]
async fn interrupt_stops_sending_and_keeps_what_was_measured() {
    let server = Scripted::start().await;
    // Two quick sessions, then ones that hang until aborted.
    let mut sessions = vec![scripted_session(0, "ok", 2), scripted_session(1, "ok", 2)];
    sessions.extend((2..6).map(|i| scripted_session(i, "hang", 2)));
    sessions.extend((6..50).map(|i| scripted_session(i, "ok", 2)));
    let mut config = LoadgenConfig::new(server.url());
    config.pacing = Pacing::Closed { concurrency: 4 };
    config.drain = Duration::from_millis(100);
    let t = Instant::now();
    let report = run(
        config,
        sessions,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(report.interrupted);
    let aborted = report
        .records
        .iter()
        .filter(|r| r.error_kind == Some(ErrorKind::Aborted))
        .count();
    assert_eq!(aborted, 4, "the hanging requests are rows too");
    assert_eq!(
        report.records.iter().filter(|r| r.ok()).count(),
        2,
        "nothing new was started once all slots hung"
    );
    let dir = std::env::temp_dir().join(format!("kvroute-loadgen-int-{}", std::process::id()));
    report.write(&dir).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["client"]["errors"]["aborted"], 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn limits_warmup_and_duration() {
    let server = Scripted::start().await;
    // Each "slow" request takes ~150 ms (4 tokens, 50 ms apart).
    let sessions: Vec<_> = (0..40).map(|i| scripted_session(i, "slow", 4)).collect();

    let mut config = LoadgenConfig::new(server.url());
    config.pacing = Pacing::Closed { concurrency: 2 };
    config.num_requests = Some(5);
    let report = run(config, sessions.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.records.len(), 5);
    assert_eq!(
        report.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );

    let mut config = LoadgenConfig::new(server.url());
    config.pacing = Pacing::Closed { concurrency: 1 };
    config.warmup = Duration::from_millis(200);
    config.duration = Some(Duration::from_millis(700));
    let report = run(config, sessions, std::future::pending()).await.unwrap();
    let n = report.records.len();
    assert!((3..=6).contains(&n), "{n} requests in 0.7 s");
    for r in &report.records {
        assert!(r.start < 0.7, "started after the duration: {r:?}");
        assert_eq!(r.warmup, r.start < 0.2);
        assert!(r.ok(), "{r:?}");
    }
    let warm = report.records.iter().filter(|r| r.warmup).count();
    assert!(warm >= 1);
    assert_eq!(report.client.warmup_requests, warm);
    assert_eq!(report.client.requests, n - warm);
    assert!(!report.interrupted);
}

#[tokio::test]
async fn headers_api_key_and_extra_body_reach_the_target() {
    let s = Scripted::start().await;
    // Without the key and header: every request is a 401 row.
    let report = run(
        LoadgenConfig::new(s.url()),
        vec![scripted_session(0, "auth", 3)],
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.records[0].status, 401);
    assert!(
        report.records[0].error.contains("wrong key"),
        "{:?}",
        report.records[0]
    );

    let mut config = LoadgenConfig::new(s.url());
    config.api_key = Some("sk-test".into());
    config.headers = vec![("x-tenant".into(), "blue".into())];
    config.extra_body = serde_json::json!({"max_tokens": 5})
        .as_object()
        .unwrap()
        .clone();
    let report = run(
        config,
        vec![
            scripted_session(0, "auth", 3),
            scripted_session(1, "auth", 3),
        ],
        std::future::pending(),
    )
    .await
    .unwrap();
    for r in &report.records {
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.output_tokens, 5, "--extra-body overrides max_tokens");
        assert_eq!(r.itls.len(), 4, "one gap between each pair of 5 chunks");
    }
    assert_eq!(report.run.extra_body["max_tokens"], 5);
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("sk-test"), "the key is never written out");
}
