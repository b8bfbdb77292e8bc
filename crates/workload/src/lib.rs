/*!
Workloads for kvroute: the requests a router, load generator or simulator
replays, made token-exact.

# Brief overview

A workload is a stream of [`Session`]s. Each session is a list of [`Turn`]s,
and each turn is one complete request in three equivalent forms: chat
`messages`, `prompt_text` (the chat template applied) and `prompt_tokens`.
Multi-turn sessions replay a conversation turn by turn, each prompt extending
the previous one. Single-request workloads are sessions of one turn.

Sources:

* [`ShareGptSessions`]: multi-turn ShareGPT replay, streamed from JSONL (gzipped
  or not) or a JSON array.
* [`RagSessions`]: synthetic RAG. Each request has a shared system prompt, *k*
  passages drawn with Zipf popularity, and a question.
* [`MooncakeSessions`] and [`AzureSessions`]: token-only traces. Synthetic ids
  reproduce the trace's prefix sharing (Mooncake `hash_ids`) or its absence
  (Azure).

Text is turned into tokens exactly as the engines do it: a [`Tokenizer`] (HF
`tokenizer.json`, optionally gzipped) and a [`ChatTemplate`] (HF
`chat_template` rendered with minijinja, byte-identical to transformers for
Qwen3), bundled in a [`Prompter`]. Arrival times come from an [`ArrivalSpec`]:
Poisson, Gamma bursts, or the trace's own timestamps. [`WorkloadSpec`] plus
[`build_workload`] turn a config into a `Send` iterator of sessions. Every
random choice is seeded, so the same config and seed replay identically.

```
use kvroute_workload::{
    build_workload, embedded_qwen3_template, embedded_qwen3_tokenizer, ArrivalSpec, WorkloadSpec,
};

let tokenizer = embedded_qwen3_tokenizer()?;
let template = embedded_qwen3_template()?;
let spec: WorkloadSpec = serde_json::from_str(r#"{"kind": "sharegpt", "max_sessions": 2}"#)?;
let arrival = ArrivalSpec::Poisson { rate: 2.0 };
for session in build_workload(&spec, &arrival, &tokenizer, Some(&template), 42)? {
    let session = session?;
    let (first, second) = (&session.turns[0], &session.turns[1]);
    // Turn 2 re-sends turn 1 and its recorded answer: a KV-cache hit to be had.
    assert!(second.prompt_tokens.starts_with(&first.prompt_tokens));
    assert!(first.prompt_text.as_deref().unwrap().ends_with("<|im_start|>assistant\n"));
}
# Ok::<(), Box<dyn std::error::Error>>(())
```

# Layout

* [`Tokenizer`], [`ChatTemplate`], [`ChatMessage`], [`render_flat`] and
  [`SegmentCache`] are `kvroute-tokenize`'s, re-exported.
* `prompt`: [`Prompter`] (messages → [`Turn`]).
* `request`: [`Session`], [`Turn`].
* `sharegpt`, `rag`, `trace`: the sources; `rag_formats`: the RAG corpus
  layouts read (FiD/CacheBlend `ctxs`, MuSiQue, HotpotQA, 2WikiMultihopQA).
* `arrival`: arrival processes and the [`WithArrivals`] adapter.
* `spec`: serde configs, [`build_workload`], and the paths of the shipped
  samples ([`datasets_dir`]).
* `error`: [`WorkloadError`], naming the file, line or setting at fault.

This crate has no async runtime (no tokio, hyper or tower). The simulator
uses it as is.
*/

#![deny(missing_docs)]

pub use crate::arrival::{normalize_rate, ArrivalSpec, Arrivals, WithArrivals};
pub use crate::cli_spec::{arrival_from_flags, is_file_spec, parse_spec, workload_from_flags};
pub use crate::error::WorkloadError;
pub use crate::prompt::{render_flat, Prompter};
pub use crate::rag::{
    PassageOrder, RagCorpus, RagDraw, RagOptions, RagSampler, RagSessions,
    DEFAULT_RAG_SYSTEM_PROMPT,
};
pub use crate::request::{ChatMessage, Session, Turn};
pub use crate::sharegpt::{ShareGptOptions, ShareGptSessions, ShareGptStats};
pub use crate::spec::{
    build_workload, datasets_dir, embedded_qwen3_template, embedded_qwen3_tokenizer,
    load_text_tools, AzureSpec, MooncakeSpec, RagSpec, SessionIter, ShareGptSpec, WorkloadSpec,
};
pub use crate::synthetic::{AgentOptions, RandomOptions, SharedPrefixOptions};
pub use crate::trace::{
    mooncake_block, AzureOptions, AzureSessions, MooncakeOptions, MooncakeSessions,
    DEFAULT_SYNTHETIC_VOCAB, MOONCAKE_BLOCK_TOKENS,
};
pub use kvroute_tokenize::{
    ChatTemplate, Prefix, SegmentCache, Tokenizer, DEFAULT_SEGMENT_CACHE_TOKENS,
};

mod arrival;
mod cli_spec;
mod error;
mod io;
mod prompt;
mod rag;
mod rag_formats;
mod request;
mod rng;
mod sharegpt;
mod spec;
mod synthetic;
#[cfg(test)]
mod testutil;
mod trace;
