//! The four studies, run one after another: each writes its CSV and figures
//! and hands its rows to the report.

use crate::plot::{self, Heatmap, LineChart, Series, Stamp};
use crate::report::{self, Report};
use crate::sims::{Job, SimContext, SimRow};
use crate::{StudyError, Workload};
use kvroute_sim::Profile;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Load-only policies.
pub const LOAD_ONLY: [&str; 3] = ["round_robin", "least_request", "power_of_two"];
/// Cache-aware policies.
pub const CACHE_AWARE: [&str; 3] = ["prefix_hash", "cache_affinity", "weighted"];
/// Published designs, as rows to beat.
pub const ROWS_TO_BEAT: [&str; 3] = ["sglang_cache_aware", "dualmap", "preble_e2"];

/// How to run the studies.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    /// Where CSVs, figures and results.md go.
    pub out_dir: PathBuf,
    /// Smaller grids (minutes instead of tens of minutes).
    pub quick: bool,
    /// Seed of every run.
    pub seed: u64,
    /// Provenance stamped on every figure and table.
    pub stamp: Stamp,
    /// Engine profile of the simulated studies.
    pub sim_profile: Profile,
    /// A second profile for study 1 (the seed's GPU setup, projected).
    pub alt_profile: Option<Profile>,
    /// Workloads (ShareGPT multi-turn first, then RAG).
    pub workloads: Vec<Workload>,
    /// TTFT SLO defining capacity and goodput, seconds.
    pub ttft_slo: f64,
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
#[derive(Debug, Clone, Serialize)]
pub struct LiveRow {
    /// Workload.
    pub workload: String,
    /// Router / policy label.
    pub router: String,
    /// Load fraction.
    pub load: f64,
    /// Sessions per second.
    pub rate: f64,
    /// Requests completed.
    pub requests: usize,
    /// Requests failed.
    pub failed: usize,
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
    /// Engine E2E p50, s.
    pub e2e_p50: f64,
    /// Engine E2E p90, s.
    pub e2e_p90: f64,
    /// Engine E2E p99, s.
    pub e2e_p99: f64,
    /// Client TTFT mean, s.
    pub client_ttft_mean: f64,
    /// Client TTFT p90, s (exact, from per-request times).
    pub client_ttft_p90: f64,
    /// Client TTFT p99, s.
    pub client_ttft_p99: f64,
    /// Client E2E mean, s.
    pub client_e2e_mean: f64,
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
    /// Run `w` at `rate` sessions/s through `router`; `load` labels the row.
    fn run(
        &self,
        w: &Workload,
        router: &RouterChoice,
        rate: f64,
        load: f64,
    ) -> Result<LiveRow, StudyError>;
}

/// What the studies produced.
#[derive(Debug, Clone)]
pub struct StudyOutput {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The verdicts.
    pub verdicts: Vec<crate::Verdict>,
    /// The report (markdown).
    pub markdown: String,
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), StudyError> {
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

/// Run every study; `live` adds the live-system rows of study 1.
pub fn run(cfg: &StudyConfig, live: Option<&dyn LiveRunner>) -> Result<StudyOutput, StudyError> {
    let ctx = SimContext {
        profile: cfg.sim_profile.clone(),
        seed: cfg.seed,
        warmup_secs: 0.0,
        slo: SimContext::slo_for(&cfg.sim_profile, cfg.ttft_slo),
    };
    let mut files = Vec::new();
    let mut rep = Report::new(cfg);
    let loads: &[f64] = &[0.3, 0.6, 0.9];
    let plots = cfg.out_dir.join("plots");

    // Capacity per workload at 2 instances.
    let mut capacity = Vec::new();
    for w in &cfg.workloads {
        let c = ctx.capacity(w, 2)?;
        log(format!(
            "capacity of 2 instances on {}: {c:.3} sessions/s",
            w.name
        ));
        capacity.push(c);
    }
    rep.capacity = cfg
        .workloads
        .iter()
        .map(|w| w.name.clone())
        .zip(capacity.iter().copied())
        .collect();

    // 1. Policies side by side (simulator).
    let all: Vec<&str> = LOAD_ONLY
        .iter()
        .chain(&CACHE_AWARE)
        .chain(&ROWS_TO_BEAT)
        .copied()
        .collect();
    let mut s1 = Vec::new();
    for (w, &cap) in cfg.workloads.iter().zip(&capacity) {
        let jobs: Vec<Job> = loads
            .iter()
            .flat_map(|&l| {
                all.iter()
                    .map(move |p| Job::new("policies", p, 2, l, l * cap))
            })
            .collect();
        log(format!(
            "study 1 (simulator): {} runs on {}",
            jobs.len(),
            w.name
        ));
        s1.extend(ctx.run_all(w, &jobs)?);
    }
    let path = cfg.out_dir.join("study1_policies_sim.csv");
    write_csv(&path, &s1)?;
    files.push(path);
    for w in &cfg.workloads {
        for (metric, get) in [
            (
                "ttft_mean",
                (|r: &SimRow| r.ttft_mean) as fn(&SimRow) -> f64,
            ),
            ("ttft_p99", |r| r.ttft_p99),
        ] {
            let series = all
                .iter()
                .map(|p| Series {
                    label: p.to_string(),
                    points: s1
                        .iter()
                        .filter(|r| r.workload == w.name && r.policy == *p)
                        .map(|r| (r.load, get(r)))
                        .collect(),
                })
                .collect();
            files.extend(plot::line_chart(
                &plots.join(format!("policies_sim_{}_{metric}", w.name)),
                &LineChart {
                    title: format!("{} — {metric} vs load (simulator, 2 instances)", w.name),
                    x_label: "offered load (fraction of round-robin capacity)".into(),
                    y_label: format!("{metric} (s)"),
                    log_x: false,
                    series,
                },
                &cfg.stamp,
            )?);
        }
    }
    rep.policies_sim = s1;

    // 1c. The same comparison on a second engine profile.
    if let Some(alt) = &cfg.alt_profile {
        let actx = SimContext {
            profile: alt.clone(),
            slo: SimContext::slo_for(alt, cfg.ttft_slo),
            ..ctx.clone()
        };
        let mut rows = Vec::new();
        for w in &cfg.workloads {
            let cap = actx.capacity(w, 2)?;
            log(format!(
                "capacity of 2 instances on {} with profile {}: {cap:.3} sessions/s",
                w.name, alt.name
            ));
            let jobs: Vec<Job> = loads
                .iter()
                .flat_map(|&l| {
                    all.iter()
                        .map(move |p| Job::new("policies_alt", p, 2, l, l * cap))
                })
                .collect();
            rows.extend(actx.run_all(w, &jobs)?);
        }
        let path = cfg.out_dir.join("study1_policies_sim_alt.csv");
        write_csv(&path, &rows)?;
        files.push(path);
        for w in &cfg.workloads {
            let series = all
                .iter()
                .map(|p| Series {
                    label: p.to_string(),
                    points: rows
                        .iter()
                        .filter(|r| r.workload == w.name && r.policy == *p)
                        .map(|r| (r.load, r.ttft_mean))
                        .collect(),
                })
                .collect();
            files.extend(plot::line_chart(
                &plots.join(format!("policies_alt_{}_ttft_mean", w.name)),
                &LineChart {
                    title: format!("{} — TTFT mean vs load ({}, 2 instances)", w.name, alt.name),
                    x_label: "offered load (fraction of round-robin capacity)".into(),
                    y_label: "ttft_mean (s)".into(),
                    log_x: false,
                    series,
                },
                &cfg.stamp,
            )?);
        }
        rep.alt = Some((format!("{} ({})", alt.name, alt.source), rows));
    }

    // 1b. Policies side by side on the live system.
    if let Some(live) = live {
        let live_profile = live.profile();
        let lctx = SimContext {
            slo: SimContext::slo_for(&live_profile, cfg.ttft_slo),
            profile: live_profile,
            ..ctx.clone()
        };
        let mut rows = Vec::new();
        let live_loads: &[f64] = if cfg.quick { &[0.3, 0.9] } else { loads };
        for w in &cfg.workloads {
            let cap = lctx.capacity(w, 2)?;
            log(format!(
                "live capacity of 2 instances on {}: {cap:.3} sessions/s",
                w.name
            ));
            let mut routers: Vec<RouterChoice> = all
                .iter()
                .map(|p| RouterChoice::Kvroute(p.to_string()))
                .collect();
            routers.extend(live.peers());
            for &l in live_loads {
                for r in &routers {
                    log(format!(
                        "study 1 (live, {}): {} at load {l} on {}",
                        live.engines(),
                        r.label(),
                        w.name
                    ));
                    rows.push(live.run(w, r, l * cap, l)?);
                }
            }
        }
        let path = cfg.out_dir.join("study1_policies_live.csv");
        write_csv(&path, &rows)?;
        files.push(path);
        for w in &cfg.workloads {
            // Routers in the order they ran.
            let labels = crate::report::first_seen(rows.iter().map(|r| r.router.as_str()));
            let series = labels
                .iter()
                .map(|l| Series {
                    label: l.to_string(),
                    points: rows
                        .iter()
                        .filter(|r| r.workload == w.name && r.router == *l)
                        .map(|r| (r.load, r.ttft_mean))
                        .collect(),
                })
                .collect();
            files.extend(plot::line_chart(
                &plots.join(format!("policies_live_{}_ttft_mean", w.name)),
                &LineChart {
                    title: format!("{} — engine TTFT mean vs load ({})", w.name, live.engines()),
                    x_label: "offered load (fraction of round-robin capacity)".into(),
                    y_label: "TTFT mean (s), engine timers".into(),
                    log_x: false,
                    series,
                },
                &cfg.stamp,
            )?);
        }
        rep.live_engines = Some(live.engines());
        rep.policies_live = rows;
    }

    // 2. Weights of the scoring formula.
    let (alphas, betas, gammas): (Vec<f64>, Vec<f64>, Vec<f64>) = if cfg.quick {
        (
            vec![0.0, 0.5, 1.0, 2.0],
            vec![0.0, 0.25, 0.5, 1.0, 2.0],
            vec![0.0, 0.5],
        )
    } else {
        (
            vec![0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
            vec![0.0, 0.125, 0.25, 0.5, 1.0, 2.0],
            vec![0.0, 0.25, 0.5, 1.0],
        )
    };
    let wload = 0.9;
    let mut s2 = Vec::new();
    for (w, &cap) in cfg.workloads.iter().zip(&capacity) {
        let mut jobs = Vec::new();
        for &a in &alphas {
            for &b in &betas {
                for &g in &gammas {
                    jobs.push(Job::new(
                        "weights",
                        &format!("weighted:alpha={a},beta={b},gamma={g}"),
                        2,
                        wload,
                        wload * cap,
                    ));
                }
            }
        }
        log(format!("study 2: {} runs on {}", jobs.len(), w.name));
        s2.extend(ctx.run_all(w, &jobs)?);
    }
    let path = cfg.out_dir.join("study2_weights.csv");
    write_csv(&path, &s2)?;
    files.push(path);
    let weights = report::weights_summary(&s2, &cfg.workloads, &alphas, &betas, &gammas);
    for w in &cfg.workloads {
        let g = weights.best.get(&w.name).map_or(0.0, |b| b.2);
        for (metric, get) in [
            (
                "ttft_mean",
                (|r: &SimRow| r.ttft_mean) as fn(&SimRow) -> f64,
            ),
            ("ttft_p99", |r| r.ttft_p99),
        ] {
            let values = betas
                .iter()
                .map(|&b| {
                    alphas
                        .iter()
                        .map(|&a| {
                            s2.iter()
                                .find(|r| {
                                    r.workload == w.name
                                        && r.policy
                                            == format!("weighted:alpha={a},beta={b},gamma={g}")
                                })
                                .map_or(f64::NAN, get)
                        })
                        .collect()
                })
                .collect();
            files.extend(plot::heatmap(
                &plots.join(format!("weights_{}_{metric}", w.name)),
                &Heatmap {
                    title: format!(
                        "{} — {metric} (s) at {:.0}% load, γ = {g}",
                        w.name,
                        wload * 100.0
                    ),
                    x_label: "α (cache weight)".into(),
                    y_label: "β (load weight)".into(),
                    xs: alphas.clone(),
                    ys: betas.clone(),
                    values,
                },
                &cfg.stamp,
            )?);
        }
    }
    rep.weights = Some(weights);
    rep.weights_rows = s2;

    // 3. Staleness.
    let intervals = [0.0, 1.0, 2.0, 5.0, 10.0, 30.0];
    let sync_policies = [
        "cache_affinity",
        "weighted",
        "sglang_cache_aware",
        "preble_e2",
    ];
    let poll_policies = ["power_of_two", "weighted", "preble_e2"];
    let sload = 0.9;
    let mut s3 = Vec::new();
    for (w, &cap) in cfg.workloads.iter().zip(&capacity) {
        let mut jobs = Vec::new();
        for &i in &intervals {
            for p in sync_policies {
                let mut j = Job::new("staleness_sync", p, 2, sload, sload * cap);
                j.sync_secs = i;
                jobs.push(j);
            }
            for p in poll_policies {
                let mut j = Job::new("staleness_metrics", p, 2, sload, sload * cap);
                j.metrics_secs = i;
                jobs.push(j);
            }
        }
        log(format!("study 3: {} runs on {}", jobs.len(), w.name));
        s3.extend(ctx.run_all(w, &jobs)?);
    }
    let path = cfg.out_dir.join("study3_staleness.csv");
    write_csv(&path, &s3)?;
    files.push(path);
    for w in &cfg.workloads {
        for (study, policies, xget, xname) in [
            (
                "staleness_sync",
                &sync_policies[..],
                (|r: &SimRow| r.sync_secs) as fn(&SimRow) -> f64,
                "directory sync interval (s)",
            ),
            (
                "staleness_metrics",
                &poll_policies[..],
                |r| r.metrics_secs,
                "metrics poll interval (s)",
            ),
        ] {
            for (metric, get) in [
                (
                    "ttft_mean",
                    (|r: &SimRow| r.ttft_mean) as fn(&SimRow) -> f64,
                ),
                ("hit_rate", |r| r.hit_rate),
            ] {
                let series = policies
                    .iter()
                    .map(|p| Series {
                        label: p.to_string(),
                        points: s3
                            .iter()
                            .filter(|r| r.workload == w.name && r.study == study && r.policy == *p)
                            .map(|r| (xget(r), get(r)))
                            .collect(),
                    })
                    .collect();
                files.extend(plot::line_chart(
                    &plots.join(format!("{study}_{}_{metric}", w.name)),
                    &LineChart {
                        title: format!(
                            "{} — {metric} vs {xname} ({:.0}% load)",
                            w.name,
                            sload * 100.0
                        ),
                        x_label: xname.into(),
                        y_label: metric.into(),
                        log_x: false,
                        series,
                    },
                    &cfg.stamp,
                )?);
            }
        }
    }
    rep.staleness = s3;

    // 4. Scale.
    let sizes: Vec<usize> = if cfg.quick {
        vec![2, 4, 8, 16, 64]
    } else {
        vec![2, 4, 8, 16, 64, 256, 1024]
    };
    let scale_policies = [
        "round_robin",
        "least_request",
        "power_of_two",
        "prefix_hash",
        "cache_affinity",
        "weighted",
    ];
    let scale_load = 0.6;
    let mut s4 = Vec::new();
    for (w, &cap) in cfg.workloads.iter().zip(&capacity) {
        let mut jobs = Vec::new();
        for &n in &sizes {
            for p in scale_policies {
                let mut j = Job::new("scale", p, n, scale_load, scale_load * cap * n as f64 / 2.0);
                j.replicas = (n / 2).max(1);
                jobs.push(j);
            }
        }
        log(format!(
            "study 4: {} runs on {} (up to {} instances)",
            jobs.len(),
            w.name,
            sizes.last().copied().unwrap_or(0)
        ));
        // Big runs first so the parallel tail is short.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.instances));
        let mut rows = ctx.run_all(w, &jobs)?;
        rows.sort_by(|a, b| a.instances.cmp(&b.instances).then(a.policy.cmp(&b.policy)));
        s4.extend(rows);
    }
    let path = cfg.out_dir.join("study4_scale.csv");
    write_csv(&path, &s4)?;
    files.push(path);
    let gains = report::scale_gains(&s4, &cfg.workloads);
    let series = gains
        .iter()
        .map(|(w, pts)| Series {
            label: format!("{w}: best load-only / best cache-aware TTFT"),
            points: pts.clone(),
        })
        .collect();
    files.extend(plot::line_chart(
        &plots.join("scale_gain"),
        &LineChart {
            title: format!(
                "Gain of cache-aware routing vs instances ({:.0}% load per instance)",
                scale_load * 100.0
            ),
            x_label: "instances".into(),
            y_label: "TTFT mean ratio (load-only / cache-aware)".into(),
            log_x: true,
            series,
        },
        &cfg.stamp,
    )?);
    rep.scale = s4;
    rep.scale_gains = gains;

    let markdown = rep.markdown(&cfg.out_dir);
    let verdicts = rep.verdicts();
    let path = cfg.out_dir.join("results.md");
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
