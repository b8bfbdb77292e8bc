//! Client access to the public port: API keys on /v1/… (as vLLM's
//! --api-key) and CORS for browser clients.

use crate::common::*;

#[tokio::test]
async fn api_keys_guard_the_api() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.access.api_keys = vec!["k-one".into(), "k-two".into()];
    let r = router(cfg).await;
    let c = client();
    let comp = r.url("/v1/completions");
    let json = ("content-type", "application/json");
    for auth in [None, Some("Bearer wrong"), Some("k-one"), Some("Bearer ")] {
        let mut h = vec![json];
        if let Some(v) = auth {
            h.push(("authorization", v));
        }
        let ans = send(&c, "POST", &comp, &h, completion("x", false)).await;
        assert_eq!(ans.status, 401, "{auth:?}");
        assert_eq!(ans.json()["error"]["code"], "invalid_api_key");
        assert_eq!(ans.header("www-authenticate"), "Bearer");
    }
    assert_eq!(a.requests(), 0, "nothing unauthorised reaches an engine");
    for key in ["k-one", "k-two"] {
        let bearer = format!("Bearer {key}");
        let ans = send(
            &c,
            "POST",
            &comp,
            &[json, ("authorization", &bearer)],
            completion("x", false),
        )
        .await;
        assert_eq!(ans.status, 200, "{}", ans.text());
    }
    let models = send(&c, "GET", &r.url("/v1/models"), &[], "").await;
    assert_eq!(models.status, 401);
    // Not the API: probes and the router's own pages need no key.
    assert_eq!(
        send(&c, "GET", &r.url("/health"), &[], "").await.status,
        200
    );
    assert_eq!(
        send(&c, "GET", &r.url("/metrics"), &[], "").await.status,
        200
    );
    r.shutdown().await;
}

#[tokio::test]
async fn cors_answers_preflights_for_allowed_origins_only() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.access.cors_allowed_origins = vec!["https://app.example.com".into()];
    cfg.access.api_keys = vec!["k".into()];
    let r = router(cfg).await;
    let c = client();
    let comp = r.url("/v1/completions");
    let pre = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ]
    };
    // A preflight needs no key and names the allowed origin.
    let ok = send(&c, "OPTIONS", &comp, &pre("https://app.example.com"), "").await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(ok.header("access-control-allow-methods").contains("POST"));
    let other = send(&c, "OPTIONS", &comp, &pre("https://evil.example"), "").await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // The request itself, and a refusal, carry the header for the browser.
    let ans = send(
        &c,
        "POST",
        &comp,
        &[
            ("origin", "https://app.example.com"),
            ("content-type", "application/json"),
            ("authorization", "Bearer k"),
        ],
        completion("x", false),
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(
        ans.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    let refused = send(
        &c,
        "POST",
        &comp,
        &[("origin", "https://app.example.com")],
        completion("x", false),
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(a.requests(), 1);
    r.shutdown().await;
}

#[test]
fn bad_access_settings_are_refused() {
    let mut cfg = config("round_robin", &[]);
    cfg.access.cors_allowed_origins = vec!["app.example.com".into()];
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("cors_allowed_origins"));
    cfg.access.cors_allowed_origins = vec![];
    cfg.access.api_keys = vec![" spaced ".into()];
    assert!(cfg.validate().unwrap_err().to_string().contains("api_keys"));
}
