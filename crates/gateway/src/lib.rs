/*!
kvroute's live router: an OpenAI-compatible HTTP gateway in front of a fleet
of vLLM or SGLang engines that sends each request to the instance most
likely to hold its prompt prefix in KV cache, without overloading it.

# Brief overview

[`serve`] runs a [`Gateway`] on a listener until a shutdown future resolves.
For `POST /v1/completions` and `/v1/chat/completions` the gateway reads the
body (size-limited), [`parse_request`]s it, turns the prompt into block
hashes with a [`PromptEncoder`] (HF tokenizer and chat template, vLLM-exact
`sha256_cbor` chain), asks the routing [`Dispatcher`](kvroute_routing::Dispatcher)
for an instance, forwards the original bytes, and streams the answer back
through a [`TrackedBody`] that releases the request's load when the body
ends — finished, failed, or cancelled by the client. Connection failures and
5xx/429 answers are retried on another instance as long as nothing has been
sent to the client.

Background tasks keep the dispatcher's view current: health probes, a
`/metrics` poller (engine load gauges, cache size, prefix-cache counters),
and — in exact directory mode — a ZMQ subscriber per instance applying the
engine's KV events, falling back to predicted entries after a sequence gap.
The router's own Prometheus page is at `/metrics` ([`RouterMetrics`]); an
admin API under `/admin/` adds, drains and removes instances.

```
use kvroute_gateway::{parse_request, ApiKind, PromptEncoder, RouterConfig};

let config = RouterConfig::from_toml(r#"
    [policy]
    name = "cache_affinity"
    [hashing]
    block_size = 4
    [[instances]]
    url = "http://127.0.0.1:8001"
"#, "router.toml".as_ref())?;
config.validate()?;

let body = br#"{"model": "m", "prompt": [1, 2, 3, 4, 5, 6, 7, 8, 9], "stream": true}"#;
let req = parse_request(ApiKind::Completions, body)?;
assert!(req.stream);
let encoder = PromptEncoder::from_config(&config.hashing)?;
let (prompt_tokens, hashes) = encoder.encode(&req.prompt)?;
assert_eq!((prompt_tokens, hashes.len()), (9, 2)); // two full blocks of 4
# Ok::<(), Box<dyn std::error::Error>>(())
```

Serving (the binary does this with Ctrl-C / SIGTERM as the shutdown):

```no_run
# async fn run() -> Result<(), kvroute_gateway::ServeError> {
let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
let config = kvroute_gateway::RouterConfig::default();
kvroute_gateway::serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
# }
```

# Layout

* `config`: [`RouterConfig`] and its sections, TOML, validation.
* `request`: [`parse_request`] → [`ParsedRequest`]; [`RequestError`] → 4xx.
* `encode`: [`PromptEncoder`]: prompt → tokens → block hashes.
* `gateway`: [`Gateway`], the shared state and instance operations.
* `proxy`: the request path ([`Gateway::handle`]), retries, response headers.
* `body`: [`ProxyBody`], [`TrackedBody`] (in-flight accounting that follows the body).
* `service`: [`RouterService`] (tower `Service`) and [`AccessLogLayer`].
* `admit`: [`AdmitLayer`], bounded concurrency with a bounded, timed queue.
* `server`: [`serve`], [`serve_gateway`], graceful shutdown.
* `admin`: the `/admin/` API.
* `snapshot`: [`Gateway::snapshot`], [`Gateway::warm_start`]: the directory
  handed from one replica to the next.
* `health`, `poll`, `kv`: the background tasks (probes, engine `/metrics`, KV events).
* `metrics`: [`RouterMetrics`], the router's Prometheus page.
* `upstream`: [`Upstream`], the router's side of one engine.
* `error`: [`ServeError`], OpenAI-style error bodies.
*/

#![deny(missing_docs)]

pub use crate::admit::{Admit, AdmitLayer};
pub use crate::auth::{cors_layer, ApiKey, ApiKeyLayer};
pub use crate::body::{BoxError, ProxyBody, TrackedBody};
pub use crate::config::{
    AccessConfig, AdmissionConfig, ConfigError, DirectoryConfig, DiscoveryConfig, HashingConfig,
    HealthConfig, InstanceConfig, OutlierConfig, ProxyConfig, RouterConfig, DEFAULT_FORWARD_PATHS,
};
pub use crate::discovery::parse_instance_file;
pub use crate::encode::{pseudo_tokens, EncoderError, PromptEncoder};
pub use crate::error::{AddInstanceError, ServeError};
pub use crate::gateway::{Gateway, UpstreamClient};
pub use crate::metrics::RouterMetrics;
pub use crate::pick::{Pick, PickError};
pub use crate::proxy::{
    BodyHold, Surface, HEADER_CACHED_TOKENS, HEADER_INSTANCE, HEADER_POLICY, HEADER_REASON,
    HEADER_REQUEST_ID, HEADER_SESSION_ID,
};
pub use crate::request::{parse_request, ApiKind, ParsedRequest, PromptInput, RequestError};
pub use crate::server::{serve, serve_gateway};
pub use crate::service::{AccessLog, AccessLogLayer, BoxFuture, RouterService};
pub use crate::upstream::{BadUrl, BaseUrl, EngineMirror, FeedFallback, KvStats, Upstream};

mod admin;
mod admit;
mod auth;
mod body;
mod config;
mod discovery;
mod encode;
mod error;
mod gateway;
mod health;
mod kv;
mod metrics;
mod pick;
mod poll;
mod proxy;
mod request;
mod server;
mod service;
mod snapshot;
mod upstream;
