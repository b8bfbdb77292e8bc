//! The exact fast path for byte-level BPE tokenizers with a known split
//! regex: the same ids as HF `tokenizers`, an order of magnitude sooner.
//!
//! [`FastBpe::from_json`] accepts a `tokenizer.json` only when every stage is
//! one it reproduces exactly, and says why otherwise (the caller then keeps
//! HF):
//!
//! | stage | accepted |
//! |---|---|
//! | added tokens | any, none `normalized`; `single_word`/`lstrip`/`rstrip` honoured |
//! | normalizer | none, or `NFC` (alone or in a one-element `Sequence`) |
//! | pre-tokenizer | `Sequence[Split(known regex, Isolated, not inverted), ByteLevel(no prefix space, no regex)]` |
//! | model | `BPE` without dropout, affixes or byte fallback; `ignore_merges` either way |
//! | post-processor | none, `ByteLevel`, single-sequence `TemplateProcessing`, or a `Sequence` of those |
//! | truncation, padding | none |
//!
//! Encoding follows HF's order: cut at added tokens ([`added`]), normalize
//! each run between them ([`normalize`]), split it into pieces
//! ([`pretok`]), merge each piece's bytes ([`bpe`]), then add the
//! post-processor's tokens. Pieces never influence each other, so
//! [`FastBpe::encode`] can stop after a token budget with every emitted id
//! final.

pub(crate) mod added;
pub(crate) mod bpe;
pub(crate) mod classes;
pub(crate) mod normalize;
pub(crate) mod pretok;

use added::{AddedFlags, AddedTokens, Segment};
use bpe::Bpe;
use classes::Classes;
use pretok::{Lexer, SplitRule};
use serde_json::Value;
use std::collections::HashMap;

/// A tokenizer the fast path reproduces.
pub(crate) struct FastBpe {
    added: AddedTokens,
    nfc: bool,
    rule: SplitRule,
    classes: &'static Classes,
    bpe: Bpe,
    /// Ids the post-processor puts before the text (`add_special_tokens`).
    prefix: Vec<u32>,
    /// Ids the post-processor puts after it.
    suffix: Vec<u32>,
}

impl std::fmt::Debug for FastBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastBpe")
            .field("nfc", &self.nfc)
            .field("max_digits", &self.rule.max_digits)
            .field("prefix", &self.prefix)
            .field("suffix", &self.suffix)
            .finish()
    }
}

/// The result of [`FastBpe::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// The first ids of the encoding (all of them when `complete`).
    pub(crate) ids: Vec<u32>,
    /// Whether `ids` is the whole encoding.
    pub(crate) complete: bool,
    /// Bytes of the text that produced `ids` and the ids past the limit.
    pub(crate) consumed_bytes: usize,
    /// Ids produced for those bytes (at least `ids.len()`).
    pub(crate) produced: usize,
}

/// The GPT-2 byte-level alphabet: the character standing for each byte.
pub(crate) fn byte_char(b: u8) -> char {
    match b {
        b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF => b as char,
        _ => {
            // The 68 other bytes, in order, from U+0100 on.
            let n = (0..b)
                .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
                .count();
            char::from_u32(256 + n as u32).unwrap_or('\u{FFFD}')
        }
    }
}

/// The bytes a byte-level token string stands for, if every character is
/// one of the alphabet's.
fn token_bytes(token: &str, inverse: &HashMap<char, u8>) -> Option<Box<[u8]>> {
    token.chars().map(|c| inverse.get(&c).copied()).collect()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn type_of(v: &Value) -> &str {
    field(v, "type").as_str().unwrap_or("")
}

/// `Null`, `false` or absent.
fn is_off(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

/// `Null`, `""` or absent.
fn is_empty_str(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str() == Some("")
}

impl FastBpe {
    /// The fast path for the tokenizer `json` describes, whose loaded HF
    /// form is `hf`, or why there is none.
    pub(crate) fn from_json(json: &Value, hf: &tokenizers::Tokenizer) -> Result<FastBpe, String> {
        if !field(json, "truncation").is_null() || !field(json, "padding").is_null() {
            return Err("truncation or padding configured".into());
        }
        let nfc = Self::normalizer(field(json, "normalizer"))?;
        let rule = Self::pre_tokenizer(field(json, "pre_tokenizer"))?;
        let (prefix, suffix) = Self::post_processor(field(json, "post_processor"))?;
        let classes = Classes::get().ok_or("character class tables unavailable")?;

        let model = field(json, "model");
        if type_of(model) != "BPE" {
            return Err(format!("model {:?} is not BPE", type_of(model)));
        }
        if !is_off(field(model, "dropout")) {
            return Err("BPE dropout".into());
        }
        if !is_off(field(model, "byte_fallback")) {
            return Err("BPE byte_fallback".into());
        }
        if !is_empty_str(field(model, "continuing_subword_prefix"))
            || !is_empty_str(field(model, "end_of_word_suffix"))
        {
            return Err("BPE subword prefix or word suffix".into());
        }
        let ignore_merges = field(model, "ignore_merges").as_bool().unwrap_or(false);
        let vocab: HashMap<&str, u32> = field(model, "vocab")
            .as_object()
            .ok_or("BPE vocab is not an object")?
            .iter()
            .map(|(k, v)| {
                let id = v.as_u64().and_then(|id| u32::try_from(id).ok());
                id.map(|id| (k.as_str(), id)).ok_or("vocab id out of range")
            })
            .collect::<Result<_, _>>()?;

        let mut byte_ids = [0u32; 256];
        let mut inverse = HashMap::with_capacity(256);
        for b in 0..=255u8 {
            let c = byte_char(b);
            inverse.insert(c, b);
            let mut buf = [0u8; 4];
            byte_ids[b as usize] = *vocab
                .get(&*c.encode_utf8(&mut buf))
                .ok_or_else(|| format!("byte {b:#04x} has no token"))?;
        }

        let merges = field(model, "merges")
            .as_array()
            .ok_or("BPE merges missing")?;
        let mut triples = Vec::with_capacity(merges.len());
        for m in merges {
            let (a, b) = match m {
                Value::String(s) => s.split_once(' ').ok_or("malformed merge")?,
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                    _ => return Err("malformed merge".into()),
                },
                _ => return Err("malformed merge".into()),
            };
            let id = |t: &str| vocab.get(t).copied().ok_or("merge of unknown tokens");
            triples.push((id(a)?, id(b)?, id(&format!("{a}{b}"))?));
        }
        let mut as_bytes: Vec<(Box<[u8]>, u32)> = vocab
            .iter()
            .filter_map(|(t, &id)| Some((token_bytes(t, &inverse)?, id)))
            .collect();
        // Lowest id first, so that of two tokens with the same bytes (not
        // in a well-formed file) the table keeps a fixed one.
        as_bytes.sort_by_key(|&(_, id)| id);
        let bpe = Bpe::new(byte_ids, triples, as_bytes, ignore_merges);

        let mut added = Vec::new();
        for (id, t) in hf.get_added_tokens_decoder() {
            if t.normalized {
                return Err(format!(
                    "added token {:?} is matched after normalization",
                    t.content
                ));
            }
            added.push((
                t.content.clone(),
                AddedFlags {
                    id,
                    single_word: t.single_word,
                    lstrip: t.lstrip,
                    rstrip: t.rstrip,
                },
            ));
        }
        added.sort_by_key(|(_, f)| f.id);
        let added = AddedTokens::new(added, classes).ok_or("added-token search")?;
        Ok(FastBpe {
            added,
            nfc,
            rule,
            classes,
            bpe,
            prefix,
            suffix,
        })
    }

    fn normalizer(n: &Value) -> Result<bool, String> {
        match type_of(n) {
            _ if n.is_null() => Ok(false),
            "NFC" => Ok(true),
            "Sequence" => match field(n, "normalizers").as_array().map(Vec::as_slice) {
                Some([]) => Ok(false),
                Some([one]) => Self::normalizer(one),
                _ => Err("normalizer sequence".into()),
            },
            other => Err(format!("normalizer {other:?}")),
        }
    }

    fn pre_tokenizer(p: &Value) -> Result<SplitRule, String> {
        let parts = match type_of(p) {
            "Sequence" => field(p, "pretokenizers").as_array().map(Vec::as_slice),
            _ => None,
        };
        let Some([split, byte_level]) = parts else {
            return Err("pre-tokenizer is not Sequence[Split, ByteLevel]".into());
        };
        if type_of(split) != "Split"
            || field(split, "behavior").as_str() != Some("Isolated")
            || !is_off(field(split, "invert"))
        {
            return Err("pre-tokenizer split is not an isolating regex split".into());
        }
        let pattern = field(field(split, "pattern"), "Regex")
            .as_str()
            .ok_or("split pattern is not a regex")?;
        let rule = SplitRule::for_pattern(pattern)
            .ok_or_else(|| format!("unknown split regex {pattern:?}"))?;
        if type_of(byte_level) != "ByteLevel"
            || !is_off(field(byte_level, "add_prefix_space"))
            || !is_off(field(byte_level, "use_regex"))
        {
            return Err("ByteLevel pre-tokenizer with a prefix space or its own regex".into());
        }
        Ok(rule)
    }

    /// The ids the post-processor adds before and after a single sequence.
    fn post_processor(p: &Value) -> Result<(Vec<u32>, Vec<u32>), String> {
        if p.is_null() {
            return Ok((Vec::new(), Vec::new()));
        }
        match type_of(p) {
            "ByteLevel" => Ok((Vec::new(), Vec::new())),
            "Sequence" => {
                let (mut before, mut after) = (Vec::new(), Vec::new());
                for part in field(p, "processors")
                    .as_array()
                    .ok_or("processor sequence")?
                {
                    let (b, a) = Self::post_processor(part)?;
                    let adds = |x: &Vec<u32>, y: &Vec<u32>| !x.is_empty() || !y.is_empty();
                    if adds(&before, &after) && adds(&b, &a) {
                        return Err("two processors adding tokens".into());
                    }
                    before.extend(b);
                    after.extend(a);
                }
                Ok((before, after))
            }
            "TemplateProcessing" => {
                let specials = field(p, "special_tokens");
                let (mut before, mut after) = (Vec::new(), Vec::new());
                let mut seen_sequence = false;
                for piece in field(p, "single")
                    .as_array()
                    .ok_or("template without single")?
                {
                    if let Some(seq) = piece.get("Sequence") {
                        if field(seq, "id").as_str() != Some("A") || seen_sequence {
                            return Err("template single sequence is not A once".into());
                        }
                        seen_sequence = true;
                    } else if let Some(tok) = piece.get("SpecialToken") {
                        let name = field(tok, "id").as_str().ok_or("template token id")?;
                        let ids = field(field(specials, name), "ids")
                            .as_array()
                            .ok_or_else(|| format!("template token {name:?} undefined"))?;
                        let target = if seen_sequence {
                            &mut after
                        } else {
                            &mut before
                        };
                        for id in ids {
                            let id = id.as_u64().and_then(|i| u32::try_from(i).ok());
                            target.push(id.ok_or("template id out of range")?);
                        }
                    } else {
                        return Err("unknown template piece".into());
                    }
                }
                if !seen_sequence {
                    return Err("template without the sequence".into());
                }
                Ok((before, after))
            }
            other => Err(format!("post-processor {other:?}")),
        }
    }

    /// The encoding of `text` (`add_special_tokens` as HF's), stopping once
    /// more than `limit` ids are known: `ids` then holds exactly the first
    /// `limit` ids of the full encoding.
    pub(crate) fn encode(&self, text: &str, add_special_tokens: bool, limit: usize) -> Encoded {
        let mut ids = Vec::with_capacity(limit.min(text.len() / 3 + 8));
        let stop = |mut ids: Vec<u32>, consumed_bytes: usize| {
            let produced = ids.len();
            ids.truncate(limit);
            Encoded {
                ids,
                complete: false,
                consumed_bytes,
                produced,
            }
        };
        if add_special_tokens {
            ids.extend_from_slice(&self.prefix);
        }
        if ids.len() > limit {
            return stop(ids, 0);
        }
        for segment in self.added.split(text) {
            match segment {
                Segment::Token(id, end) => {
                    ids.push(id);
                    if ids.len() > limit {
                        return stop(ids, end);
                    }
                }
                Segment::Text(run, at) => {
                    if let Err(consumed) = self.encode_run(run, &mut ids, limit) {
                        return stop(ids, at + consumed);
                    }
                }
            }
        }
        if add_special_tokens {
            ids.extend_from_slice(&self.suffix);
        }
        let produced = ids.len();
        let complete = produced <= limit;
        ids.truncate(limit);
        Encoded {
            ids,
            complete,
            consumed_bytes: text.len(),
            produced,
        }
    }

    /// Encode one run between added tokens; `Err(bytes of the run used)`
    /// once `ids` holds more than `limit`.
    fn encode_run(&self, run: &str, ids: &mut Vec<u32>, limit: usize) -> Result<(), usize> {
        if !self.nfc {
            return self.encode_pieces(run, 0, true, ids, limit).map(|_| ());
        }
        // The run is normalized window by window, each cut where NFC
        // cannot join across; pieces that looked at a window's end wait for
        // the next window.
        let mut window = if limit == usize::MAX {
            run.len()
        } else {
            (limit - ids.len().min(limit)).saturating_mul(8).max(1024)
        };
        let mut normalized: Option<String> = None;
        let (mut raw_cut, mut pos) = (0usize, 0usize);
        loop {
            let cut = normalize::boundary_at_or_after(run, raw_cut.saturating_add(window));
            let chunk = &run[raw_cut..cut];
            match &mut normalized {
                Some(buf) => normalize::push_nfc(buf, chunk),
                None if normalize::is_nfc(chunk) => {}
                None => {
                    let mut buf = String::with_capacity(cut + 16);
                    buf.push_str(&run[..raw_cut]);
                    normalize::push_nfc(&mut buf, chunk);
                    normalized = Some(buf);
                }
            }
            raw_cut = cut;
            let at_end = raw_cut == run.len();
            let text = normalized.as_deref().unwrap_or(&run[..raw_cut]);
            match self.encode_pieces(text, pos, at_end, ids, limit) {
                Ok(next) => pos = next,
                Err(used) => {
                    // In raw bytes, proportionally when normalization moved them.
                    let raw = (used as u128 * raw_cut as u128 / text.len().max(1) as u128) as usize;
                    return Err(raw);
                }
            }
            if at_end {
                return Ok(());
            }
            window = window.saturating_mul(2);
        }
    }

    /// Encode the pieces of `text` from `pos`: `Ok(where the next piece
    /// starts)` when the text is used up (or, unless `at_end`, at the first
    /// piece that looked at its end), `Err(bytes used)` once `ids` holds more
    /// than `limit`.
    #[inline]
    fn encode_pieces(
        &self,
        text: &str,
        mut pos: usize,
        at_end: bool,
        ids: &mut Vec<u32>,
        limit: usize,
    ) -> Result<usize, usize> {
        let lexer = Lexer::new(text, self.classes, self.rule);
        let bytes = text.as_bytes();
        while pos < text.len() {
            let (end, hit_end) = lexer.piece(pos);
            if hit_end && !at_end {
                break;
            }
            self.bpe.encode(&bytes[pos..end], ids);
            pos = end;
            if ids.len() > limit {
                return Err(pos);
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(b' '), '\u{120}');
        assert_eq!(byte_char(b'\n'), '\u{10a}');
        assert_eq!(byte_char(0), '\u{100}');
        assert_eq!(byte_char(0xAD), '\u{143}');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn the_shipped_qwen3_tokenizer_takes_the_fast_path() {
        let t = crate::testutil::qwen3();
        assert!(t.uses_fast_path(), "{:?}", t.fast_path_note());
    }

    #[test]
    fn unsupported_stages_are_named() {
        let pre = serde_json::json!({"type": "Whitespace"});
        assert!(FastBpe::pre_tokenizer(&pre)
            .unwrap_err()
            .contains("Sequence"));
        let norm = serde_json::json!({"type": "NFKC"});
        assert!(FastBpe::normalizer(&norm).unwrap_err().contains("NFKC"));
        let post = serde_json::json!({"type": "RobertaProcessing"});
        assert!(FastBpe::post_processor(&post).is_err());
        let template = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}
        });
        assert_eq!(
            FastBpe::post_processor(&template).unwrap(),
            (vec![1], vec![2])
        );
    }
}
