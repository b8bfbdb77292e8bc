//! `loadgen`: replay a workload against a kvroute router (or one engine)
//! over the OpenAI streaming API and report client-side and engine-side
//! latencies.
//!
//! The binary parses flags, loads the workload (failing before any load is
//! sent if a dataset or spec is bad), installs Ctrl-C as the shutdown
//! signal and a progress bar, and hands everything to
//! [`kvroute_loadgen::run`]. Exit status: 0 after a complete run, 130 after
//! an interrupted one (its results are still written), 1 on an error.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use kvroute_loadgen::{Api, LoadgenConfig, Pacing, RecordHook, RunReport, Slo};
use kvroute_workload::{build_workload, load_text_tools, ArrivalSpec, Session, WorkloadSpec};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Replay a workload against an OpenAI-compatible server and measure it.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// Base URL of the router or engine.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Endpoint: chat (/v1/chat/completions with messages) or completions
    /// (/v1/completions with the rendered prompt, or token ids for traces).
    #[arg(long, default_value = "chat")]
    api: Api,
    /// Model name to request. Default: the first id of GET /v1/models.
    #[arg(long)]
    model: Option<String>,

    /// sharegpt | rag | mooncake | azure, optionally with parameters
    /// (`rag:zipf_s=1.2,passages_per_request=5`), or a TOML/JSON spec file
    /// (relative dataset paths resolve against the file's directory).
    #[arg(long, default_value = "sharegpt")]
    workload: String,
    /// Limit the workload to this many sessions (requests for single-turn workloads).
    #[arg(long)]
    sessions: Option<usize>,
    /// tokenizer.json(.gz). Default: the shipped Qwen3 tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// tokenizer_config.json with the chat template. Default: the shipped Qwen3 one.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Seed of the workload's random draws and of the arrival process.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Open loop, Poisson arrivals at this many sessions per second
    /// (shorthand for `--arrival poisson:rate=R`).
    #[arg(long, conflicts_with = "arrival")]
    rate: Option<f64>,
    /// Open loop arrival process: poisson:rate=R | gamma:rate=R,cv=C |
    /// trace[:time_scale=S] (default: the workload's own times; ShareGPT and
    /// RAG sessions then all arrive at once).
    #[arg(long)]
    arrival: Option<String>,
    /// Closed loop with this many sessions in flight (a new one starts when
    /// one ends). With --rate/--arrival: open loop capped at this many.
    #[arg(long)]
    concurrency: Option<usize>,

    /// Send at most this many requests (turns).
    #[arg(long)]
    num_requests: Option<u64>,
    /// Stop starting new requests after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Requests started in the first this-many seconds are sent but left out
    /// of the summary (the engines' "before" scrape is taken at its end).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Per-request limit, seconds (sending to the end of the stream).
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// After Ctrl-C, let in-flight requests finish for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,

    /// An engine's base URL, scraped (/metrics) before and after the run
    /// (repeatable: one per instance behind the router).
    #[arg(long = "engine")]
    engines: Vec<String>,
    /// One request at a time; scrape every engine around each request to
    /// record its exact engine-side TTFT and e2e (input of `sim calibrate`).
    /// Without --engine the target itself is scraped.
    #[arg(long)]
    probe: bool,

    /// TTFT objective for goodput, seconds.
    #[arg(long, default_value_t = 2.0)]
    slo_ttft: f64,
    /// TPOT objective for goodput, seconds.
    #[arg(long, default_value_t = 0.2)]
    slo_tpot: f64,

    /// Write requests.csv and summary.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Args::parse()) {
        Ok(report) if report.interrupted => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let broken_pipe = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<RunReport> {
    let config = config(&a)?;
    let arrival = arrival_spec(&a)?;
    let spec = workload_spec(&a)?;
    let sessions = load_sessions(&a, &spec, &arrival)?;
    let total_requests: u64 = sessions.iter().map(|s| s.turns.len() as u64).sum();
    let expected = a
        .num_requests
        .map_or(total_requests, |n| n.min(total_requests));
    let mut config = config;
    config.meta.insert(
        "workload".into(),
        serde_json::to_value(&spec).context("recording the workload spec")?,
    );
    config.meta.insert(
        "arrival".into(),
        serde_json::to_value(&arrival).context("recording the arrival spec")?,
    );
    config.meta.insert("seed".into(), a.seed.into());
    config.meta.insert("sessions".into(), sessions.len().into());
    config
        .meta
        .insert("workload_requests".into(), total_requests.into());

    let bar = progress_bar(&a, expected);
    if let Some(bar) = &bar {
        let (bar, failed) = (bar.clone(), Arc::new(AtomicUsize::new(0)));
        config.on_record = Some(RecordHook::new(move |r| {
            if !r.ok() {
                let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{n} failed"));
            }
            bar.inc(1);
        }));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(kvroute_loadgen::run(config, sessions, async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: never interrupt.
            std::future::pending::<()>().await;
        }
    }));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    // Runtime teardown must not wait on anything left behind.
    runtime.shutdown_timeout(Duration::from_secs(1));

    if let Some(dir) = &a.out {
        report
            .write(dir)
            .with_context(|| format!("writing results to {}", dir.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    use std::io::Write as _;
    write!(stdout, "{report}").context("writing the table")?;
    if let Some(dir) = &a.out {
        writeln!(stdout, "results: {}", dir.display()).context("writing the table")?;
    }
    Ok(report)
}

fn secs(flag: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("--{flag} must be a non-negative number of seconds, not {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// The run's settings from the flags.
fn config(a: &Args) -> Result<LoadgenConfig> {
    let mut c = LoadgenConfig::new(a.url.clone());
    c.api = a.api;
    c.model = a.model.clone();
    let open = a.rate.is_some() || a.arrival.is_some();
    c.pacing = match (a.concurrency, open) {
        (Some(0), _) => bail!("--concurrency must be at least 1"),
        (Some(n), false) => Pacing::Closed { concurrency: n },
        (cap, _) => Pacing::Open { max_in_flight: cap },
    };
    if a.probe && (open || a.concurrency.is_some_and(|n| n != 1)) {
        tracing::warn!(
            "--probe sends one request at a time; ignoring --rate/--arrival/--concurrency"
        );
    }
    c.num_requests = a.num_requests;
    if c.num_requests == Some(0) {
        bail!("--num-requests must be at least 1");
    }
    c.duration = a.duration.map(|d| secs("duration", d)).transpose()?;
    c.warmup = secs("warmup", a.warmup)?;
    c.timeout = secs("timeout", a.timeout)?;
    if c.timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    c.drain = secs("drain", a.drain)?;
    c.engines = a.engines.clone();
    c.probe = a.probe;
    c.slo = Slo {
        ttft_secs: secs("slo-ttft", a.slo_ttft)?.as_secs_f64(),
        tpot_secs: secs("slo-tpot", a.slo_tpot)?.as_secs_f64(),
    };
    Ok(c)
}

/// The arrival process from the flags.
fn arrival_spec(a: &Args) -> Result<ArrivalSpec> {
    Ok(kvroute_workload::arrival_from_flags(
        a.arrival.as_deref(),
        a.rate,
    )?)
}

/// The workload spec from the flags, with `--sessions` applied.
fn workload_spec(a: &Args) -> Result<WorkloadSpec> {
    Ok(kvroute_workload::workload_from_flags(
        &a.workload,
        a.sessions,
    )?)
}

/// Build the sessions up front, so a bad dataset fails before any load is
/// sent. With `--num-requests`, only as many sessions as that needs.
fn load_sessions(a: &Args, spec: &WorkloadSpec, arrival: &ArrivalSpec) -> Result<Vec<Session>> {
    // Cheap checks first: loading the tokenizer takes a moment.
    if let Some(path) = spec.dataset().filter(|p| !p.is_file()) {
        bail!("workload dataset {} does not exist", path.display());
    }
    let (tokenizer, template) =
        load_text_tools(a.tokenizer.as_deref(), a.chat_template.as_deref())?;
    let path = spec.label();
    let iter = build_workload(spec, arrival, &tokenizer, Some(&template), a.seed)
        .with_context(|| format!("opening workload {path}"))?;
    let mut sessions = Vec::new();
    let mut turns = 0u64;
    for s in iter {
        let s = s.with_context(|| format!("reading workload {path}"))?;
        turns += s.turns.len() as u64;
        sessions.push(s);
        if a.num_requests.is_some_and(|n| turns >= n) {
            break;
        }
    }
    if sessions.is_empty() {
        bail!("workload {path} produced no sessions");
    }
    tracing::info!(sessions = sessions.len(), requests = turns, workload = %path, "workload loaded");
    Ok(sessions)
}

fn progress_bar(a: &Args, expected: u64) -> Option<ProgressBar> {
    if a.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(expected);
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} requests ({per_sec}) {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
