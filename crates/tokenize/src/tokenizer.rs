//! [`Tokenizer`]: text → token ids the way the engines compute them, from a
//! HF `tokenizer.json`, with an exact fast path and prefix-bounded encoding
//! ([`Tokenizer::encode_prefix`]).
//!
//! # Matching vLLM and HF transformers
//!
//! * A text prompt is encoded with `add_special_tokens = true`, as vLLM does
//!   for `/v1/completions`. The tokenizer's post-processor decides what that
//!   adds: nothing for Qwen3 (no BOS), `<s>`/`<|begin_of_text|>` for Llama.
//!   Special-token strings inside the text (`<|im_start|>`) are matched as
//!   special tokens, as with HF's default `split_special_tokens = False`.
//! * When the `tokenizer.json` is a byte-level BPE the fast path reproduces
//!   (see [`crate`] docs), ids come from it; otherwise from HF `tokenizers`.
//!   Both give the same ids; the fast path is checked against HF on the
//!   shipped corpora and on random text.
//!
//! # Encoding a prefix
//!
//! Routing needs the first blocks of a prompt, not all of it:
//! [`Tokenizer::encode_prefix`] returns the first `max_tokens` ids of the
//! full encoding — never an id that more text could change — and does work
//! in proportion to `max_tokens`, not to the text. The fast path stops at a
//! piece boundary (pieces never influence each other); the HF path encodes
//! two byte prefixes of the text, keeps the ids both agree on that end well
//! before the cut, and grows the prefixes until it has enough.

use crate::error::TokenizeError;
use crate::fast::FastBpe;
use crate::io;
use crate::segment_cache::SegmentCache;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A HF tokenizer, cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// The fast path, or why this tokenizer has none.
    fast: Result<Arc<FastBpe>, Arc<str>>,
    source: PathBuf,
    cache: Option<Arc<SegmentCache>>,
}

/// The first ids of a text's encoding: what [`Tokenizer::encode_prefix`]
/// returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// Exactly the first `ids.len()` ids of the full encoding (at most the
    /// `max_tokens` asked for).
    pub ids: Vec<u32>,
    /// Whether `ids` is the full encoding.
    pub complete: bool,
    /// The full encoding's length: exact when `complete`, else extrapolated
    /// from the ids per byte of the text encoded so far (always more than
    /// `ids.len()`).
    pub estimated_total: u32,
}

/// Bytes before a cut within which the HF path's ids are not trusted.
const HF_CUT_MARGIN: usize = 16;

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("fast_path", &self.fast.as_ref().map(|_| ()))
            .field("cache", &self.cache)
            .finish()
    }
}

impl Tokenizer {
    /// Load a `tokenizer.json`, gzipped or not (sniffed from the content, so
    /// `tokenizer.json.gz` works).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizeError> {
        let path = path.as_ref();
        let bytes = io::read_all(path)?;
        Tokenizer::from_json_bytes(&bytes, path)
    }

    /// Load from the bytes of a `tokenizer.json`; `source` is only used in
    /// messages.
    pub fn from_json_bytes(
        json: &[u8],
        source: impl Into<PathBuf>,
    ) -> Result<Tokenizer, TokenizeError> {
        let source = source.into();
        let inner =
            tokenizers::Tokenizer::from_bytes(json).map_err(|e| TokenizeError::TokenizerLoad {
                path: source.clone(),
                message: e.to_string(),
            })?;
        let fast = match serde_json::from_slice::<serde_json::Value>(json) {
            Ok(value) => FastBpe::from_json(&value, &inner),
            Err(e) => Err(format!("not JSON: {e}")),
        };
        Ok(Tokenizer {
            inner: Arc::new(inner),
            fast: fast.map(Arc::new).map_err(Arc::from),
            source,
            cache: None,
        })
    }

    /// This tokenizer, remembering the token ids of up to about
    /// `budget_tokens` tokens' worth of prompt pieces between special tokens
    /// (see [`SegmentCache`]): a chat turn then only tokenizes its new
    /// messages. The ids are the same as without the cache; a tokenizer
    /// whose configuration would make them differ is returned uncached
    /// ([`segment_cache`](Self::segment_cache) is then `None`). Clones share
    /// the cache.
    pub fn with_segment_cache(mut self, budget_tokens: usize) -> Tokenizer {
        self.cache = SegmentCache::for_tokenizer(&self.inner, budget_tokens).map(Arc::new);
        self
    }

    /// This tokenizer without its fast path: every encoding through HF
    /// `tokenizers` (for comparisons).
    pub fn without_fast_path(mut self) -> Tokenizer {
        if self.fast.is_ok() {
            self.fast = Err(Arc::from("turned off"));
        }
        self
    }

    /// Whether encodings come from the fast path.
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_ok()
    }

    /// Why this tokenizer has no fast path (`None` when it has one).
    pub fn fast_path_note(&self) -> Option<&str> {
        self.fast.as_ref().err().map(|e| &**e)
    }

    /// The piece cache, when one is on.
    pub fn segment_cache(&self) -> Option<&SegmentCache> {
        self.cache.as_deref()
    }

    /// Token ids of a text prompt, with the special tokens vLLM adds to a text
    /// prompt (`add_special_tokens = true`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        self.encode_with(text, true)
    }

    /// Token ids of `text`, choosing whether the post-processor may add
    /// special tokens (BOS/EOS).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        match &self.cache {
            Some(c) if c.applies(add_special_tokens) => c.encode(text, |piece| {
                self.encode_uncached(piece, add_special_tokens)
            }),
            _ => self.encode_uncached(text, add_special_tokens),
        }
    }

    fn encode_uncached(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        if let Ok(fast) = &self.fast {
            return Ok(fast.encode(text, add_special_tokens, usize::MAX).ids);
        }
        self.encode_hf(text, add_special_tokens)
    }

    fn encode_hf(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizeError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| TokenizeError::Encode {
                chars: text.chars().count(),
                message: e.to_string(),
            })
    }

    /// The first ids of `text`'s encoding, at most `max_tokens` of them:
    /// exactly the first `ids.len()` ids [`encode_with`](Self::encode_with)
    /// returns, with work bounded by `max_tokens` rather than the text's
    /// length. `ids` holds `max_tokens` ids whenever the encoding has that
    /// many on the fast path; the HF path may return fewer only when the
    /// encoding is complete.
    ///
    /// ```
    /// # let tok = kvroute_tokenize::Tokenizer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/tokenizers/qwen3/tokenizer.json.gz"))?;
    /// let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    /// let head = tok.encode_prefix(&text, true, 16)?;
    /// assert_eq!(head.ids, tok.encode(&text)?[..16]);
    /// assert!(!head.complete && head.estimated_total > 16);
    /// # Ok::<(), kvroute_tokenize::TokenizeError>(())
    /// ```
    pub fn encode_prefix(
        &self,
        text: &str,
        add_special_tokens: bool,
        max_tokens: usize,
    ) -> Result<Prefix, TokenizeError> {
        match &self.fast {
            Ok(fast) => {
                let e = fast.encode(text, add_special_tokens, max_tokens);
                let estimated_total = if e.complete {
                    saturate(e.ids.len())
                } else {
                    estimate(e.produced, e.consumed_bytes, text.len(), e.ids.len())
                };
                Ok(Prefix {
                    ids: e.ids,
                    complete: e.complete,
                    estimated_total,
                })
            }
            Err(_) => self.encode_prefix_hf(text, add_special_tokens, max_tokens),
        }
    }

    /// [`encode_prefix`](Self::encode_prefix) through HF: encode two byte
    /// prefixes of the text (the second a quarter longer), keep the ids
    /// both agree on that end at least [`HF_CUT_MARGIN`] bytes before the
    /// shorter cut, and double the prefixes until `max_tokens` are kept or
    /// the whole text is encoded.
    fn encode_prefix_hf(
        &self,
        text: &str,
        add_special_tokens: bool,
        max_tokens: usize,
    ) -> Result<Prefix, TokenizeError> {
        let encode = |t: &str| {
            self.inner
                .encode(t, add_special_tokens)
                .map_err(|e| TokenizeError::Encode {
                    chars: t.chars().count(),
                    message: e.to_string(),
                })
        };
        let mut budget = max_tokens.saturating_mul(8).max(256);
        loop {
            let longer = budget.saturating_add(budget / 4).saturating_add(64);
            if longer >= text.len() {
                let mut ids = self.encode_with(text, add_special_tokens)?;
                let total = ids.len();
                ids.truncate(max_tokens);
                return Ok(Prefix {
                    complete: ids.len() == total,
                    estimated_total: saturate(total),
                    ids,
                });
            }
            let (cut, cut2) = (floor_boundary(text, budget), floor_boundary(text, longer));
            let (short, long) = (encode(&text[..cut])?, encode(&text[..cut2])?);
            let trusted = cut.saturating_sub(HF_CUT_MARGIN);
            let keep = short
                .get_ids()
                .iter()
                .zip(long.get_ids())
                .zip(short.get_offsets())
                .take_while(|((a, b), (_, end))| a == b && *end <= trusted)
                .count();
            if keep >= max_tokens {
                let mut ids = short.get_ids()[..keep].to_vec();
                ids.truncate(max_tokens);
                let consumed = keep
                    .checked_sub(1)
                    .and_then(|last| short.get_offsets().get(last))
                    .map_or(0, |o| o.1);
                return Ok(Prefix {
                    estimated_total: estimate(keep, consumed, text.len(), ids.len()),
                    complete: false,
                    ids,
                });
            }
            budget = budget.saturating_mul(2);
        }
    }

    /// The text of `ids`, special tokens included. Ids outside the vocabulary
    /// are skipped; should the decoder itself fail (the byte-level decoders of
    /// current models cannot), the result is empty — use
    /// [`try_decode`](Self::try_decode) to see the error.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).unwrap_or_default()
    }

    /// [`decode`](Self::decode), reporting decoder failures.
    pub fn try_decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizeError::Encode {
                chars: 0,
                message: format!("decoding {} ids: {e}", ids.len()),
            })
    }

    /// Number of ids, added (special) tokens included: 151,669 for Qwen3.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Number of ids of the base vocabulary, without added tokens: 151,643 for
    /// Qwen3. Ids below this are ordinary text tokens, which makes it the
    /// natural bound for synthetic prompts.
    pub fn base_vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }

    /// The id of a token string (`"<|im_start|>"`), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Where the tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The full length extrapolated from `produced` ids for `consumed` of
/// `total_bytes` bytes, and more than `kept`.
fn estimate(produced: usize, consumed: usize, total_bytes: usize, kept: usize) -> u32 {
    let scaled = if consumed == 0 {
        produced
    } else {
        (produced as u128 * total_bytes as u128 / consumed as u128) as usize
    };
    saturate(scaled.max(kept + 1))
}

/// The largest char boundary of `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    mod qwen3 {
        use crate::testutil::qwen3;

        /// Ids printed by Python `tokenizers` 0.23.3
        /// (`Tokenizer.from_file(...).encode(s, add_special_tokens=True).ids`)
        /// and, identically, by transformers' `AutoTokenizer` `tok(s)["input_ids"]`.
        #[test]
        fn ids_match_python_tokenizers() {
            let cases: [(&str, &[u32]); 4] = [
                ("Hello, world!", &[9707, 11, 1879, 0]),
                (
                    "na\u{ef}ve caf\u{e9} \u{2014} \u{6771}\u{4eac}\u{30bf}\u{30ef}\u{30fc} \u{1f680}\n\n  indented\tcode();",
                    &[3376, 37572, 586, 51950, 1959, 60596, 109, 46553, 46207, 125980, 11162, 248, 222, 271, 220, 1257, 15864, 43343, 2129],
                ),
                ("<|im_start|>user\nhi<|im_end|>\n", &[151644, 872, 198, 6023, 151645, 198]),
                ("1234567 + 89 = 1234656", &[16, 17, 18, 19, 20, 21, 22, 488, 220, 23, 24, 284, 220, 16, 17, 18, 19, 21, 20, 21]),
            ];
            let tok = qwen3();
            for (text, ids) in cases {
                assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
                assert_eq!(tok.decode(ids), text);
            }
            assert_eq!(
                (tok.vocab_size(), tok.base_vocab_size()),
                (151_669, 151_643)
            );
            assert_eq!(tok.token_to_id("<|im_end|>"), Some(151_645));
        }

        /// The shipped `tokenizer.json.gz` is the shared `tokenizer.json`, byte for byte.
        #[test]
        fn shipped_tokenizer_is_the_shared_one() {
            let Some(shared) = crate::testutil::shared_dir() else {
                eprintln!("skipped: no shared/ next to the repository");
                return;
            };
            let plain =
                std::fs::read(shared.join("datasets/tokenizers/qwen3/tokenizer.json")).unwrap();
            let gz = crate::testutil::datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz");
            assert!(crate::io::read_all(&gz).unwrap() == plain);
        }
    }
}
