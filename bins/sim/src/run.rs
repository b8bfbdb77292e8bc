//! `sim run` and `sim sweep`: cluster simulations from the command line.
//!
//! Both build the workload the same way (its content from the seed, then its
//! arrivals from the same seeded generator), so a `run` at `--rate R --seed S`
//! and the sweep's row at rate R and seed S simulate the very same requests.
//! Requests the simulated engines refuse (longer than the profile's
//! `max_model_len`, …) head every summary, are announced on stderr, and make
//! the command fail unless `--allow-rejected` accepts them.

use crate::spec;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kvroute_core::{HashAlgo, Nanos};
use kvroute_directory::{Freshness, Mode};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{
    run_shared, ClusterConfig, Driver, Profile, RequestRecord, RunResult, Slo, Summary, Sweep,
    SweepPoint, SweepRow,
};
use kvroute_workload::{
    load_text_tools, parse_spec, ArrivalSpec, Arrivals, ChatTemplate, Session, Tokenizer,
    WorkloadSpec,
};
use std::collections::hash_map::{Entry, HashMap};
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
    /// `sim sweep` drives it at each of its --rates (the rate may then be
    /// left out: `--arrival gamma:cv=3 --rates 1,2,4`).
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
    /// Seed of everything random (workload draws, arrivals, policies)
    /// [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
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

/// Generate the whole workload in memory with the content of `seed` and its
/// own arrival times (re-time it with [`retime`]).
pub fn load_sessions(w: &WorkloadArgs, seed: u64) -> Result<Vec<Session>> {
    let (tok, tpl) = text_tools(w)?;
    let spec = workload_spec(w)?;
    let iter = spec
        .build(&ArrivalSpec::default(), &tok, Some(&tpl), seed)
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
    cfg.slo = Slo::new(c.slo_ttft, c.slo_tpot);
    Ok(cfg)
}

/// Re-time sessions built with `seed` with a new arrival process (the
/// content is kept): the arrivals the workload would have had, had it been
/// built with `arrival` in the first place.
pub fn retime(sessions: &[Session], arrival: &ArrivalSpec, seed: u64) -> Result<Vec<Session>> {
    let mut a = Arrivals::for_workload(arrival, seed)?;
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

/// What to do about requests the simulated engines refuse.
#[derive(Debug, Clone, Args)]
pub struct RejectArgs {
    /// Accept requests refused before they ran (longer than the profile's
    /// max_model_len, empty, no instance). Alone: exit 0 whatever their
    /// share. With SHARE (0 to 1): exit 0 only if at most that share of a
    /// run's requests was refused. Without this flag any refused request
    /// makes the command exit 1 (after printing the summary and writing the
    /// outputs): its latencies describe only the requests that ran.
    /// Refused requests always head the summary and are announced on stderr.
    #[arg(long, value_name = "SHARE", num_args = 0..=1, default_missing_value = "1")]
    pub allow_rejected: Option<f64>,
}

impl RejectArgs {
    /// The largest share of refused requests accepted.
    fn threshold(&self) -> Result<f64> {
        match self.allow_rejected {
            None => Ok(0.0),
            Some(s) if (0.0..=1.0).contains(&s) => Ok(s),
            Some(s) => bail!("--allow-rejected takes a share between 0 and 1, not {s}"),
        }
    }
}

/// The line that heads a summary: its refused requests by cause, or that
/// there were none.
pub fn rejected_line(s: &Summary) -> String {
    match s.rejected.describe(s.requests) {
        Some(d) => format!(
            "REJECTED {d}; the figures below cover only the {} requests that ran",
            s.requests.saturating_sub(s.rejected.total())
        ),
        None => "rejected: none".into(),
    }
}

/// A short human table of a summary, its refused requests first.
pub fn summary_table(label: &str, s: &Summary) -> String {
    format!(
        "{}\n{label}\n  requests {} (failed {})  throughput {:.2} req/s  goodput {:.2} req/s\n  \
         TTFT  mean {:.3}s p50 {:.3}s p90 {:.3}s p99 {:.3}s\n  \
         TPOT  mean {:.4}s p99 {:.4}s\n  \
         E2E   mean {:.3}s p90 {:.3}s p99 {:.3}s\n  \
         cache hit {:.1}% (router predicted {:.1}%)  busy CV {:.3}  preemptions {}\n",
        rejected_line(s),
        s.requests,
        s.failed,
        s.throughput_rps,
        s.goodput_rps,
        s.ttft.mean.unwrap_or(f64::NAN),
        s.ttft.p50.unwrap_or(f64::NAN),
        s.ttft.p90.unwrap_or(f64::NAN),
        s.ttft.p99.unwrap_or(f64::NAN),
        s.tpot.mean.unwrap_or(f64::NAN),
        s.tpot.p99.unwrap_or(f64::NAN),
        s.e2e.mean.unwrap_or(f64::NAN),
        s.e2e.p90.unwrap_or(f64::NAN),
        s.e2e.p99.unwrap_or(f64::NAN),
        s.cache_hit_rate * 100.0,
        s.predicted_hit_rate * 100.0,
        s.busy_cv,
        s.preemptions
    )
}

/// Announce a run's refused requests on stderr (nothing when there are none).
fn warn_rejected(what: &str, s: &Summary) {
    if let Some(d) = s.rejected.describe(s.requests) {
        eprintln!("WARNING: {what} rejected {d}");
    }
}

/// Run one simulation.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    reject: RejectArgs,
    /// Routing policy (`name` or `name:key=value,...`).
    #[arg(long, default_value = "weighted")]
    policy: String,
    /// Write requests.csv and summary.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let threshold = a.reject.threshold()?;
    let seed = a.workload.seed.unwrap_or(0);
    let policy = PolicyConfig::parse(&a.policy)?.with_seed(seed);
    let cfg = cluster_config(&a.cluster, policy)?;
    let arrival = arrival_spec(&a.workload)?;
    let template = load_sessions(&a.workload, seed)?;
    let sessions = Arc::new(retime(&template, &arrival, seed)?);
    drop(template);
    let started = std::time::Instant::now();
    let r: RunResult = run_shared(cfg, sessions)?;
    eprintln!(
        "simulated {:.1}s of {} instance(s) in {:.2}s of wall time",
        r.end_secs,
        a.cluster.instances,
        started.elapsed().as_secs_f64()
    );
    warn_rejected(&format!("policy {}", a.policy), &r.summary);
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
    check_rejected(&r.summary, threshold, "", "the summary covers")
}

/// Fail when `worst` (the run that refused the largest share) refused more
/// than `threshold` of its requests; `which` names that run, `covers` what
/// its figures are in.
fn check_rejected(worst: &Summary, threshold: f64, which: &str, covers: &str) -> Result<()> {
    let share = worst.rejected_share();
    if share <= threshold {
        return Ok(());
    }
    let accepted = if threshold > 0.0 {
        format!(
            ", more than the {:.1} % --allow-rejected accepts",
            threshold * 100.0
        )
    } else {
        String::new()
    };
    let profile = if worst.rejected.too_long > 0 {
        ", or a --profile whose max_model_len fits the workload"
    } else {
        ""
    };
    bail!(
        "{which}{} of {} requests ({:.1} %) were rejected{accepted}; {covers} only the rest. \
         Pass --allow-rejected to accept that{profile}",
        worst.rejected.total(),
        worst.requests,
        share * 100.0
    )
}

/// Run a grid of simulations in parallel.
#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    reject: RejectArgs,
    /// Policies to compare (repeat the flag; `name:key=value,...` allowed).
    #[arg(long = "policy", required = true)]
    policies: Vec<String>,
    /// Instance counts, comma-separated (overrides --instances).
    #[arg(long)]
    instances_list: Option<String>,
    /// Offered loads in sessions/s, comma-separated (overrides --rate). Each
    /// drives the --arrival process (Poisson by default; `gamma:cv=C` keeps
    /// its cv) with its rate replaced; 0 replays the workload's own times.
    #[arg(long)]
    rates: Option<String>,
    /// Multiply each rate by instances/2 (keep per-instance load constant when scaling out).
    #[arg(long)]
    scale_rate: bool,
    /// Directory sync intervals, seconds, comma-separated [default: --sync-interval].
    #[arg(long)]
    sync_intervals: Option<String>,
    /// Metrics poll intervals, seconds, comma-separated [default: --metrics-interval].
    #[arg(long)]
    metrics_intervals: Option<String>,
    /// Seeds, comma-separated; each seeds the workload's content, its
    /// arrivals and the policies, as --seed does for `sim run` [default: 0].
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<String>,
    /// Output CSV.
    #[arg(long, default_value = "results/sweep.csv")]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// The arrival process a sweep's rates drive: from `--arrival` (or Poisson),
/// with its rate to be replaced by each point's.
#[derive(Debug, Clone, PartialEq)]
enum SweepArrival {
    Poisson,
    Gamma { cv: f64 },
    Trace { time_scale: f64 },
}

impl SweepArrival {
    fn from_spec(spec: &ArrivalSpec) -> SweepArrival {
        match *spec {
            ArrivalSpec::Poisson { .. } => SweepArrival::Poisson,
            ArrivalSpec::Gamma { cv, .. } => SweepArrival::Gamma { cv },
            ArrivalSpec::Trace { time_scale } => SweepArrival::Trace { time_scale },
        }
    }

    /// The process at `rate` sessions/s (0: the workload's own times).
    fn at(&self, rate: f64) -> Result<ArrivalSpec> {
        Ok(match *self {
            _ if rate == 0.0 => ArrivalSpec::default(),
            SweepArrival::Poisson => ArrivalSpec::Poisson { rate },
            SweepArrival::Gamma { cv } => ArrivalSpec::Gamma { rate, cv },
            SweepArrival::Trace { .. } => bail!(
                "trace arrivals replay the workload's own times and take no rate: \
                 drop --rates, or pass --arrival poisson or --arrival gamma:cv=C to sweep rates"
            ),
        })
    }

    /// The label of the CSV's `arrival` column.
    fn label(&self) -> String {
        match *self {
            SweepArrival::Poisson => "poisson".into(),
            SweepArrival::Gamma { cv } => format!("gamma:cv={cv}"),
            SweepArrival::Trace { time_scale: 1.0 } => "trace".into(),
            SweepArrival::Trace { time_scale } => format!("trace:time_scale={time_scale}"),
        }
    }
}

/// `--arrival` (or `--rate`) for a sweep: the process its rates drive, and
/// the rate it gives (`None` when it leaves the rate to `--rates`: a rate
/// may be left out, as in `gamma:cv=3`).
fn sweep_arrival(w: &WorkloadArgs) -> Result<(SweepArrival, Option<f64>)> {
    let text = match (w.arrival.as_deref(), w.rate) {
        (None, rate) => return Ok((SweepArrival::Poisson, rate)),
        (Some(_), Some(_)) => bail!("give either --arrival or --rate, not both"),
        (Some(text), None) => text,
    };
    let spec = match parse_spec::<ArrivalSpec>("arrival", text) {
        Ok(spec) => spec,
        Err(e) => {
            // Without its rate: parse it with a stand-in, replaced by --rates.
            let sep = if text.contains(':') { "," } else { ":" };
            match parse_spec::<ArrivalSpec>("arrival", &format!("{text}{sep}rate=1")) {
                Ok(spec @ (ArrivalSpec::Poisson { .. } | ArrivalSpec::Gamma { .. })) => {
                    return Ok((SweepArrival::from_spec(&spec), None))
                }
                _ => return Err(e.into()),
            }
        }
    };
    let rate = match spec {
        ArrivalSpec::Poisson { rate } | ArrivalSpec::Gamma { rate, .. } => rate,
        ArrivalSpec::Trace { .. } => 0.0,
    };
    Ok((SweepArrival::from_spec(&spec), Some(rate)))
}

/// The intervals of a sweep axis: the list, else the single flag's value;
/// each between 0 and 3600 seconds.
fn intervals(flag: &str, list: Option<&str>, single: f64) -> Result<Vec<f64>> {
    let xs = match list {
        Some(l) => spec::list::<f64>(flag, l)?,
        None => vec![single],
    };
    if let Some(x) = xs.iter().find(|x| !(0.0..=3600.0).contains(*x)) {
        bail!("{flag}: {x} is not between 0 and 3600 seconds");
    }
    Ok(xs)
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    let threshold = a.reject.threshold()?;
    for p in &a.policies {
        PolicyConfig::parse(p)?;
    }
    let base = cluster_config(&a.cluster, PolicyConfig::by_name("round_robin")?)?;
    let instances = match &a.instances_list {
        Some(l) => spec::list::<usize>("--instances-list", l)?,
        None => vec![a.cluster.instances],
    };
    let (arrival, arrival_rate) = sweep_arrival(&a.workload)?;
    let rates = match (&a.rates, arrival_rate) {
        (Some(l), _) => spec::list::<f64>("--rates", l)?,
        (None, Some(r)) => vec![r],
        (None, None) => bail!(
            "--arrival {} has no rate: give it one (rate=R) or sweep rates with --rates",
            a.workload.arrival.as_deref().unwrap_or_default()
        ),
    };
    if let Some(r) = rates.iter().find(|r| !(r.is_finite() && **r >= 0.0)) {
        bail!("--rates: {r} is not a rate in sessions per second (0 for the workload's own times)");
    }
    let seeds = match (&a.seeds, a.workload.seed) {
        (Some(l), _) => spec::list::<u64>("--seeds", l)?,
        (None, seed) => vec![seed.unwrap_or(0)],
    };
    let grid = Sweep::grid(
        base,
        &a.workload.workload,
        &arrival.label(),
        &a.policies,
        &instances,
        &rates,
        &intervals(
            "--sync-intervals",
            a.sync_intervals.as_deref(),
            a.cluster.sync_interval,
        )?,
        &intervals(
            "--metrics-intervals",
            a.metrics_intervals.as_deref(),
            a.cluster.metrics_interval,
        )?,
        &seeds,
    );
    let effective_rate = |p: &SweepPoint| {
        if a.scale_rate {
            p.rate * p.instances as f64 / 2.0
        } else {
            p.rate
        }
    };
    // Each seed's workload once; each (rate, seed) timing once, shared by
    // all policies and intervals: what `sim run --rate R --seed S` builds.
    let mut templates: HashMap<u64, Vec<Session>> = HashMap::new();
    for &seed in &seeds {
        if let Entry::Vacant(slot) = templates.entry(seed) {
            slot.insert(load_sessions(&a.workload, seed)?);
        }
    }
    let mut timed: HashMap<(u64, u64), Arc<Vec<Session>>> = HashMap::new();
    for p in &grid.points {
        let rate = effective_rate(p);
        if let Entry::Vacant(slot) = timed.entry((rate.to_bits(), p.seed)) {
            let spec = arrival.at(rate)?;
            slot.insert(Arc::new(retime(&templates[&p.seed], &spec, p.seed)?));
        }
    }
    drop(templates);
    if let Some(t) = a.threads {
        rayon_threads(t)?;
    }
    let bar = ProgressBar::new(grid.points.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {elapsed_precise} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results = grid.run(
        |p| timed[&(effective_rate(p).to_bits(), p.seed)].clone(),
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
    let rejecting = results.iter().filter(|(r, _)| r.rejected > 0).count();
    let worst = results.iter().max_by(|x, y| {
        x.1.summary
            .rejected_share()
            .total_cmp(&y.1.summary.rejected_share())
    });
    if let Some(d) = worst.and_then(|(_, r)| r.summary.rejected.describe(r.summary.requests)) {
        eprintln!(
            "WARNING: {rejecting} of {} runs rejected requests; the worst rejected {d} \
             (every one is listed at the top of the table)",
            results.len()
        );
    }
    print_rows(results.iter().map(|(r, _)| r));
    eprintln!("wrote {} rows to {}", results.len(), a.out.display());
    match worst {
        Some((row, r)) => check_rejected(
            &r.summary,
            threshold,
            &format!(
                "{rejecting} of {} runs rejected requests; in the worst ({}), ",
                results.len(),
                point_label(row)
            ),
            "the rows cover",
        ),
        None => Ok(()),
    }
}

fn rayon_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .context("configuring worker threads")
}

/// A sweep row's point, as the table and its rejection lines name it.
fn point_label(r: &SweepRow) -> String {
    format!(
        "{} inst {} rate {:.2} sync {} poll {} seed {}",
        r.policy, r.instances, r.rate, r.sync_secs, r.metrics_secs, r.seed
    )
}

/// Print sweep rows as an aligned table, preceded by the rows that rejected
/// requests, each with its causes (or a line saying none did).
pub fn print_rows<'a>(rows: impl Iterator<Item = &'a SweepRow>) {
    let rows: Vec<&SweepRow> = rows.collect();
    let rejecting: Vec<&&SweepRow> = rows.iter().filter(|r| r.rejected > 0).collect();
    if rejecting.is_empty() {
        println!("rejected: none");
    } else {
        println!(
            "REJECTED in {} of {} runs; their figures cover only the requests that ran:",
            rejecting.len(),
            rows.len()
        );
        for r in rejecting {
            if let Some(d) = r.rejections().describe(r.requests) {
                println!("  {} rejected {d}", point_label(r));
            }
        }
    }
    println!(
        "{:<40} {:>5} {:>6} {:>5} {:>5} {:>6} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "policy",
        "inst",
        "rate",
        "sync",
        "poll",
        "rej %",
        "TTFT mean",
        "TTFT p99",
        "E2E mean",
        "hit %",
        "CV"
    );
    for r in rows {
        println!(
            "{:<40} {:>5} {:>6.2} {:>5} {:>5} {:>6.1} {:>9.3} {:>9.3} {:>9.3} {:>7.1} {:>6.3}",
            r.policy,
            r.instances,
            r.rate,
            r.sync_secs,
            r.metrics_secs,
            100.0 * r.rejected as f64 / r.requests.max(1) as f64,
            r.ttft_mean,
            r.ttft_p99,
            r.e2e_mean,
            r.cache_hit_rate * 100.0,
            r.busy_cv
        );
    }
}
