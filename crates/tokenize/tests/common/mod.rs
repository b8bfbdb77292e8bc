//! Fixtures shared by the integration tests: the shipped tokenizer (fast
//! path and HF-only), the shipped texts, and a synthetic Llama-3-style
//! tokenizer.

#![allow(dead_code)]

use kvroute_tokenize::{ChatMessage, ChatTemplate, Tokenizer};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn datasets_dir() -> PathBuf {
    match std::env::var_os("KVROUTE_DATASETS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"),
    }
}

/// The shipped Qwen3 tokenizer, on its fast path.
pub fn qwen3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let t = Tokenizer::from_file(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"))
            .expect("shipped tokenizer loads");
        assert!(t.uses_fast_path(), "{:?}", t.fast_path_note());
        t
    })
}

/// The same tokenizer, HF `tokenizers` only.
pub fn qwen3_hf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| qwen3().clone().without_fast_path())
}

pub fn qwen3_template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| {
        ChatTemplate::from_tokenizer_config(
            datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"),
        )
        .expect("shipped template loads")
    })
}

fn read_maybe_gz(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

/// One ShareGPT conversation as `(from, value)` pairs.
pub type Conversation = Vec<(String, String)>;

fn conversation(record: &serde_json::Value) -> Conversation {
    record["conversations"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|m| {
                    let from = m["from"].as_str().unwrap_or("").to_owned();
                    (from, m["value"].as_str().unwrap_or("").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every conversation of every file in `datasets/sharegpt/` (JSON Lines,
/// gzipped or not, or one JSON array).
pub fn sharegpt_conversations() -> Vec<Conversation> {
    let mut files: Vec<_> = std::fs::read_dir(datasets_dir().join("sharegpt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let bytes = read_maybe_gz(&file);
        let text = String::from_utf8(bytes).unwrap();
        if text.trim_start().starts_with('[') {
            let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            out.extend(all.iter().map(conversation));
        } else {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                out.push(conversation(&serde_json::from_str(line).unwrap()));
            }
        }
    }
    out
}

/// A conversation as chat messages, up to its first blank message.
pub fn chat(conversation: &Conversation) -> Vec<ChatMessage> {
    conversation
        .iter()
        .take_while(|(_, v)| !v.trim().is_empty())
        .map(|(from, v)| {
            let role = match from.as_str() {
                "human" | "user" => "user",
                "system" => "system",
                _ => "assistant",
            };
            ChatMessage::new(role, v.clone())
        })
        .collect()
}

/// The RAG corpus entries of every file in `datasets/rag/`: each entry's
/// question, passages (title and text) and answers.
pub struct RagEntry {
    pub question: String,
    pub passages: Vec<(String, String)>,
    pub answers: Vec<String>,
}

pub fn rag_entries() -> Vec<RagEntry> {
    let mut files: Vec<_> = std::fs::read_dir(datasets_dir().join("rag"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let all: Vec<serde_json::Value> = serde_json::from_slice(&read_maybe_gz(&file)).unwrap();
        for e in all {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
            out.push(RagEntry {
                question: s(&e["question"]),
                passages: e["ctxs"]
                    .as_array()
                    .map(|c| c.iter().map(|p| (s(&p["title"]), s(&p["text"]))).collect())
                    .unwrap_or_default(),
                answers: e["answers"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// A small tokenizer.json shaped like Llama-3's: byte-level BPE with the
/// Llama-3 split regex (digits in threes), `ignore_merges`, no normalizer,
/// `<|begin_of_text|>` added by a `TemplateProcessing` post-processor, a few
/// special tokens, and two added tokens with matching rules: `<|strip|>`
/// (`lstrip` and `rstrip`) and `cat` (`single_word`). Its merges are those of `train`'s most frequent
/// adjacent pairs, learnt greedily so that they chain into longer tokens.
pub fn llama3_like_json(train: &str, merges: usize, ignore_merges: bool) -> String {
    use std::collections::HashMap;
    let byte_char = |b: u8| -> char {
        match b {
            b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF => b as char,
            _ => {
                let n = (0..b)
                    .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
                    .count();
                char::from_u32(256 + n as u32).unwrap()
            }
        }
    };
    let mut vocab: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut index: HashMap<String, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i))
        .collect();
    // Words of the training text as sequences of token strings.
    let mut words: Vec<Vec<String>> = train
        .split_inclusive(|c: char| c.is_whitespace())
        .map(|w| w.bytes().map(|b| byte_char(b).to_string()).collect())
        .collect();
    let mut merge_list: Vec<(String, String)> = Vec::new();
    while merge_list.len() < merges {
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        for w in &words {
            for pair in w.windows(2) {
                *counts
                    .entry((pair[0].clone(), pair[1].clone()))
                    .or_default() += 1;
            }
        }
        let Some((best, _)) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        else {
            break;
        };
        let merged = format!("{}{}", best.0, best.1);
        if !index.contains_key(&merged) {
            index.insert(merged.clone(), vocab.len());
            vocab.push(merged.clone());
        }
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == best.0 && w[i + 1] == best.1 {
                    w[i] = merged.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merge_list.push(best);
    }
    let n = vocab.len();
    let specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>",
    ];
    let mut added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({"id": n + i, "content": c, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let next = n + specials.len();
    added.push(
        serde_json::json!({"id": next, "content": "<|strip|>", "single_word": false,
        "lstrip": true, "rstrip": true, "normalized": false, "special": false}),
    );
    added.push(
        serde_json::json!({"id": next + 1, "content": "cat", "single_word": true,
        "lstrip": false, "rstrip": false, "normalized": false, "special": false}),
    );
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n], "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": ignore_merges, "vocab": vocab_json,
                  "merges": merge_list.iter().map(|(a, b)| serde_json::json!([a, b])).collect::<Vec<_>>()}
    })
    .to_string()
}
