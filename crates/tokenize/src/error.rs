//! [`TokenizeError`]: everything that can go wrong while loading a tokenizer
//! or a chat template, encoding text, or reading the datasets they are applied
//! to.
//!
//! The type is shared with `kvroute-workload`, which re-exports it as
//! `WorkloadError`: a workload turns text into tokens with this crate's types,
//! so one error type covers both without wrapping. The dataset variants
//! (`Parse`, `Dataset`, `InvalidSetting`) are only produced there.
//!
//! Every variant names what it is about (a file, a line, a setting), so a
//! message like `datasets/x.jsonl:17: expected value at column 1` is enough to
//! find the problem without a debugger.

use std::path::PathBuf;

/// The one error type of this crate (and of `kvroute-workload`).
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// One record of a dataset or trace is malformed (bad JSON, a missing
    /// field, an impossible value). `line` is 1-based; for a JSON array it is
    /// the line on which the offending element starts.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the record.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A dataset is well-formed JSON/CSV but unusable as a whole (for example a
    /// RAG corpus without passages).
    #[error("{}: {message}", path.display())]
    Dataset {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A `tokenizer.json` (or `.json.gz`) could not be loaded.
    #[error("loading tokenizer {}: {message}", path.display())]
    TokenizerLoad {
        /// The file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// Text could not be encoded.
    #[error("encoding a {chars}-character text: {message}")]
    Encode {
        /// Length of the text, in characters.
        chars: usize,
        /// The tokenizers crate's message.
        message: String,
    },
    /// A `tokenizer_config.json` has no usable `chat_template`, or the template
    /// does not compile.
    #[error("loading chat template {}: {message}", path.display())]
    TemplateLoad {
        /// The file (or `<inline>` for a template given as a string).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The chat template failed while rendering (including `raise_exception`
    /// calls made by the template itself).
    #[error("rendering chat template: {message}")]
    TemplateRender {
        /// minijinja's message, with the template location when known.
        message: String,
    },
    /// A workload or arrival setting is out of range.
    #[error("invalid setting `{setting}`: {message}")]
    InvalidSetting {
        /// The setting, as named in the workload or arrival config.
        setting: &'static str,
        /// Why it is rejected.
        message: String,
    },
}

impl TokenizeError {
    /// An [`Io`](Self::Io) error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TokenizeError {
        TokenizeError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`Parse`](Self::Parse) error at 1-based `line` of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: u64, message: impl Into<String>) -> TokenizeError {
        TokenizeError::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// An [`InvalidSetting`](Self::InvalidSetting) error.
    pub fn setting(setting: &'static str, message: impl Into<String>) -> TokenizeError {
        TokenizeError::InvalidSetting {
            setting,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_line() {
        let e = TokenizeError::parse("data/x.jsonl", 17, "expected value");
        assert_eq!(e.to_string(), "data/x.jsonl:17: expected value");
        let e = TokenizeError::setting("rate", "must be > 0, got -1");
        assert_eq!(e.to_string(), "invalid setting `rate`: must be > 0, got -1");
    }
}
