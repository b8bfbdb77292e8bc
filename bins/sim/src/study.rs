//! `sim study`: the four studies, with the live system on emulated engines
//! (default) or real vLLM-CPU instances (`--real`), writing CSVs, figures and
//! `docs/results.md`.

use crate::live::{Live, RealArgs};
use anyhow::{Context, Result};
use clap::Args;
use kvroute_sim::Profile;
use kvroute_study::plot::Stamp;
use kvroute_study::{StudyConfig, Workload};
use kvroute_workload::{
    load_text_tools, ArrivalSpec, RagSpec, Session, ShareGptSpec, WorkloadSpec,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run the studies.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// Smaller grids and workloads (a few minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Skip the live system (simulator only).
    #[arg(long)]
    no_live: bool,
    /// Run the live part on real vLLM-CPU instances (started with
    /// scripts/vllm-cpu/launch.sh 2) instead of emulated ones.
    #[arg(long)]
    real: bool,
    #[command(flatten)]
    real_engines: RealArgs,
    /// Profile of the live engines (emulated ones run it; capacity is computed from it).
    #[arg(long, default_value = "vllm-cpu-tiny")]
    live_profile: String,
    /// Emulated engines run this many times faster than real time.
    #[arg(long, default_value_t = 16.0)]
    speedup: f64,
    /// Directory of peer-router venvs (venv-sgl, venv-vllm); peers are skipped if absent.
    #[arg(long, env = "KVROUTE_PEERS_HOME")]
    peers_home: Option<PathBuf>,
    /// Engine profile of the simulated studies (default: the one fitted to real vLLM-CPU runs).
    #[arg(long, default_value = "vllm-cpu-tiny")]
    profile: String,
    /// A second profile for study 1 ("none" to skip): the seed's GPU setup.
    #[arg(long, default_value = "llama3.2-3b-rtx5080-x2")]
    alt_profile: String,
    /// Where CSVs and figures go.
    #[arg(long, default_value = "results/study")]
    out: PathBuf,
    /// Where the results document goes (figures are copied next to it)
    /// [default: docs/results.md; with --quick, OUT/results.md, so a quick
    /// run leaves the committed results alone]
    #[arg(long)]
    doc: Option<PathBuf>,
    /// TTFT SLO (capacity, goodput), seconds.
    #[arg(long, default_value_t = 2.0)]
    ttft_slo: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn commit() -> String {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{rev}+uncommitted")
    } else {
        rev
    }
}

/// The study's two workloads: multi-turn ShareGPT and RAG.
pub fn workloads(quick: bool, seed: u64) -> Result<Vec<Workload>> {
    let (tok, tpl) =
        load_text_tools(None, None).context("loading the shipped tokenizer and chat template")?;
    let vocab = tok.base_vocab_size() as u32;
    let build = |spec: WorkloadSpec| -> Result<Vec<Session>> {
        let it = spec
            .build(&ArrivalSpec::default(), &tok, Some(&tpl), seed)
            .with_context(|| format!("opening {}", spec.label()))?;
        it.collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", spec.label()))
    };
    let sharegpt = build(WorkloadSpec::Sharegpt(ShareGptSpec {
        max_sessions: Some(if quick { 200 } else { 400 }),
        max_output_tokens: 256,
        max_prompt_tokens: Some(3_072),
        think_time_s: 1.0,
        ..Default::default()
    }))?;
    let rag = build(WorkloadSpec::Rag(RagSpec {
        num_requests: if quick { 600 } else { 1500 },
        zipf_s: 1.0,
        passages_per_request: 5,
        max_tokens: 64,
        ..Default::default()
    }))?;
    Ok(vec![
        Workload {
            name: "sharegpt".into(),
            multi_turn: true,
            sessions: Arc::new(sharegpt),
            vocab,
        },
        Workload {
            name: "rag".into(),
            multi_turn: false,
            sessions: Arc::new(rag),
            vocab,
        },
    ])
}

fn copy_figures(out: &Path, doc: &Path) -> Result<()> {
    let figs = doc.parent().unwrap_or(Path::new(".")).join("figures");
    std::fs::create_dir_all(&figs).with_context(|| format!("creating {}", figs.display()))?;
    for e in std::fs::read_dir(out.join("plots"))
        .with_context(|| format!("reading {}/plots", out.display()))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "png") {
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, figs.join(name))
                    .with_context(|| format!("copying {}", p.display()))?;
            }
        }
    }
    Ok(())
}

pub fn run(a: StudyArgs, argv: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let sim_profile =
        Profile::load(&a.profile).with_context(|| format!("loading profile {}", a.profile))?;
    let live_profile = Profile::load(&a.live_profile)
        .with_context(|| format!("loading profile {}", a.live_profile))?;
    let workloads = workloads(a.quick, a.seed)?;
    let cfg = StudyConfig {
        out_dir: a.out.clone(),
        quick: a.quick,
        seed: a.seed,
        stamp: Stamp {
            command: argv.to_string(),
            commit: commit(),
        },
        sim_profile,
        alt_profile: match a.alt_profile.as_str() {
            "none" | "" => None,
            p => Some(Profile::load(p).with_context(|| format!("loading profile {p}"))?),
        },
        workloads,
        ttft_slo: a.ttft_slo,
    };
    let live = if a.no_live {
        None
    } else {
        let engines = a.real_engines.engines(a.real, a.speedup);
        Some(Live::new(
            engines,
            live_profile,
            a.peers_home.clone(),
            a.seed,
        )?)
    };
    let out = kvroute_study::run(
        &cfg,
        live.as_ref().map(|l| l as &dyn kvroute_study::LiveRunner),
    )?;
    let doc = match &a.doc {
        Some(d) => d.clone(),
        None if a.quick => a.out.join("results.md"),
        None => PathBuf::from("docs/results.md"),
    };
    if let Some(dir) = doc.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&doc, &out.markdown).with_context(|| format!("writing {}", doc.display()))?;
    copy_figures(&a.out, &doc)?;
    for v in &out.verdicts {
        println!("{} {}: {}", v.id, v.claim, v.outcome);
    }
    eprintln!(
        "wrote {} files under {} and {} in {:.0}s",
        out.files.len(),
        a.out.display(),
        doc.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
