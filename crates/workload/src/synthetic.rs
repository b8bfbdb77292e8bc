//! Synthetic workloads of the field's benchmark tools, token-level, so that
//! `loadgen` (sending token-id prompts) and the simulator run the very same
//! requests:
//!
//! * [`SharedPrefixOptions`] — SGLang `bench_serving --dataset-name
//!   generated-shared-prefix`: `groups` system prompts of `system_tokens`,
//!   `prompts_per_group` questions of `question_tokens` each, `output_tokens`
//!   out; every request is `system ++ "\n\n" ++ question`, the requests of all
//!   groups shuffled together. Defaults are SGLang's (64 × 16, 2,048 + 128
//!   tokens, 256 out). SGLang decodes random vocabulary ids to text and
//!   re-tokenizes (so its lengths are only approximately the target); here
//!   the ids are used as they are, so lengths are exact.
//! * [`RandomOptions`] — `vllm bench serve --dataset-name random`: input and
//!   output lengths uniform in `[⌊L(1−r)⌋, ⌈L(1+r)⌉]` for range ratio `r`
//!   (vLLM's current meaning; output at least 1), plus `prefix_tokens`
//!   drawn once and put before every prompt (`--random-prefix-len`).
//! * [`AgentOptions`] — a long multi-turn agent session: one tool preamble
//!   of `preamble_tokens` shared by every session, then `turns` turns each
//!   adding a user message of `user_tokens` and the previous answer of
//!   `output_tokens`, so the context grows to preamble + turns × (user +
//!   output) (16–32k tokens with the defaults). Like ShareGPT replay, turn
//!   *k + 1* sends the recorded answer of turn *k*, not what the engine
//!   generated, so the engine's cache reuses each turn's prompt, not its
//!   answer.
//!
//! Token ids are drawn below `vocab_size` (by default under Qwen3's
//! ordinary tokens, so none is a special token); every id is a pure function
//! of (seed, what it belongs to, position), so the same seed gives the same
//! requests in any process.

use crate::error::WorkloadError;
use crate::request::{Session, Turn};
use crate::rng::{stream, token_of, WorkloadRng};
use kvroute_core::{mix64, Nanos};
use serde::{Deserialize, Serialize};

/// `"\n\n"` in the Qwen3 / Llama-3 vocabularies: what SGLang puts between
/// the system prompt and the question.
const SEPARATOR: [u32; 1] = [271];

fn tokens(seed: u64, what: u64, n: usize, vocab: u32) -> impl Iterator<Item = u32> {
    let base = mix64(seed ^ mix64(what));
    (0..n as u64).map(move |i| token_of(base ^ mix64(i.wrapping_add(1)), vocab))
}

fn check(name: &'static str, ok: bool, why: &str) -> Result<(), WorkloadError> {
    if ok {
        Ok(())
    } else {
        Err(WorkloadError::setting(name, why.to_string()))
    }
}

/// SGLang's `generated-shared-prefix` dataset (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedPrefixOptions {
    /// System prompts (`--gsp-num-groups`). Default 64.
    pub groups: usize,
    /// Questions per system prompt (`--gsp-prompts-per-group`). Default 16.
    pub prompts_per_group: usize,
    /// Tokens of each system prompt (`--gsp-system-prompt-len`). Default 2,048.
    pub system_tokens: usize,
    /// Tokens of each question (`--gsp-question-len`). Default 128.
    pub question_tokens: usize,
    /// Output tokens (`--gsp-output-len`). Default 256.
    pub output_tokens: u32,
    /// Token ids are drawn below this. Default: under Qwen3's ordinary tokens.
    pub vocab_size: u32,
}

impl Default for SharedPrefixOptions {
    fn default() -> Self {
        SharedPrefixOptions {
            groups: 64,
            prompts_per_group: 16,
            system_tokens: 2048,
            question_tokens: 128,
            output_tokens: 256,
            vocab_size: crate::trace::DEFAULT_SYNTHETIC_VOCAB,
        }
    }
}

impl SharedPrefixOptions {
    /// The requests, shuffled across groups (one session each; arrivals are
    /// assigned by the caller).
    pub fn sessions(&self, seed: u64) -> Result<Vec<Session>, WorkloadError> {
        check("groups", self.groups > 0, "must be at least 1")?;
        check(
            "prompts_per_group",
            self.prompts_per_group > 0,
            "must be at least 1",
        )?;
        check(
            "system_tokens",
            self.system_tokens + self.question_tokens > 0,
            "a prompt needs a token",
        )?;
        check("vocab_size", self.vocab_size > 1, "must be at least 2")?;
        let v = self.vocab_size;
        let mut order: Vec<(usize, usize)> = (0..self.groups)
            .flat_map(|g| (0..self.prompts_per_group).map(move |q| (g, q)))
            .collect();
        let mut rng = WorkloadRng::new(seed, stream::SYNTHETIC);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        Ok(order
            .into_iter()
            .enumerate()
            .map(|(id, (g, q))| {
                let mut prompt: Vec<u32> =
                    tokens(seed, (g as u64) << 32, self.system_tokens, v).collect();
                prompt.extend(SEPARATOR);
                prompt.extend(tokens(
                    seed,
                    (1 << 63) | ((g as u64) << 32) | q as u64,
                    self.question_tokens,
                    v,
                ));
                Session::single(
                    id as u64,
                    Nanos::ZERO,
                    token_turn(prompt, self.output_tokens),
                )
            })
            .collect())
    }
}

fn token_turn(prompt: Vec<u32>, max_tokens: u32) -> Turn {
    Turn {
        messages: Vec::new(),
        prompt_text: None,
        prompt_tokens: prompt,
        max_tokens: max_tokens.max(1),
    }
}

/// `vllm bench serve --dataset-name random` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomOptions {
    /// Requests. Default 1,000.
    pub num_requests: usize,
    /// Mean input tokens (`--random-input-len`). Default 1,024.
    pub input_tokens: usize,
    /// Mean output tokens (`--random-output-len`). Default 128.
    pub output_tokens: u32,
    /// Lengths uniform in `[⌊L(1−r)⌋, ⌈L(1+r)⌉]` (`--random-range-ratio`,
    /// `0 ≤ r < 1`). Default 0: fixed lengths.
    pub range_ratio: f64,
    /// Tokens drawn once and put before every prompt (`--random-prefix-len`).
    /// Default 0.
    pub prefix_tokens: usize,
    /// Token ids are drawn below this. Default: under Qwen3's ordinary tokens.
    pub vocab_size: u32,
}

impl Default for RandomOptions {
    fn default() -> Self {
        RandomOptions {
            num_requests: 1000,
            input_tokens: 1024,
            output_tokens: 128,
            range_ratio: 0.0,
            prefix_tokens: 0,
            vocab_size: crate::trace::DEFAULT_SYNTHETIC_VOCAB,
        }
    }
}

/// A length uniform in `[⌊l(1−r)⌋, ⌈l(1+r)⌉]`, at least `min`.
fn ranged(rng: &mut WorkloadRng, l: f64, r: f64, min: usize) -> usize {
    let lo = (l * (1.0 - r)).floor() as usize;
    let hi = (l * (1.0 + r)).ceil() as usize;
    (lo + rng.below(hi - lo + 1)).max(min)
}

impl RandomOptions {
    /// The requests (one session each).
    pub fn sessions(&self, seed: u64) -> Result<Vec<Session>, WorkloadError> {
        check("num_requests", self.num_requests > 0, "must be at least 1")?;
        check(
            "range_ratio",
            (0.0..1.0).contains(&self.range_ratio),
            "must be in [0, 1)",
        )?;
        check(
            "input_tokens",
            self.input_tokens + self.prefix_tokens > 0,
            "a prompt needs a token",
        )?;
        check("vocab_size", self.vocab_size > 1, "must be at least 2")?;
        let v = self.vocab_size;
        let mut rng = WorkloadRng::new(seed, stream::SYNTHETIC);
        let prefix: Vec<u32> = tokens(seed, u64::MAX, self.prefix_tokens, v).collect();
        let min_in = usize::from(self.prefix_tokens == 0);
        Ok((0..self.num_requests)
            .map(|i| {
                let n = ranged(&mut rng, self.input_tokens as f64, self.range_ratio, min_in);
                let out = ranged(&mut rng, f64::from(self.output_tokens), self.range_ratio, 1);
                let mut prompt = prefix.clone();
                prompt.extend(tokens(seed, i as u64, n, v));
                Session::single(i as u64, Nanos::ZERO, token_turn(prompt, out as u32))
            })
            .collect())
    }
}

/// A long multi-turn agent workload (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentOptions {
    /// Sessions. Default 100.
    pub sessions: usize,
    /// Tokens of the tool preamble every session starts with. Default 4,096.
    pub preamble_tokens: usize,
    /// Turns per session. Default 12.
    pub turns: usize,
    /// Tokens of each user message (tool results, instructions). Default 1,024.
    pub user_tokens: usize,
    /// Output tokens of each turn (and length of the answer the next turn
    /// replays). Default 512.
    pub output_tokens: u32,
    /// Lengths of user messages and outputs vary uniformly by this ratio.
    /// Default 0.5.
    pub range_ratio: f64,
    /// Seconds between an answer and the next turn. Default 1.
    pub think_time_s: f64,
    /// Token ids are drawn below this. Default: under Qwen3's ordinary tokens.
    pub vocab_size: u32,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            sessions: 100,
            preamble_tokens: 4096,
            turns: 12,
            user_tokens: 1024,
            output_tokens: 512,
            range_ratio: 0.5,
            think_time_s: 1.0,
            vocab_size: crate::trace::DEFAULT_SYNTHETIC_VOCAB,
        }
    }
}

impl AgentOptions {
    /// The sessions.
    pub fn sessions(&self, seed: u64) -> Result<Vec<Session>, WorkloadError> {
        check("sessions", self.sessions > 0, "must be at least 1")?;
        check("turns", self.turns > 0, "must be at least 1")?;
        check(
            "range_ratio",
            (0.0..1.0).contains(&self.range_ratio),
            "must be in [0, 1)",
        )?;
        check(
            "think_time_s",
            self.think_time_s >= 0.0 && self.think_time_s.is_finite(),
            "must be ≥ 0",
        )?;
        check("vocab_size", self.vocab_size > 1, "must be at least 2")?;
        let v = self.vocab_size;
        let mut rng = WorkloadRng::new(seed, stream::SYNTHETIC);
        let preamble: Vec<u32> = tokens(seed, u64::MAX - 1, self.preamble_tokens, v).collect();
        Ok((0..self.sessions)
            .map(|s| {
                let mut context = preamble.clone();
                let mut turns = Vec::with_capacity(self.turns);
                for t in 0..self.turns {
                    let key = ((s as u64) << 24) | ((t as u64) << 1);
                    let user = ranged(&mut rng, self.user_tokens as f64, self.range_ratio, 1);
                    context.extend(tokens(seed, key, user, v));
                    let out = ranged(&mut rng, f64::from(self.output_tokens), self.range_ratio, 1);
                    turns.push(token_turn(context.clone(), out as u32));
                    // The answer the next turn replays.
                    context.extend(tokens(seed, key | 1, out, v));
                }
                Session {
                    id: s as u64,
                    arrival: Nanos::ZERO,
                    turns,
                    think_time: Nanos::from_secs_f64(self.think_time_s),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_groups_share_exactly_their_system_prompt() {
        let o = SharedPrefixOptions {
            groups: 3,
            prompts_per_group: 4,
            system_tokens: 100,
            question_tokens: 20,
            output_tokens: 7,
            ..Default::default()
        };
        let s = o.sessions(1).unwrap();
        assert_eq!(s.len(), 12);
        assert!(s
            .iter()
            .all(|x| x.turns[0].prompt_tokens.len() == 121 && x.turns[0].max_tokens == 7));
        // Group by the system prompt: 3 groups of 4.
        let mut by_system: std::collections::HashMap<Vec<u32>, usize> = Default::default();
        for x in &s {
            *by_system
                .entry(x.turns[0].prompt_tokens[..100].to_vec())
                .or_default() += 1;
        }
        assert_eq!(by_system.len(), 3);
        assert!(by_system.values().all(|&n| n == 4));
        // Questions differ within a group; the order is shuffled.
        let mut all: Vec<&Vec<u32>> = s.iter().map(|x| &x.turns[0].prompt_tokens).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 12);
        let groups: Vec<u32> = s.iter().map(|x| x.turns[0].prompt_tokens[0]).collect();
        assert!(groups.windows(4).any(|w| w.iter().any(|g| *g != w[0])));
        // Reproducible, and a new seed gives new tokens.
        assert_eq!(o.sessions(1).unwrap(), s);
        assert_ne!(o.sessions(2).unwrap(), s);
    }

    #[test]
    fn random_lengths_follow_vllms_range_ratio() {
        let o = RandomOptions {
            num_requests: 2000,
            input_tokens: 100,
            output_tokens: 10,
            range_ratio: 0.5,
            prefix_tokens: 30,
            ..Default::default()
        };
        let s = o.sessions(3).unwrap();
        let ins: Vec<usize> = s
            .iter()
            .map(|x| x.turns[0].prompt_tokens.len() - 30)
            .collect();
        assert!(ins.iter().all(|&n| (50..=150).contains(&n)));
        assert!(ins.contains(&50) && ins.contains(&150));
        let mean = ins.iter().sum::<usize>() as f64 / ins.len() as f64;
        assert!((mean - 100.0).abs() < 3.0, "{mean}");
        let outs: Vec<u32> = s.iter().map(|x| x.turns[0].max_tokens).collect();
        assert!(outs.iter().all(|&n| (5..=15).contains(&n)));
        // The prefix is shared by every prompt.
        let p = &s[0].turns[0].prompt_tokens[..30];
        assert!(s.iter().all(|x| &x.turns[0].prompt_tokens[..30] == p));
        let fixed = RandomOptions {
            num_requests: 5,
            ..Default::default()
        };
        assert!(fixed
            .sessions(0)
            .unwrap()
            .iter()
            .all(|x| x.turns[0].prompt_tokens.len() == 1024 && x.turns[0].max_tokens == 128));
        let bad = RandomOptions {
            range_ratio: 1.0,
            ..Default::default()
        };
        assert!(bad
            .sessions(0)
            .unwrap_err()
            .to_string()
            .contains("range_ratio"));
    }

    #[test]
    fn agent_contexts_grow_and_each_turn_extends_the_last() {
        let o = AgentOptions {
            sessions: 3,
            preamble_tokens: 4096,
            turns: 12,
            ..Default::default()
        };
        let s = o.sessions(5).unwrap();
        for x in &s {
            assert_eq!(x.turns.len(), 12);
            assert_eq!(x.think_time, Nanos::from_secs(1));
            for w in x.turns.windows(2) {
                let (a, b) = (&w[0].prompt_tokens, &w[1].prompt_tokens);
                assert!(b.len() > a.len() + w[0].max_tokens as usize);
                assert_eq!(
                    &b[..a.len()],
                    &a[..],
                    "turn k+1 starts with turn k's prompt"
                );
            }
        }
        // Every session starts with the same preamble.
        assert!(s
            .iter()
            .all(|x| x.turns[0].prompt_tokens[..4096] == s[0].turns[0].prompt_tokens[..4096]));
        // The last turn's context is in the 16–32k range with the defaults.
        let last = s[0].turns[11].prompt_tokens.len();
        assert!((16_000..32_768).contains(&last), "{last}");
    }
}
