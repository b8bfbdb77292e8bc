//! [`SegmentCache`]: tokenize a prompt piece by piece between special tokens
//! and remember the pieces, so a multi-turn chat that re-sends its whole
//! history only pays for the new message.
//!
//! # Why the pieces add up to the whole
//!
//! A HF tokenizer first cuts the text at its *added tokens* that match the
//! raw (not normalized) text — `<|im_start|>`, `<|im_end|>`, … — with a
//! leftmost-longest search, turns each match into its id, and runs
//! normalization, pre-tokenization and the model on each piece in between on
//! its own. Doing that cut here, encoding each piece alone (and caching it),
//! and concatenating gives the very same ids, provided that
//!
//! * no added token strips whitespace (`lstrip`/`rstrip`) or must be a
//!   single word (those move the cut points),
//! * special tokens are not being encoded as text (`encode_special_tokens`),
//! * no truncation or padding is configured, and
//! * the post-processor adds nothing (else only `add_special_tokens = false`
//!   — chat prompts, which the template already wrote the specials into — is
//!   cached).
//!
//! [`SegmentCache::for_tokenizer`] checks these and declines otherwise; the
//! tests compare both paths on the Qwen3 tokenizer.
//!
//! Chat templates put a special token around every message, so the pieces are
//! the messages. A completion prompt without special tokens is one piece: it
//! is reused only when the very same text comes again.
//!
//! # Memory
//!
//! Two generations of `hash → ids`, keyed by the 128-bit xxh3 of the piece.
//! Lookups try the young generation, then the old one (promoting a hit); when
//! the young one holds half the token budget it becomes the old one and the
//! previous old one is dropped. Pieces used within the last generation
//! survive, the rest go: LRU-like at a fraction of the bookkeeping.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokenizers::PostProcessor;
use xxhash_rust::xxh3::xxh3_128;

/// A budget that holds the recent histories of a busy instance's sessions
/// (16 MiB of ids) without growing without bound.
pub const DEFAULT_SEGMENT_CACHE_TOKENS: usize = 1 << 22;

/// Pieces shorter than this (bytes) are encoded every time: the lookup
/// would cost about as much.
const MIN_CACHED_BYTES: usize = 32;

/// Cached piece-wise tokenization for one tokenizer.
pub struct SegmentCache {
    /// The raw-text added tokens, as the tokenizer searches them.
    specials: AhoCorasick,
    /// Id of each pattern of `specials`.
    ids: Vec<u32>,
    /// Whether `add_special_tokens = true` may be cached too.
    post_processor_adds_nothing: bool,
    budget_tokens: usize,
    generations: Mutex<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: HashMap<u128, Arc<[u32]>>,
    young_tokens: usize,
    old: HashMap<u128, Arc<[u32]>>,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("specials", &self.ids.len())
            .field("budget_tokens", &self.budget_tokens)
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

/// What a piece of the text is.
enum Piece<'a> {
    Special(u32),
    Text(&'a str),
}

impl SegmentCache {
    /// A cache of up to about `budget_tokens` token ids for `tok`, or `None`
    /// when piece-wise encoding would not reproduce `tok`'s output (see the
    /// module docs).
    pub fn for_tokenizer(tok: &tokenizers::Tokenizer, budget_tokens: usize) -> Option<Self> {
        if tok.get_encode_special_tokens()
            || tok.get_truncation().is_some()
            || tok.get_padding().is_some()
        {
            return None;
        }
        let added = tok.get_added_tokens_decoder();
        if added
            .values()
            .any(|t| t.lstrip || t.rstrip || t.single_word)
        {
            return None;
        }
        let mut raw: Vec<(u32, String)> = added
            .into_iter()
            .filter(|(_, t)| !t.normalized && !t.content.is_empty())
            .map(|(id, t)| (id, t.content))
            .collect();
        raw.sort();
        let specials = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(raw.iter().map(|(_, c)| c.as_str()))
            .ok()?;
        let post_processor_adds_nothing = tok
            .get_post_processor()
            .is_none_or(|p| p.added_tokens(false) == 0);
        Some(SegmentCache {
            specials,
            ids: raw.into_iter().map(|(id, _)| id).collect(),
            post_processor_adds_nothing,
            budget_tokens: budget_tokens.max(1),
            generations: Mutex::new(Generations::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hit_bytes: AtomicU64::new(0),
        })
    }

    /// Whether an encode with `add_special_tokens` can go through the cache.
    pub fn applies(&self, add_special_tokens: bool) -> bool {
        !add_special_tokens || self.post_processor_adds_nothing
    }

    /// Pieces found in the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Pieces that had to be encoded (and were then cached).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes of text whose encoding came from the cache.
    pub fn hit_bytes(&self) -> u64 {
        self.hit_bytes.load(Ordering::Relaxed)
    }

    /// Token ids of `text`, piece by piece; `encode` tokenizes one piece
    /// that holds no raw-text added token.
    pub fn encode<E>(
        &self,
        text: &str,
        mut encode: impl FnMut(&str) -> Result<Vec<u32>, E>,
    ) -> Result<Vec<u32>, E> {
        let mut out = Vec::with_capacity(text.len() / 3);
        for piece in self.pieces(text) {
            match piece {
                Piece::Special(id) => out.push(id),
                Piece::Text(t) if t.len() < MIN_CACHED_BYTES => out.extend(encode(t)?),
                Piece::Text(t) => {
                    let key = xxh3_128(t.as_bytes());
                    if let Some(ids) = self.lookup(key) {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        self.hit_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        out.extend_from_slice(&ids);
                    } else {
                        self.misses.fetch_add(1, Ordering::Relaxed);
                        let ids = encode(t)?;
                        out.extend_from_slice(&ids);
                        self.store(key, ids.into());
                    }
                }
            }
        }
        Ok(out)
    }

    fn pieces<'a>(&'a self, text: &'a str) -> impl Iterator<Item = Piece<'a>> + 'a {
        let mut matches = self.specials.find_iter(text).peekable();
        let ids = &self.ids;
        let mut at = 0;
        std::iter::from_fn(move || {
            if let Some(m) = matches.peek().copied() {
                if at < m.start() {
                    let t = &text[at..m.start()];
                    at = m.start();
                    return Some(Piece::Text(t));
                }
                matches.next();
                at = m.end();
                return Some(Piece::Special(ids[m.pattern().as_usize()]));
            }
            (at < text.len()).then(|| {
                let t = &text[at..];
                at = text.len();
                Piece::Text(t)
            })
        })
    }

    fn lookup(&self, key: u128) -> Option<Arc<[u32]>> {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = g.young.get(&key) {
            return Some(Arc::clone(ids));
        }
        let ids = g.old.remove(&key)?;
        g.young_tokens += ids.len();
        g.young.insert(key, Arc::clone(&ids));
        self.rotate_if_full(&mut g);
        Some(ids)
    }

    fn store(&self, key: u128, ids: Arc<[u32]>) {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        g.young_tokens += ids.len();
        g.young.insert(key, ids);
        self.rotate_if_full(&mut g);
    }

    fn rotate_if_full(&self, g: &mut Generations) {
        if g.young_tokens * 2 > self.budget_tokens {
            g.old = std::mem::take(&mut g.young);
            g.young_tokens = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{qwen3, qwen3_template, sharegpt_chats};
    use crate::Tokenizer;
    use proptest::prelude::*;

    fn cached(budget: usize) -> Tokenizer {
        let t = qwen3().clone().with_segment_cache(budget);
        assert!(t.segment_cache().is_some(), "Qwen3 qualifies for the cache");
        t
    }

    /// Every turn of real multi-turn chats, rendered with the Qwen3 template:
    /// the same ids with and without the cache, and from the second turn on
    /// the history comes from the cache.
    #[test]
    fn chat_histories_encode_identically_and_reuse_earlier_turns() {
        let tok = cached(1 << 20);
        let c = || tok.segment_cache().unwrap();
        let (mut turns, mut history_bytes, mut reused_bytes) = (0, 0, 0);
        for chat in sharegpt_chats(20) {
            let mut previous: Option<String> = None;
            for k in (1..=chat.len()).step_by(2) {
                let text = qwen3_template().render(&chat[..k]).unwrap();
                let before = c().hit_bytes();
                let got = tok.encode_with(&text, false).unwrap();
                assert_eq!(got, qwen3().encode_with(&text, true).unwrap());
                turns += 1;
                if let Some(p) = &previous {
                    history_bytes += p.len();
                    reused_bytes += (c().hit_bytes() - before) as usize;
                }
                previous = Some(text);
            }
        }
        assert!(turns > 40, "{turns} turns");
        // The earlier user messages come from the cache; what is left is
        // the template's markup and messages under the piece minimum.
        let reused = reused_bytes as f64 / history_bytes as f64;
        assert!(reused > 0.8, "{reused:.3} of the history bytes reused");
    }

    /// A small budget forgets pieces not used within a generation.
    #[test]
    fn the_budget_bounds_what_is_remembered() {
        let tok = cached(200);
        let c = || tok.segment_cache().unwrap();
        let a = "the first piece of text, long enough to be cached here";
        tok.encode(a).unwrap();
        assert_eq!((c().hits(), c().misses()), (0, 1));
        tok.encode(a).unwrap();
        assert_eq!((c().hits(), c().misses()), (1, 1));
        for i in 0..40 {
            tok.encode(&format!(
                "filler text number {i} that takes some tokens of the budget"
            ))
            .unwrap();
        }
        let misses = c().misses();
        tok.encode(a).unwrap();
        assert_eq!(c().misses(), misses + 1, "an old piece is gone");
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("<|im_start|>".to_string()),
            Just("<|im_end|>".to_string()),
            Just("<think>".to_string()),
            Just("</think>".to_string()),
            Just("<|endoftext|>".to_string()),
            Just("<|im_".to_string()),
            Just("end|>".to_string()),
            Just("<|".to_string()),
            Just("user\n".to_string()),
            Just("assistant\n".to_string()),
            Just("\n".to_string()),
            Just("  \n\n ".to_string()),
            Just("\u{6771}\u{4eac} caf\u{e9} \u{1f680}".to_string()),
            "[a-zA-Z0-9 ,.!?'()\\-]{0,60}",
            "\\PC{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any mix of text, special tokens and near-misses of them encodes to
        /// the same ids with and without the cache, for both settings of
        /// `add_special_tokens`, also when pieces repeat (cache hits).
        #[test]
        fn cached_ids_equal_plain_ids(parts in prop::collection::vec(fragment(), 0..24)) {
            let tok = cached(1 << 16);
            let text: String = parts.concat();
            for add in [false, true] {
                for _ in 0..2 {
                    prop_assert_eq!(
                        tok.encode_with(&text, add).unwrap(),
                        qwen3().encode_with(&text, add).unwrap()
                    );
                }
            }
        }
    }
}
