//! Fitting a [`LatencyModel`] to measured requests.
//!
//! A request that has the engine to itself runs a known sequence of steps:
//! its prefill (in chunks of at most `max_num_batched_tokens`, after its
//! cached prefix), then one decode step per further output token. So
//!
//! ```text
//! TTFT           = Σ_chunks (step_overhead + prefill_per_token·n + prefill_per_attn_token·n·(ctx + (n+1)/2))
//! (E2E − TTFT)/(out − 1) = step_overhead + decode_per_seq + decode_per_ctx_token · mean context
//! ```
//!
//! are linear in the five coefficients. With one request at a time,
//! `decode_per_seq` cannot be told from `step_overhead`; requests decoding in
//! a batch of `B` (a closed loop of concurrency `B`) add rows
//!
//! ```text
//! (E2E − TTFT)/(out − 1) ≈ step_overhead + B·decode_per_seq + B·decode_per_ctx_token · mean context
//! ```
//!
//! [`fit`] builds one row per measured TTFT of a lone request and one per
//! measured mean decode step, and solves the least-squares problem (relative
//! error) with non-negative coefficients (active set: a coefficient driven
//! negative is fixed at zero and the rest refitted). Calibrate on a probe run
//! (one request at a time, varied prompt lengths and cached prefixes) plus a
//! closed-loop run, then validate on open-loop runs with the simulator.
//!
//! Client-side times include HTTP and tokenisation; when the engine's own
//! per-request timings are available (`engine_ttft`, `engine_e2e`), they are
//! used instead. What cannot be separated is reported: the intercept of TTFT
//! rows also absorbs client overhead, and decode rows only see
//! `step_overhead + decode_per_seq` together.

use crate::profile::{EngineLimits, Frontend, LatencyModel, StepWork};
use serde::{Deserialize, Serialize};

/// One measured request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Time to first token, seconds.
    pub ttft: f64,
    /// End-to-end latency, seconds.
    pub e2e: f64,
    /// Mean number of sequences decoding together while this one decoded
    /// (1: it was alone). See [`decode_batches`].
    pub batch: f64,
    /// The request had the engine to itself (a probe): its TTFT is usable.
    pub alone: bool,
}

/// For each request, the mean number of requests decoding on the same
/// instance during its own decode (itself included): the time-average of
/// the overlap of decode intervals `(instance, first_token, finish)`.
/// Gives decode rows for runs of any pacing, not only closed loops.
pub fn decode_batches(intervals: &[(String, f64, f64)]) -> Vec<f64> {
    intervals
        .iter()
        .map(|(inst, a0, a1)| {
            let len = a1 - a0;
            if len.is_nan() || len <= 0.0 {
                return 1.0;
            }
            let overlap: f64 = intervals
                .iter()
                .filter(|(j, _, _)| j == inst)
                .map(|(_, b0, b1)| (a1.min(*b1) - a0.max(*b0)).max(0.0))
                .sum();
            (overlap / len).max(1.0)
        })
        .collect()
}

/// The fit and how well it explains the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The step coefficients.
    pub model: LatencyModel,
    /// The front-end delay (seen in TTFT only).
    pub frontend: Frontend,
    /// Rows used (TTFT rows + decode rows).
    pub rows: usize,
    /// Decode rows dropped as coalesced (a step under a quarter of the median).
    pub dropped: usize,
    /// Root-mean-square residual of TTFT rows, seconds.
    pub ttft_rmse: f64,
    /// Mean |residual| / observed over TTFT rows.
    pub ttft_mean_rel_error: f64,
    /// Root-mean-square residual of decode rows, seconds per token.
    pub decode_rmse: f64,
    /// Mean |residual| / observed over decode rows.
    pub decode_mean_rel_error: f64,
    /// Coefficients pinned at zero by the non-negativity constraint.
    pub pinned_at_zero: Vec<String>,
}

/// Why no fit was possible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Too few usable samples.
    #[error(
        "need at least {need} usable samples of requests measured alone (probes) with varied prompt lengths, got {got}"
    )]
    TooFew {
        /// Needed.
        need: usize,
        /// Given.
        got: usize,
    },
    /// The samples do not vary enough to tell the coefficients apart.
    #[error("the samples do not determine the coefficients (singular system): vary prompt lengths, cached prefixes and output lengths")]
    Singular,
}

/// Coefficients: the five step terms, then the two front-end terms.
const K: usize = 7;

const NAMES: [&str; K] = [
    "step_overhead",
    "prefill_per_token",
    "prefill_per_attn_token",
    "decode_per_seq",
    "decode_per_ctx_token",
    "frontend_per_request",
    "frontend_per_prompt_token",
];

fn widen(f: [f64; 5], frontend: [f64; 2]) -> [f64; K] {
    [f[0], f[1], f[2], f[3], f[4], frontend[0], frontend[1]]
}

/// The latency model's regressors for a lone request's TTFT.
pub fn ttft_features(s: &Sample, limits: &EngineLimits) -> [f64; 5] {
    let mut ctx = s.cached_tokens.min(s.prompt_tokens.saturating_sub(1));
    let mut left = s.prompt_tokens - ctx;
    let budget = if limits.chunked_prefill {
        limits.max_num_batched_tokens.max(1)
    } else {
        u32::MAX
    };
    let mut f = [0.0; 5];
    while left > 0 {
        let n = left.min(budget);
        let mut w = StepWork::default();
        w.add_prefill(n, ctx);
        for (acc, x) in f.iter_mut().zip(w.features()) {
            *acc += x;
        }
        ctx += n;
        left -= n;
    }
    f
}

/// The regressors of a request's mean decode step, in a batch of `s.batch`.
pub fn decode_features(s: &Sample) -> Option<[f64; 5]> {
    (s.output_tokens > 1).then(|| {
        // Decode step k (1..out) has context prompt + k; batch-mates alike.
        let mean_ctx = f64::from(s.prompt_tokens) + f64::from(s.output_tokens) / 2.0;
        let b = s.batch.max(1.0);
        [1.0, 0.0, 0.0, b, b * mean_ctx]
    })
}

/// Least squares with non-negative coefficients (weights: rows are scaled by
/// 1/observed so that short and long requests count alike — relative error).
pub fn fit(samples: &[Sample], limits: &EngineLimits) -> Result<Fit, FitError> {
    let usable: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.prompt_tokens > 0 && s.ttft.is_finite() && s.ttft > 0.0 && s.e2e >= s.ttft)
        .collect();
    let alone = usable.iter().filter(|s| s.alone).count();
    if alone < 6 {
        return Err(FitError::TooFew {
            need: 6,
            got: alone,
        });
    }
    let mut rows: Vec<([f64; K], f64, bool)> = Vec::new();
    for s in &usable {
        if s.alone {
            let front = [1.0, f64::from(s.prompt_tokens)];
            rows.push((widen(ttft_features(s, limits), front), s.ttft, true));
        }
        if let Some(f) = decode_features(s) {
            let y = (s.e2e - s.ttft) / f64::from(s.output_tokens - 1);
            rows.push((widen(f, [0.0, 0.0]), y, false));
        }
    }
    // A decode step far below the typical one is not physical: the stream
    // delivered several tokens in one chunk (coalesced under load), so the
    // client saw the first token late. Such rows would dominate a
    // relative-error fit; drop them.
    let mut steps: Vec<f64> = rows.iter().filter(|r| !r.2).map(|r| r.1).collect();
    steps.sort_by(f64::total_cmp);
    let floor = steps
        .get(steps.len() / 2)
        .map_or(0.0, |m| m / 4.0)
        .max(1e-6);
    let before = rows.len();
    rows.retain(|r| r.2 || r.1 >= floor);
    let dropped = before - rows.len();
    let mut active = [true; K];
    let coef = loop {
        let c = solve(&rows, &active).ok_or(FitError::Singular)?;
        match (0..5)
            .filter(|&i| active[i] && c[i] < 0.0)
            .min_by(|&a, &b| c[a].total_cmp(&c[b]))
        {
            Some(i) => active[i] = false,
            None => break c,
        }
    };
    let model = LatencyModel::from_array([coef[0], coef[1], coef[2], coef[3], coef[4]]);
    let frontend = Frontend {
        per_request: coef[5],
        per_prompt_token: coef[6],
    };
    let (mut t_sq, mut t_rel, mut t_n, mut d_sq, mut d_rel, mut d_n) = (0.0, 0.0, 0, 0.0, 0.0, 0);
    for (f, y, is_ttft) in &rows {
        let pred: f64 = f.iter().zip(&coef).map(|(a, b)| a * b).sum();
        let r = pred - y;
        if *is_ttft {
            t_sq += r * r;
            t_rel += r.abs() / y;
            t_n += 1;
        } else {
            d_sq += r * r;
            d_rel += r.abs() / y;
            d_n += 1;
        }
    }
    let div = |a: f64, n: usize| if n == 0 { f64::NAN } else { a / n as f64 };
    Ok(Fit {
        model,
        frontend,
        rows: rows.len(),
        dropped,
        ttft_rmse: div(t_sq, t_n).sqrt(),
        ttft_mean_rel_error: div(t_rel, t_n),
        decode_rmse: div(d_sq, d_n).sqrt(),
        decode_mean_rel_error: div(d_rel, d_n),
        pinned_at_zero: (0..K)
            .filter(|&i| !active[i])
            .map(|i| NAMES[i].to_string())
            .collect(),
    })
}

/// Weighted least squares over the active coefficients (others are zero).
fn solve(rows: &[([f64; K], f64, bool)], active: &[bool; K]) -> Option<[f64; K]> {
    let idx: Vec<usize> = (0..K).filter(|&i| active[i]).collect();
    let k = idx.len();
    if k == 0 {
        return Some([0.0; K]);
    }
    // Normal equations A^T W A x = A^T W y, with W = 1/y^2 (relative error).
    let mut m = vec![vec![0.0; k + 1]; k];
    for (f, y, _) in rows {
        let w = 1.0 / (y * y).max(1e-18);
        for (a, &i) in idx.iter().enumerate() {
            for (b, &j) in idx.iter().enumerate() {
                m[a][b] += w * f[i] * f[j];
            }
            m[a][k] += w * f[i] * y;
        }
    }
    // Column scaling keeps the system well conditioned (features span 1 … 1e7).
    let scale: Vec<f64> = (0..k).map(|a| m[a][a].sqrt().max(1e-300)).collect();
    for a in 0..k {
        for b in 0..k {
            m[a][b] /= scale[a] * scale[b];
        }
        m[a][k] /= scale[a];
    }
    for col in 0..k {
        let piv = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[piv][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, piv);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; K];
    for (a, &i) in idx.iter().enumerate() {
        out[i] = m[a][k] / m[a][a] / scale[a];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    #[test]
    fn recovers_known_coefficients_from_exact_data() {
        let p = Profile::load("vllm-cpu-tiny").unwrap();
        let truth = p.latency.clone();
        let front = Frontend {
            per_request: 0.004,
            per_prompt_token: 2e-6,
        };
        let predict =
            |f: [f64; 5]| -> f64 { f.iter().zip(truth.as_array()).map(|(a, b)| a * b).sum() };
        let mut samples = Vec::new();
        for (i, prompt) in [64u32, 200, 500, 900, 1500, 2500, 3000, 3900]
            .iter()
            .enumerate()
        {
            for cached in [0, prompt / 2] {
                let out = 2 + (i as u32 * 7) % 60;
                let s0 = Sample {
                    prompt_tokens: *prompt,
                    cached_tokens: cached,
                    output_tokens: out,
                    ttft: 0.0,
                    e2e: 0.0,
                    batch: 1.0,
                    alone: true,
                };
                let ttft = predict(ttft_features(&s0, &p.limits)) + front.delay_secs(*prompt);
                let step = predict(decode_features(&s0).unwrap());
                samples.push(Sample {
                    ttft,
                    e2e: ttft + step * f64::from(out - 1),
                    ..s0
                });
                // The same request decoding in a batch of 8 (its TTFT, taken
                // under load, is not used).
                let b8 = Sample {
                    batch: 8.0,
                    alone: false,
                    ..s0
                };
                let step8 = predict(decode_features(&b8).unwrap());
                samples.push(Sample {
                    ttft: ttft * 1.5,
                    e2e: ttft * 1.5 + step8 * f64::from(out - 1),
                    ..b8
                });
            }
        }
        let f = fit(&samples, &p.limits).unwrap();
        for (got, want) in f.model.as_array().iter().zip(truth.as_array()) {
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1e-9) + 1e-12,
                "{got} vs {want}"
            );
        }
        assert!((f.frontend.per_request - 0.004).abs() < 1e-9);
        assert!((f.frontend.per_prompt_token - 2e-6).abs() < 1e-12);
        assert!(f.ttft_mean_rel_error < 1e-9 && f.decode_mean_rel_error < 1e-9);
    }

    #[test]
    fn decode_batches_average_the_overlap() {
        let iv = vec![
            ("a".to_string(), 0.0, 10.0),
            ("a".to_string(), 5.0, 15.0),
            ("b".to_string(), 0.0, 10.0),
        ];
        let b = decode_batches(&iv);
        assert_eq!(b, vec![1.5, 1.5, 1.0]);
    }

    #[test]
    fn too_few_or_degenerate_samples_are_errors() {
        let p = Profile::load("vllm-cpu-tiny").unwrap();
        let s = Sample {
            prompt_tokens: 100,
            cached_tokens: 0,
            output_tokens: 1,
            ttft: 0.1,
            e2e: 0.1,
            batch: 1.0,
            alone: true,
        };
        assert!(matches!(
            fit(&[s; 3], &p.limits),
            Err(FitError::TooFew { .. })
        ));
        assert_eq!(fit(&[s; 10], &p.limits), Err(FitError::Singular));
    }
}
