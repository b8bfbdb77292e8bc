//! [`Picker`]: Envoy's `ExternalProcessor` service, one gRPC stream per HTTP
//! request, answering with the instance kvroute's policy picks.
//!
//! ```text
//! request headers ── end of stream (GET …)? ─▶ pick without a prompt ─▶ headers response + endpoint
//!        │ body follows
//!        ├─ FULL_DUPLEX_STREAMED: hold the headers response; gather the body
//!        │    ─▶ pick ─▶ headers response + endpoint, then the body back in chunks
//!        └─ BUFFERED: continue the headers; the buffered body arrives whole
//!             ─▶ pick ─▶ body response + endpoint (Envoy holds the headers until then)
//! response headers ─▶ the instance's status     response body ─▶ first chunk: first token
//! end of the response, or of the stream ─▶ the request's load released
//! ```
//!
//! The endpoint goes out both ways the Gateway API Inference Extension's
//! endpoint picker protocol asks for: the `x-gateway-destination-endpoint`
//! request header and the `envoy.lb` dynamic metadata entry of the same
//! name. A subset hint (`envoy.lb.subset_hint` /
//! `x-gateway-destination-endpoint-subset` in the request's metadata)
//! restricts the candidates. Refusals are immediate responses: the request
//! error's status (400, 413) with an OpenAI-style body, 503 with no
//! eligible instance.

use bytes::BytesMut;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderMap as EnvoyHeaders, HeaderValue,
    HeaderValueOption, Metadata,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation::Mutation, external_processor_server::ExternalProcessor,
    processing_request::Request as Phase, processing_response::Response as Reply, BodyMutation,
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use kvroute_gateway::{BodyHold, Gateway, Pick, PickError, RequestError};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

/// The header (and `envoy.lb` metadata key) naming the picked endpoint.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// The metadata namespace of the picked endpoint.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
/// The metadata namespace of the data plane's subset hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
/// The metadata key listing the endpoints the picker may choose from.
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// The metadata key naming the endpoint that served the request.
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";

/// Largest body chunk sent back in full-duplex mode (Envoy's limit is 64 KiB).
const CHUNK: usize = 62_000;

/// Envoy's `ExternalProcessor` gRPC service over a [`Gateway`].
#[derive(Debug, Clone)]
pub struct Picker {
    gateway: Arc<Gateway>,
}

impl Picker {
    /// A picker routing with `gateway`'s policy, directory and instances.
    pub fn new(gateway: Arc<Gateway>) -> Picker {
        Picker { gateway }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Picker {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let exchange = Exchange::new(Arc::clone(&self.gateway), tx);
        tokio::spawn(exchange.run(inbound));
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One HTTP request's conversation with the data plane.
struct Exchange {
    gateway: Arc<Gateway>,
    tx: mpsc::Sender<Result<ProcessingResponse, Status>>,
    request_duplex: bool,
    response_duplex: bool,
    path: String,
    headers: http::HeaderMap,
    allowed: Option<Vec<String>>,
    body: BytesMut,
    /// The body's share of the router's request-byte budget.
    held: BodyHold,
    /// Where the request headers' answer stands.
    stage: Stage,
    picked: bool,
    pick: Option<Pick>,
    status: Option<u16>,
}

/// The exchange is over (the data plane went away or was answered for good).
struct Closed;

/// Where the request headers' answer stands when the pick is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Headers not answered; no body follows (or none has been seen).
    Pending,
    /// Headers not answered; the body is gathered first (full duplex).
    Held,
    /// Headers answered (continue); the body comes buffered.
    Continued,
}

impl Exchange {
    fn new(gateway: Arc<Gateway>, tx: mpsc::Sender<Result<ProcessingResponse, Status>>) -> Self {
        Exchange {
            gateway,
            tx,
            request_duplex: false,
            response_duplex: false,
            path: String::new(),
            headers: http::HeaderMap::new(),
            allowed: None,
            body: BytesMut::new(),
            held: BodyHold::default(),
            stage: Stage::Pending,
            picked: false,
            pick: None,
            status: None,
        }
    }

    async fn run(mut self, mut inbound: Streaming<ProcessingRequest>) {
        loop {
            let msg = match inbound.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "ext_proc stream ended with an error");
                    break;
                }
                None => break,
            };
            if self.handle(msg).await.is_err() {
                break;
            }
        }
        // The HTTP request is over. With the response status known the
        // instance answered (Envoy closes the stream after the last phase it
        // sends); otherwise the request was abandoned.
        if let (Some(pick), Some(status)) = (self.pick.take(), self.status) {
            pick.finish(status);
        }
    }

    async fn send(&self, reply: Reply, metadata: Option<Struct>) -> Result<(), Closed> {
        let msg = ProcessingResponse {
            response: Some(reply),
            dynamic_metadata: metadata,
            ..Default::default()
        };
        self.tx.send(Ok(msg)).await.map_err(|_| Closed)
    }

    async fn handle(&mut self, msg: ProcessingRequest) -> Result<(), Closed> {
        if let Some(pc) = &msg.protocol_config {
            self.request_duplex = pc.request_body_mode == BodySendMode::FullDuplexStreamed as i32;
            self.response_duplex = pc.response_body_mode == BodySendMode::FullDuplexStreamed as i32;
        }
        if msg.observability_mode {
            // Envoy expects no answers and ignores mutations: nothing to pick.
            return Ok(());
        }
        let Some(phase) = msg.request else {
            return Ok(());
        };
        match phase {
            Phase::RequestHeaders(h) => {
                self.allowed = subset_hint(msg.metadata_context.as_ref());
                self.read_headers(h.headers.as_ref());
                if h.end_of_stream {
                    return self.pick_and_answer(true).await;
                }
                if self.request_duplex {
                    self.stage = Stage::Held;
                    return Ok(());
                }
                self.stage = Stage::Continued;
                self.send(Reply::RequestHeaders(HeadersResponse::default()), None)
                    .await
            }
            Phase::RequestBody(b) => self.request_body(b).await,
            Phase::RequestTrailers(_) => {
                if !self.picked {
                    if self.stage != Stage::Held {
                        // The headers went on and no buffered body came:
                        // there is nothing left to carry the endpoint.
                        let e = PickError::Request(RequestError::Body(
                            "request trailers arrived before a buffered body: \
                             use the BUFFERED or FULL_DUPLEX_STREAMED request body mode"
                                .into(),
                        ));
                        return self.refuse(&e).await;
                    }
                    self.pick_and_answer(false).await?;
                }
                self.send(Reply::RequestTrailers(TrailersResponse::default()), None)
                    .await
            }
            Phase::ResponseHeaders(h) => {
                let status = header(h.headers.as_ref(), ":status")
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(200);
                self.status = Some(status);
                if let Some(served) = served_endpoint(msg.metadata_context.as_ref()) {
                    if let Some(p) = &self.pick {
                        if served != p.endpoint() {
                            tracing::debug!(picked = %p.endpoint(), %served, "the data plane served the request elsewhere (fallback)");
                        }
                    }
                }
                self.send(Reply::ResponseHeaders(HeadersResponse::default()), None)
                    .await?;
                if h.end_of_stream {
                    self.finish();
                }
                Ok(())
            }
            Phase::ResponseBody(b) => {
                let status = self.status.unwrap_or(200);
                if let Some(p) = &mut self.pick {
                    p.first_token(status);
                }
                let end = b.end_of_stream;
                let reply = if self.response_duplex {
                    streamed(b.body, end)
                } else {
                    BodyResponse::default()
                };
                self.send(Reply::ResponseBody(reply), None).await?;
                if end {
                    self.finish();
                }
                Ok(())
            }
            Phase::ResponseTrailers(_) => {
                self.finish();
                self.send(Reply::ResponseTrailers(TrailersResponse::default()), None)
                    .await
            }
        }
    }

    fn read_headers(&mut self, headers: Option<&EnvoyHeaders>) {
        let Some(hs) = headers else { return };
        for h in &hs.headers {
            let value = bytes_of(h);
            if h.key == ":path" {
                self.path = String::from_utf8_lossy(value).into_owned();
            } else if !h.key.starts_with(':') {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(h.key.as_bytes()),
                    http::HeaderValue::from_bytes(value),
                ) {
                    self.headers.append(k, v);
                }
            }
        }
    }

    async fn request_body(&mut self, b: HttpBody) -> Result<(), Closed> {
        if self.picked {
            // Past the pick (a late chunk): pass it on unchanged.
            let reply = if self.request_duplex {
                streamed(b.body, b.end_of_stream)
            } else {
                BodyResponse::default()
            };
            return self.send(Reply::RequestBody(reply), None).await;
        }
        let limit = self.gateway.config().proxy.max_body_bytes;
        if self.body.len() + b.body.len() > limit {
            let e = PickError::Request(RequestError::TooLarge { limit });
            return self.refuse(&e).await;
        }
        // Bodies held by the picker count against proxy.max_buffered_body_bytes
        // as the proxy's do: past it, 503 instead of more memory.
        if let Err(e) = self
            .gateway
            .hold_body(&mut self.held, self.body.len() + b.body.len())
        {
            return self.refuse(&PickError::Request(e)).await;
        }
        self.body.extend_from_slice(&b.body);
        if b.end_of_stream || b.end_of_stream_without_message {
            return self.pick_and_answer(true).await;
        }
        if !self.request_duplex {
            // STREAMED / BUFFERED_PARTIAL: every chunk wants an answer.
            return self
                .send(Reply::RequestBody(BodyResponse::default()), None)
                .await;
        }
        Ok(())
    }

    /// Pick with what has arrived and tell the data plane where to send it:
    /// in the headers response while the headers wait (no body, or full
    /// duplex: then the body follows, sent back in chunks), else in the
    /// buffered body's response (Envoy applies the mutation before the
    /// request leaves).
    async fn pick_and_answer(&mut self, body_ended: bool) -> Result<(), Closed> {
        self.picked = true;
        let body = std::mem::take(&mut self.body).freeze();
        // Held until the body has been picked on and sent back.
        let _held = std::mem::take(&mut self.held);
        let picked = self
            .gateway
            .pick(&self.path, &self.headers, &body, self.allowed.as_deref())
            .await;
        let pick = match picked {
            Ok(p) => p,
            Err(e) => return self.refuse(&e).await,
        };
        let endpoint = pick.endpoint();
        tracing::debug!(%endpoint, cached_tokens = pick.cached_tokens(), reason = pick.decision().reason.as_str(), "picked");
        let common = CommonResponse {
            header_mutation: Some(HeaderMutation {
                set_headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: DESTINATION_ENDPOINT.into(),
                        raw_value: endpoint.clone().into_bytes(),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            clear_route_cache: true,
            ..Default::default()
        };
        let metadata = Some(destination_metadata(&endpoint));
        self.pick = Some(pick);
        match self.stage {
            Stage::Pending => {
                let reply = HeadersResponse {
                    response: Some(common),
                };
                self.send(Reply::RequestHeaders(reply), metadata).await
            }
            Stage::Held => {
                let reply = HeadersResponse {
                    response: Some(common),
                };
                self.send(Reply::RequestHeaders(reply), metadata).await?;
                // Full duplex: the body goes upstream only as sent back.
                let mut chunks = body.chunks(CHUNK).peekable();
                if chunks.peek().is_none() {
                    let reply = streamed(Vec::new(), body_ended);
                    return self.send(Reply::RequestBody(reply), None).await;
                }
                while let Some(c) = chunks.next() {
                    let last = chunks.peek().is_none();
                    let reply = streamed(c.to_vec(), last && body_ended);
                    self.send(Reply::RequestBody(reply), None).await?;
                }
                Ok(())
            }
            Stage::Continued => {
                let reply = BodyResponse {
                    response: Some(common),
                };
                self.send(Reply::RequestBody(reply), metadata).await
            }
        }
    }

    async fn refuse(&mut self, e: &PickError) -> Result<(), Closed> {
        self.picked = true;
        tracing::debug!(error = %e, "request refused");
        let reply = Reply::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(e.status().as_u16()),
            }),
            headers: Some(HeaderMutation {
                set_headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "content-type".into(),
                        raw_value: b"application/json".to_vec(),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            body: e.body(),
            details: format!("kvroute: {e}"),
            ..Default::default()
        });
        self.send(reply, None).await?;
        Err(Closed)
    }

    fn finish(&mut self) {
        if let Some(p) = self.pick.take() {
            p.finish(self.status.unwrap_or(200));
        }
    }
}

fn streamed(body: Vec<u8>, end_of_stream: bool) -> BodyResponse {
    BodyResponse {
        response: Some(CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                    body,
                    end_of_stream,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }
}

/// A header's bytes: Envoy sends `raw_value`, older versions `value`.
fn bytes_of(h: &HeaderValue) -> &[u8] {
    if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    }
}

fn header(headers: Option<&EnvoyHeaders>, key: &str) -> Option<String> {
    let h = headers?.headers.iter().find(|h| h.key == key)?;
    Some(String::from_utf8_lossy(bytes_of(h)).into_owned())
}

/// `{"envoy.lb": {"x-gateway-destination-endpoint": endpoint}}`.
fn destination_metadata(endpoint: &str) -> Struct {
    let inner = Struct {
        fields: HashMap::from([(
            DESTINATION_ENDPOINT.to_string(),
            Value {
                kind: Some(Kind::StringValue(endpoint.to_string())),
            },
        )]),
    };
    Struct {
        fields: HashMap::from([(
            DESTINATION_NAMESPACE.to_string(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]),
    }
}

fn metadata_value<'a>(md: Option<&'a Metadata>, ns: &str, key: &str) -> Option<&'a Kind> {
    md?.filter_metadata.get(ns)?.fields.get(key)?.kind.as_ref()
}

/// The endpoints of the subset hint: a list of strings, or one
/// comma-separated string. `None` when the data plane sent no hint.
fn subset_hint(md: Option<&Metadata>) -> Option<Vec<String>> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    match metadata_value(md, SUBSET_NAMESPACE, SUBSET_KEY)? {
        Kind::ListValue(l) => Some(
            l.values
                .iter()
                .filter_map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(split(s)),
                    _ => None,
                })
                .flatten()
                .collect(),
        ),
        Kind::StringValue(s) => Some(split(s)),
        _ => Some(Vec::new()),
    }
}

fn served_endpoint(md: Option<&Metadata>) -> Option<String> {
    match metadata_value(md, DESTINATION_NAMESPACE, SERVED_KEY)? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn md(ns: &str, key: &str, kind: Kind) -> Metadata {
        Metadata {
            filter_metadata: HashMap::from([(
                ns.to_string(),
                Struct {
                    fields: HashMap::from([(key.to_string(), Value { kind: Some(kind) })]),
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn subset_hint_reads_lists_and_comma_strings() {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        let list = md(
            SUBSET_NAMESPACE,
            SUBSET_KEY,
            Kind::ListValue(ListValue {
                values: vec![s("10.0.0.1:8000"), s(" 10.0.0.2:8000 ")],
            }),
        );
        assert_eq!(
            subset_hint(Some(&list)).unwrap(),
            ["10.0.0.1:8000", "10.0.0.2:8000"]
        );
        let comma = md(
            SUBSET_NAMESPACE,
            SUBSET_KEY,
            Kind::StringValue("10.0.0.1:8000,10.0.0.3:8000".into()),
        );
        assert_eq!(
            subset_hint(Some(&comma)).unwrap(),
            ["10.0.0.1:8000", "10.0.0.3:8000"]
        );
        // A hint of the wrong type allows nothing rather than everything.
        let odd = md(SUBSET_NAMESPACE, SUBSET_KEY, Kind::BoolValue(true));
        assert_eq!(subset_hint(Some(&odd)).unwrap(), Vec::<String>::new());
        assert_eq!(subset_hint(None), None);
        let other = md("other", SUBSET_KEY, Kind::StringValue("x:1".into()));
        assert_eq!(subset_hint(Some(&other)), None);
    }

    #[test]
    fn destination_metadata_is_namespaced() {
        let m = destination_metadata("10.0.0.1:8000");
        let Some(Kind::StructValue(inner)) = &m.fields[DESTINATION_NAMESPACE].kind else {
            panic!("no envoy.lb struct");
        };
        assert_eq!(
            inner.fields[DESTINATION_ENDPOINT].kind,
            Some(Kind::StringValue("10.0.0.1:8000".into()))
        );
    }
}
