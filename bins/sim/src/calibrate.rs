//! `sim calibrate`: fit an engine profile's latency terms to measured requests.

use anyhow::{bail, Context, Result};
use clap::Args;
use kvroute_sim::calibrate::{decode_batches, fit, Sample};
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
    #[serde(default)]
    instance: String,
    #[serde(default)]
    start: f64,
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

/// Whether a run was a probe (one request at a time), from the
/// `summary.json` loadgen wrote beside its CSV.
fn is_probe(csv: &std::path::Path) -> Result<bool> {
    let summary = csv.with_file_name("summary.json");
    let text = std::fs::read_to_string(&summary).with_context(|| {
        format!(
            "reading {} (written by loadgen beside the CSV)",
            summary.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", summary.display()))?;
    Ok(v["run"]["probe"].as_bool() == Some(true))
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let base = Profile::load(&a.base).with_context(|| format!("loading profile {}", a.base))?;
    let mut samples = Vec::new();
    let mut engine_timed = 0;
    for path in &a.csv {
        let probe = is_probe(path)?;
        let mut r =
            csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
        let mut rows = Vec::new();
        for (i, row) in r.deserialize::<Row>().enumerate() {
            let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
            if row.status == 200 && row.error.is_empty() {
                rows.push(row); // else failed, or cut mid-stream
            }
        }
        // How many requests decoded alongside each one, from the client's
        // own timeline of the run (requests on the same instance overlapping).
        let batches = if probe {
            vec![1.0; rows.len()]
        } else {
            decode_batches(
                &rows
                    .iter()
                    .map(|r| (r.instance.clone(), r.start + r.ttft, r.start + r.e2e))
                    .collect::<Vec<_>>(),
            )
        };
        let mean_batch = batches.iter().sum::<f64>() / batches.len().max(1) as f64;
        println!(
            "{}: {} requests, {}, mean decode batch {mean_batch:.2}",
            path.display(),
            rows.len(),
            if probe { "probe (alone)" } else { "under load" }
        );
        for (row, batch) in rows.into_iter().zip(batches) {
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
                // Under load only decode rows are used (TTFT includes queueing).
                alone: probe,
            });
        }
    }
    if samples.is_empty() {
        bail!("no successful requests in {:?}", a.csv);
    }
    let f = fit(&samples, &base.limits)?;
    println!(
        "fitted {} rows from {} requests ({} with engine-side times; {} coalesced decode rows dropped)",
        f.rows,
        samples.len(),
        engine_timed,
        f.dropped
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
    println!("  frontend per request   {:.6} s", f.frontend.per_request);
    println!(
        "  frontend per token     {:.3e} s",
        f.frontend.per_prompt_token
    );
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
    p.frontend = f.frontend;
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
