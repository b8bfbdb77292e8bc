//! Whatever a data plane sends on an ext_proc stream — phases out of order,
//! bodies in pieces, garbage JSON, trailers, observability mode, streams
//! cut anywhere — the picker answers or closes the stream, never panics,
//! and every pick it made is released once the stream is gone.

mod common;
use common::headers;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    external_processor_client::ExternalProcessorClient, processing_request::Request as Phase,
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProtocolConfiguration,
};
use kvroute_gateway::{Gateway, InstanceConfig, RouterConfig};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(Debug, Clone)]
enum Msg {
    Headers { path: u8, end: bool, duplex: bool },
    Body { bytes: Vec<u8>, end: bool },
    Trailers,
    ResponseHeaders { status: u16, end: bool },
    ResponseBody { end: bool },
    Observe,
}

fn msg() -> impl Strategy<Value = Msg> {
    let json = prop_oneof![
        Just(br#"{"model":"m","prompt":"hello there, a prompt","max_tokens":4}"#.to_vec()),
        Just(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..200),
    ];
    prop_oneof![
        (0u8..4, any::<bool>(), any::<bool>()).prop_map(|(path, end, duplex)| Msg::Headers {
            path,
            end,
            duplex
        }),
        (json, any::<bool>()).prop_map(|(bytes, end)| Msg::Body { bytes, end }),
        Just(Msg::Trailers),
        (
            prop_oneof![Just(200u16), Just(503), Just(404)],
            any::<bool>()
        )
            .prop_map(|(status, end)| Msg::ResponseHeaders { status, end }),
        any::<bool>().prop_map(|end| Msg::ResponseBody { end }),
        Just(Msg::Observe),
    ]
}

fn encode(m: &Msg) -> ProcessingRequest {
    let mut r = ProcessingRequest::default();
    r.request = Some(match m {
        Msg::Headers { path, end, duplex } => {
            if *duplex {
                r.protocol_config = Some(ProtocolConfiguration {
                    request_body_mode: BodySendMode::FullDuplexStreamed as i32,
                    response_body_mode: BodySendMode::FullDuplexStreamed as i32,
                    ..Default::default()
                });
            }
            let path = [
                "/v1/completions",
                "/v1/chat/completions",
                "/v1/models",
                "/x?y",
            ][usize::from(*path)];
            Phase::RequestHeaders(HttpHeaders {
                headers: Some(headers(&[(":path", path), (":method", "POST")])),
                end_of_stream: *end,
                ..Default::default()
            })
        }
        Msg::Body { bytes, end } => Phase::RequestBody(HttpBody {
            body: bytes.clone(),
            end_of_stream: *end,
            ..Default::default()
        }),
        Msg::Trailers => Phase::RequestTrailers(HttpTrailers::default()),
        Msg::ResponseHeaders { status, end } => Phase::ResponseHeaders(HttpHeaders {
            headers: Some(headers(&[(":status", &status.to_string())])),
            end_of_stream: *end,
            ..Default::default()
        }),
        Msg::ResponseBody { end } => Phase::ResponseBody(HttpBody {
            body: b"data: x\n\n".to_vec(),
            end_of_stream: *end,
            ..Default::default()
        }),
        Msg::Observe => {
            r.observability_mode = true;
            Phase::RequestBody(HttpBody::default())
        }
    });
    r
}

struct Picker {
    rt: tokio::runtime::Runtime,
    gateway: Arc<Gateway>,
    url: String,
}

/// Panics anywhere in the process (the picker's tasks included: a panic
/// there would otherwise only end its task, and the unwinding would even
/// release the pick).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn picker() -> Picker {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        previous(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = RouterConfig::default();
    // Probing off: the (unreachable) instances take picks at once.
    config.health.interval_secs = 0.0;
    config.metrics_interval_secs = 0.0;
    config.proxy.max_body_bytes = 150;
    config.instances = vec![
        InstanceConfig::new("http://127.0.0.1:9"),
        InstanceConfig::new("http://127.0.0.1:10"),
    ];
    let gateway = Gateway::new(config).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gw = Arc::clone(&gateway);
    rt.spawn(kvroute_epp::serve_picker(
        listener,
        gw,
        std::future::pending(),
    ));
    Picker { rt, gateway, url }
}

fn inflight(g: &Gateway) -> u32 {
    g.engines().iter().map(|e| e.inflight()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn any_message_sequence_is_answered_and_released(
        msgs in proptest::collection::vec(msg(), 0..8),
        read_replies in any::<bool>(),
    ) {
        let p = PICKER.with(Arc::clone);
        PANICS.store(0, std::sync::atomic::Ordering::SeqCst);
        p.rt.block_on(async {
            let mut client = ExternalProcessorClient::connect(p.url.clone()).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let mut replies = client
                .process(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            for m in &msgs {
                if tx.send(encode(m)).await.is_err() {
                    break;
                }
            }
            drop(tx);
            if read_replies {
                // Every reply is a well-formed message until the stream ends.
                while let Ok(Some(r)) =
                    tokio::time::timeout(Duration::from_secs(5), replies.next()).await
                {
                    if r.is_err() {
                        break;
                    }
                }
            }
            drop(replies);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while inflight(&p.gateway) != 0 {
                assert!(tokio::time::Instant::now() < deadline, "picks never released after {msgs:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        prop_assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0, "a panic after {:?}", msgs);
    }
}

thread_local! {
    static PICKER: Arc<Picker> = Arc::new(picker());
}
