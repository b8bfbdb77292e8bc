//! Malformed requests get OpenAI-style 4xx answers and never reach an engine.

use crate::common::*;

fn assert_openai_error(ans: &Answer, status: u16, code: &str) {
    assert_eq!(ans.status, status, "{}", ans.text());
    assert_eq!(ans.headers["content-type"], "application/json");
    let v = ans.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["type"], "invalid_request_error", "{v}");
    assert_eq!(e["code"], code, "{v}");
}

#[tokio::test]
async fn malformed_requests_get_openai_style_4xx() {
    let a = backend(Behavior::default()).await;
    let mut cfg = config("cache_affinity", &[&a]);
    cfg.proxy.max_body_bytes = 1024;
    let r = router(cfg).await;
    let c = client();
    let comp = r.url("/v1/completions");
    let chat = r.url("/v1/chat/completions");
    for (url, body, code) in [
        (&comp, "{not json", "invalid_json"),
        (&comp, "", "invalid_json"),
        (&comp, "[1,2]", "invalid_json"),
        (&comp, r#"{"model": "m"}"#, "missing_required_parameter"),
        (
            &comp,
            r#"{"model": "m", "prompt": {"x": 1}}"#,
            "invalid_type",
        ),
        (&comp, r#"{"model": 7, "prompt": "x"}"#, "invalid_type"),
        (
            &comp,
            r#"{"model": "m", "prompt": "x", "stream": "yes"}"#,
            "invalid_type",
        ),
        (&comp, r#"{"model": "m", "prompt": []}"#, "invalid_type"),
        (
            &chat,
            r#"{"model": "m", "prompt": "x"}"#,
            "missing_required_parameter",
        ),
        (&chat, r#"{"model": "m", "messages": "x"}"#, "invalid_type"),
        (
            &chat,
            r#"{"model": "m", "messages": [{"role": "user", "content": 3}]}"#,
            "invalid_type",
        ),
    ] {
        let ans = post(&c, url, body).await;
        assert_openai_error(&ans, 400, code);
    }
    let wrong = post(
        &c,
        &chat,
        r#"{"model": 3, "messages": [{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_openai_error(&wrong, 400, "invalid_type");
    assert_eq!(wrong.json()["error"]["param"], "model");

    let big = completion(&"x".repeat(2000), false);
    let ans = post(&c, &comp, &big).await;
    assert_openai_error(&ans, 413, "request_too_large");
    assert_eq!(a.requests(), 0, "nothing malformed reaches an engine");
    assert_eq!(r.total_inflight(), 0);
    assert!(r.gw.metrics().errors("bad_request") >= 12);
    assert_eq!(r.gw.metrics().errors("body_too_large"), 1);
    // The router still works.
    assert_eq!(
        post(&c, &comp, &completion("fine", false)).await.status,
        200
    );
    // Without `model`, as vLLM accepts it: forwarded unchanged.
    let ans = post(
        &c,
        &comp,
        r#"{"prompt": "no model named", "max_tokens": 2}"#,
    )
    .await;
    assert_eq!(ans.status, 200, "{}", ans.text());
    let seen = a.seen.bodies.lock().last().cloned().unwrap();
    assert_eq!(
        &seen[..],
        br#"{"prompt": "no model named", "max_tokens": 2}"#
    );
    r.shutdown().await;
}

#[tokio::test]
async fn an_oversize_body_without_content_length_is_refused_too() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let a = backend(Behavior::default()).await;
    let mut cfg = config("round_robin", &[&a]);
    cfg.proxy.max_body_bytes = 1000;
    let r = router(cfg).await;
    // A chunked upload (no content-length).
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..10)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 200]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let c: hyper_util::client::legacy::Client<
        _,
        http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    > = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(r.url("/v1/completions"))
        .body(body)
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(a.requests(), 0);
    r.shutdown().await;
}
