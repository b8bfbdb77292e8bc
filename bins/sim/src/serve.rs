//! `sim serve`: one emulated vLLM instance on the wall clock.

use anyhow::{Context, Result};
use clap::Args;
use kvroute_core::HashAlgo;
use kvroute_emulator::EmulatorConfig;
use kvroute_kvevents::Endpoint;
use kvroute_sim::Profile;
use kvroute_workload::load_text_tools;
use std::path::PathBuf;
use std::sync::Arc;

/// Serve one emulated engine behind vLLM's HTTP API.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Engine profile: a built-in name or a TOML file.
    #[arg(long, default_value = "vllm-cpu-tiny")]
    profile: String,
    /// Served model name (default: the profile's).
    #[arg(long)]
    model: Option<String>,
    /// Model path reported to probes (sglang-router loads a tokenizer from it).
    #[arg(long)]
    model_path: Option<String>,
    /// tokenizer.json (or .json.gz). Default: the shipped Qwen3 tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// tokenizer_config.json with a chat template. Default: the shipped Qwen3 one.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Publish KV events: bind:tcp://127.0.0.1:5557 or connect:tcp://127.0.0.1:5557.
    #[arg(long)]
    kv_events: Option<String>,
    /// vLLM's replay socket: bind tcp://HOST:PORT and answer requests for
    /// the last 10,000 KV-event batches.
    #[arg(long)]
    kv_replay: Option<String>,
    /// Topic of KV-event messages.
    #[arg(long, default_value = "kv-events")]
    kv_topic: String,
    /// Block hash published: sha256_cbor (vLLM's) or xxh3.
    #[arg(long, default_value = "sha256_cbor")]
    hash_algo: String,
    /// Engine time runs this many times faster than the wall clock.
    #[arg(long, default_value_t = 1.0)]
    speedup: f64,
    /// Output tokens when a request does not set max_tokens.
    #[arg(long, default_value_t = 16)]
    default_max_tokens: u32,
    /// Serve https with this PEM certificate chain (vLLM's flag; needs
    /// --ssl-keyfile).
    #[arg(long, value_name = "PEM", requires = "ssl_keyfile")]
    ssl_certfile: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, value_name = "PEM", requires = "ssl_certfile")]
    ssl_keyfile: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let profile =
        Profile::load(&a.profile).with_context(|| format!("loading profile {}", a.profile))?;
    let (tokenizer, template) =
        load_text_tools(a.tokenizer.as_deref(), a.chat_template.as_deref())?;
    let mut c = EmulatorConfig::new(profile, Arc::new(tokenizer));
    c.chat_template = Some(Arc::new(template));
    if let Some(m) = a.model {
        c.model = m;
    }
    c.model_path = a.model_path;
    c.hash_algo = a.hash_algo.parse::<HashAlgo>()?;
    c.kv_events = a
        .kv_events
        .as_deref()
        .map(str::parse::<Endpoint>)
        .transpose()?;
    c.kv_replay = a.kv_replay;
    c.kv_topic = a.kv_topic;
    c.speedup = a.speedup;
    c.default_max_tokens = a.default_max_tokens;
    if let (Some(cert), Some(key)) = (&a.ssl_certfile, &a.ssl_keyfile) {
        c.tls = Some(kvroute_http::server_tls(cert, key)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
        tracing::info!(port = a.port, profile = %c.profile.name, model = %c.model, "emulated engine listening");
        kvroute_emulator::serve(listener, c, shutdown_signal()).await?;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
