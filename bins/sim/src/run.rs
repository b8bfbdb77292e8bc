//! `sim run` and `sim sweep`: cluster simulations from the command line.

use crate::spec;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kvroute_core::{HashAlgo, Nanos};
use kvroute_directory::{Freshness, Mode};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{
    run_shared, ClusterConfig, Driver, Profile, RequestRecord, RunResult, Slo, Summary, Sweep,
    SweepRow,
};
use kvroute_workload::{
    load_text_tools, ArrivalSpec, Arrivals, ChatTemplate, Session, Tokenizer, WorkloadSpec,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to replay.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// sharegpt | rag | mooncake | azure, optionally with parameters
    /// (`rag:zipf_s=1.2,passages_per_request=5`), or a TOML/JSON spec file.
    #[arg(long, default_value = "sharegpt")]
    pub workload: String,
    /// Arrival process: poisson:rate=R | gamma:rate=R,cv=C | trace[:time_scale=S].
    #[arg(long)]
    pub arrival: Option<String>,
    /// Shorthand for `--arrival poisson:rate=R` (sessions per second).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Limit the workload to this many sessions (requests for single-turn workloads).
    #[arg(long)]
    pub sessions: Option<usize>,
    /// tokenizer.json(.gz). Default: the shipped Qwen3 tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// tokenizer_config.json with the chat template. Default: the shipped Qwen3 one.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Seed of everything random (workload draws, arrivals, policies).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The cluster to simulate.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Instances.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Engine profile: built-in name or TOML file.
    #[arg(long, default_value = "llama3.2-3b-rtx5080-x2")]
    pub profile: String,
    /// Directory feed: exact (engine KV events) or predicted (routing).
    #[arg(long, default_value = "exact")]
    pub directory_mode: String,
    /// Directory published every this many seconds (0: live).
    #[arg(long, default_value_t = 0.0)]
    pub sync_interval: f64,
    /// Engine gauges polled every this many seconds (0: live).
    #[arg(long, default_value_t = 0.0)]
    pub metrics_interval: f64,
    /// Closed loop with this many sessions in flight (instead of open-loop arrivals).
    #[arg(long)]
    pub closed: Option<usize>,
    /// Requests arriving in the first this-many seconds are not summarised.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Stop starting sessions after this many simulated seconds.
    #[arg(long)]
    pub horizon: Option<f64>,
    /// TTFT SLO for goodput, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub slo_ttft: f64,
    /// TPOT SLO for goodput, seconds.
    #[arg(long, default_value_t = 0.2)]
    pub slo_tpot: f64,
}

/// Load the tokenizer and template the workload needs.
pub fn text_tools(w: &WorkloadArgs) -> Result<(Tokenizer, ChatTemplate)> {
    Ok(load_text_tools(
        w.tokenizer.as_deref(),
        w.chat_template.as_deref(),
    )?)
}

/// The workload spec from the arguments, with `--sessions` applied.
pub fn workload_spec(w: &WorkloadArgs) -> Result<WorkloadSpec> {
    Ok(kvroute_workload::workload_from_flags(
        &w.workload,
        w.sessions,
    )?)
}

/// The arrival spec from the arguments.
pub fn arrival_spec(w: &WorkloadArgs) -> Result<ArrivalSpec> {
    Ok(kvroute_workload::arrival_from_flags(
        w.arrival.as_deref(),
        w.rate,
    )?)
}

/// Generate the whole workload in memory.
pub fn load_sessions(w: &WorkloadArgs, arrival: &ArrivalSpec) -> Result<Vec<Session>> {
    let (tok, tpl) = text_tools(w)?;
    let spec = workload_spec(w)?;
    let iter = spec
        .build(arrival, &tok, Some(&tpl), w.seed)
        .with_context(|| format!("opening workload {}", spec.label()))?;
    let sessions: Vec<Session> = iter
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading workload {}", spec.label()))?;
    if sessions.is_empty() {
        bail!("workload {} produced no sessions", spec.label());
    }
    Ok(sessions)
}

/// The cluster configuration from the arguments.
pub fn cluster_config(c: &ClusterArgs, policy: PolicyConfig) -> Result<ClusterConfig> {
    let profile =
        Profile::load(&c.profile).with_context(|| format!("loading profile {}", c.profile))?;
    let mut cfg = ClusterConfig::new(c.instances, profile, policy);
    cfg.directory_mode = match c.directory_mode.as_str() {
        "exact" => Mode::Exact,
        "predicted" => Mode::Predicted,
        other => bail!("--directory-mode must be exact or predicted, not {other:?}"),
    };
    if !(0.0..=3600.0).contains(&c.sync_interval) || !(0.0..=3600.0).contains(&c.metrics_interval) {
        bail!("--sync-interval and --metrics-interval must be between 0 and 3600 seconds");
    }
    cfg.directory_freshness = Freshness::periodic_secs(c.sync_interval);
    cfg.metrics_interval = Nanos::from_secs_f64(c.metrics_interval);
    cfg.hash_algo = HashAlgo::Xxh3;
    cfg.driver = match c.closed {
        Some(0) => bail!("--closed needs at least 1 session in flight"),
        Some(n) => Driver::Closed { concurrency: n },
        None => Driver::Open,
    };
    cfg.warmup = Nanos::from_secs_f64(c.warmup);
    cfg.horizon = c.horizon.map(Nanos::from_secs_f64);
    cfg.slo = Slo {
        ttft_secs: c.slo_ttft,
        tpot_secs: c.slo_tpot,
    };
    Ok(cfg)
}

/// Re-time sessions with a new arrival process (the content is kept).
pub fn retime(sessions: &[Session], arrival: &ArrivalSpec, seed: u64) -> Result<Vec<Session>> {
    let mut a = Arrivals::new(arrival, seed)?;
    Ok(sessions
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.arrival = a.next_arrival(s.arrival);
            s
        })
        .collect())
}

/// Write per-request records as CSV.
pub fn write_records(path: &Path, records: &[RequestRecord]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for r in records {
        w.serialize(r)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A short human table of a summary.
pub fn summary_table(label: &str, s: &Summary) -> String {
    format!(
        "{label}\n  requests {} (failed {})  throughput {:.2} req/s  goodput {:.2} req/s\n  \
         TTFT  mean {:.3}s p50 {:.3}s p90 {:.3}s p99 {:.3}s\n  \
         TPOT  mean {:.4}s p99 {:.4}s\n  \
         E2E   mean {:.3}s p90 {:.3}s p99 {:.3}s\n  \
         cache hit {:.1}% (router predicted {:.1}%)  busy CV {:.3}  preemptions {}\n",
        s.requests,
        s.failed,
        s.throughput_rps,
        s.goodput_rps,
        s.ttft.mean,
        s.ttft.p50,
        s.ttft.p90,
        s.ttft.p99,
        s.tpot.mean,
        s.tpot.p99,
        s.e2e.mean,
        s.e2e.p90,
        s.e2e.p99,
        s.cache_hit_rate * 100.0,
        s.predicted_hit_rate * 100.0,
        s.busy_cv,
        s.preemptions
    )
}

/// Run one simulation.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Routing policy (`name` or `name:key=value,...`).
    #[arg(long, default_value = "weighted")]
    policy: String,
    /// Write requests.csv and summary.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let policy = PolicyConfig::parse(&a.policy)?.with_seed(a.workload.seed);
    let cfg = cluster_config(&a.cluster, policy)?;
    let arrival = arrival_spec(&a.workload)?;
    let sessions = Arc::new(load_sessions(&a.workload, &arrival)?);
    let started = std::time::Instant::now();
    let r: RunResult = run_shared(cfg, sessions)?;
    eprintln!(
        "simulated {:.1}s of {} instance(s) in {:.2}s of wall time",
        r.end_secs,
        a.cluster.instances,
        started.elapsed().as_secs_f64()
    );
    print!(
        "{}",
        summary_table(&format!("policy {}", a.policy), &r.summary)
    );
    if let Some(dir) = a.out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_records(&dir.join("requests.csv"), &r.records)?;
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&r.summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}/requests.csv and summary.json", dir.display());
    }
    Ok(())
}

/// Run a grid of simulations in parallel.
#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Policies to compare (repeat the flag; `name:key=value,...` allowed).
    #[arg(long = "policy", required = true)]
    policies: Vec<String>,
    /// Instance counts, comma-separated (overrides --instances).
    #[arg(long)]
    instances_list: Option<String>,
    /// Offered loads in sessions/s, comma-separated (Poisson; overrides --rate).
    #[arg(long)]
    rates: Option<String>,
    /// Multiply each rate by instances/2 (keep per-instance load constant when scaling out).
    #[arg(long)]
    scale_rate: bool,
    /// Directory sync intervals, seconds, comma-separated.
    #[arg(long, default_value = "0")]
    sync_intervals: String,
    /// Metrics poll intervals, seconds, comma-separated.
    #[arg(long, default_value = "0")]
    metrics_intervals: String,
    /// Seeds, comma-separated.
    #[arg(long, default_value = "0")]
    seeds: String,
    /// Output CSV.
    #[arg(long, default_value = "results/sweep.csv")]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    for p in &a.policies {
        PolicyConfig::parse(p)?;
    }
    let base = cluster_config(&a.cluster, PolicyConfig::by_name("round_robin")?)?;
    let instances = match &a.instances_list {
        Some(l) => spec::list::<usize>("--instances-list", l)?,
        None => vec![a.cluster.instances],
    };
    let rates = match (&a.rates, a.workload.rate) {
        (Some(l), _) => spec::list::<f64>("--rates", l)?,
        (None, Some(r)) => vec![r],
        (None, None) => vec![0.0],
    };
    let grid = Sweep::grid(
        base,
        &a.workload.workload,
        &a.policies,
        &instances,
        &rates,
        &spec::list::<f64>("--sync-intervals", &a.sync_intervals)?,
        &spec::list::<f64>("--metrics-intervals", &a.metrics_intervals)?,
        &spec::list::<u64>("--seeds", &a.seeds)?,
    );
    let template = Arc::new(load_sessions(&a.workload, &ArrivalSpec::default())?);
    // Pre-time every (rate, instances, seed) combination once, shared by all policies.
    let mut timed: std::collections::HashMap<(u64, usize, u64), Arc<Vec<Session>>> =
        Default::default();
    for p in &grid.points {
        let rate = if a.scale_rate {
            p.rate * p.instances as f64 / 2.0
        } else {
            p.rate
        };
        let key = (rate.to_bits(), p.instances, p.seed);
        if let std::collections::hash_map::Entry::Vacant(slot) = timed.entry(key) {
            slot.insert(if rate > 0.0 {
                Arc::new(retime(&template, &ArrivalSpec::Poisson { rate }, p.seed)?)
            } else {
                template.clone()
            });
        }
    }
    if let Some(t) = a.threads {
        rayon_threads(t)?;
    }
    let bar = ProgressBar::new(grid.points.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {elapsed_precise} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results = grid.run(
        |p| {
            let rate = if a.scale_rate {
                p.rate * p.instances as f64 / 2.0
            } else {
                p.rate
            };
            timed[&(rate.to_bits(), p.instances, p.seed)].clone()
        },
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut w =
        csv::Writer::from_path(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (row, _) in &results {
        w.serialize(row)?;
    }
    w.flush()?;
    print_rows(results.iter().map(|(r, _)| r));
    eprintln!("wrote {} rows to {}", results.len(), a.out.display());
    Ok(())
}

fn rayon_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .context("configuring worker threads")
}

/// Print sweep rows as an aligned table.
pub fn print_rows<'a>(rows: impl Iterator<Item = &'a SweepRow>) {
    println!(
        "{:<40} {:>5} {:>6} {:>5} {:>5} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "policy",
        "inst",
        "rate",
        "sync",
        "poll",
        "TTFT mean",
        "TTFT p99",
        "E2E mean",
        "hit %",
        "CV"
    );
    for r in rows {
        println!(
            "{:<40} {:>5} {:>6.2} {:>5} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>7.1} {:>6.3}",
            r.policy,
            r.instances,
            r.rate,
            r.sync_secs,
            r.metrics_secs,
            r.ttft_mean,
            r.ttft_p99,
            r.e2e_mean,
            r.cache_hit_rate * 100.0,
            r.busy_cv
        );
    }
}
