//! Engines found at run time: a watched instance file and DNS names,
//! reconciled with the gateway's instances; listed instances left alone.

use crate::common::*;
use std::path::PathBuf;

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvroute-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Instances taking requests, by URL.
fn healthy(r: &Router) -> Vec<String> {
    let mut v: Vec<String> =
        r.gw.engines()
            .iter()
            .filter(|e| !e.is_removed() && r.gw.find(e.name()).is_some())
            .filter(|e| e.health().is_ok())
            .map(|e| e.name().to_string())
            .collect();
    v.sort();
    v
}

#[tokio::test]
async fn an_instance_file_is_followed_and_listed_instances_are_kept() {
    let (a, b, listed) = (
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
        backend(Behavior::default()).await,
    );
    let path = temp_file("instances.txt");
    std::fs::write(&path, format!("# the fleet\n{}\n", a.url())).unwrap();
    let mut cfg = config("round_robin", &[&listed]);
    cfg.discovery.file = Some(path.clone());
    cfg.discovery.interval_secs = 0.05;
    let r = router(cfg).await;
    let mut want = vec![a.url(), listed.url()];
    want.sort();
    r.eventually(5.0, "the file's instance added and probed", |r| {
        healthy(r) == want
    })
    .await;
    let c = client();
    for _ in 0..4 {
        let ans = post(&c, &r.url("/v1/completions"), &completion("hi", false)).await;
        assert_eq!(ans.status, 200);
    }
    assert!(a.requests() > 0 && listed.requests() > 0);

    // The file changes: a goes, b comes (with a bad line skipped), and the
    // listed instance, named in the file too, is never the file's to remove.
    std::fs::write(&path, format!("{}\nnot-a-url\n{}\n", b.url(), listed.url())).unwrap();
    let mut want = vec![b.url(), listed.url()];
    want.sort();
    r.eventually(5.0, "a removed, b added", |r| {
        r.gw.find(&a.url()).is_none() && healthy(r) == want
    })
    .await;
    // Unreadable file: what it said last is kept — checked after two
    // failed reads, each followed by a reconciliation.
    std::fs::remove_file(&path).unwrap();
    let failed = r.gw.metrics().errors("discovery");
    r.eventually(5.0, "two failed reads of the vanished file", |r| {
        r.gw.metrics().errors("discovery") >= failed + 2
    })
    .await;
    assert_eq!(
        healthy(&r),
        want,
        "a vanished file keeps the last instances"
    );
    assert!(r.gw.find(&listed.url()).is_some());
}

#[tokio::test]
async fn dns_names_become_instances() {
    let a = backend(Behavior::default()).await;
    let port = a.addr.port();
    let mut cfg = config("round_robin", &[]);
    cfg.discovery.dns = vec![format!("localhost:{port}")];
    cfg.discovery.dns_kv_events = Some("connect:tcp://{host}:5557".into());
    cfg.discovery.interval_secs = 0.05;
    let r = router(cfg).await;
    let url = format!("http://127.0.0.1:{port}");
    r.eventually(5.0, "localhost's IPv4 address added and probed", |r| {
        healthy(r).contains(&url)
    })
    .await;
    let id = r.gw.find(&url).unwrap();
    let e = r.gw.engine(id).unwrap();
    assert_eq!(
        e.ext().kv_events().map(|ep| ep.to_string()).as_deref(),
        Some("connect:tcp://127.0.0.1:5557")
    );
    let ans = post(
        &client(),
        &r.url("/v1/completions"),
        &completion("hi", false),
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.header("x-kvroute-instance"), url);
}

#[test]
fn bad_discovery_settings_are_refused() {
    let mut cfg = config("round_robin", &[]);
    cfg.discovery.dns = vec!["no-port".into()];
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("discovery.dns"));
    cfg.discovery.dns = vec!["vllm:8000".into()];
    cfg.discovery.dns_kv_events = Some("connect:tcp://10.0.0.1:5557".into());
    assert!(cfg.validate().unwrap_err().to_string().contains("{host}"));
    cfg.discovery.dns_kv_events = None;
    cfg.discovery.interval_secs = 0.0;
    assert!(cfg.validate().unwrap_err().to_string().contains("interval"));
}
