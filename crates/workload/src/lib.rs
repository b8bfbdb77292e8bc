//! wip
#![allow(missing_docs)]
pub use crate::error::WorkloadError;
pub use crate::prompt::{render_flat, Prompter};
pub use crate::rag::{
    PassageOrder, RagCorpus, RagDraw, RagOptions, RagSampler, RagSessions,
    DEFAULT_RAG_SYSTEM_PROMPT,
};
pub use crate::request::{ChatMessage, Session, Turn};
pub use crate::sharegpt::{ShareGptOptions, ShareGptSessions, ShareGptStats};
pub use crate::tokenize::{ChatTemplate, Tokenizer};
pub use crate::trace::{
    mooncake_block, AzureOptions, AzureSessions, MooncakeOptions, MooncakeSessions,
    DEFAULT_SYNTHETIC_VOCAB, MOONCAKE_BLOCK_TOKENS,
};
mod error;
mod io;
mod prompt;
mod rag;
mod request;
mod rng;
mod sharegpt;
mod spec;
#[cfg(test)]
mod testutil;
mod tokenize;
mod trace;
