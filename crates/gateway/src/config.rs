//! [`RouterConfig`]: everything the router is told, from a TOML file
//! (`router.toml`, see `bins/router/router.example.toml`) and/or the command
//! line.
//!
//! Every field has a default, so an empty file plus `--instance` flags is a
//! valid configuration. Durations are seconds as floats (`0.5` = 500 ms).
//! [`RouterConfig::validate`] checks what serde cannot (URLs, ranges) before
//! anything is started, so a bad configuration fails at start-up with a
//! message naming the field.

use kvroute_core::{HashAlgo, VLLM_DEFAULT_SEED};
use kvroute_directory::Mode;
use kvroute_policy::PolicyConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The router's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// The routing policy (TOML: a `[policy]` table with `name = "…"` and the
    /// policy's parameters).
    pub policy: PolicyConfig,
    /// The engines to route to (TOML: `[[instances]]` tables).
    pub instances: Vec<InstanceConfig>,
    /// Engines found at run time: DNS names re-resolved, a watched file.
    pub discovery: DiscoveryConfig,
    /// Who may call the public port: API keys, CORS origins.
    pub access: AccessConfig,
    /// How prompts become block hashes; must match the engines.
    pub hashing: HashingConfig,
    /// Where the cache directory's entries come from.
    pub directory: DirectoryConfig,
    /// Upstream timeouts, retries and limits.
    pub proxy: ProxyConfig,
    /// Health probing.
    pub health: HealthConfig,
    /// Taking instances that keep failing requests out for a while.
    pub outlier: OutlierConfig,
    /// Bounds on concurrent and queued requests.
    pub admission: AdmissionConfig,
    /// Seconds between polls of each engine's `/metrics` (0: never poll).
    pub metrics_interval_secs: f64,
    /// The model name `/v1/models` answers with. Unset: ask the first
    /// healthy instance.
    pub model: Option<String>,
    /// Bearer token for `/admin/…`. Unset: the admin API is disabled (404).
    pub admin_token: Option<String>,
    /// A second listener (`HOST:PORT`) for `/metrics` and `/admin/…`: when
    /// set, the public port no longer answers them, so clients cannot read
    /// the engines' addresses or reach the admin API.
    pub admin_listen: Option<String>,
    /// `HOST:PORT` of a gRPC listener serving Envoy's external processing
    /// protocol as a Gateway API Inference Extension endpoint picker (the
    /// router binary runs it with `kvroute-epp`; the gateway library itself
    /// does not listen there).
    pub ext_proc_listen: Option<String>,
    /// How long in-flight requests may run on after shutdown was requested.
    pub shutdown_grace_secs: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            policy: PolicyConfig::parse("weighted").unwrap_or_else(|_| {
                PolicyConfig::RoundRobin(kvroute_policy::RoundRobinConfig::default())
            }),
            instances: Vec::new(),
            discovery: DiscoveryConfig::default(),
            access: AccessConfig::default(),
            hashing: HashingConfig::default(),
            directory: DirectoryConfig::default(),
            proxy: ProxyConfig::default(),
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            admission: AdmissionConfig::default(),
            metrics_interval_secs: 1.0,
            model: None,
            admin_token: None,
            admin_listen: None,
            ext_proc_listen: None,
            shutdown_grace_secs: 30.0,
        }
    }
}

/// One engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Base URL, `http://host:port` (a trailing `/` is ignored).
    pub url: String,
    /// The engine's KV-event stream, `bind:tcp://HOST:PORT` (the router
    /// binds, the engine connects: vLLM's behaviour for a non-wildcard
    /// endpoint) or `connect:tcp://HOST:PORT` (the engine binds `tcp://*:PORT`).
    #[serde(default)]
    pub kv_events: Option<String>,
    /// vLLM's replay socket (`tcp://HOST:PORT`, the engine's
    /// `replay_endpoint`), used to fill sequence gaps.
    #[serde(default)]
    pub replay: Option<String>,
}

impl InstanceConfig {
    /// An instance at `url` without KV events.
    pub fn new(url: impl Into<String>) -> InstanceConfig {
        InstanceConfig {
            url: url.into(),
            kv_events: None,
            replay: None,
        }
    }

    /// With a KV-event endpoint.
    pub fn with_kv_events(mut self, endpoint: impl Into<String>) -> InstanceConfig {
        self.kv_events = Some(endpoint.into());
        self
    }
}

/// Client access to the public port (see `auth.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Keys a client must send as `Authorization: Bearer KEY` on `/v1/…`
    /// (vLLM's `--api-key`); empty: no key needed. The header is forwarded
    /// to the engines unchanged, so engines started with the same key accept
    /// the routed requests.
    pub api_keys: Vec<String>,
    /// Origins browsers may call from (CORS; `"*"` for any, or
    /// `https://app.example.com`); empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
}

/// Engines found rather than listed (see `discovery.rs`): every
/// `interval_secs` each DNS name is resolved and the file re-read, and the
/// instances found are added and those gone removed. Instances listed in
/// `instances` or added through the admin API are never touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `HOST:PORT` names; each address a name resolves to is an instance
    /// `http://ADDR:PORT` (a Kubernetes headless Service's name resolves to
    /// its ready pods).
    pub dns: Vec<String>,
    /// KV-event endpoint of DNS-found instances, `{host}` standing for the
    /// address: `connect:tcp://{host}:5557` (the engines bind their
    /// publishers). Unset: no KV events (predicted entries).
    pub dns_kv_events: Option<String>,
    /// A file of instances, one per line: `URL [KV_EVENTS [REPLAY]]`; blank
    /// lines and `#` comments are skipped. Re-read when it changes; written
    /// by whatever knows the fleet (a config-management tool, a sidecar).
    pub file: Option<PathBuf>,
    /// Seconds between resolutions and file checks.
    pub interval_secs: f64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            dns: Vec::new(),
            dns_kv_events: None,
            file: None,
            interval_secs: 5.0,
        }
    }
}

impl DiscoveryConfig {
    /// Whether anything is to be discovered.
    pub fn enabled(&self) -> bool {
        !self.dns.is_empty() || self.file.is_some()
    }
}

/// Block hashing: must equal the engines' (`--block-size`,
/// `--prefix-caching-hash-algo`, `PYTHONHASHSEED`) for exact mode to match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashingConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// `sha256_cbor` (vLLM's, exact) or `xxh3` (fast, predicted mode only).
    pub algo: HashAlgo,
    /// The chain seed: vLLM's `$PYTHONHASHSEED` if the engines run with it.
    pub seed: String,
    /// A HF `tokenizer.json` (or `.json.gz`). Unset: text is split into
    /// 4-byte pseudo-tokens (fine for predicted mode, never equal to the
    /// engine's blocks).
    pub tokenizer: Option<PathBuf>,
    /// A HF `tokenizer_config.json` whose `chat_template` renders chat
    /// requests. Unset: chat requests are hashed in a flat rendering.
    pub chat_template: Option<PathBuf>,
    /// Token ids of prompt pieces between special tokens (chat messages) to
    /// remember, so a chat turn only tokenizes its new messages; 0 turns the
    /// cache off. The ids are the same either way.
    pub tokenize_cache_tokens: usize,
    /// Prompt tokens hashed at most: a longer prompt is tokenized only this
    /// far (its length past it estimated), since the directory cannot match
    /// more. Bounds the work a huge request costs.
    pub max_hashed_tokens: usize,
}

impl Default for HashingConfig {
    fn default() -> Self {
        HashingConfig {
            block_size: 16,
            algo: HashAlgo::Sha256Cbor,
            seed: VLLM_DEFAULT_SEED.to_string(),
            tokenizer: None,
            chat_template: None,
            tokenize_cache_tokens: kvroute_tokenize::DEFAULT_SEGMENT_CACHE_TOKENS,
            max_hashed_tokens: 128 * 1024,
        }
    }
}

/// The cache directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `predicted` (from routing decisions) or `exact` (from KV events, for
    /// instances that have an endpoint).
    pub mode: Mode,
    /// Publish directory writes every N seconds (0: live), to study staleness.
    pub sync_interval_secs: f64,
    /// After a sequence gap an instance falls back to predicted entries; it
    /// returns to exact once its stream has been in order this long.
    pub exact_resume_secs: f64,
    /// ZMQ topic to subscribe to ("" = all).
    pub kv_topic: String,
    /// Addresses allowed to connect to the KV-event ports the router binds
    /// (`"10.0.0.0/8"`, `"127.0.0.1"`); empty: any. Others are refused
    /// before a byte is read.
    pub kv_events_allow: Vec<String>,
    /// Largest KV-event frame accepted; a publisher announcing more is
    /// disconnected before anything is allocated. vLLM's batches are a few
    /// KB to a few MB (a 32k-token prompt's `BlockStored` is ~200 KB).
    pub kv_max_frame_bytes: usize,
    /// An instance's entries are wiped by a reset (sequence going back,
    /// `AllBlocksCleared`) at most once this often; resets coming faster
    /// fall back to predicted entries instead.
    pub min_reset_interval_secs: f64,
    /// Entries kept per instance (LRU) until the engine's
    /// `vllm:cache_config_info` says how many blocks it really has
    /// (0: unbounded). Bounds the router's memory with engines that do not
    /// report their cache size.
    pub default_capacity_blocks: usize,
    /// Fill the directory at start-up from a snapshot: a file, or a running
    /// replica's `http(s)://ADMIN/admin/snapshot` (fetched with this
    /// router's admin token). Unset: start empty.
    pub warm_start: Option<String>,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            mode: Mode::Predicted,
            sync_interval_secs: 0.0,
            exact_resume_secs: 10.0,
            kv_topic: String::new(),
            kv_events_allow: Vec::new(),
            kv_max_frame_bytes: 16 << 20,
            min_reset_interval_secs: 10.0,
            default_capacity_blocks: 1 << 17,
            warm_start: None,
        }
    }
}

/// Forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Further instances tried when one fails before any byte reached the client.
    pub retries: u32,
    /// Largest accepted request body (413 beyond).
    pub max_body_bytes: usize,
    /// Request bytes held by all requests at once (bodies being read or
    /// forwarded); a request that would go beyond is answered 503 with
    /// `Retry-After`.
    pub max_buffered_body_bytes: usize,
    /// A request body must arrive within this many seconds of its headers
    /// (408 beyond): a client trickling bytes cannot hold a slot forever.
    pub body_read_timeout_secs: f64,
    /// TCP connect timeout to an engine.
    pub connect_timeout_secs: f64,
    /// PEM file of CA certificates trusted for `https://` engines besides
    /// the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN to `https://` engines (HTTP/1.1 when an engine
    /// does not take it). vLLM and SGLang serve HTTP/1.1 only; this is for
    /// engines behind an h2-capable TLS proxy.
    pub http2: bool,
    /// A streamed response's first token must arrive within this; an engine
    /// that accepts requests but produces nothing counts a failure and the
    /// request is retried on another instance (nothing has reached the
    /// client yet: the router sends the headers with the first token).
    pub first_byte_timeout_secs: f64,
    /// Whole-request timeout for non-streaming requests (headers and body),
    /// and for the response headers of streaming ones.
    pub request_timeout_secs: f64,
    /// Longest silence between two chunks of a streamed response.
    pub stream_idle_timeout_secs: f64,
    /// Add `x-kvroute-instance` (the engine's URL), `-cached-tokens`,
    /// `-reason` and `-policy` to responses. Off by default: they show
    /// internal addresses and which prompts are cached (a timing side channel
    /// on other users' prompts). Benchmarks turn it on.
    pub expose_routing_headers: bool,
    /// Every Nth routing decision is explained (each candidate's matched
    /// blocks, load terms and score) and kept for `GET /admin/decisions`
    /// (the last 32); 0: none. At `debug` log level every decision is
    /// explained in the log.
    pub explain_every: u32,
    /// Paths forwarded to an engine besides the routed completions (exact
    /// paths; a trailing `*` matches a prefix). Everything else is 404, so
    /// engine-internal endpoints (`/reset_prefix_cache`, `/sleep`,
    /// `/collective_rpc`, LoRA loading, profiling) stay unreachable.
    pub forward_paths: Vec<String>,
}

/// vLLM's public API besides the completions (OpenAI-compatible and its own
/// documented client endpoints).
pub const DEFAULT_FORWARD_PATHS: &[&str] = &[
    "/v1/models",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/score",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/score",
    "/pooling",
    "/classify",
    "/tokenize",
    "/detokenize",
    "/version",
];

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            retries: 2,
            max_body_bytes: 32 << 20,
            max_buffered_body_bytes: 256 << 20,
            body_read_timeout_secs: 30.0,
            connect_timeout_secs: 2.0,
            ca_file: None,
            http2: false,
            first_byte_timeout_secs: 120.0,
            request_timeout_secs: 600.0,
            stream_idle_timeout_secs: 120.0,
            expose_routing_headers: false,
            explain_every: 64,
            forward_paths: DEFAULT_FORWARD_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl ProxyConfig {
    /// Whether `path` may be forwarded to an engine.
    pub fn forwards(&self, path: &str) -> bool {
        self.forward_paths
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == p,
            })
    }
}

/// Outlier ejection: an instance whose requests keep failing (connection
/// errors, 5xx, first-token timeouts) is taken out for a while even if its
/// `/health` says it is fine, and comes back only after a successful probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failed requests that eject an instance (0: never).
    pub consecutive_failures: u32,
    /// First ejection's length; each further one doubles it.
    pub base_ejection_secs: f64,
    /// Longest ejection.
    pub max_ejection_secs: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection_secs: 30.0,
            max_ejection_secs: 300.0,
        }
    }
}

/// Admission: at most `max_inflight` requests are forwarded at once (until
/// their response ends), at most `max_queued` wait for a slot, each at most
/// `queue_timeout_secs`. Beyond the queue: 429; a wait that times out: 503;
/// both with `Retry-After`. `/health`, `/metrics` and `/admin` are exempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Requests forwarded at once (0: unbounded).
    pub max_inflight: usize,
    /// Requests waiting for a slot.
    pub max_queued: usize,
    /// Longest wait for a slot.
    pub queue_timeout_secs: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_inflight: 4096,
            max_queued: 4096,
            queue_timeout_secs: 30.0,
        }
    }
}

/// Health probing (`GET /health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between probes (0: never probe; instances stay as set).
    pub interval_secs: f64,
    /// Probe timeout.
    pub timeout_secs: f64,
    /// Consecutive failures (probes or connection errors) that take an
    /// instance out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: 2.0,
            timeout_secs: 1.0,
            unhealthy_threshold: 2,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A field has an impossible value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as spelled in the TOML file.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl RouterConfig {
    /// Parse TOML text (`path` is only used in messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<RouterConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Read and parse a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RouterConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RouterConfig::from_toml(&text, path)
    }

    /// Check values serde accepts but the router cannot use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .access
            .api_keys
            .iter()
            .any(|k| k.is_empty() || k.trim() != k)
        {
            return Err(invalid(
                "access.api_keys",
                "keys must be non-empty, without surrounding spaces",
            ));
        }
        for o in &self.access.cors_allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && http::HeaderValue::from_str(o).is_ok());
            if !ok {
                return Err(invalid(
                    "access.cors_allowed_origins",
                    format!("{o:?} is not \"*\" or an origin such as https://app.example.com"),
                ));
            }
        }
        if self.discovery.enabled()
            && !(self.discovery.interval_secs.is_finite()
                && (0.05..=3600.0).contains(&self.discovery.interval_secs))
        {
            return Err(invalid(
                "discovery.interval_secs",
                "must be between 0.05 and 3600 seconds",
            ));
        }
        for name in &self.discovery.dns {
            if crate::discovery::split_host_port(name).is_none() {
                return Err(invalid("discovery.dns", "entries are HOST:PORT"));
            }
        }
        if let Some(t) = &self.discovery.dns_kv_events {
            if !t.contains("{host}") {
                return Err(invalid("discovery.dns_kv_events", "must contain {host}"));
            }
            InstanceConfig::new("http://127.0.0.1:1")
                .with_kv_events(t.replace("{host}", "127.0.0.1"))
                .validate()
                .map_err(|e| invalid("discovery.dns_kv_events", &e))?;
        }
        if self.hashing.block_size == 0 {
            return Err(invalid("hashing.block_size", "must be at least 1"));
        }
        if self.hashing.max_hashed_tokens < self.hashing.block_size {
            return Err(invalid(
                "hashing.max_hashed_tokens",
                "must be at least one block",
            ));
        }
        let secs = [
            ("metrics_interval_secs", self.metrics_interval_secs, 0.0),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 0.0),
            (
                "directory.sync_interval_secs",
                self.directory.sync_interval_secs,
                0.0,
            ),
            (
                "directory.exact_resume_secs",
                self.directory.exact_resume_secs,
                0.0,
            ),
            (
                "directory.min_reset_interval_secs",
                self.directory.min_reset_interval_secs,
                0.0,
            ),
            (
                "proxy.connect_timeout_secs",
                self.proxy.connect_timeout_secs,
                0.001,
            ),
            (
                "proxy.request_timeout_secs",
                self.proxy.request_timeout_secs,
                0.001,
            ),
            (
                "proxy.first_byte_timeout_secs",
                self.proxy.first_byte_timeout_secs,
                0.001,
            ),
            (
                "proxy.body_read_timeout_secs",
                self.proxy.body_read_timeout_secs,
                0.001,
            ),
            (
                "outlier.base_ejection_secs",
                self.outlier.base_ejection_secs,
                0.0,
            ),
            (
                "outlier.max_ejection_secs",
                self.outlier.max_ejection_secs,
                0.0,
            ),
            (
                "admission.queue_timeout_secs",
                self.admission.queue_timeout_secs,
                0.0,
            ),
            (
                "proxy.stream_idle_timeout_secs",
                self.proxy.stream_idle_timeout_secs,
                0.001,
            ),
            ("health.interval_secs", self.health.interval_secs, 0.0),
            ("health.timeout_secs", self.health.timeout_secs, 0.001),
        ];
        for (field, v, min) in secs {
            if !v.is_finite() || v < min || v > 1e9 {
                return Err(invalid(
                    field,
                    format!("{v} is not a number of seconds ≥ {min}"),
                ));
            }
        }
        if self.directory.sync_interval_secs > 30.0 {
            return Err(invalid(
                "directory.sync_interval_secs",
                "must be between 0 and 30",
            ));
        }
        self.directory.allow_ranges()?;
        if self.directory.kv_max_frame_bytes < 1024 {
            return Err(invalid(
                "directory.kv_max_frame_bytes",
                "must be at least 1024",
            ));
        }
        if self.health.unhealthy_threshold == 0 {
            return Err(invalid("health.unhealthy_threshold", "must be at least 1"));
        }
        if self.proxy.max_body_bytes == 0 {
            return Err(invalid("proxy.max_body_bytes", "must be at least 1"));
        }
        if self.proxy.max_buffered_body_bytes < self.proxy.max_body_bytes {
            return Err(invalid(
                "proxy.max_buffered_body_bytes",
                "must be at least proxy.max_body_bytes",
            ));
        }
        for p in &self.proxy.forward_paths {
            if !p.starts_with('/') {
                return Err(invalid(
                    "proxy.forward_paths",
                    format!("{p:?} must start with /"),
                ));
            }
        }
        for (key, addr) in [
            ("admin_listen", &self.admin_listen),
            ("ext_proc_listen", &self.ext_proc_listen),
        ] {
            if let Some(a) = addr {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    invalid(
                        key,
                        format!("{a:?} is not HOST:PORT (an IP address and a port)"),
                    )
                })?;
            }
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 8 || t.trim() != t {
                return Err(invalid(
                    "admin_token",
                    "must be at least 8 characters, without surrounding whitespace",
                ));
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            inst.validate()
                .map_err(|reason| invalid(format!("instances[{i}]"), reason))?;
        }
        Ok(())
    }

    /// Seconds as a [`Duration`] (validated values only).
    pub(crate) fn secs(v: f64) -> Duration {
        Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX)
    }
}

impl DirectoryConfig {
    /// `kv_events_allow`, parsed.
    pub fn allow_ranges(&self) -> Result<Vec<kvroute_kvevents::AddrRange>, ConfigError> {
        self.kv_events_allow
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.parse()
                    .map_err(|e: String| invalid(format!("directory.kv_events_allow[{i}]"), e))
            })
            .collect()
    }
}

impl InstanceConfig {
    /// Check the URL and endpoints; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        crate::upstream::BaseUrl::parse(&self.url).map_err(|e| e.to_string())?;
        if let Some(ep) = &self.kv_events {
            ep.parse::<kvroute_kvevents::Endpoint>()
                .map_err(|e| format!("kv_events: {e}"))?;
        }
        if let Some(r) = &self.replay {
            if !r.starts_with("tcp://") {
                return Err(format!("replay endpoint {r:?} must be tcp://HOST:PORT"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = RouterConfig::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(c, RouterConfig::default());
        c.validate().unwrap();
    }

    #[test]
    fn full_file() {
        let text = r#"
            model = "tiny"
            admin_token = "s3cret-token"
            metrics_interval_secs = 0.5
            [policy]
            name = "weighted"
            alpha = 2.0
            [hashing]
            block_size = 32
            algo = "sha256_cbor"
            [directory]
            mode = "exact"
            sync_interval_secs = 5
            [proxy]
            retries = 1
            [[instances]]
            url = "http://127.0.0.1:8001"
            kv_events = "bind:tcp://127.0.0.1:5557"
            [[instances]]
            url = "http://127.0.0.1:8002/"
        "#;
        let c = RouterConfig::from_toml(text, Path::new("r.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.instances.len(), 2);
        assert_eq!(c.directory.mode, Mode::Exact);
        assert_eq!(c.hashing.block_size, 32);
        assert_eq!(c.policy.name(), "weighted");
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = RouterConfig::from_toml("[proxy]\nretires = 3\n", Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retires"), "{e}");
        let mut c = RouterConfig::default();
        c.instances.push(InstanceConfig::new("ftp://x"));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("instances[0]"), "{e}");
        let mut c = RouterConfig::default();
        c.directory.sync_interval_secs = 31.0;
        assert!(c.validate().is_err());
        let mut c = RouterConfig::default();
        c.instances
            .push(InstanceConfig::new("http://a:1").with_kv_events("tcp://x:1"));
        assert!(c.validate().is_err());
    }
}
