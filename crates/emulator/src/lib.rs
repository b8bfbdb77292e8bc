/*!
The simulator's engine model, served on the wall clock behind vLLM's HTTP API.

# Brief overview

[`spawn`] (or [`serve`] on a listener you bound) runs one emulated vLLM
instance: the same [`kvroute_sim::Engine`] the discrete-event simulator uses
(V1 scheduler, paged KV cache with prefix caching, a latency profile), stepped
in real time (optionally sped up). It answers what a vLLM 0.32 server
answers and what the peer routers probe:

| route | |
|---|---|
| `POST /v1/completions`, `POST /v1/chat/completions` | SSE streaming and not; `max_tokens` honoured, output always runs to `max_tokens` (as with `ignore_eos`) |
| `GET /health`, `GET /v1/models`, `GET /version`, `POST /tokenize`, `POST /reset_prefix_cache` | as vLLM (the last as in its dev mode) |
| `GET /metrics` | vLLM's metric names, labels and histogram buckets |
| `GET /model_info`, `/server_info` (and `/get_…`) | what sglang-router probes |

With `kv_events` set it publishes its KV-cache events over ZMQ exactly as
vLLM does (frames, msgpack, `sha256_cbor` block hashes), so a router in exact
mode cannot tell it from a real engine. It is the embedded default engine for
demos and fast tests; real vLLM is what the results are validated against.
*/

#![deny(missing_docs)]

mod driver;
mod metrics;
mod openai;
mod server;

pub use crate::driver::ScaledClock;
pub use crate::metrics::EngineMetrics;
pub use crate::openai::ApiError;

use crate::driver::{Command, Shared};
use crate::server::App;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kvroute_core::HashAlgo;
use kvroute_kvevents::{Endpoint, Publisher, SocketError};
use kvroute_sim::{Engine, Profile};
use kvroute_workload::{ChatTemplate, Tokenizer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Batches kept for replay (vLLM's `buffer_steps` default).
const REPLAY_BUFFER_STEPS: usize = 10_000;

/// One emulated instance.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Engine limits and latency.
    pub profile: Profile,
    /// Served model name (`--served-model-name`).
    pub model: String,
    /// Model path reported to probes (sglang-router loads a tokenizer from
    /// it, so point it at a local folder with `tokenizer.json`).
    pub model_path: Option<String>,
    /// Block hash the engine publishes (`Sha256Cbor` = vLLM's `sha256_cbor`).
    pub hash_algo: HashAlgo,
    /// Where to publish KV events (None: don't). A connect endpoint is
    /// redialled whenever the subscriber goes away, as vLLM's is.
    pub kv_events: Option<Endpoint>,
    /// vLLM's `replay_endpoint`: a `tcp://HOST:PORT` to bind, answering
    /// requests for the last 10,000 batches (None: no replay socket).
    pub kv_replay: Option<String>,
    /// Topic of KV-event messages.
    pub kv_topic: String,
    /// Engine time runs this many times faster than the wall clock.
    pub speedup: f64,
    /// Tokenizer for text prompts and output text.
    pub tokenizer: Arc<Tokenizer>,
    /// Chat template (None: chat requests are refused, like vLLM without one).
    pub chat_template: Option<Arc<ChatTemplate>>,
    /// Output tokens when a request does not say.
    pub default_max_tokens: u32,
    /// Serve https with these settings (vLLM's `--ssl-certfile` and
    /// `--ssl-keyfile`; see [`kvroute_http::server_tls`]). None: plain http.
    pub tls: Option<kvroute_http::ServerTls>,
}

impl EmulatorConfig {
    /// Defaults around a profile and a tokenizer: model "tiny", vLLM's
    /// `sha256_cbor` hashes, no KV events, real time, 16 default tokens.
    pub fn new(profile: Profile, tokenizer: Arc<Tokenizer>) -> EmulatorConfig {
        EmulatorConfig {
            model: profile.model.clone(),
            profile,
            model_path: None,
            hash_algo: HashAlgo::Sha256Cbor,
            kv_events: None,
            kv_replay: None,
            kv_topic: "kv-events".into(),
            speedup: 1.0,
            tokenizer,
            chat_template: None,
            default_max_tokens: 16,
            tls: None,
        }
    }

    /// The path reported as the model's.
    pub fn model_path(&self) -> &str {
        self.model_path.as_deref().unwrap_or(&self.model)
    }
}

/// Why the emulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Binding or accepting failed.
    #[error("emulated engine I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The KV-event socket could not be opened.
    #[error("emulated engine KV events: {0}")]
    KvEvents(#[from] SocketError),
    /// The profile is unusable.
    #[error("emulated engine profile: {0}")]
    Profile(String),
}

/// Serve on `listener` until `shutdown` resolves, then finish in-flight
/// responses (up to 10 s) and return.
pub async fn serve(
    listener: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    config
        .profile
        .validate()
        .map_err(|e| EmulatorError::Profile(e.to_string()))?;
    let clock = ScaledClock::new(config.speedup);
    let mut engine = Engine::new(config.profile.clone(), config.hash_algo);
    engine.set_vocab(config.tokenizer.vocab_size().min(u32::MAX as usize) as u32);
    let publisher = match &config.kv_events {
        Some(ep) => {
            let p = Publisher::open(ep.clone(), &config.kv_topic).await?;
            Some(match &config.kv_replay {
                Some(addr) => p.with_replay(addr, REPLAY_BUFFER_STEPS).await?,
                None => p,
            })
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        metrics: Mutex::new(EngineMetrics::new(&config.profile, config.hash_algo)),
    });
    let (tx, rx) = mpsc::unbounded_channel::<Command>();
    let engine_task = tokio::spawn(driver::run(engine, rx, shared.clone(), publisher, clock));
    let app = Arc::new(App {
        config,
        commands: tx,
        shared,
        next_id: AtomicU64::new(0),
    });

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = app.config.tls.clone();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| app.clone().handle(req));
                match &tls {
                    None => {
                        let conn = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs on the connection's own task, so
                        // a slow or broken client never holds up accepting.
                        let (acceptor, watcher) = (acceptor.acceptor().clone(), graceful.watcher());
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    return;
                                }
                            };
                            let conn = watcher.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    drop(app);
    let _ = engine_task.await;
    Ok(())
}

/// A running emulated engine on 127.0.0.1.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), EmulatorError>>>,
}

impl Running {
    /// `http://127.0.0.1:PORT` (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stop it and wait until it has.
    pub async fn stop(mut self) -> Result<(), EmulatorError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start an emulated engine on `127.0.0.1:port` (0: any free port).
pub async fn spawn_on(config: EmulatorConfig, port: u16) -> Result<Running, EmulatorError> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let tls = config.tls.is_some();
    let task = tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        tls,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Start an emulated engine on a free port of 127.0.0.1.
pub async fn spawn(config: EmulatorConfig) -> Result<Running, EmulatorError> {
    spawn_on(config, 0).await
}
