//! The request model: a [`Session`] is a sequence of [`Turn`]s, each a
//! complete, ready-to-send request.
//!
//! A turn carries the same request in the three forms a client may need:
//! `messages` for `/v1/chat/completions`, `prompt_text` for `/v1/completions`
//! (the chat template already applied, so both endpoints see the same tokens),
//! and `prompt_tokens` for token-level routing, simulation and block hashing.
//! Single-request workloads (RAG, traces) are sessions with one turn.

use kvroute_core::Nanos;
pub use kvroute_tokenize::ChatMessage;
use serde::{Deserialize, Serialize};

/// One request of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The whole conversation so far plus the new user message: the body of a
    /// `/v1/chat/completions` request. Empty for token-only traces.
    pub messages: Vec<ChatMessage>,
    /// `messages` rendered with the chat template and the generation prompt
    /// (or with [`render_flat`](crate::render_flat) when no template is
    /// configured), for `/v1/completions`. `None` for token-only traces.
    pub prompt_text: Option<String>,
    /// The prompt's token ids: the tokenizer's encoding of `prompt_text`, or
    /// synthetic ids for traces.
    pub prompt_tokens: Vec<u32>,
    /// Output length to request (`max_tokens`, meant to be enforced with
    /// `ignore_eos`); at least 1.
    pub max_tokens: u32,
}

/// A conversation: turns sent one after another, each after the previous
/// answer plus `think_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Dense index of the session within its workload (0, 1, 2, …).
    pub id: u64,
    /// When the first turn is issued (open loop), relative to the start of the run.
    pub arrival: Nanos,
    /// The requests, in order; never empty.
    pub turns: Vec<Turn>,
    /// Pause between receiving a turn's answer and sending the next turn.
    pub think_time: Nanos,
}

impl Session {
    /// A one-turn session (RAG, traces).
    pub fn single(id: u64, arrival: Nanos, turn: Turn) -> Session {
        Session {
            id,
            arrival,
            turns: vec![turn],
            think_time: Nanos::ZERO,
        }
    }

    /// Prompt tokens summed over all turns (what a cacheless engine prefills).
    pub fn total_prompt_tokens(&self) -> u64 {
        self.turns
            .iter()
            .map(|t| t.prompt_tokens.len() as u64)
            .sum()
    }

    /// Output tokens summed over all turns.
    pub fn total_output_tokens(&self) -> u64 {
        self.turns.iter().map(|t| u64::from(t.max_tokens)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: usize, out: u32) -> Turn {
        Turn {
            messages: vec![ChatMessage::user("hi")],
            prompt_text: Some("hi".into()),
            prompt_tokens: vec![1; n],
            max_tokens: out,
        }
    }

    #[test]
    fn totals_add_up() {
        let mut s = Session::single(3, Nanos(5), turn(10, 4));
        s.turns.push(turn(25, 6));
        assert_eq!(s.total_prompt_tokens(), 35);
        assert_eq!(s.total_output_tokens(), 10);
        assert_eq!(s.think_time, Nanos::ZERO);
    }

    #[test]
    fn serde_round_trip() {
        let s = Session::single(1, Nanos(7), turn(3, 2));
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(r#""messages":[{"role":"user","content":"hi"}]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Session>(&json).unwrap(), s);
    }
}
