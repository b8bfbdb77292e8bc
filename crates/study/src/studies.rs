//! The studies, run one after another: each writes its CSV and figures and
//! hands its rows to the report.
//!
//! 1. **Capacity under SLO** in every regime, every policy, every seed
//!    ([`capacity`](crate::capacity)), then the latency percentiles and
//!    goodput of every policy at two fixed loads (½ and 1 × round-robin's
//!    capacity).
//! 2. **Weights** of `weighted` on the first GPU profile's regimes, at the
//!    default weights' own capacity, where the SLO is just met.
//! 3. **Staleness**: directory sync and metrics poll intervals 0 → 30 s on
//!    the same regimes, each policy at 80 % of its own capacity.
//! 4. **Scale**: 2 → 64 instances (1024 on one workload) serving N/2
//!    independent copies of a workload at 80 % of round-robin's
//!    2-instance capacity per copy.
//! 5. **Live**: emulated engines (or real vLLM-CPU) behind kvroute and the
//!    peer routers at 2 and 8 instances, on the prefix-heavy workloads.

use crate::capacity::{self, CapacityRow};
use crate::figures::{self, RegimeKey};
use crate::plot::Stamp;
use crate::regime::Regime;
use crate::report::Report;
use crate::sims::{self, Job, SimRow};
use crate::spread::Spread;
use crate::workloads::{self, WorkloadDef};
use crate::{StudyError, Workload};
use kvroute_sim::Profile;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Load-only policies.
pub const LOAD_ONLY: [&str; 3] = ["round_robin", "least_request", "power_of_two"];
/// kvroute's cache-aware policies.
pub const CACHE_AWARE: [&str; 3] = ["prefix_hash", "cache_affinity", "weighted"];
/// Published and production designs, as rows to beat.
pub const ROWS_TO_BEAT: [&str; 5] = [
    "sglang_cache_aware",
    "dualmap",
    "preble_e2",
    "dynamo_kv",
    "llmd_epp",
];

/// Every policy of the studies, in table order.
pub fn all_policies() -> Vec<&'static str> {
    LOAD_ONLY
        .iter()
        .chain(&CACHE_AWARE)
        .chain(&ROWS_TO_BEAT)
        .copied()
        .collect()
}

/// How to run the studies.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    /// Where CSVs, figures and results.md go.
    pub out_dir: PathBuf,
    /// Fewer regimes, smaller workloads and grids (minutes instead of hours).
    pub quick: bool,
    /// Seeds: every point is run once with each.
    pub seeds: Vec<u64>,
    /// Provenance stamped on every figure and table.
    pub stamp: Stamp,
    /// GPU engine profiles (studied with a 128k context).
    pub gpu_profiles: Vec<Profile>,
    /// The seed's setup (two instances sharing one GPU), if studied.
    pub seed_profile: Option<Profile>,
    /// Instances of the GPU regimes.
    pub instances: usize,
}

/// A router to run live: ours with a policy, or a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterChoice {
    /// kvroute's router with this policy spec.
    Kvroute(String),
    /// A peer router, by display name (`sglang-router cache_aware`).
    Peer(String),
}

impl RouterChoice {
    /// Display name.
    pub fn label(&self) -> String {
        match self {
            RouterChoice::Kvroute(p) => p.clone(),
            RouterChoice::Peer(p) => p.clone(),
        }
    }
}

/// One live run's outcome: engine-side timers first.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LiveRow {
    /// Workload.
    pub workload: String,
    /// Router / policy label.
    pub router: String,
    /// Instances.
    pub instances: usize,
    /// Seed of the arrivals.
    pub seed: u64,
    /// Load fraction (of the simulated round-robin capacity).
    pub load: f64,
    /// Sessions per second.
    pub rate: f64,
    /// Requests the run offered.
    pub offered: usize,
    /// Requests completed.
    pub requests: usize,
    /// Requests failed.
    pub failed: usize,
    /// Wall-clock span of the run over the span of its arrivals (a run
    /// whose offered load was not served lags far behind its arrivals).
    pub lag: f64,
    /// Whether the row can feed a verdict: nothing failed, every offered
    /// request completed, and the run kept up with its arrivals.
    pub clean: bool,
    /// Engine TTFT mean, s.
    pub ttft_mean: f64,
    /// Engine TTFT p50, s.
    pub ttft_p50: f64,
    /// Engine TTFT p90, s.
    pub ttft_p90: f64,
    /// Engine TTFT p99, s.
    pub ttft_p99: f64,
    /// Engine time per output token mean, s.
    pub tpot_mean: f64,
    /// Engine E2E mean, s.
    pub e2e_mean: f64,
    /// Engine E2E p90, s.
    pub e2e_p90: f64,
    /// Client TTFT mean, s.
    pub client_ttft_mean: f64,
    /// Client TTFT p90, s (exact, from per-request times).
    pub client_ttft_p90: f64,
    /// Client E2E p90, s (exact).
    pub client_e2e_p90: f64,
    /// Engine prefix-cache hit rate.
    pub hit_rate: f64,
    /// CV of per-instance request counts.
    pub imbalance_cv: f64,
}

/// Runs workloads against live engines through a router (provided by the
/// binary, which owns the async runtime and the processes).
pub trait LiveRunner: Sync {
    /// What the engines are, for the report.
    fn engines(&self) -> String;
    /// The engine profile matching the live engines (for capacity).
    fn profile(&self) -> Profile;
    /// Peer routers available to run.
    fn peers(&self) -> Vec<RouterChoice>;
    /// The part of `w` a live run replays.
    fn subset(&self, w: &Workload) -> Workload;
    /// Run (the subset of) `w` on `instances` engines at `rate` sessions/s
    /// through `router`, arrivals drawn with `seed`; `load` labels the row.
    fn run(
        &self,
        w: &Workload,
        router: &RouterChoice,
        instances: usize,
        rate: f64,
        load: f64,
        seed: u64,
    ) -> Result<LiveRow, StudyError>;
}

/// What the studies produced.
#[derive(Debug, Clone)]
pub struct StudyOutput {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The verdicts, per regime.
    pub verdicts: Vec<crate::Verdict>,
    /// The report (markdown).
    pub markdown: String,
}

pub(crate) fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), StudyError> {
    let werr = |e: &dyn std::fmt::Display| StudyError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| werr(&e))?;
    }
    let mut w = csv::Writer::from_path(path).map_err(|e| werr(&e))?;
    for r in rows {
        w.serialize(r).map_err(|e| werr(&e))?;
    }
    w.flush().map_err(|e| werr(&e))
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[study] {}", msg.as_ref());
}

/// Capacities of one regime: policy → [(seed, sessions/s)].
pub(crate) type Capacities = BTreeMap<String, Vec<(u64, f64)>>;

/// The median capacity (sessions/s) of `policy` in a regime.
pub(crate) fn median_capacity(c: &Capacities, policy: &str) -> f64 {
    c.get(policy)
        .map_or(f64::NAN, |v| Spread::of(v.iter().map(|x| x.1)).median)
}

/// Study 1: every policy's capacity in every regime, seed by seed.
fn capacities(
    regimes: &[Arc<Regime>],
    policies: &[&str],
    seeds: &[u64],
    study: &'static str,
) -> Result<(Vec<CapacityRow>, Vec<SimRow>), StudyError> {
    // Round-robin first: the others start from its capacity.
    let rr: Vec<(usize, u64)> = (0..regimes.len())
        .flat_map(|i| seeds.iter().map(move |&s| (i, s)))
        .collect();
    let rr_out: Vec<capacity::Capacity> = rr
        .par_iter()
        .map(|&(i, s)| {
            capacity::search(
                &regimes[i],
                &Job::new(study, "round_robin", s, f64::NAN, 0.0),
                0.0,
            )
        })
        .collect::<Result<_, _>>()?;
    let start = |i: usize, s: u64| {
        rr.iter()
            .zip(&rr_out)
            .find(|((j, t), _)| *j == i && *t == s)
            .map_or(0.0, |(_, c)| c.row.sessions_per_s)
    };
    let rest: Vec<(usize, u64, &str)> = (0..regimes.len())
        .flat_map(|i| {
            seeds.iter().flat_map(move |&s| {
                policies
                    .iter()
                    .filter(|p| **p != "round_robin")
                    .map(move |&p| (i, s, p))
            })
        })
        .collect();
    let rest_out: Vec<capacity::Capacity> = rest
        .par_iter()
        .map(|&(i, s, p)| {
            capacity::search(
                &regimes[i],
                &Job::new(study, p, s, f64::NAN, 0.0),
                start(i, s),
            )
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut probes = Vec::new();
    for c in rr_out.into_iter().chain(rest_out) {
        rows.push(c.row);
        probes.extend(c.probes);
    }
    Ok((rows, probes))
}

/// Capacities by regime label and policy, each `(seed, sessions/s)`;
/// capped searches (lower bounds only) are left out.
pub(crate) fn by_regime(rows: &[CapacityRow]) -> BTreeMap<String, Capacities> {
    let mut m: BTreeMap<String, Capacities> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.capped) {
        m.entry(format!("{}/{}/{}", r.profile, r.workload, r.instances))
            .or_default()
            .entry(r.policy.clone())
            .or_default()
            .push((r.seed, r.sessions_per_s));
    }
    m
}

/// Run every job of every regime at rates relative to a capacity.
fn runs(jobs: Vec<(Arc<Regime>, Job)>) -> Result<Vec<SimRow>, StudyError> {
    sims::run_all(&jobs)
}

/// Scale study's workloads: smaller copies of the prefix-heavy ones (each
/// N-instance run replays N/2 of them at once).
fn scale_workloads(quick: bool) -> Vec<WorkloadDef> {
    let mut v = vec![
        WorkloadDef {
            name: "gsp",
            spec: "gsp:groups=16,prompts_per_group=8,system_tokens=8192,question_tokens=256,output_tokens=128".into(),
            copies: 1,
            about: "16 groups of 8 questions after 8k-token system prompts, per copy",
        },
        WorkloadDef {
            name: "sharegpt",
            spec: "sharegpt:max_sessions=80,max_output_tokens=256,max_prompt_tokens=16384,think_time_s=1".into(),
            copies: 1,
            about: "80 multi-turn ShareGPT conversations per copy",
        },
    ];
    if !quick {
        v.push(WorkloadDef {
            name: "rag",
            spec: "rag:num_requests=300,passages_per_request=5,zipf_s=1.0,max_tokens=64,order=popularity".into(),
            copies: 1,
            about: "300 RAG requests per copy",
        });
    }
    v
}

/// The prefix-heavy workloads of the live runs, sized for small engines.
pub fn live_workloads(quick: bool) -> Vec<WorkloadDef> {
    let mut v = vec![WorkloadDef {
        name: "gsp",
        spec: "gsp:groups=12,prompts_per_group=8,system_tokens=2048,question_tokens=128,output_tokens=64"
            .into(),
        copies: 1,
        about: "12 groups of 8 questions after 2k-token system prompts",
    }];
    if !quick {
        v.push(WorkloadDef {
            name: "sharegpt",
            spec: "sharegpt:max_sessions=24,max_output_tokens=128,max_prompt_tokens=3584,think_time_s=1"
                .into(),
            copies: 1,
            about: "24 multi-turn ShareGPT conversations",
        });
    }
    v
}

/// Run every study; `live` adds the live-system rows.
pub fn run(cfg: &StudyConfig, live: Option<&dyn LiveRunner>) -> Result<StudyOutput, StudyError> {
    if cfg.seeds.is_empty() {
        return Err(StudyError::Config("at least one seed".into()));
    }
    let seed0 = cfg.seeds[0];
    let mut files = Vec::new();
    let plots = cfg.out_dir.join("plots");
    let policies = all_policies();

    let regimes = workloads::regimes(
        &cfg.gpu_profiles,
        cfg.seed_profile.as_ref(),
        cfg.instances,
        cfg.quick,
        seed0,
    )?;
    for r in &regimes {
        log(format!(
            "regime {}: SLO TTFT {:.3} s, TPOT {:.4} s{}",
            r.label(),
            r.slo.ttft_secs,
            r.slo.tpot_secs,
            if r.dropped > 0 {
                format!(", {} requests longer than max_model_len dropped", r.dropped)
            } else {
                String::new()
            }
        ));
    }
    let mut rep = Report::new(cfg, &regimes);

    // 1. Capacity under SLO.
    let t = std::time::Instant::now();
    log(format!(
        "study 1: capacity of {} policies in {} regimes × {} seeds",
        policies.len(),
        regimes.len(),
        cfg.seeds.len()
    ));
    let (cap_rows, probes) = capacities(&regimes, &policies, &cfg.seeds, "capacity")?;
    log(format!(
        "study 1: {} searches, {} probes in {:.0} s",
        cap_rows.len(),
        probes.len(),
        t.elapsed().as_secs_f64()
    ));
    let path = cfg.out_dir.join("study1_capacity.csv");
    write_csv(&path, &cap_rows)?;
    files.push(path);
    let path = cfg.out_dir.join("study1_capacity_probes.csv");
    write_csv(&path, &probes)?;
    files.push(path);
    let caps = by_regime(&cap_rows);
    let no_caps = Capacities::default();

    // Figures: capacity relative to round-robin per profile; latency
    // against offered load for the first profile.
    let keys: Vec<RegimeKey> = regimes.iter().map(|r| RegimeKey::from(&**r)).collect();
    files.extend(figures::capacity_bars(
        &plots,
        &keys,
        &policies,
        &cap_rows,
        cfg.seeds.len(),
        &cfg.stamp,
    )?);
    let first_profile: Vec<RegimeKey> = keys
        .iter()
        .filter(|k| Some(&k.profile) == keys.first().map(|f| &f.profile))
        .cloned()
        .collect();
    files.extend(figures::latency_panels(
        &plots,
        &first_profile,
        &policies,
        &probes,
        &cap_rows,
        seed0,
        &cfg.stamp,
    )?);

    // 1b. Fixed loads: ½ and 1 × round-robin's median capacity.
    let loads = [0.5, 1.0];
    let mut jobs = Vec::new();
    for r in &regimes {
        let rr = median_capacity(caps.get(&r.label()).unwrap_or(&no_caps), "round_robin");
        if rr.is_nan() || rr <= 0.0 {
            continue;
        }
        for &l in &loads {
            for &s in &cfg.seeds {
                for p in &policies {
                    jobs.push((Arc::clone(r), Job::new("fixed_load", p, s, l, l * rr)));
                }
            }
        }
    }
    log(format!("study 1b: {} runs at fixed loads", jobs.len()));
    let fixed = runs(jobs)?;
    let path = cfg.out_dir.join("study1_fixed_load.csv");
    write_csv(&path, &fixed)?;
    files.push(path);
    rep.capacity = cap_rows;
    rep.fixed = fixed;

    // The regimes of studies 2 and 3: the first GPU profile's.
    let first = cfg
        .gpu_profiles
        .first()
        .map(|p| workloads::long_context(p).name);
    let focus: Vec<Arc<Regime>> = regimes
        .iter()
        .filter(|r| Some(&r.profile.name) == first.as_ref())
        .filter(|r| {
            matches!(
                r.workload.name.as_str(),
                "gsp" | "agent" | "rag" | "sharegpt"
            )
        })
        .cloned()
        .collect();

    // 2. Weights, at the default weights' capacity.
    let (alphas, betas, gammas): (Vec<f64>, Vec<f64>, Vec<f64>) = if cfg.quick {
        (
            vec![0.0, 0.5, 1.0, 2.0],
            vec![0.0, 0.25, 0.5, 1.0],
            vec![0.0, 0.5],
        )
    } else {
        (
            vec![0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
            vec![0.0, 0.125, 0.25, 0.5, 1.0, 2.0],
            vec![0.0, 0.5, 1.0],
        )
    };
    let mut jobs = Vec::new();
    for r in &focus {
        let rate = median_capacity(caps.get(&r.label()).unwrap_or(&no_caps), "weighted");
        if rate.is_nan() || rate <= 0.0 {
            continue;
        }
        for &a in &alphas {
            for &b in &betas {
                for &g in &gammas {
                    for &s in &cfg.seeds {
                        jobs.push((
                            Arc::clone(r),
                            Job::new(
                                "weights",
                                &format!("weighted:alpha={a},beta={b},gamma={g}"),
                                s,
                                1.0,
                                rate,
                            ),
                        ));
                    }
                }
            }
        }
    }
    log(format!("study 2: {} runs", jobs.len()));
    let s2 = runs(jobs)?;
    let path = cfg.out_dir.join("study2_weights.csv");
    write_csv(&path, &s2)?;
    files.push(path);
    let focus_keys: Vec<RegimeKey> = focus.iter().map(|r| RegimeKey::from(&**r)).collect();
    let weights = crate::report::weights_summary(&s2, &focus_keys);
    files.extend(figures::weights_heatmaps(
        &plots,
        &focus_keys,
        &s2,
        cfg.seeds.len(),
        &cfg.stamp,
    )?);
    rep.weights = weights;
    rep.weights_rows = s2;

    // 3. Staleness, each policy at 80 % of its own capacity.
    let intervals: Vec<f64> = if cfg.quick {
        vec![0.0, 2.0, 10.0, 30.0]
    } else {
        vec![0.0, 1.0, 2.0, 5.0, 10.0, 30.0]
    };
    let sync_policies = ["cache_affinity", "weighted", "dynamo_kv"];
    let poll_policies = ["power_of_two", "weighted"];
    let sload = 0.8;
    let mut jobs = Vec::new();
    for r in &focus {
        let c = caps.get(&r.label()).unwrap_or(&no_caps);
        for &i in &intervals {
            for (study, list) in [
                ("staleness_sync", &sync_policies[..]),
                ("staleness_metrics", &poll_policies[..]),
            ] {
                for p in list {
                    let rate = sload * median_capacity(c, p);
                    if rate.is_nan() || rate <= 0.0 {
                        continue;
                    }
                    for &s in &cfg.seeds {
                        let mut j = Job::new(study, p, s, sload, rate);
                        if study == "staleness_sync" {
                            j.sync_secs = i;
                        } else {
                            j.metrics_secs = i;
                        }
                        jobs.push((Arc::clone(r), j));
                    }
                }
            }
        }
    }
    log(format!("study 3: {} runs", jobs.len()));
    let s3 = runs(jobs)?;
    let path = cfg.out_dir.join("study3_staleness.csv");
    write_csv(&path, &s3)?;
    files.push(path);
    files.extend(figures::staleness_lines(
        &plots,
        &focus_keys,
        &s3,
        &cfg.stamp,
    )?);
    rep.staleness = s3;

    // 4. Scale.
    if let Some(p) = cfg.gpu_profiles.first() {
        let p = workloads::long_context(p);
        let sizes: Vec<usize> = if cfg.quick {
            vec![2, 8, 32]
        } else {
            vec![2, 4, 8, 16, 32, 64]
        };
        let big: Vec<usize> = if cfg.quick { vec![] } else { vec![256, 1024] };
        let big_policies = [
            "round_robin",
            "least_request",
            "power_of_two",
            "prefix_hash",
            "cache_affinity",
            "weighted",
        ];
        let scale_load = 0.8;
        let base = scale_base(&p, cfg.quick, seed0)?;
        let (rows2, _) = capacities(&base, &["round_robin"], &cfg.seeds, "scale")?;
        let caps2 = by_regime(&rows2);
        let mut jobs = Vec::new();
        for (k, b) in base.iter().enumerate() {
            let rr = median_capacity(caps2.get(&b.label()).unwrap_or(&no_caps), "round_robin");
            if rr.is_nan() || rr <= 0.0 {
                continue;
            }
            let mut ns = sizes.clone();
            // The largest sizes on the last workload only.
            if k + 1 == base.len() {
                ns.extend(&big);
            }
            for &n in &ns {
                let regime = Arc::new(Regime {
                    instances: n,
                    ..Regime::clone(b)
                });
                let list: Vec<&str> = if n > 64 {
                    big_policies.to_vec()
                } else {
                    policies.clone()
                };
                for p in list {
                    for &s in &cfg.seeds {
                        let mut j =
                            Job::new("scale", p, s, scale_load, scale_load * rr * (n / 2) as f64);
                        j.copies = (n / 2).max(1);
                        jobs.push((Arc::clone(&regime), j));
                    }
                }
            }
        }
        // Big runs first so the parallel tail is short.
        jobs.sort_by_key(|(r, _)| std::cmp::Reverse(r.instances));
        log(format!(
            "study 4: {} runs up to {} instances",
            jobs.len(),
            jobs.first().map_or(0, |j| j.0.instances)
        ));
        let t = std::time::Instant::now();
        let mut s4 = runs(jobs)?;
        log(format!("study 4: {:.0} s", t.elapsed().as_secs_f64()));
        s4.sort_by(|a, b| {
            (a.workload.as_str(), a.instances, a.policy.as_str(), a.seed).cmp(&(
                b.workload.as_str(),
                b.instances,
                b.policy.as_str(),
                b.seed,
            ))
        });
        let path = cfg.out_dir.join("study4_scale.csv");
        write_csv(&path, &s4)?;
        files.push(path);
        let gains = crate::report::scale_gains(&s4);
        files.extend(figures::scale_gain(&plots, &p.name, &s4, &cfg.stamp)?);
        rep.scale = s4;
        rep.scale_base = base;
        rep.scale_gains = gains;
    }

    // 5. Live.
    if let Some(live) = live {
        let lp = live.profile();
        let sizes: Vec<usize> = if cfg.quick { vec![2] } else { vec![2, 8] };
        let seeds: Vec<u64> = if cfg.quick {
            vec![seed0]
        } else {
            cfg.seeds.clone()
        };
        let load = 0.9;
        let mut routers: Vec<RouterChoice> = policies
            .iter()
            .map(|p| RouterChoice::Kvroute(p.to_string()))
            .collect();
        routers.extend(live.peers());
        let mut rows = Vec::new();
        for d in live_workloads(cfg.quick) {
            let w = Arc::new(live.subset(&workloads::build(&d, seed0)?));
            for &n in &sizes {
                let regime = Regime::new(&lp, &w, n)?;
                let (c, _) = capacities(&[Arc::new(regime)], &["round_robin"], &[seed0], "live")?;
                let rr = c.first().map_or(0.0, |r| r.sessions_per_s);
                if rr.is_nan() || rr <= 0.0 {
                    continue;
                }
                for &s in &seeds {
                    for r in &routers {
                        log(format!(
                            "live: {} on {n} instances, {}, seed {s}",
                            r.label(),
                            w.name
                        ));
                        rows.push(live.run(&w, r, n, load * rr, load, s)?);
                    }
                }
            }
        }
        let path = cfg.out_dir.join("study5_live.csv");
        write_csv(&path, &rows)?;
        files.push(path);
        rep.live_engines = Some(live.engines());
        rep.live = rows;
    }

    finish(&rep, &cfg.out_dir, files)
}

/// Write the document to `dir/results.md` and gather the output.
fn finish(rep: &Report, dir: &Path, mut files: Vec<PathBuf>) -> Result<StudyOutput, StudyError> {
    let markdown = rep.markdown();
    let verdicts = rep.verdicts();
    let path = dir.join("results.md");
    std::fs::write(&path, &markdown).map_err(|e| StudyError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    files.push(path);
    Ok(StudyOutput {
        files,
        verdicts,
        markdown,
    })
}

/// The regimes of the scale study at 2 instances (their workloads, built
/// with `seed`), on `profile`'s long-context variant.
fn scale_base(profile: &Profile, quick: bool, seed: u64) -> Result<Vec<Arc<Regime>>, StudyError> {
    let p = workloads::long_context(profile);
    scale_workloads(quick)
        .iter()
        .map(|d| {
            let w = Arc::new(workloads::build(d, seed)?);
            Ok(Arc::new(Regime::new(&p, &w, 2)?))
        })
        .collect()
}

/// Write the results document and the figures again from the CSVs a
/// finished run left in `dir`, simulating nothing but each regime's
/// workload and unloaded baseline (the facts the document states about
/// it). `cfg` must describe that run (profiles, seed profile, instances,
/// seeds); a regime whose objective differs from the CSVs' is refused —
/// the CSVs then come from another configuration or code version.
/// `data_of` is that run's command and commit; `live_engines` describes
/// its live engines (the live section is left out without it).
pub fn report_from(
    cfg: &StudyConfig,
    dir: &Path,
    data_of: (String, String),
    live_engines: Option<String>,
) -> Result<StudyOutput, StudyError> {
    let seed0 = *cfg
        .seeds
        .first()
        .ok_or_else(|| StudyError::Config("at least one seed".into()))?;
    let capacity: Vec<CapacityRow> = figures::read_csv(&dir.join("study1_capacity.csv"))?;
    let probes: Vec<SimRow> = figures::read_csv(&dir.join("study1_capacity_probes.csv"))?;
    let regimes = workloads::regimes(
        &cfg.gpu_profiles,
        cfg.seed_profile.as_ref(),
        cfg.instances,
        cfg.quick,
        seed0,
    )?;
    for r in &regimes {
        let slo = probes
            .iter()
            .find(|p| {
                p.profile == r.profile.name
                    && p.workload == r.workload.name
                    && p.instances == r.instances
            })
            .map(|p| p.slo_ttft)
            .ok_or_else(|| {
                StudyError::Config(format!(
                    "{}: no capacity probes in {}",
                    r.label(),
                    dir.display()
                ))
            })?;
        if (slo - r.slo.ttft_secs).abs() > 1e-9 * slo.abs().max(1.0) {
            return Err(StudyError::Config(format!(
                "{}: the CSVs' TTFT objective is {slo} s, this configuration's {} s: they come from another configuration or code version",
                r.label(),
                r.slo.ttft_secs
            )));
        }
    }
    let mut rep = Report::new(cfg, &regimes);
    rep.data_of = Some(data_of);
    rep.capacity = capacity;
    rep.fixed = figures::read_csv(&dir.join("study1_fixed_load.csv"))?;
    let s2: Vec<SimRow> = figures::read_csv(&dir.join("study2_weights.csv"))?;
    let focus: Vec<RegimeKey> = figures::regimes_in(&regimes, &s2);
    rep.weights = crate::report::weights_summary(&s2, &focus);
    rep.weights_rows = s2;
    rep.staleness = figures::read_csv(&dir.join("study3_staleness.csv"))?;
    let s4: Vec<SimRow> = figures::read_csv(&dir.join("study4_scale.csv"))?;
    if let Some(p) = cfg.gpu_profiles.first() {
        rep.scale_base = scale_base(p, cfg.quick, seed0)?;
    }
    rep.scale_gains = crate::report::scale_gains(&s4);
    rep.scale = s4;
    let live = dir.join("study5_live.csv");
    if live.exists() && live_engines.is_some() {
        rep.live = figures::read_csv(&live)?;
        rep.live_engines = live_engines;
    }
    let files = figures::render_from(dir, &cfg.stamp)?;
    finish(&rep, dir, files)
}

/// A name usable in a file name.
pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_sim::Profile;

    /// The document is written again from CSVs: the regimes rebuilt from the
    /// configuration, the data's run named, and CSVs whose objectives do not
    /// match the configuration refused.
    #[test]
    fn the_report_is_written_again_from_a_runs_csvs() {
        let dir = std::env::temp_dir().join(format!("kvroute-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = StudyConfig {
            out_dir: dir.clone(),
            quick: true,
            seeds: vec![0, 1],
            stamp: Stamp {
                command: "sim study --report-from".into(),
                commit: "new".into(),
            },
            gpu_profiles: vec![Profile::load("llama3-8b-a100").unwrap()],
            seed_profile: None,
            instances: 4,
        };
        let regimes = workloads::regimes(&cfg.gpu_profiles, None, 4, true, 0).unwrap();
        let row = |r: &Regime, study: &str, policy: &str, seed: u64| SimRow {
            study: study.into(),
            profile: r.profile.name.clone(),
            workload: r.workload.name.clone(),
            policy: policy.into(),
            instances: r.instances,
            seed,
            load: 1.0,
            rate: 1.0,
            slo_ttft: r.slo.ttft_secs,
            slo_tpot: r.slo.tpot_secs,
            requests: 10,
            ttft_p90: 0.5,
            meets_slo: true,
            ..Default::default()
        };
        let (mut cap, mut probes, mut fixed) = (vec![], vec![], vec![]);
        for r in &regimes {
            for p in all_policies() {
                for seed in [0, 1] {
                    cap.push(CapacityRow {
                        profile: r.profile.name.clone(),
                        workload: r.workload.name.clone(),
                        instances: r.instances,
                        policy: p.into(),
                        seed,
                        sessions_per_s: 1.0,
                        requests_per_s: r.turns_per_session,
                        missed_at: 2.0,
                        probes: 2,
                        bracketed: true,
                        capped: false,
                    });
                    probes.push(row(r, "capacity", p, seed));
                    fixed.push(row(r, "fixed", p, seed));
                }
            }
        }
        write_csv(&dir.join("study1_capacity.csv"), &cap).unwrap();
        write_csv(&dir.join("study1_capacity_probes.csv"), &probes).unwrap();
        write_csv(&dir.join("study1_fixed_load.csv"), &fixed).unwrap();
        for f in [
            "study2_weights.csv",
            "study3_staleness.csv",
            "study4_scale.csv",
        ] {
            write_csv::<SimRow>(&dir.join(f), &[]).unwrap();
        }
        let data_of = ("sim study".to_string(), "old".to_string());
        let out = report_from(&cfg, &dir, data_of.clone(), None).unwrap();
        let head = &out.markdown[..600.min(out.markdown.len())];
        assert!(
            head.contains("Simulated and measured by `sim study` at commit `old`")
                && head.contains("written again from that run's CSVs")
                && head.contains("by `sim study --report-from` at commit `new`"),
            "{head}"
        );
        assert!(out.markdown.contains("## How to read it"));
        assert!(out.files.iter().any(|f| f.ends_with("results.md")));
        // Another objective: the CSVs are not this configuration's.
        probes[0].slo_ttft *= 2.0;
        write_csv(&dir.join("study1_capacity_probes.csv"), &probes).unwrap();
        let e = report_from(&cfg, &dir, data_of, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another configuration or code version"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
