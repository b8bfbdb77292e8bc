/*!
Text → token ids the way LLM engines compute them, fast enough for a router
to tokenize every prompt.

# Brief overview

A [`Tokenizer`] loads a HF `tokenizer.json` (gzipped or not) and encodes
text to exactly the ids HF `tokenizers` (and so vLLM and SGLang) produce. A
[`ChatTemplate`] renders [`ChatMessage`]s with the model's HF chat template,
byte-identically to transformers; [`render_flat`] is the plain rendering
used without one. A [`SegmentCache`] remembers the ids of prompt pieces
between special tokens, so a multi-turn chat only pays for its new message.

[`Tokenizer::encode_prefix`] returns only the first ids of an encoding — all
a router needs to hash a prompt's leading KV-cache blocks — as a [`Prefix`]
with an estimate of the full length, in time bounded by the ids asked for.

```
use kvroute_tokenize::{ChatMessage, ChatTemplate, Tokenizer};

let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/tokenizers/qwen3");
let tok = Tokenizer::from_file(format!("{dir}/tokenizer.json.gz"))?;
let template = ChatTemplate::from_tokenizer_config(format!("{dir}/tokenizer_config.json"))?;
assert!(tok.uses_fast_path());

let text = template.render(&[ChatMessage::user("What is the capital of France?")])?;
let ids = tok.encode_with(&text, false)?;
assert_eq!(ids[..3], [151644, 872, 198]); // <|im_start|> user \n

let head = tok.encode_prefix(&text, false, 4)?;
assert_eq!(head.ids, ids[..4]);
assert!(!head.complete);
# Ok::<(), kvroute_tokenize::TokenizeError>(())
```

# The fast path

HF `tokenizers` spends most of a byte-level BPE encoding in its generic
regex pre-tokenizer and in allocating per piece. When a `tokenizer.json` is
a byte-level BPE whose split regex is one of the GPT-4-style patterns
(Qwen2/Qwen3 with single digits, Llama-3 and cl100k with digits in threes;
the regex is read from the file and compared exactly), a [`Tokenizer`]
encodes with a specialised pipeline instead:

* added tokens cut out first, with HF's leftmost-longest search and its
  `single_word`/`lstrip`/`rstrip` rules;
* NFC when the tokenizer normalizes (Qwen), with the same Unicode tables HF
  uses, skipped for text already in NFC;
* the split regex as a hand-written matcher over character classes taken
  from `regex-syntax` (the tables HF's regex engine uses);
* rank-ordered BPE merges over fixed arrays (a heap for long pieces);
* the post-processor's single-sequence template (Llama-3's BOS).

Anything else — another normalizer or regex, normalized added tokens, BPE
dropout, byte fallback, word affixes, a pair-only or Roberta/Bert
post-processor, truncation or padding — keeps HF, and
[`Tokenizer::fast_path_note`] says why. The ids are the same either way:
the tests compare both on every ShareGPT and RAG text shipped in
`datasets/` and on random text.

The BPE step is a rank-based merge written here, chosen over the `bpe`
crate (github/rust-gems, 0.2.3) by measurement on the Qwen3 vocabulary and
the 548,819 pieces of the shipped ShareGPT sample (release build, runs on a
shared 2-core machine): both give HF's ids for every piece, but the crate
encodes the pieces two to four times slower than the rank merge (7–15 MB/s
against 25–38 MB/s; HF's own model: 2–5 MB/s), and it needs about 3 s to
build its automata (including the search for a collision-free hash factor,
without which it asserts) against 0.3–0.4 s. The crate's strength, linear
time on adversarially long inputs, does not pay here: a split regex cuts
text into pieces of a few bytes. The rank merge answers most pieces with
one lookup in a table of the tokens whose own bytes merge back into them,
merges the others in fixed arrays (a heap past 64 bytes), and remembers per
thread the merged pieces and, in a table small enough to stay in the core's
cache, the recent short ones.

# Layout

* `tokenizer`: [`Tokenizer`], [`Prefix`].
* `fast`: the fast path — `added` (added-token cuts), `normalize` (NFC by
  windows), `pretok` (the split regex), `bpe` (merges), `classes`
  (character classes).
* `template`: [`ChatTemplate`], [`ChatMessage`], [`render_flat`].
* `segment_cache`: [`SegmentCache`].
* `error`: [`TokenizeError`].

This crate has no async runtime.
*/

#![deny(missing_docs)]

pub use crate::error::TokenizeError;
pub use crate::segment_cache::{SegmentCache, DEFAULT_SEGMENT_CACHE_TOKENS};
pub use crate::template::{render_flat, ChatMessage, ChatTemplate};
pub use crate::tokenizer::{Prefix, Tokenizer};

mod error;
mod fast;
mod io;
mod segment_cache;
mod template;
#[cfg(test)]
mod testutil;
mod tokenizer;
