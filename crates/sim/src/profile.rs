//! Engine profiles: the scheduler limits and the step-latency model of one
//! kind of instance, read from TOML (`profiles/*.toml`, or any file).
//!
//! Step time (seconds) for a batch with prefill chunks `(n_i new tokens after
//! ctx_i already-computed tokens)`, decode sequences of context `L_j`, `N =
//! Σ n_i + #decodes` tokens in the step and `S` sequences that sample a token
//! (the decodes and the chunks that finish a prompt):
//!
//! ```text
//! t = step_overhead
//!   + forward(N)                                  (table; 0 when absent)
//!   + lm_head_per_sampled_seq · S
//!   + prefill_per_token       · Σ n_i
//!   + prefill_per_attn_token  · Σ n_i · (ctx_i + (n_i + 1) / 2)
//!   + decode_per_seq          · #decodes
//!   + decode_per_ctx_token    · Σ L_j
//! ```
//!
//! The attention term counts, for each new prefill token, the tokens it
//! attends to (the cached/computed context plus the causal half of its own
//! chunk); the decode terms are the per-sequence cost and the KV read.
//!
//! Two kinds of profile use this model. A CPU profile fitted to a real engine
//! (`sim calibrate`) uses the five linear terms alone: the step's fixed cost
//! and its cost per token. A GPU profile derived from measured operator
//! timings (`scripts/gpu-profiles/derive.py`) adds `forward`, the measured
//! time of the model's linear layers as a function of the tokens in the step:
//! on a GPU it is far from linear — a step re-reads every weight whatever its
//! size, so the first hundred or so tokens of a step are nearly free — and
//! a line through it is off by a third at small steps. The linear terms then
//! hold what the table does not: host time per step and per sequence,
//! attention (per new token, per attended pair, per KV token read) and the
//! attention kernels' floor.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Coefficients of the step-latency model, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyModel {
    /// Fixed cost of one engine step (weights read, launch, scheduling).
    pub step_overhead: f64,
    /// Per new prefill token.
    pub prefill_per_token: f64,
    /// Per (new prefill token × attended context token).
    pub prefill_per_attn_token: f64,
    /// Per decoding sequence in the batch.
    pub decode_per_seq: f64,
    /// Per context token of each decoding sequence.
    pub decode_per_ctx_token: f64,
    /// Per sequence sampling a token in the step (the LM head and sampler).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lm_head_per_sampled_seq: f64,
    /// Time of the model's linear layers by tokens in the step, as
    /// `[tokens, seconds]` knots in increasing order: linear between knots,
    /// extended past the last one with the slope of the upper half of the
    /// table. Empty: none (the linear terms carry everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<[f64; 2]>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl LatencyModel {
    /// Seconds for one step.
    pub fn step_secs(&self, w: &StepWork) -> f64 {
        self.fixed_secs(w)
            + self.step_overhead
            + self.prefill_per_token * w.prefill_tokens as f64
            + self.prefill_per_attn_token * w.prefill_attn_pairs
            + self.decode_per_seq * w.decode_seqs as f64
            + self.decode_per_ctx_token * w.decode_ctx_tokens as f64
    }

    /// The part of a step's time that is not a linear coefficient: the
    /// forward table and the LM head (what calibration holds fixed).
    pub fn fixed_secs(&self, w: &StepWork) -> f64 {
        self.forward_secs(w.prefill_tokens + w.decode_seqs)
            + self.lm_head_per_sampled_seq * w.sampled_seqs as f64
    }

    /// The forward table at `tokens` (0 without a table or without tokens).
    pub fn forward_secs(&self, tokens: u64) -> f64 {
        let t = &self.forward;
        if t.is_empty() || tokens == 0 {
            return 0.0;
        }
        let x = tokens as f64;
        if x <= t[0][0] {
            return t[0][1];
        }
        match t.iter().position(|k| k[0] >= x) {
            Some(i) => {
                let ([x0, y0], [x1, y1]) = (t[i - 1], t[i]);
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            }
            None => {
                // Past the table: the slope over the upper half of its
                // token range (its last knots alone are too noisy).
                let last = t[t.len() - 1];
                let mid = t
                    .iter()
                    .rev()
                    .find(|k| k[0] <= last[0] / 2.0)
                    .copied()
                    .unwrap_or(t[0]);
                let slope = if last[0] > mid[0] {
                    (last[1] - mid[1]) / (last[0] - mid[0])
                } else {
                    0.0
                };
                last[1] + slope * (x - last[0])
            }
        }
    }

    /// The coefficients as a vector, in the order of [`StepWork::features`].
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.step_overhead,
            self.prefill_per_token,
            self.prefill_per_attn_token,
            self.decode_per_seq,
            self.decode_per_ctx_token,
        ]
    }

    /// From a coefficient vector (the order of [`StepWork::features`]).
    pub fn from_array(a: [f64; 5]) -> LatencyModel {
        LatencyModel {
            step_overhead: a[0],
            prefill_per_token: a[1],
            prefill_per_attn_token: a[2],
            decode_per_seq: a[3],
            decode_per_ctx_token: a[4],
            ..LatencyModel::default()
        }
    }

    /// These linear coefficients with this model's table and LM head.
    pub fn with_linear(&self, a: [f64; 5]) -> LatencyModel {
        LatencyModel {
            lm_head_per_sampled_seq: self.lm_head_per_sampled_seq,
            forward: self.forward.clone(),
            ..LatencyModel::from_array(a)
        }
    }
}

/// The engine's front end: what happens to a request before the scheduler
/// sees it (vLLM's API server: chat template, tokenization, input
/// processing). Modelled as a delay, in seconds, before the request joins
/// the waiting queue; it counts in TTFT but uses no step time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Frontend {
    /// Per request.
    pub per_request: f64,
    /// Per prompt token.
    pub per_prompt_token: f64,
}

impl Frontend {
    /// Seconds for a prompt of `tokens` tokens.
    pub fn delay_secs(&self, tokens: u32) -> f64 {
        self.per_request + self.per_prompt_token * f64::from(tokens)
    }
}

/// What one step computes: the latency model's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepWork {
    /// New prefill tokens.
    pub prefill_tokens: u64,
    /// Σ n_i · (ctx_i + (n_i + 1) / 2) over prefill chunks.
    pub prefill_attn_pairs: f64,
    /// Decoding sequences.
    pub decode_seqs: u64,
    /// Σ context length of decoding sequences.
    pub decode_ctx_tokens: u64,
    /// Sequences that sample a token this step (decodes, and prefill chunks
    /// that finish their prompt).
    pub sampled_seqs: u64,
}

impl StepWork {
    /// Add a prefill chunk of `n` tokens after `ctx` computed ones.
    pub fn add_prefill(&mut self, n: u32, ctx: u32) {
        let n = f64::from(n);
        self.prefill_tokens += n as u64;
        self.prefill_attn_pairs += n * (f64::from(ctx) + (n + 1.0) / 2.0);
    }

    /// Add a decoding sequence with `ctx` tokens of context.
    pub fn add_decode(&mut self, ctx: u32) {
        self.decode_seqs += 1;
        self.decode_ctx_tokens += u64::from(ctx);
        self.sampled_seqs += 1;
    }

    /// A prefill chunk added with [`add_prefill`](Self::add_prefill) finished
    /// its prompt: its last position samples a token.
    pub fn add_sampled(&mut self) {
        self.sampled_seqs += 1;
    }

    /// The regressors, in the order of [`LatencyModel::as_array`].
    pub fn features(&self) -> [f64; 5] {
        [
            1.0,
            self.prefill_tokens as f64,
            self.prefill_attn_pairs,
            self.decode_seqs as f64,
            self.decode_ctx_tokens as f64,
        ]
    }
}

/// Scheduler and cache limits of one engine (vLLM's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineLimits {
    /// KV-cache blocks (`num_gpu_blocks`).
    pub num_blocks: usize,
    /// Tokens per block (`--block-size`).
    pub block_size: u32,
    /// Running sequences at most (`--max-num-seqs`).
    pub max_num_seqs: usize,
    /// Tokens per step at most (`--max-num-batched-tokens`).
    pub max_num_batched_tokens: u32,
    /// Prompt + output tokens at most (`--max-model-len`).
    pub max_model_len: u32,
    /// Split long prefills across steps (vLLM V1: on).
    #[serde(default = "yes")]
    pub chunked_prefill: bool,
}

fn yes() -> bool {
    true
}

/// A named engine profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name.
    pub name: String,
    /// Where the numbers come from (free text, shown in reports).
    #[serde(default)]
    pub source: String,
    /// Served model name reported by the emulated engine.
    #[serde(default = "default_model")]
    pub model: String,
    /// Scheduler and cache limits.
    pub limits: EngineLimits,
    /// Step latency.
    pub latency: LatencyModel,
    /// Front-end delay before scheduling (zero when absent).
    #[serde(default)]
    pub frontend: Frontend,
}

fn default_model() -> String {
    "tiny".to_string()
}

/// A profile that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Reading the file failed.
    #[error("reading profile {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or misses fields.
    #[error("parsing profile {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// Values that cannot describe an engine.
    #[error("profile {name}: {problem}")]
    Invalid {
        /// The profile.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Neither a built-in name nor a readable file.
    #[error("unknown profile {0:?}: not a built-in ({builtins}) and no such file", builtins = BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    Unknown(String),
}

/// Profiles shipped with the crate. The GPU profiles are generated by
/// `scripts/gpu-profiles/derive.py` (see `docs/profiles.md`).
const BUILTIN: &[(&str, &str)] = &[
    (
        "llama3-8b-a100",
        include_str!("../profiles/llama3-8b-a100.toml"),
    ),
    (
        "llama3-8b-h100",
        include_str!("../profiles/llama3-8b-h100.toml"),
    ),
    (
        "llama2-7b-a100",
        include_str!("../profiles/llama2-7b-a100.toml"),
    ),
    (
        "llama2-7b-h100",
        include_str!("../profiles/llama2-7b-h100.toml"),
    ),
    (
        "llama3-70b-a100-tp4",
        include_str!("../profiles/llama3-70b-a100-tp4.toml"),
    ),
    (
        "llama2-70b-h100-tp4",
        include_str!("../profiles/llama2-70b-h100-tp4.toml"),
    ),
    (
        "llama3.2-3b-rtx5080-x2",
        include_str!("../profiles/llama3.2-3b-rtx5080-x2.toml"),
    ),
    (
        "vllm-cpu-tiny",
        include_str!("../profiles/vllm-cpu-tiny.toml"),
    ),
];

/// Former names of built-in profiles, still accepted by [`Profile::load`]
/// (the loaded profile carries its current name).
const ALIASES: &[(&str, &str)] = &[
    // The seed's setup, once estimated from specification sheets.
    ("llama3.2-3b-rtx5080", "llama3.2-3b-rtx5080-x2"),
];

impl Profile {
    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name (or former name), or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let name = ALIASES
            .iter()
            .find(|(old, _)| *old == name_or_path)
            .map_or(name_or_path, |(_, new)| *new);
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return Profile::from_toml(text, name);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ProfileError::Unknown(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: name_or_path.to_string(),
            source,
        })?;
        Profile::from_toml(&text, name_or_path)
    }

    /// Parse and validate TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: origin.to_string(),
            source: Box::new(e),
        })?;
        p.validate()?;
        Ok(p)
    }

    /// TOML text of this profile.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Check the values make sense.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let bad = |problem: &str| ProfileError::Invalid {
            name: self.name.clone(),
            problem: problem.to_string(),
        };
        let l = &self.limits;
        if l.block_size == 0 || l.num_blocks == 0 {
            return Err(bad("block_size and num_blocks must be positive"));
        }
        if l.max_num_seqs == 0 || l.max_num_batched_tokens == 0 {
            return Err(bad(
                "max_num_seqs and max_num_batched_tokens must be positive",
            ));
        }
        if (l.num_blocks as u64) * u64::from(l.block_size) < u64::from(l.max_model_len) {
            return Err(bad("the KV cache cannot hold one max_model_len sequence"));
        }
        if !l.chunked_prefill && l.max_num_batched_tokens < l.max_model_len {
            return Err(bad(
                "without chunked prefill max_num_batched_tokens must be ≥ max_model_len",
            ));
        }
        let m = &self.latency;
        let a = m.as_array();
        if a.iter().any(|v| !v.is_finite() || *v < 0.0)
            || (a.iter().all(|v| *v == 0.0) && m.forward.is_empty())
        {
            return Err(bad(
                "latency coefficients must be finite, non-negative, not all zero",
            ));
        }
        if !m.lm_head_per_sampled_seq.is_finite() || m.lm_head_per_sampled_seq < 0.0 {
            return Err(bad(
                "lm_head_per_sampled_seq must be finite and non-negative",
            ));
        }
        let knots_ok = m
            .forward
            .iter()
            .all(|[x, y]| x.is_finite() && y.is_finite() && *x >= 1.0 && *y >= 0.0)
            && m.forward
                .windows(2)
                .all(|w| w[1][0] > w[0][0] && w[1][1] >= w[0][1]);
        if !knots_ok {
            return Err(bad(
                "forward knots must be [tokens ≥ 1, seconds ≥ 0] with tokens increasing and seconds not decreasing",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load_and_validate() {
        for n in Profile::builtin_names() {
            let p = Profile::load(n).unwrap();
            assert_eq!(p.name, n);
            let back = Profile::from_toml(&p.to_toml(), "roundtrip").unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn former_names_load_the_current_profile() {
        for (old, new) in ALIASES {
            assert!(Profile::builtin_names().contains(new), "{new}");
            assert_eq!(Profile::load(old).unwrap(), Profile::load(new).unwrap());
        }
    }

    #[test]
    fn bad_profiles_say_why() {
        let e = Profile::load("nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown profile") && e.contains("vllm-cpu-tiny"),
            "{e}"
        );
        let mut p = Profile::load("vllm-cpu-tiny").unwrap();
        p.limits.num_blocks = 1;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_model_len"));
        let e = Profile::from_toml("name = 3", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("parsing profile x.toml"), "{e}");
    }

    #[test]
    fn the_forward_table_interpolates_and_extends() {
        let m = LatencyModel {
            forward: vec![
                [1.0, 0.010],
                [128.0, 0.013],
                [2048.0, 0.144],
                [4096.0, 0.273],
            ],
            lm_head_per_sampled_seq: 0.001,
            ..LatencyModel::default()
        };
        assert_eq!(m.forward_secs(0), 0.0);
        assert_eq!(m.forward_secs(1), 0.010);
        assert!((m.forward_secs(64) - (0.010 + 0.003 * 63.0 / 127.0)).abs() < 1e-12);
        assert!((m.forward_secs(2048) - 0.144).abs() < 1e-12);
        // Past the end: the slope over the upper half of the range (2048..4096).
        let slope = (0.273 - 0.144) / (4096.0 - 2048.0);
        assert!((m.forward_secs(8192) - (0.273 + slope * 4096.0)).abs() < 1e-12);
        let mut w = StepWork::default();
        w.add_prefill(127, 0);
        w.add_sampled();
        w.add_decode(100);
        assert!((m.step_secs(&w) - (m.forward_secs(128) + 2.0 * 0.001)).abs() < 1e-12);
        let mut p = Profile::load("vllm-cpu-tiny").unwrap();
        p.latency.forward = vec![[10.0, 0.2], [5.0, 0.3]];
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("forward knots"));
    }

    #[test]
    fn step_time_adds_its_terms() {
        let m = LatencyModel::from_array([1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut w = StepWork::default();
        w.add_prefill(2, 10); // pairs = 2 * (10 + 1.5) = 23
        w.add_decode(7);
        assert_eq!(
            m.step_secs(&w),
            1.0 + 2.0 * 2.0 + 3.0 * 23.0 + 4.0 + 5.0 * 7.0
        );
    }
}
