//! `fetch` and `Poller` against a tiny hyper server on 127.0.0.1:0 that serves
//! the real vLLM page at `/metrics` (feature `poll`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kvroute_metrics::{
    fetch, http_client, EngineGauges, MetricsError, PollResult, Poller, PollerConfig,
};
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

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

fn config() -> PollerConfig {
    PollerConfig {
        interval: Duration::from_millis(30),
        timeout: Duration::from_millis(500),
        ..PollerConfig::default()
    }
}

#[tokio::test]
async fn fetch_reads_the_page_and_reports_failures() {
    let base = serve().await;
    let client = http_client();
    let t = Duration::from_secs(2);

    let s = fetch(&client, &format!("{base}/metrics"), t).await.unwrap();
    assert_eq!(s.counter("vllm:prefix_cache_hits"), Some(3584.0));
    assert_eq!(EngineGauges::from_scrape(&s).unwrap().running, 0);

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
        fetch(&client, "https://127.0.0.1:1/metrics", t).await,
        Err(MetricsError::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn poll_once_keeps_index_order() {
    let good = serve().await;
    let bad = closed_port().await;
    let poller = Poller::new([&good, &bad, &good], config()).unwrap();
    assert_eq!(poller.urls()[0], format!("{good}/metrics"));
    let results = poller.poll_once().await;
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(MetricsError::Http { .. })));
    assert!(results[2].is_ok());
}

#[tokio::test]
async fn run_polls_repeatedly_until_the_callback_breaks() {
    let good = serve().await;
    let bad = closed_port().await;
    let poller = Poller::new([good, bad], config()).unwrap();
    let mut seen: Vec<(usize, bool)> = Vec::new();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        poller.run(std::future::pending(), |i, r| {
            seen.push((i, r.is_ok()));
            if seen.len() >= 6 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }),
    )
    .await;
    assert!(done.is_ok(), "run did not stop on Break");
    // Three rounds, each with one success (index 0) and one failure (index 1).
    assert_eq!(seen.iter().filter(|s| **s == (0, true)).count(), 3);
    assert_eq!(seen.iter().filter(|s| **s == (1, false)).count(), 3);
}

#[tokio::test]
async fn run_stops_on_shutdown() {
    let poller = Poller::new([serve().await], config()).unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut count = 0;
    let mut stop_tx = Some(stop_tx);
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        poller.run(
            async {
                let _ = stop_rx.await;
            },
            |_, r| {
                assert!(r.is_ok());
                count += 1;
                if count == 2 {
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                }
                ControlFlow::Continue(())
            },
        ),
    )
    .await;
    assert!(done.is_ok(), "run ignored shutdown");
    assert!(count >= 2);
}

#[tokio::test]
async fn spawned_poller_sends_on_a_channel_and_stops_when_dropped() {
    let poller = Poller::new([serve().await], config()).unwrap();
    let (tx, mut rx) = mpsc::channel::<PollResult>(4);
    let handle = poller.spawn(tx);
    for _ in 0..2 {
        let (i, r) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a result within 10 s")
            .expect("channel open");
        assert_eq!(i, 0);
        assert!(r.unwrap().gauge("vllm:num_requests_running").is_some());
    }
    assert!(!handle.is_finished());
    drop(handle);
    // The aborted task drops its sender: the channel drains and closes.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "poller kept running after its handle was dropped"
    );
}

#[tokio::test]
async fn spawned_poller_ends_when_the_receiver_is_dropped() {
    let poller = Poller::new([serve().await], config()).unwrap();
    let (tx, rx) = mpsc::channel::<PollResult>(1);
    let handle = poller.spawn(tx);
    drop(rx);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "poller kept running without a receiver");
    handle.shutdown().await;
}
