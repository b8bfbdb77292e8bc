//! [`PromptEncoder`]: a request's prompt → token ids → block hashes, the way
//! the engines compute them.
//!
//! * text → the configured HF tokenizer with `add_special_tokens = true`
//!   (vLLM's default for `/v1/completions`);
//! * token ids → used as they are;
//! * chat messages → the configured chat template (rendered with the
//!   generation prompt, as vLLM does) → the tokenizer with
//!   `add_special_tokens = false` (the template already wrote them). Without
//!   a template, chat requests are rendered with
//!   [`kvroute_tokenize::render_flat`] (`"User: …\n\nAssistant: …\n\nAssistant:"`),
//!   which keeps turn *k* a prefix of turn *k + 1*, so affinity works, but
//!   the tokens are not the engine's.
//!
//! Without a tokenizer, text is cut into **pseudo-tokens**: 4 bytes of UTF-8
//! each, read as a little-endian `u32` (the last one zero-padded). Roughly a
//! real token's length, free to compute, and prefix-stable — good for
//! predicted mode; never equal to an engine's block hashes, so exact mode
//! needs the real tokenizer.
//!
//! Only what routing needs is tokenized: block hashes cover full blocks, and
//! the directory can match no more than `hashing.max_hashed_tokens` (default
//! 128 Ki tokens, the longest context of the common models). A text longer
//! than that many bytes (a token covers at least one byte) is tokenized only
//! up to the cap — the ids are exactly the full encoding's first ones — and
//! its length is estimated from the part encoded, so a 30 MB prompt costs as
//! much as a 128k-token one, not 200 times more. Shorter texts go through
//! the tokenizer whole, with its piece cache.
//!
//! The tokenizer and the compiled template are loaded once and shared; the
//! hasher is built once. Encoding runs on the request's task (long texts on
//! the blocking pool): the fast byte-level BPE path costs well under 50 µs
//! per kilobyte.

use crate::config::HashingConfig;
use crate::request::{PromptInput, RequestError};
use kvroute_core::{BlockHash, BlockHasher};
use kvroute_tokenize::{render_flat, ChatTemplate, Tokenizer};
use std::borrow::Cow;

/// Turns prompts into tokens and block hashes.
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    tokenizer: Option<Tokenizer>,
    template: Option<ChatTemplate>,
    hasher: BlockHasher,
    /// Prompt tokens hashed at most.
    max_tokens: usize,
}

/// The tokenizer, template or hasher could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// Loading the tokenizer or the template failed.
    #[error(transparent)]
    Load(#[from] kvroute_tokenize::TokenizeError),
    /// A zero block size.
    #[error(transparent)]
    BlockSize(#[from] kvroute_core::ZeroBlockSize),
}

impl PromptEncoder {
    /// From the hashing configuration: loads the tokenizer and compiles the
    /// chat template if configured.
    pub fn from_config(c: &HashingConfig) -> Result<PromptEncoder, EncoderError> {
        let tokenizer = c
            .tokenizer
            .as_ref()
            .map(Tokenizer::from_file)
            .transpose()?
            .map(|t| match c.tokenize_cache_tokens {
                0 => t,
                n => t.with_segment_cache(n),
            });
        let template = c
            .chat_template
            .as_ref()
            .map(ChatTemplate::from_tokenizer_config)
            .transpose()?;
        let hasher = BlockHasher::with_seed(c.algo, c.block_size, &c.seed)?;
        Ok(PromptEncoder {
            tokenizer,
            template,
            hasher,
            max_tokens: c.max_hashed_tokens.max(1),
        })
    }

    /// From parts.
    pub fn new(
        tokenizer: Option<Tokenizer>,
        template: Option<ChatTemplate>,
        hasher: BlockHasher,
    ) -> PromptEncoder {
        PromptEncoder {
            tokenizer,
            template,
            hasher,
            max_tokens: usize::MAX,
        }
    }

    /// Hash at most `tokens` prompt tokens.
    pub fn with_max_tokens(mut self, tokens: usize) -> PromptEncoder {
        self.max_tokens = tokens.max(1);
        self
    }

    /// The block hasher.
    pub fn hasher(&self) -> &BlockHasher {
        &self.hasher
    }

    /// Whether a real tokenizer is loaded (else pseudo-tokens).
    pub fn has_tokenizer(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// The prompt's leading token ids — all of them up to the cap — and the
    /// prompt's length in tokens (estimated past the cap).
    pub fn tokens<'a>(
        &self,
        prompt: &'a PromptInput<'_>,
    ) -> Result<(Cow<'a, [u32]>, u32), RequestError> {
        match prompt {
            PromptInput::Tokens(t) => {
                let n = u32::try_from(t.len()).unwrap_or(u32::MAX);
                Ok((Cow::Borrowed(&t[..t.len().min(self.max_tokens)]), n))
            }
            PromptInput::Text(text) => self
                .encode_text(text, true)
                .map(|(t, n)| (Cow::Owned(t), n)),
            PromptInput::Chat(messages) => {
                let text = match &self.template {
                    Some(t) => t
                        .render(messages)
                        .map_err(|e| RequestError::Tokenize(e.to_string()))?,
                    None => render_flat(messages),
                };
                self.encode_text(&text, false)
                    .map(|(t, n)| (Cow::Owned(t), n))
            }
        }
    }

    /// The prompt's length in tokens (estimated past the cap) and the
    /// hashes of its full blocks (up to the cap).
    pub fn encode(&self, prompt: &PromptInput<'_>) -> Result<(u32, Vec<BlockHash>), RequestError> {
        let (tokens, n) = self.tokens(prompt)?;
        Ok((n, self.hasher.hash_blocks(&tokens)))
    }

    fn encode_text(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, u32), RequestError> {
        let count = |t: &Vec<u32>| u32::try_from(t.len()).unwrap_or(u32::MAX);
        match &self.tokenizer {
            // A token covers at least a byte: a text this short fits the cap whole.
            Some(t) if text.len() <= self.max_tokens => {
                let ids = t
                    .encode_with(text, add_special_tokens)
                    .map_err(|e| RequestError::Tokenize(e.to_string()))?;
                let n = count(&ids);
                Ok((ids, n))
            }
            Some(t) => {
                let head = t
                    .encode_prefix(text, add_special_tokens, self.max_tokens)
                    .map_err(|e| RequestError::Tokenize(e.to_string()))?;
                Ok((head.ids, head.estimated_total))
            }
            None => {
                let mut ids = pseudo_tokens(text);
                let n = count(&ids);
                ids.truncate(self.max_tokens);
                Ok((ids, n))
            }
        }
    }
}

/// 4 bytes of UTF-8 per token, little-endian, the last zero-padded.
pub fn pseudo_tokens(text: &str) -> Vec<u32> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().div_ceil(4));
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        out.push(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 4];
        b[..rest.len()].copy_from_slice(rest);
        out.push(u32::from_le_bytes(b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_core::HashAlgo;
    use kvroute_tokenize::ChatMessage;

    fn encoder() -> PromptEncoder {
        PromptEncoder::new(None, None, BlockHasher::new(HashAlgo::Xxh3, 4).unwrap())
    }

    #[test]
    fn pseudo_tokens_are_prefix_stable() {
        assert_eq!(pseudo_tokens(""), Vec::<u32>::new());
        assert_eq!(pseudo_tokens("abcde"), vec![0x6463_6261, 0x65]);
        let a = pseudo_tokens("hello world, how are you");
        let b = pseudo_tokens("hello world, how are you today?");
        assert_eq!(a[..6], b[..6]);
    }

    #[test]
    fn chat_turns_share_blocks() {
        let e = encoder();
        let t1 = vec![ChatMessage::user(
            "What is the capital of France? Tell me more.",
        )];
        let mut t2 = t1.clone();
        t2.push(ChatMessage::assistant("Paris, a large city on the Seine."));
        t2.push(ChatMessage::user("And of Italy?"));
        let (_, h1) = e.encode(&PromptInput::Chat(t1)).unwrap();
        let (_, h2) = e.encode(&PromptInput::Chat(t2)).unwrap();
        assert!(h1.len() > 2);
        // Only the block holding turn 1's zero-padded last pseudo-token may differ.
        let n = h1.len() - 1;
        assert_eq!(h1[..n], h2[..n]);
    }

    #[test]
    fn hashing_stops_at_the_cap_and_the_length_is_kept() {
        let e = encoder().with_max_tokens(8);
        let toks: Vec<u32> = (0..100).collect();
        let (n, h) = e.encode(&PromptInput::Tokens(toks)).unwrap();
        assert_eq!((n, h.len()), (100, 2));
        let (n, h) = e
            .encode(&PromptInput::Text("x".repeat(400).into()))
            .unwrap();
        assert_eq!((n, h.len()), (100, 2));
    }

    #[test]
    fn token_prompts_are_hashed_as_given() {
        let e = encoder();
        let toks: Vec<u32> = (0..9).collect();
        let (n, h) = e.encode(&PromptInput::Tokens(toks.clone())).unwrap();
        assert_eq!(n, 9);
        assert_eq!(h, e.hasher().hash_blocks(&toks));
        assert_eq!(h.len(), 2);
    }
}
