//! `fetch` against a tiny hyper server on 127.0.0.1:0 that serves the real
//! vLLM page at `/metrics` (feature `poll`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kvroute_metrics::{fetch, http_client, EngineReading, MetricsError};
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("fixtures/vllm-0.32-metrics.txt");

/// Serve `PAGE` at `/metrics`, 404 elsewhere; returns the base URL. The
/// server task lives as long as the test's runtime.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let resp = if req.uri().path() == "/metrics" {
                        Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())))
                    } else {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    };
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// Accepts connections and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

/// A port nobody listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn fetch_reads_the_page_and_reports_failures() {
    let base = serve().await;
    let client = http_client(&kvroute_http::ClientOptions::default()).unwrap();
    let t = Duration::from_secs(2);

    let s = fetch(&client, &format!("{base}/metrics"), t).await.unwrap();
    assert_eq!(s.counter("vllm:prefix_cache_hits"), Some(3584.0));
    assert_eq!(EngineReading::from_scrape(&s).unwrap().gauges.running, 0);

    match fetch(&client, &format!("{base}/nope"), t).await {
        Err(MetricsError::HttpStatus { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    match fetch(&client, &format!("{}/metrics", closed_port().await), t).await {
        Err(MetricsError::Http { .. }) => {}
        other => panic!("{other:?}"),
    }
    let hole = black_hole().await;
    match fetch(
        &client,
        &format!("{hole}/metrics"),
        Duration::from_millis(100),
    )
    .await
    {
        Err(MetricsError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fetch(&client, "ftp://127.0.0.1:1/metrics", t).await,
        Err(MetricsError::InvalidUrl { .. })
    ));
}
