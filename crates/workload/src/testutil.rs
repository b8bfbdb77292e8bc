//! Shared fixtures for the unit tests: the embedded Qwen3 tokenizer and chat
//! template, loaded once per test binary (loading takes seconds in debug).

use crate::prompt::Prompter;
use crate::spec::datasets_dir;
use kvroute_tokenize::{ChatTemplate, Tokenizer};
use std::path::PathBuf;
use std::sync::OnceLock;

pub(crate) fn qwen3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_file(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"))
            .expect("embedded tokenizer loads")
    })
}

pub(crate) fn qwen3_template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| {
        ChatTemplate::from_tokenizer_config(
            datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"),
        )
        .expect("embedded template loads")
    })
}

/// A prompter with the Qwen3 tokenizer, with or without its chat template.
pub(crate) fn prompter(with_template: bool) -> Prompter {
    Prompter::new(
        qwen3().clone(),
        with_template.then(|| qwen3_template().clone()),
    )
}

/// Write `bytes` to a fresh file in a per-process temp directory.
pub(crate) fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvroute-workload-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp file");
    path
}

/// `shared/` next to the repository (as on the dev machines and in CI), if present.
pub(crate) fn shared_dir() -> Option<PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    dir.join("datasets").is_dir().then_some(dir)
}
