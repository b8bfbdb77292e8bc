//! The endpoint picker end to end, spoken to the way Envoy speaks to it: a
//! gRPC client generated from Envoy's own protocol definitions
//! (`envoy-types`, compiled from Envoy's API protos) plays the data plane
//! and forwards each request to the picked emulated vLLM engine. No Envoy
//! binary can be installed here; the message sequences follow the ext_proc
//! filter's documented behaviour for the BUFFERED and FULL_DUPLEX_STREAMED
//! request body modes.

mod common;
use common::headers;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation::Mutation, external_processor_client::ExternalProcessorClient,
    processing_request::Request as Phase, processing_response::Response as Reply, HttpBody,
    HttpHeaders, ProcessingRequest, ProcessingResponse, ProtocolConfiguration,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use http_body_util::Full;
use kvroute_emulator::{spawn, EmulatorConfig, Running};
use kvroute_epp::{DESTINATION_ENDPOINT, DESTINATION_NAMESPACE, SUBSET_KEY, SUBSET_NAMESPACE};
use kvroute_gateway::{Gateway, InstanceConfig, RouterConfig};
use kvroute_sim::Profile;
use kvroute_tokenize::Tokenizer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    engines: Vec<Running>,
    gateway: Arc<Gateway>,
    grpc: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start(policy: &str, engines: usize) -> Fixture {
        Fixture::start_with(policy, engines, |_| {}).await
    }

    async fn start_with(
        policy: &str,
        engines: usize,
        tune: impl FnOnce(&mut RouterConfig),
    ) -> Fixture {
        let tokenizer_dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/tokenizers/qwen3");
        let tokenizer =
            Arc::new(Tokenizer::from_file(tokenizer_dir.join("tokenizer.json.gz")).unwrap());
        let profile = Profile::load("vllm-cpu-tiny").unwrap();
        let mut running = Vec::new();
        for _ in 0..engines {
            let mut ec = EmulatorConfig::new(profile.clone(), Arc::clone(&tokenizer));
            ec.speedup = 20.0;
            running.push(spawn(ec).await.unwrap());
        }
        let mut config = RouterConfig::from_toml(
            &format!("[policy]\nname = \"{policy}\""),
            "epp.toml".as_ref(),
        )
        .unwrap();
        config.hashing.block_size = profile.limits.block_size as usize;
        config.hashing.tokenizer = Some(tokenizer_dir.join("tokenizer.json.gz"));
        config.health.interval_secs = 0.2;
        config.metrics_interval_secs = 0.2;
        config.shutdown_grace_secs = 2.0;
        tune(&mut config);
        config.instances = running
            .iter()
            .map(|r| InstanceConfig::new(r.url()))
            .collect();
        let gateway = Gateway::new(config).unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (picker_stop, picker_stopped) = oneshot::channel::<()>();
        let gw = Arc::clone(&gateway);
        let task = tokio::spawn(async move {
            let picker = tokio::spawn(kvroute_epp::serve_picker(
                grpc_listener,
                Arc::clone(&gw),
                async move {
                    let _ = picker_stopped.await;
                },
            ));
            kvroute_gateway::serve_gateway(http_listener, gw, async move {
                let _ = stopped.await;
                let _ = picker_stop.send(());
            })
            .await
            .unwrap();
            picker.await.unwrap().unwrap();
        });
        let f = Fixture {
            engines: running,
            gateway,
            grpc,
            stop: Some(stop),
            task,
        };
        f.wait_ready().await;
        f
    }

    /// Readiness as a data plane sees it: the gRPC health check of the
    /// ext_proc service says SERVING once every engine passed a probe.
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(ch) = Channel::from_shared(self.grpc.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut h = HealthClient::new(ch);
                let req = HealthCheckRequest {
                    service: "envoy.service.ext_proc.v3.ExternalProcessor".into(),
                };
                if let Ok(r) = h.check(req).await {
                    if r.into_inner().status == ServingStatus::Serving as i32
                        && self.gateway.healthy_count() == self.engines.len()
                    {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the picker never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.engines.iter().map(|r| r.addr.to_string()).collect()
    }

    async fn client(&self) -> ExternalProcessorClient<Channel> {
        ExternalProcessorClient::connect(self.grpc.clone())
            .await
            .unwrap()
    }

    fn inflight(&self) -> u64 {
        self.gateway
            .engines()
            .iter()
            .map(|e| u64::from(e.inflight()))
            .sum()
    }

    fn finished(&self) -> u64 {
        self.gateway
            .engines()
            .iter()
            .map(|e| {
                e.counters
                    .finished
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }

    async fn eventually(&self, what: &str, f: impl Fn(&Fixture) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !f(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("router and picker stop")
            .unwrap();
    }
}

/// One ext_proc stream, the data plane's side.
struct Stream {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Stream {
    async fn open(client: &mut ExternalProcessorClient<Channel>) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .process(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, m: ProcessingRequest) {
        self.tx.send(m).await.unwrap();
    }

    async fn recv(&mut self) -> ProcessingResponse {
        tokio::time::timeout(WAIT, self.rx.next())
            .await
            .expect("a reply in time")
            .expect("the stream is open")
            .expect("a reply, not an error")
    }
}

fn request_headers(path: &str, end_of_stream: bool) -> ProcessingRequest {
    let method = if end_of_stream { "GET" } else { "POST" };
    ProcessingRequest {
        request: Some(Phase::RequestHeaders(HttpHeaders {
            headers: Some(headers(&[
                (":method", method),
                (":path", path),
                (":authority", "gateway.example"),
                ("content-type", "application/json"),
                ("x-request-id", "req-42"),
            ])),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Phase::RequestBody(HttpBody {
            body: bytes.to_vec(),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_headers(status: u16, served: &str) -> ProcessingRequest {
    let inner = Struct {
        fields: HashMap::from([(
            "x-gateway-destination-endpoint-served".to_string(),
            Value {
                kind: Some(Kind::StringValue(served.into())),
            },
        )]),
    };
    ProcessingRequest {
        metadata_context: Some(Metadata {
            filter_metadata: HashMap::from([(DESTINATION_NAMESPACE.to_string(), inner)]),
            ..Default::default()
        }),
        request: Some(Phase::ResponseHeaders(HttpHeaders {
            headers: Some(headers(&[(":status", &status.to_string())])),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn response_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Phase::ResponseBody(HttpBody {
            body: bytes.to_vec(),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The endpoint a response carries, checked to be the same in the header
/// mutation and in the `envoy.lb` dynamic metadata (the protocol forbids
/// two different values).
fn destination(r: &ProcessingResponse) -> Option<String> {
    let common = match r.response.as_ref()? {
        Reply::RequestHeaders(h) => h.response.as_ref()?,
        Reply::RequestBody(b) => b.response.as_ref()?,
        _ => return None,
    };
    let set = &common.header_mutation.as_ref()?.set_headers;
    let h = set
        .iter()
        .filter_map(|o| o.header.as_ref())
        .find(|h| h.key == DESTINATION_ENDPOINT)?;
    let from_header = String::from_utf8(h.raw_value.clone()).unwrap();
    assert!(common.clear_route_cache, "the route cache must be cleared");
    let md = r.dynamic_metadata.as_ref().expect("dynamic metadata");
    let Some(Kind::StructValue(ns)) = &md.fields[DESTINATION_NAMESPACE].kind else {
        panic!("envoy.lb is not a struct: {md:?}");
    };
    let Some(Kind::StringValue(from_md)) = &ns.fields[DESTINATION_ENDPOINT].kind else {
        panic!("no endpoint in envoy.lb: {ns:?}");
    };
    assert_eq!(&from_header, from_md, "header and metadata disagree");
    Some(from_header)
}

fn completion(prompt: &str) -> Vec<u8> {
    serde_json::json!({"model": "tiny", "prompt": prompt, "max_tokens": 4})
        .to_string()
        .into_bytes()
}

/// Forward `body` to the picked engine, as the data plane would.
async fn forward(endpoint: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = kvroute_http::client::<Full<bytes::Bytes>>(&Default::default()).unwrap();
    let req = http::Request::post(format!("http://{endpoint}/v1/completions"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (status, bytes) = kvroute_http::send_bounded(&client, req, 1 << 20, WAIT)
        .await
        .unwrap();
    (status.as_u16(), serde_json::from_slice(&bytes).unwrap())
}

/// BUFFERED mode, the whole request: headers continued, the endpoint in the
/// body response, the request forwarded there, its response phases reported.
async fn buffered_request(
    client: &mut ExternalProcessorClient<Channel>,
    prompt: &str,
) -> (String, serde_json::Value) {
    let mut s = Stream::open(client).await;
    s.send(request_headers("/v1/completions", false)).await;
    let r = s.recv().await;
    assert!(
        matches!(&r.response, Some(Reply::RequestHeaders(h)) if h.response.is_none()),
        "headers continue unchanged in BUFFERED mode: {r:?}"
    );
    let payload = completion(prompt);
    s.send(body(&payload, true)).await;
    let r = s.recv().await;
    assert!(matches!(r.response, Some(Reply::RequestBody(_))), "{r:?}");
    let endpoint = destination(&r).expect("an endpoint on the body response");
    let (status, answer) = forward(&endpoint, payload).await;
    assert_eq!(status, 200, "{answer}");
    s.send(response_headers(status, &endpoint)).await;
    assert!(matches!(
        s.recv().await.response,
        Some(Reply::ResponseHeaders(_))
    ));
    s.send(response_body(answer.to_string().as_bytes(), true))
        .await;
    assert!(matches!(
        s.recv().await.response,
        Some(Reply::ResponseBody(_))
    ));
    drop(s);
    (endpoint, answer)
}

fn cached_tokens(answer: &serde_json::Value) -> u64 {
    answer["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_sends_a_repeated_prefix_where_it_is_cached() {
    let f = Fixture::start("cache_affinity", 2).await;
    let mut client = f.client().await;
    let doc = "The stored-program computer keeps its instructions in the same memory as its data, \
               which lets programs be loaded, changed and produced by other programs. "
        .repeat(6);
    let (first, a1) = buffered_request(&mut client, &format!("{doc} Question one?")).await;
    assert!(f.endpoints().contains(&first), "{first} is not an engine");
    assert_eq!(cached_tokens(&a1), 0, "a cold engine has nothing cached");
    let (second, a2) = buffered_request(&mut client, &format!("{doc} Question two?")).await;
    assert_eq!(second, first, "the shared prefix goes where it is cached");
    assert!(
        cached_tokens(&a2) > 0,
        "the engine reports a prefix-cache hit for the repeated document: {a2}"
    );
    f.eventually("both requests finished and released", |f| {
        f.inflight() == 0 && f.finished() == 2
    })
    .await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_mode_holds_the_headers_and_returns_the_body() {
    let f = Fixture::start("cache_affinity", 2).await;
    let mut client = f.client().await;
    let mut s = Stream::open(&mut client).await;
    let mut first = request_headers("/v1/completions", false);
    first.protocol_config = Some(ProtocolConfiguration {
        request_body_mode: BodySendMode::FullDuplexStreamed as i32,
        response_body_mode: BodySendMode::FullDuplexStreamed as i32,
        ..Default::default()
    });
    s.send(first).await;
    // A body over one 62 kB chunk, sent in two pieces.
    let payload = completion(&"tokens of a long retrieved document ".repeat(2500));
    assert!(payload.len() > 62_000);
    let (a, b) = payload.split_at(payload.len() / 3);
    s.send(body(a, false)).await;
    s.send(body(b, true)).await;
    let r = s.recv().await;
    assert!(
        matches!(r.response, Some(Reply::RequestHeaders(_))),
        "the held headers response comes first: {r:?}"
    );
    let endpoint = destination(&r).expect("the endpoint on the headers response");
    assert!(f.endpoints().contains(&endpoint));
    let mut echoed = Vec::new();
    loop {
        let r = s.recv().await;
        let Some(Reply::RequestBody(b)) = r.response else {
            panic!("expected the body back: {r:?}");
        };
        let Some(Mutation::StreamedResponse(chunk)) = b
            .response
            .and_then(|c| c.body_mutation)
            .and_then(|m| m.mutation)
        else {
            panic!("full duplex bodies come back as streamed responses");
        };
        assert!(chunk.body.len() <= 62_000);
        echoed.extend_from_slice(&chunk.body);
        if chunk.end_of_stream {
            break;
        }
    }
    assert_eq!(echoed, payload, "the body goes upstream unchanged");
    assert_eq!(f.inflight(), 1, "the request holds its instance's load");
    s.send(response_headers(200, &endpoint)).await;
    s.recv().await;
    s.send(response_body(b"data: [DONE]\n\n", true)).await;
    let r = s.recv().await;
    let Some(Reply::ResponseBody(b)) = r.response else {
        panic!("{r:?}");
    };
    let Some(Mutation::StreamedResponse(chunk)) = b
        .response
        .and_then(|c| c.body_mutation)
        .and_then(|m| m.mutation)
    else {
        panic!("the response body comes back in full duplex too");
    };
    assert_eq!(chunk.body, b"data: [DONE]\n\n");
    assert!(chunk.end_of_stream);
    drop(s);
    f.eventually("released at the end of the response", |f| {
        f.inflight() == 0 && f.finished() == 1
    })
    .await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_hints_bad_bodies_and_bodiless_requests() {
    let f = Fixture::start("round_robin", 2).await;
    let endpoints = f.endpoints();
    let mut client = f.client().await;

    // The subset hint restricts the candidates: every pick lands on it.
    let hint = |list: &[&str]| Metadata {
        filter_metadata: HashMap::from([(
            SUBSET_NAMESPACE.to_string(),
            Struct {
                fields: HashMap::from([(
                    SUBSET_KEY.to_string(),
                    Value {
                        kind: Some(Kind::ListValue(ListValue {
                            values: list
                                .iter()
                                .map(|e| Value {
                                    kind: Some(Kind::StringValue((*e).into())),
                                })
                                .collect(),
                        })),
                    },
                )]),
            },
        )]),
        ..Default::default()
    };
    for _ in 0..4 {
        let mut s = Stream::open(&mut client).await;
        let mut h = request_headers("/v1/completions", false);
        h.metadata_context = Some(hint(&[endpoints[1].as_str()]));
        s.send(h).await;
        s.recv().await;
        s.send(body(&completion("hello there"), true)).await;
        assert_eq!(destination(&s.recv().await).unwrap(), endpoints[1]);
    }

    // A hint naming no instance: 503, as the protocol requires.
    let mut s = Stream::open(&mut client).await;
    let mut h = request_headers("/v1/completions", false);
    h.metadata_context = Some(hint(&["10.255.255.1:9"]));
    s.send(h).await;
    s.recv().await;
    s.send(body(&completion("hello"), true)).await;
    let Some(Reply::ImmediateResponse(ir)) = s.recv().await.response else {
        panic!("expected an immediate response");
    };
    assert_eq!(ir.status.unwrap().code, 503);

    // A body that is not JSON: 400 with an OpenAI-style error.
    let mut s = Stream::open(&mut client).await;
    s.send(request_headers("/v1/chat/completions", false)).await;
    s.recv().await;
    s.send(body(b"{not json", true)).await;
    let Some(Reply::ImmediateResponse(ir)) = s.recv().await.response else {
        panic!("expected an immediate response");
    };
    assert_eq!(ir.status.unwrap().code, 400);
    let err: serde_json::Value = serde_json::from_slice(&ir.body).unwrap();
    assert_eq!(err["error"]["code"], "invalid_json", "{err}");

    // A request without a body (GET /v1/models) is picked at its headers.
    let mut s = Stream::open(&mut client).await;
    s.send(request_headers("/v1/models", true)).await;
    let r = s.recv().await;
    assert!(matches!(r.response, Some(Reply::RequestHeaders(_))));
    assert!(endpoints.contains(&destination(&r).unwrap()));
    drop(s);

    // Streams that end without a response release their load (cancelled).
    f.eventually("every abandoned pick released", |f| f.inflight() == 0)
        .await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bodies_count_against_the_routers_byte_budget() {
    let f = Fixture::start_with("round_robin", 2, |c| {
        c.proxy.max_body_bytes = 2048;
        c.proxy.max_buffered_body_bytes = 2048;
    })
    .await;
    let mut client = f.client().await;
    let duplex = || {
        let mut h = request_headers("/v1/completions", false);
        h.protocol_config = Some(ProtocolConfiguration {
            request_body_mode: BodySendMode::FullDuplexStreamed as i32,
            ..Default::default()
        });
        h
    };
    let payload = completion(&"a prompt that fills the budget ".repeat(40));
    assert!(
        payload.len() > 1100 && payload.len() <= 2048,
        "{}",
        payload.len()
    );
    let (first, rest) = payload.split_at(1100);
    // A holds 1.1 kB (2 KiB of budget) while its body is still arriving.
    let mut a = Stream::open(&mut client).await;
    a.send(duplex()).await;
    a.send(body(first, false)).await;
    // B's body does not fit beside it: 503, nothing buffered.
    let mut b = Stream::open(&mut client).await;
    b.send(duplex()).await;
    b.send(body(first, false)).await;
    let Some(Reply::ImmediateResponse(ir)) = b.recv().await.response else {
        panic!("expected an immediate response");
    };
    assert_eq!(ir.status.unwrap().code, 503);
    // A completes and is picked; its bytes go back to the budget.
    a.send(body(rest, true)).await;
    assert!(destination(&a.recv().await).is_some());
    drop(a);
    let mut c = Stream::open(&mut client).await;
    c.send(duplex()).await;
    c.send(body(&payload, true)).await;
    assert!(
        destination(&c.recv().await).is_some(),
        "the budget was released"
    );
    drop((b, c));
    f.shutdown().await;
}
