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
use kvroute_loadgen::{
    bench_result, default_file_name, percentile_word, Api, BenchResultOptions, LoadgenConfig,
    Metric, Pacing, RecordHook, RunReport, Slo,
};
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

    /// sharegpt | rag | mooncake | azure | agent | random |
    /// generated-shared-prefix (gsp), optionally with parameters
    /// (`rag:zipf_s=1.2,passages_per_request=5`,
    /// `random:input_tokens=1024,output_tokens=128,range_ratio=0.5`), or a
    /// TOML/JSON spec file (relative dataset paths resolve against the
    /// file's directory).
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
    /// Rescale the --rate/--arrival draws so the sessions arrive at exactly
    /// that mean rate, as `vllm bench serve` does with its own draws.
    #[arg(long)]
    normalize_arrivals: bool,

    /// Closed loop with this many sessions in flight (a new one starts when
    /// one ends). With --rate/--arrival: open loop capped at this many
    /// (`vllm bench serve --max-concurrency`).
    #[arg(long, visible_alias = "max-concurrency")]
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

    /// A header sent with every request to the target, KEY=VALUE
    /// (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,

    /// API key of the target, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// JSON object merged into every request body, overriding loadgen's
    /// own fields (e.g. '{"temperature": 0.7}').
    #[arg(long, value_name = "JSON")]
    extra_body: Option<String>,

    /// PEM file of CA certificates to trust for https:// targets and
    /// engines, besides the system's.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,

    /// TTFT objective for goodput, seconds.
    #[arg(long, default_value_t = 2.0)]
    slo_ttft: f64,
    /// TPOT objective for goodput, seconds.
    #[arg(long, default_value_t = 0.2)]
    slo_tpot: f64,

    /// End-to-end latency objective for goodput, seconds (default: none).
    #[arg(long)]
    slo_e2e: Option<f64>,

    /// Goodput objectives as `vllm bench serve` takes them, KEY:MS with
    /// KEY in ttft, tpot, e2el; only those given are checked (replaces
    /// --slo-ttft/--slo-tpot/--slo-e2e).
    #[arg(long, value_name = "KEY:MS", num_args = 1..)]
    goodput: Vec<String>,

    /// Also write the result as `vllm bench serve --save-result` does.
    #[arg(long)]
    save_result: bool,

    /// With --save-result: add the per-request lists.
    #[arg(long)]
    save_detailed: bool,

    /// Directory of the --save-result file (default: --out, else the
    /// current directory).
    #[arg(long, value_name = "DIR")]
    result_dir: Option<PathBuf>,

    /// Name of the --save-result file (default as vLLM's:
    /// LABEL-RATEqps[-concurrencyN]-MODEL-DATE.json).
    #[arg(long, value_name = "NAME")]
    result_filename: Option<String>,

    /// `label` of the --save-result file.
    #[arg(long)]
    label: Option<String>,

    /// Extra KEY=VALUE keys of the --save-result file (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value, num_args = 1..)]
    metadata: Vec<(String, String)>,

    /// Metrics with statistics in the --save-result file and the selected
    /// percentiles table, comma-separated from ttft, tpot, itl, e2el
    /// (default ttft,tpot,itl).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    percentile_metrics: Option<Vec<Metric>>,

    /// Percentiles of those metrics, comma-separated (e.g. 25,50,99.9;
    /// default 99). Either flag prints a table of them below the summary.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    metric_percentiles: Option<Vec<f64>>,

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
    let selected = a.percentile_metrics.is_some() || a.metric_percentiles.is_some();
    // Checked before any load is sent.
    let bench = (a.save_result || selected)
        .then(|| bench_options(&a, &arrival, config.slo))
        .transpose()?;
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
    if let Some(options) = bench {
        let result = bench_result(&report, &options);
        if selected {
            write_selected_percentiles(&mut stdout, &result, &options)
                .context("writing the table")?;
        }
        if a.save_result {
            let dir = a
                .result_dir
                .clone()
                .or_else(|| a.out.clone())
                .unwrap_or_else(|| PathBuf::from("."));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(
                a.result_filename
                    .clone()
                    .unwrap_or_else(|| default_file_name(&report, &options)),
            );
            let text = serde_json::to_string(&result).context("encoding the result")?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            writeln!(stdout, "vllm-format result: {}", path.display())
                .context("writing the table")?;
        }
    }
    Ok(report)
}

/// The `--save-result` settings from the flags.
/// `slo` is the run's objective, which the file reports as goodput only
/// when `--goodput` set it (as vLLM does).
fn bench_options(a: &Args, arrival: &ArrivalSpec, slo: Slo) -> Result<BenchResultOptions> {
    let mut o = BenchResultOptions::default();
    if let Some(m) = &a.percentile_metrics {
        o.metrics = m.clone();
    }
    if let Some(p) = &a.metric_percentiles {
        if let Some(bad) = p.iter().find(|p| !(0.0..=100.0).contains(*p)) {
            bail!("--metric-percentiles: {bad} is not between 0 and 100");
        }
        o.percentiles = p.clone();
    }
    o.goodput = (!a.goodput.is_empty()).then_some(slo);
    o.detailed = a.save_detailed;
    o.label = a.label.clone();
    o.tokenizer_id = a.tokenizer.as_ref().map_or_else(
        || "datasets/tokenizers/qwen3 (shipped)".to_string(),
        |p| p.display().to_string(),
    );
    (o.request_rate, o.burstiness) = match arrival {
        ArrivalSpec::Poisson { rate } => (Some(*rate), 1.0),
        ArrivalSpec::Gamma { rate, cv } if *cv > 0.0 => (Some(*rate), 1.0 / (cv * cv)),
        ArrivalSpec::Gamma { rate, .. } => (Some(*rate), f64::INFINITY),
        ArrivalSpec::Trace { .. } => (None, 1.0),
    };
    if !o.burstiness.is_finite() {
        // Evenly spaced arrivals (CV 0): vLLM has no such burstiness value.
        o.burstiness = 0.0;
    }
    o.max_concurrency = a.concurrency;
    o.metadata = a.metadata.iter().cloned().collect();
    Ok(o)
}

/// The selected metrics at the selected percentiles (numpy-style
/// interpolation, as in the --save-result file).
fn write_selected_percentiles(
    out: &mut impl std::io::Write,
    result: &serde_json::Map<String, serde_json::Value>,
    o: &BenchResultOptions,
) -> std::io::Result<()> {
    let words: Vec<String> = o.percentiles.iter().map(|&p| percentile_word(p)).collect();
    writeln!(out)?;
    write!(
        out,
        "{:<12} │ {:>9} {:>9} {:>9}",
        "ms (interp.)", "mean", "median", "std"
    )?;
    for w in &words {
        write!(out, " {:>9}", format!("p{w}"))?;
    }
    writeln!(out)?;
    for m in &o.metrics {
        let get = |k: String| result.get(&k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let name = m.name();
        write!(
            out,
            "{:<12} │ {:>9.1} {:>9.1} {:>9.1}",
            name,
            get(format!("mean_{name}_ms")),
            get(format!("median_{name}_ms")),
            get(format!("std_{name}_ms"))
        )?;
        for w in &words {
            write!(out, " {:>9.1}", get(format!("p{w}_{name}_ms")))?;
        }
        writeln!(out)?;
    }
    Ok(())
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
    c.slo = slo(a)?;
    c.headers = a.headers.clone();
    c.api_key = a.api_key.clone().filter(|k| !k.is_empty());
    if let Some(text) = &a.extra_body {
        let v: serde_json::Value =
            serde_json::from_str(text).context("--extra-body is not valid JSON")?;
        let serde_json::Value::Object(map) = v else {
            bail!("--extra-body must be a JSON object, like '{{\"temperature\": 0.7}}'");
        };
        c.extra_body = map;
    }
    if let Some(ca) = &a.ca_cert {
        if !ca.is_file() {
            bail!("--ca-cert {} does not exist", ca.display());
        }
    }
    c.ca_file = a.ca_cert.clone();
    Ok(c)
}

/// `KEY=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The goodput objective: `--goodput KEY:MS …` if given, else the
/// `--slo-*` flags.
fn slo(a: &Args) -> Result<Slo> {
    if a.goodput.is_empty() {
        return Ok(Slo {
            ttft_secs: secs("slo-ttft", a.slo_ttft)?.as_secs_f64(),
            tpot_secs: secs("slo-tpot", a.slo_tpot)?.as_secs_f64(),
            e2e_secs: match a.slo_e2e {
                Some(s) => secs("slo-e2e", s)?.as_secs_f64(),
                None => f64::INFINITY,
            },
        });
    }
    let mut slo = Slo::unbounded();
    for item in &a.goodput {
        let (key, ms) = item
            .split_once(':')
            .with_context(|| format!("--goodput {item:?} is not KEY:MS"))?;
        let ms: f64 = ms
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| {
                format!("--goodput {item:?}: {ms:?} is not a number of milliseconds")
            })?;
        match key.trim() {
            "ttft" => slo.ttft_secs = ms / 1e3,
            "tpot" => slo.tpot_secs = ms / 1e3,
            "e2el" => slo.e2e_secs = ms / 1e3,
            other => bail!("--goodput {item:?}: unknown metric {other:?} (ttft, tpot or e2el)"),
        }
    }
    Ok(slo)
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
    if a.normalize_arrivals {
        match arrival {
            ArrivalSpec::Poisson { rate } | ArrivalSpec::Gamma { rate, .. } => {
                kvroute_workload::normalize_rate(&mut sessions, *rate)
            }
            ArrivalSpec::Trace { .. } => {
                bail!("--normalize-arrivals needs --rate or a poisson/gamma --arrival")
            }
        }
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
