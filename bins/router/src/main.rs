//! `router`: kvroute's cache-aware router for vLLM / SGLang fleets.
//!
//! Glue only (ripgrep style): parse the command line, merge it over the
//! optional TOML config file, set up tracing, start a Tokio runtime, bind,
//! and hand everything to `kvroute_gateway::serve` with Ctrl-C / SIGTERM as
//! the shutdown signal. All behaviour lives in the `kvroute-gateway` crate.
//!
//! ```text
//! router --instance http://127.0.0.1:8001 --instance http://127.0.0.1:8002 \
//!        --policy weighted:alpha=1,beta=0.5 --tokenizer tokenizer.json
//! router --config router.toml --listen 0.0.0.0:8000
//! ```

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use kvroute_core::HashAlgo;
use kvroute_directory::Mode;
use kvroute_gateway::{InstanceConfig, RouterConfig};
use kvroute_policy::PolicyConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Cache-aware request router for multi-instance LLM serving (vLLM, SGLang).
///
/// Flags override the config file; repeated flags (--instance, --kv-events)
/// add to its lists.
#[derive(Debug, Parser)]
#[command(name = "router", version, about, long_about = None)]
struct Args {
    /// TOML configuration file (see bins/router/router.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8000",
        env = "KVROUTE_LISTEN"
    )]
    listen: String,

    /// An engine's base URL (repeatable).
    #[arg(long = "instance", value_name = "URL")]
    instances: Vec<String>,

    /// An engine's KV-event stream: URL=bind:tcp://HOST:PORT (the router
    /// binds; vLLM with a non-wildcard endpoint connects) or
    /// URL=connect:tcp://HOST:PORT (vLLM bound tcp://*:PORT). Repeatable.
    #[arg(long = "kv-events", value_name = "URL=ENDPOINT")]
    kv_events: Vec<String>,

    /// An engine's KV-event replay socket: URL=tcp://HOST:PORT (vLLM's
    /// replay_endpoint), used to fill sequence gaps. Repeatable.
    #[arg(long = "kv-replay", value_name = "URL=ENDPOINT")]
    kv_replay: Vec<String>,

    /// Engines from DNS: HOST:PORT re-resolved every --discover-interval,
    /// each address an instance (a Kubernetes headless Service's name gives
    /// its ready pods). Repeatable.
    #[arg(long = "discover-dns", value_name = "HOST:PORT")]
    discover_dns: Vec<String>,

    /// KV-event endpoint of DNS-found engines, {host} standing for each
    /// address: connect:tcp://{host}:5557.
    #[arg(long, value_name = "TEMPLATE")]
    discover_kv_events: Option<String>,

    /// Engines from a watched file: one `URL [KV_EVENTS [REPLAY]]` per line.
    #[arg(long, value_name = "PATH")]
    discover_file: Option<PathBuf>,

    /// Seconds between DNS resolutions and file checks [default: 5].
    #[arg(long, value_name = "SECS")]
    discover_interval: Option<f64>,

    /// Routing policy: NAME or NAME:key=value,... (e.g. weighted:alpha=1,beta=0.5).
    #[arg(long, value_name = "SPEC")]
    policy: Option<String>,

    /// Tokens per KV block; must equal the engines' --block-size.
    #[arg(long, value_name = "N")]
    block_size: Option<usize>,

    /// Block hash algorithm; sha256_cbor is vLLM's --prefix-caching-hash-algo sha256_cbor.
    #[arg(long, value_name = "ALGO")]
    hash_algo: Option<HashAlgo>,

    /// Hash chain seed: the engines' PYTHONHASHSEED, if they run with one.
    #[arg(long, value_name = "SEED", env = "KVROUTE_HASH_SEED")]
    hash_seed: Option<String>,

    /// HF tokenizer.json (or .json.gz) of the served model.
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,

    /// HF tokenizer_config.json holding the chat template.
    #[arg(long, value_name = "PATH")]
    chat_template: Option<PathBuf>,

    /// Token ids of chat-message pieces to remember between requests (0: off).
    #[arg(long, value_name = "TOKENS")]
    tokenize_cache: Option<usize>,

    /// Model name /v1/models answers with (default: ask an instance).
    #[arg(long, value_name = "NAME")]
    model: Option<String>,

    /// Where directory entries come from.
    #[arg(long, value_enum, value_name = "MODE")]
    directory_mode: Option<DirMode>,

    /// Publish directory updates every SECS seconds (0 = live; 0..30).
    #[arg(long, value_name = "SECS")]
    directory_sync_interval: Option<f64>,

    /// After a KV-event gap, return to exact mode once the stream has been in order this long.
    #[arg(long, value_name = "SECS")]
    exact_resume: Option<f64>,

    /// ZMQ topic of the KV events ("" = all).
    #[arg(long, value_name = "TOPIC")]
    kv_topic: Option<String>,

    /// Directory entries per instance until its /metrics reports its cache size (0 = unbounded).
    #[arg(long, value_name = "BLOCKS")]
    directory_capacity: Option<usize>,

    /// Other instances to try when one fails before any byte reached the client.
    #[arg(long, value_name = "N")]
    retries: Option<u32>,

    /// Largest request body accepted (413 beyond).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,

    /// TCP connect timeout to an engine.
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<f64>,

    /// Fill the directory at start-up from a snapshot: a file, or a running
    /// replica's http(s)://ADMIN/admin/snapshot (sent this router's admin token).
    #[arg(long, value_name = "FILE|URL")]
    warm_start: Option<String>,

    /// PEM file of CA certificates trusted for https:// engines besides the
    /// system's roots.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,

    /// Offer HTTP/2 by ALPN to https:// engines (HTTP/1.1 if refused).
    #[arg(long)]
    upstream_http2: bool,

    /// Timeout of a non-streaming request (and of a stream's response headers).
    #[arg(long, value_name = "SECS")]
    request_timeout: Option<f64>,

    /// Longest silence between two chunks of a stream.
    #[arg(long, value_name = "SECS")]
    stream_idle_timeout: Option<f64>,

    /// Seconds between health probes (0 = no probes).
    #[arg(long, value_name = "SECS")]
    health_interval: Option<f64>,

    /// Health probe timeout.
    #[arg(long, value_name = "SECS")]
    health_timeout: Option<f64>,

    /// Consecutive failures that take an instance out.
    #[arg(long, value_name = "N")]
    unhealthy_threshold: Option<u32>,

    /// Seconds between polls of each engine's /metrics (0 = no polls).
    #[arg(long, value_name = "SECS")]
    metrics_interval: Option<f64>,

    /// Bearer token for /admin/ (unset: admin API disabled).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "KVROUTE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// An API key clients must send (Authorization: Bearer KEY) on /v1/…,
    /// as vLLM's --api-key. Repeatable; the variable takes a comma-separated
    /// list.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "KVROUTE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,

    /// Origins browsers may call the router from (CORS): "*" or
    /// https://app.example.com. Repeatable.
    #[arg(long = "cors-allowed-origin", value_name = "ORIGIN")]
    cors_allowed_origins: Vec<String>,

    /// A second listener for /metrics and /admin/ (then the public port
    /// serves neither).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,

    /// Also serve Envoy's ext_proc protocol (gRPC) here, as a Gateway API
    /// Inference Extension endpoint picker (docs/deploy.md).
    #[arg(long, value_name = "ADDR")]
    ext_proc_listen: Option<String>,

    /// Add x-kvroute-instance/-cached-tokens/-reason/-policy to responses
    /// (they show engine addresses and what is cached: for benchmarks).
    #[arg(long)]
    expose_routing_headers: bool,

    /// Requests forwarded at once (0 = unbounded); more wait in a queue.
    #[arg(long, value_name = "N")]
    max_inflight: Option<usize>,

    /// Requests waiting for a slot (429 beyond).
    #[arg(long, value_name = "N")]
    max_queued: Option<usize>,

    /// A stream's first token must arrive within this, else the request is
    /// retried on another instance.
    #[arg(long, value_name = "SECS")]
    first_byte_timeout: Option<f64>,

    /// A request body must arrive within this (408 beyond).
    #[arg(long, value_name = "SECS")]
    body_read_timeout: Option<f64>,

    /// Addresses allowed to connect to the KV-event ports the router binds
    /// (IP or CIDR, repeatable; default: any).
    #[arg(long = "kv-events-allow", value_name = "CIDR")]
    kv_events_allow: Vec<String>,

    /// How long in-flight requests may finish after Ctrl-C / SIGTERM.
    #[arg(long, value_name = "SECS")]
    shutdown_grace: Option<f64>,

    /// Tokio worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG wins if set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Print the effective configuration as TOML (the admin token masked) and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DirMode {
    Predicted,
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("router: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(args: &Args) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    if args.print_config {
        let mut shown = config.clone();
        if shown.admin_token.is_some() {
            shown.admin_token = Some("********".into());
        }
        for k in &mut shown.access.api_keys {
            *k = "********".into();
        }
        print!(
            "{}",
            toml::to_string_pretty(&shown).context("writing the configuration as TOML")?
        );
        return Ok(());
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("starting the Tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        match config.ext_proc_listen.clone() {
            Some(addr) => {
                let grpc = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("binding {addr} (ext_proc_listen)"))?;
                kvroute_epp::serve(listener, grpc, config, shutdown_signal()).await
            }
            None => kvroute_gateway::serve(listener, config, shutdown_signal()).await,
        }
        .context("serving")
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

/// The config file (or defaults) with the flags applied over it.
fn build_config(args: &Args) -> anyhow::Result<RouterConfig> {
    let mut c = match &args.config {
        Some(path) => RouterConfig::from_file(path)?,
        None => RouterConfig::default(),
    };
    if let Some(spec) = &args.policy {
        c.policy = PolicyConfig::parse(spec).with_context(|| format!("--policy {spec}"))?;
    }
    for url in &args.instances {
        c.instances.push(InstanceConfig::new(url.clone()));
    }
    for (flag, list) in [
        ("--kv-events", &args.kv_events),
        ("--kv-replay", &args.kv_replay),
    ] {
        for item in list {
            let Some((url, endpoint)) = item.split_once('=') else {
                bail!("{flag} {item:?}: expected URL=ENDPOINT");
            };
            let want = url.trim_end_matches('/');
            let Some(inst) = c
                .instances
                .iter_mut()
                .find(|i| i.url.trim_end_matches('/') == want)
            else {
                bail!("{flag} {item:?}: no instance {url} (add it with --instance)");
            };
            if flag == "--kv-events" {
                inst.kv_events = Some(endpoint.to_string());
            } else {
                inst.replay = Some(endpoint.to_string());
            }
        }
    }
    let h = &mut c.hashing;
    set(&mut h.block_size, args.block_size);
    set(&mut h.algo, args.hash_algo);
    set(&mut h.seed, args.hash_seed.clone());
    if args.tokenizer.is_some() {
        h.tokenizer = args.tokenizer.clone();
    }
    if args.chat_template.is_some() {
        h.chat_template = args.chat_template.clone();
    }
    set(&mut h.tokenize_cache_tokens, args.tokenize_cache);
    if args.model.is_some() {
        c.model = args.model.clone();
    }
    let d = &mut c.directory;
    set(
        &mut d.mode,
        args.directory_mode.map(|m| match m {
            DirMode::Predicted => Mode::Predicted,
            DirMode::Exact => Mode::Exact,
        }),
    );
    set(&mut d.sync_interval_secs, args.directory_sync_interval);
    set(&mut d.exact_resume_secs, args.exact_resume);
    set(&mut d.kv_topic, args.kv_topic.clone());
    set(&mut d.default_capacity_blocks, args.directory_capacity);
    if args.warm_start.is_some() {
        d.warm_start = args.warm_start.clone();
    }
    d.kv_events_allow
        .extend(args.kv_events_allow.iter().cloned());
    let p = &mut c.proxy;
    set(&mut p.retries, args.retries);
    set(&mut p.max_body_bytes, args.max_body_bytes);
    set(&mut p.connect_timeout_secs, args.connect_timeout);
    if args.ca_cert.is_some() {
        p.ca_file = args.ca_cert.clone();
    }
    if args.upstream_http2 {
        p.http2 = true;
    }
    set(&mut p.request_timeout_secs, args.request_timeout);
    set(&mut p.stream_idle_timeout_secs, args.stream_idle_timeout);
    set(&mut p.first_byte_timeout_secs, args.first_byte_timeout);
    set(&mut p.body_read_timeout_secs, args.body_read_timeout);
    if args.expose_routing_headers {
        p.expose_routing_headers = true;
    }
    set(&mut c.admission.max_inflight, args.max_inflight);
    set(&mut c.admission.max_queued, args.max_queued);
    if args.admin_listen.is_some() {
        c.admin_listen = args.admin_listen.clone();
    }
    if args.ext_proc_listen.is_some() {
        c.ext_proc_listen = args.ext_proc_listen.clone();
    }
    set(&mut c.health.interval_secs, args.health_interval);
    set(&mut c.health.timeout_secs, args.health_timeout);
    set(&mut c.health.unhealthy_threshold, args.unhealthy_threshold);
    set(&mut c.metrics_interval_secs, args.metrics_interval);
    set(&mut c.shutdown_grace_secs, args.shutdown_grace);
    if args.admin_token.is_some() {
        c.admin_token = args.admin_token.clone();
    }
    c.access.api_keys.extend(args.api_keys.iter().cloned());
    c.access
        .cors_allowed_origins
        .extend(args.cors_allowed_origins.iter().cloned());
    c.discovery.dns.extend(args.discover_dns.iter().cloned());
    if args.discover_kv_events.is_some() {
        c.discovery.dns_kv_events = args.discover_kv_events.clone();
    }
    if args.discover_file.is_some() {
        c.discovery.file = args.discover_file.clone();
    }
    set(&mut c.discovery.interval_secs, args.discover_interval);
    c.validate()?;
    if c.instances.is_empty() && !c.discovery.enabled() {
        tracing::warn!("no instances configured: add some with --instance, the config file, --discover-dns, --discover-file, or POST /admin/instances");
    }
    Ok(c)
}

fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../router.example.toml");
        let c = RouterConfig::from_toml(text, "router.example.toml".as_ref()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.instances.len(), 2);
        assert_eq!(c.policy.name(), "weighted");
    }

    /// The `router.toml: |` block of a ConfigMap manifest, dedented.
    fn configmap_toml(yaml: &str) -> String {
        let mut lines = yaml.lines().skip_while(|l| l.trim() != "router.toml: |");
        assert!(lines.next().is_some(), "no router.toml block");
        let indent = "    ";
        lines
            .take_while(|l| l.trim().is_empty() || l.starts_with(indent))
            .map(|l| l.strip_prefix(indent).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_shipped_deploy_configs_are_valid() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let k8s = configmap_toml(include_str!("../../../deploy/k8s/router-configmap.yaml"));
        let files = [
            ("deploy/k8s/router-configmap.yaml", k8s.as_str()),
            (
                "deploy/docker/router.toml",
                include_str!("../../../deploy/docker/router.toml"),
            ),
            (
                "deploy/systemd/router.toml",
                include_str!("../../../deploy/systemd/router.toml"),
            ),
        ];
        for (name, text) in files {
            let c = RouterConfig::from_toml(text, name.as_ref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                c.admin_listen.is_some(),
                "{name}: metrics and admin on the public port"
            );
            // The image (Dockerfile) and the systemd install put datasets/ at
            // /usr/share/kvroute/datasets: the paths must name shipped files.
            for path in [&c.hashing.tokenizer, &c.hashing.chat_template] {
                let path = path
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: no tokenizer"));
                let rel = path
                    .strip_prefix("/usr/share/kvroute/datasets")
                    .unwrap_or_else(|_| panic!("{name}: {path:?} is not in the image"));
                assert!(
                    repo.join("datasets").join(rel).is_file(),
                    "{name}: {path:?}"
                );
            }
        }
        // The Kubernetes example: exact mode, every engine's KV events.
        let c = RouterConfig::from_toml(&k8s, "k8s".as_ref()).unwrap();
        assert_eq!(c.directory.mode, Mode::Exact);
        assert_eq!(c.instances.len(), 2);
        for inst in &c.instances {
            let ep = inst.kv_events.as_deref().unwrap_or_default();
            assert!(ep.starts_with("connect:tcp://vllm-"), "{ep}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let args = Args::parse_from([
            "router",
            "--instance",
            "http://127.0.0.1:8001",
            "--kv-events",
            "http://127.0.0.1:8001/=bind:tcp://127.0.0.1:5557",
            "--policy",
            "cache_affinity",
            "--block-size",
            "32",
            "--directory-mode",
            "exact",
            "--retries",
            "0",
        ]);
        let c = build_config(&args).unwrap();
        assert_eq!(
            c.instances[0].kv_events.as_deref(),
            Some("bind:tcp://127.0.0.1:5557")
        );
        assert_eq!((c.hashing.block_size, c.proxy.retries), (32, 0));
        assert_eq!(c.directory.mode, Mode::Exact);
        assert_eq!(c.policy.name(), "cache_affinity");
        let bad = Args::parse_from(["router", "--kv-events", "http://x:1=bind:tcp://a:1"]);
        assert!(build_config(&bad).is_err());
    }
}
