//! `sim validate`: the simulator's accuracy. The same replays (same sessions,
//! same Poisson arrivals, same policies) run on live engines through the
//! router and in the simulator with a profile; the table compares mean and
//! p90 TTFT and E2E.

use crate::live::{Live, RealArgs};
use anyhow::{Context, Result};
use clap::Args;
use kvroute_sim::Profile;
use kvroute_study::capacity;
use kvroute_study::sims::{self, Job};
use kvroute_study::{workloads, LiveRunner, Regime, RouterChoice};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Compare the simulator with live engines.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Profile to validate (a built-in name or a TOML file).
    #[arg(long, default_value = "vllm-cpu-tiny")]
    profile: String,
    /// Use real vLLM-CPU instances (else emulated engines at --speedup).
    #[arg(long)]
    real: bool,
    #[command(flatten)]
    real_engines: RealArgs,
    /// Emulated engines' speed-up (without --real).
    #[arg(long, default_value_t = 16.0)]
    speedup: f64,
    /// Policies (repeat the flag).
    #[arg(long = "policy", default_values_t = ["round_robin".to_string(), "cache_affinity".to_string(), "weighted".to_string()])]
    policies: Vec<String>,
    /// Loads, as fractions of round-robin capacity, comma-separated.
    #[arg(long, default_value = "0.3,0.6,0.9")]
    loads: String,
    /// Workloads, one-line specs (`--workload` syntax; repeat the flag).
    #[arg(long = "workload", default_values_t = [
        "sharegpt:max_sessions=16,max_output_tokens=128,max_prompt_tokens=3584".to_string(),
        "rag:num_requests=48".to_string(),
        "gsp:groups=6,prompts_per_group=8,system_tokens=2048,question_tokens=128,output_tokens=64".to_string(),
    ])]
    workloads: Vec<String>,
    /// Sessions replayed per run (multi-turn, single-turn).
    #[arg(long, default_values_t = [16usize, 48])]
    sessions: Vec<usize>,
    /// Output CSV.
    #[arg(long, default_value = "results/validation.csv")]
    out: PathBuf,
    /// Markdown table (appended to the calibration document by hand or by script).
    #[arg(long, default_value = "results/validation.md")]
    table: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Serialize)]
struct Row {
    workload: String,
    policy: String,
    load: f64,
    rate: f64,
    requests_live: usize,
    requests_sim: usize,
    ttft_mean_live: f64,
    ttft_mean_sim: f64,
    ttft_p90_live: f64,
    ttft_p90_sim: f64,
    e2e_mean_live: f64,
    e2e_mean_sim: f64,
    e2e_p90_live: f64,
    e2e_p90_sim: f64,
    hit_live: f64,
    hit_sim: f64,
}

fn err(sim: f64, live: f64) -> f64 {
    sim / live - 1.0
}

pub fn run(a: ValidateArgs, argv: &str) -> Result<()> {
    let profile =
        Profile::load(&a.profile).with_context(|| format!("loading profile {}", a.profile))?;
    let loads = crate::spec::list::<f64>("--loads", &a.loads)?;
    let engines = a.real_engines.engines(a.real, a.speedup);
    let (multi, single) = (
        a.sessions.first().copied().unwrap_or(16),
        a.sessions.get(1).copied().unwrap_or(48),
    );
    let live = Live::new(engines, profile.clone(), None)?.with_limits(multi, single);
    let instances = match &a.real_engines.engines(a.real, a.speedup) {
        crate::live::Engines::Real { urls, .. } => urls.len(),
        crate::live::Engines::Emulated { .. } => 2,
    };
    let mut rows = Vec::new();
    for spec in &a.workloads {
        let name = spec.split(':').next().unwrap_or(spec);
        let w = workloads::build_spec(name, spec, a.seed)?;
        let sub = Arc::new(live.subset(&w));
        let regime = Regime::new(&profile, &sub, instances)?;
        // Round-robin's capacity under the regime's SLO, in the simulator.
        let cap = capacity::search(
            &regime,
            &Job::new("validate", "round_robin", a.seed, f64::NAN, 0.0),
            0.0,
        )?
        .row
        .sessions_per_s;
        let w = &sub;
        for &load in &loads {
            for p in &a.policies {
                eprintln!(
                    "[validate] {} {p} at {:.0}% ({:.3} sessions/s) on {}",
                    w.name,
                    load * 100.0,
                    load * cap,
                    live.engines()
                );
                let l = live.run(
                    &sub,
                    &RouterChoice::Kvroute(p.clone()),
                    instances,
                    load * cap,
                    load,
                    a.seed,
                )?;
                // Everything counted, as in the live run.
                let job = Job {
                    warmup_fraction: 0.0,
                    ..Job::new("validate", p, a.seed, load, load * cap)
                };
                let s = sims::run(&regime, &job)?;
                rows.push(Row {
                    workload: w.name.clone(),
                    policy: p.clone(),
                    load,
                    rate: load * cap,
                    requests_live: l.requests,
                    requests_sim: s.requests,
                    ttft_mean_live: l.ttft_mean,
                    ttft_mean_sim: s.ttft_mean,
                    ttft_p90_live: l.client_ttft_p90,
                    ttft_p90_sim: s.ttft_p90,
                    e2e_mean_live: l.e2e_mean,
                    e2e_mean_sim: s.e2e_mean,
                    e2e_p90_live: l.client_e2e_p90,
                    e2e_p90_sim: s.e2e_p90,
                    hit_live: l.hit_rate,
                    hit_sim: s.hit_rate,
                });
            }
        }
    }
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut w =
        csv::Writer::from_path(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for r in &rows {
        w.serialize(r)?;
    }
    w.flush()?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by `{argv}` against {} with profile `{}`.\n",
        live.engines(),
        profile.name
    );
    md.push_str("| workload | policy | load | requests | TTFT mean live / sim (err) | TTFT p90 live / sim (err) | E2E mean live / sim (err) | E2E p90 live / sim (err) | hit rate live / sim |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    let mut abs = [0.0f64; 4];
    for r in &rows {
        let e = [
            err(r.ttft_mean_sim, r.ttft_mean_live),
            err(r.ttft_p90_sim, r.ttft_p90_live),
            err(r.e2e_mean_sim, r.e2e_mean_live),
            err(r.e2e_p90_sim, r.e2e_p90_live),
        ];
        for (acc, x) in abs.iter_mut().zip(e) {
            *acc += x.abs() / rows.len() as f64;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {:.0}% | {} / {} | {:.3} / {:.3} ({}) | {:.3} / {:.3} ({}) | {:.2} / {:.2} ({}) | {:.2} / {:.2} ({}) | {:.1}% / {:.1}% |",
            r.workload, r.policy, r.load * 100.0, r.requests_live, r.requests_sim,
            r.ttft_mean_live, r.ttft_mean_sim, pct(e[0]), r.ttft_p90_live, r.ttft_p90_sim, pct(e[1]),
            r.e2e_mean_live, r.e2e_mean_sim, pct(e[2]), r.e2e_p90_live, r.e2e_p90_sim, pct(e[3]),
            r.hit_live * 100.0, r.hit_sim * 100.0
        );
    }
    let _ = writeln!(
        md,
        "\nMean |error| over {} runs: TTFT mean {:.1}%, TTFT p90 {:.1}%, E2E mean {:.1}%, E2E p90 {:.1}%.",
        rows.len(),
        abs[0] * 100.0,
        abs[1] * 100.0,
        abs[2] * 100.0,
        abs[3] * 100.0
    );
    if let Some(d) = a.table.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.table, &md).with_context(|| format!("writing {}", a.table.display()))?;
    print!("{md}");
    Ok(())
}
