//! `sim calibrate`: fit an engine profile's latency terms to measured requests.

use anyhow::{bail, Context, Result};
use clap::Args;
use kvroute_sim::calibrate::{fit, Sample};
use kvroute_sim::Profile;
use serde::Deserialize;
use std::path::PathBuf;

/// Fit latency coefficients to loadgen per-request CSVs.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// loadgen requests.csv files: probe runs (one request at a time) and
    /// closed-loop runs (their summary.json next to them says the concurrency).
    #[arg(required = true)]
    csv: Vec<PathBuf>,
    /// Profile whose limits (block size, token budget) the engine ran with.
    #[arg(long, default_value = "vllm-cpu-tiny")]
    base: String,
    /// Name of the fitted profile.
    #[arg(long, default_value = "vllm-cpu-tiny-fit")]
    name: String,
    /// Write the fitted profile (TOML) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use client-side times even when engine-side ones are present.
    #[arg(long)]
    client_times: bool,
}

/// The columns of a loadgen per-request CSV that calibration reads.
#[derive(Debug, Deserialize)]
struct Row {
    status: u16,
    #[serde(default)]
    error: String,
    prompt_tokens: u32,
    #[serde(default)]
    cached_tokens: Option<u32>,
    #[serde(default)]
    predicted_cached_tokens: Option<u32>,
    output_tokens: u32,
    ttft: f64,
    e2e: f64,
    #[serde(default)]
    engine_ttft: Option<f64>,
    #[serde(default)]
    engine_e2e: Option<f64>,
}

/// The decode batch of a run, from the `summary.json` beside its CSV:
/// 1 for probe runs, the concurrency for closed loops.
fn batch_of(csv: &std::path::Path) -> Result<u32> {
    let summary = csv.with_file_name("summary.json");
    let text = std::fs::read_to_string(&summary).with_context(|| {
        format!(
            "reading {} (written by loadgen beside the CSV)",
            summary.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", summary.display()))?;
    let run = &v["run"];
    if run["probe"].as_bool() == Some(true) {
        return Ok(1);
    }
    match (run["pacing"]["kind"].as_str(), run["pacing"]["concurrency"].as_u64()) {
        (Some("closed"), Some(c)) => Ok(c as u32),
        _ => bail!(
            "{}: only probe runs and closed-loop runs can be calibrated on (the batch size of an open loop is unknown)",
            csv.display()
        ),
    }
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let base = Profile::load(&a.base).with_context(|| format!("loading profile {}", a.base))?;
    let mut samples = Vec::new();
    let mut engine_timed = 0;
    for path in &a.csv {
        let batch = batch_of(path)?;
        println!("{}: requests decoded in batches of {batch}", path.display());
        let mut r =
            csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
        for (i, row) in r.deserialize::<Row>().enumerate() {
            let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
            if row.status != 200 || !row.error.is_empty() {
                continue; // failed, or cut mid-stream
            }
            let (ttft, e2e) = match (row.engine_ttft, row.engine_e2e, a.client_times) {
                (Some(t), Some(e), false) if t > 0.0 => {
                    engine_timed += 1;
                    (t, e)
                }
                _ => (row.ttft, row.e2e),
            };
            samples.push(Sample {
                prompt_tokens: row.prompt_tokens,
                cached_tokens: row
                    .cached_tokens
                    .or(row.predicted_cached_tokens)
                    .unwrap_or(0),
                output_tokens: row.output_tokens,
                ttft,
                e2e,
                batch,
            });
        }
    }
    if samples.is_empty() {
        bail!("no successful requests in {:?}", a.csv);
    }
    let f = fit(&samples, &base.limits)?;
    println!(
        "fitted {} rows from {} requests ({} with engine-side times)",
        f.rows,
        samples.len(),
        engine_timed
    );
    let m = f.model;
    println!("  step_overhead          {:.6} s", m.step_overhead);
    println!("  prefill_per_token      {:.3e} s", m.prefill_per_token);
    println!(
        "  prefill_per_attn_token {:.3e} s",
        m.prefill_per_attn_token
    );
    println!("  decode_per_seq         {:.3e} s", m.decode_per_seq);
    println!("  decode_per_ctx_token   {:.3e} s", m.decode_per_ctx_token);
    println!(
        "  residuals: TTFT rmse {:.4}s, mean |rel| {:.1}%; decode step rmse {:.5}s, mean |rel| {:.1}%",
        f.ttft_rmse,
        f.ttft_mean_rel_error * 100.0,
        f.decode_rmse,
        f.decode_mean_rel_error * 100.0
    );
    if !f.pinned_at_zero.is_empty() {
        println!(
            "  pinned at zero (non-negativity): {}",
            f.pinned_at_zero.join(", ")
        );
    }
    let mut p = base.clone();
    p.name = a.name.clone();
    p.latency = m;
    p.source = format!(
        "fitted by `sim calibrate` from {} requests; TTFT mean |rel err| {:.1}%, decode {:.1}%",
        samples.len(),
        f.ttft_mean_rel_error * 100.0,
        f.decode_mean_rel_error * 100.0
    );
    p.validate()?;
    if let Some(out) = a.out {
        std::fs::write(&out, p.to_toml()).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
