//! A real TLS exchange over 127.0.0.1: a hyper server behind
//! [`server_tls`] with the test certificate, and [`client`] trusting the
//! test CA (and failing, with the certificate named as the cause, when it
//! does not).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kvroute_http::{client, error_chain, server_tls, ClientOptions};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// An https server answering every request with "hello over TLS" and the
/// protocol version; returns its port.
async fn https_server() -> u16 {
    let acceptor = server_tls(&testdata("server.pem"), &testdata("server.key")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.acceptor().accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("hello over TLS, {:?}", req.version());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_with_the_trusted_ca_and_refused_without() {
    let port = https_server().await;
    for host in ["127.0.0.1", "localhost"] {
        let trusting = client::<Empty<Bytes>>(&ClientOptions {
            ca_file: Some(testdata("ca.pem")),
            http2_over_tls: true,
            ..ClientOptions::default()
        })
        .unwrap();
        let uri: hyper::Uri = format!("https://{host}:{port}/x").parse().unwrap();
        let resp = trusting.get(uri).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"hello over TLS, HTTP/1.1",
            "ALPN falls back to HTTP/1.1"
        );
    }

    let untrusting = client::<Empty<Bytes>>(&ClientOptions::default()).unwrap();
    let uri: hyper::Uri = format!("https://127.0.0.1:{port}/x").parse().unwrap();
    let err = untrusting.get(uri).await.unwrap_err();
    let text = error_chain(&err);
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn plain_http_still_works() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                b"plain",
            ))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    });
    let c = client::<Empty<Bytes>>(&ClientOptions::default()).unwrap();
    let resp = c
        .get(format!("http://127.0.0.1:{port}/").parse().unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"plain");
}
