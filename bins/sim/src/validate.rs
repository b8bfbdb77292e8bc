//! `sim validate`: the simulator's accuracy — the options; the replays and
//! the table are `kvroute_live::validate`.

use crate::live::{Engines, Live, RealArgs};
use anyhow::{Context, Result};
use clap::Args;
use kvroute_live::validate::{validate, validation_table};
use kvroute_sim::Profile;
use kvroute_study::LiveRunner;
use std::path::PathBuf;

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

pub fn run(a: ValidateArgs, argv: &str) -> Result<()> {
    let profile =
        Profile::load(&a.profile).with_context(|| format!("loading profile {}", a.profile))?;
    let loads = crate::spec::list::<f64>("--loads", &a.loads)?;
    let engines = a.real_engines.engines(a.real, a.speedup);
    let instances = match &engines {
        Engines::Real { urls, .. } => urls.len(),
        Engines::Emulated { .. } => 2,
    };
    let (multi, single) = (
        a.sessions.first().copied().unwrap_or(16),
        a.sessions.get(1).copied().unwrap_or(48),
    );
    let live = Live::new(engines, profile.clone(), None)?.with_limits(multi, single);
    let rows = validate(
        &live,
        &profile,
        &a.workloads,
        &a.policies,
        &loads,
        instances,
        a.seed,
    )?;
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let mut w =
        csv::Writer::from_path(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for r in &rows {
        w.serialize(r)?;
    }
    w.flush()?;
    let md = validation_table(
        &rows,
        &format!(
            "Produced by `{argv}` against {} with profile `{}`.",
            LiveRunner::engines(&live),
            profile.name
        ),
    );
    if let Some(d) = a.table.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.table, &md).with_context(|| format!("writing {}", a.table.display()))?;
    print!("{md}");
    Ok(())
}
