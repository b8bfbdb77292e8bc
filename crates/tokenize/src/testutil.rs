//! Shared fixtures for the unit tests: the shipped Qwen3 tokenizer and chat
//! template, loaded once per test binary.

use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository's `datasets/` directory.
pub(crate) fn datasets_dir() -> PathBuf {
    match std::env::var_os("KVROUTE_DATASETS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"),
    }
}

pub(crate) fn qwen3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_file(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"))
            .expect("shipped tokenizer loads")
    })
}

pub(crate) fn qwen3_template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| {
        ChatTemplate::from_tokenizer_config(
            datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"),
        )
        .expect("shipped template loads")
    })
}

/// `shared/` next to the repository (as on the dev machines and in CI), if present.
pub(crate) fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    dir.join("datasets").is_dir().then_some(dir)
}

/// The first `limit` conversations of the shipped ShareGPT sample as chat
/// messages (`human` → `user`, `gpt` → `assistant`), each cut before its
/// first blank message.
pub(crate) fn sharegpt_chats(limit: usize) -> Vec<Vec<crate::ChatMessage>> {
    use std::io::BufRead;
    let file = std::fs::File::open(datasets_dir().join("sharegpt/sharegpt_sample.jsonl.gz"))
        .expect("ShareGPT sample");
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut out = Vec::new();
    for line in reader.lines().take(limit) {
        let record: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let chat: Vec<_> = record["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let role = if m["from"] == "human" {
                    "user"
                } else {
                    "assistant"
                };
                crate::ChatMessage::new(role, m["value"].as_str().unwrap_or(""))
            })
            .take_while(|m| !m.content.trim().is_empty())
            .collect();
        out.push(chat);
    }
    out
}
