//! [`LoadgenError`]: why a run could not start or its results could not be
//! written.
//!
//! A failing *request* is not an error of the run: it is a
//! [`RequestRecord`](crate::RequestRecord) with a status and an
//! [`ErrorKind`](crate::ErrorKind). Errors here are the problems found before
//! any load is sent (a bad URL, an unreachable target or engine, a bad
//! setting) and I/O while writing the outputs.

use std::path::PathBuf;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A URL could not be parsed or is not `http[s]://host:port[/prefix]`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The target (router or engine) did not answer the pre-flight probe
    /// (`GET /v1/models`, then `/health`).
    #[error("target {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL probed.
        url: String,
        /// What failed (connection refused, timeout, HTTP status, ...).
        reason: String,
    },
    /// No `--model` was given and `GET /v1/models` did not name one.
    #[error("cannot tell which model to request from {url}: {reason} (pass a model name)")]
    NoModel {
        /// The `/v1/models` URL.
        url: String,
        /// What the answer lacked.
        reason: String,
    },
    /// An engine's `/metrics` could not be scraped before the run.
    #[error("engine {url}: cannot read /metrics: {reason}")]
    EngineUnreachable {
        /// The engine's base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A `--header` (or the API key) is not a valid HTTP header.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name as given.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// TLS could not be set up (e.g. an unreadable CA file).
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting is out of range.
    #[error("invalid setting `{setting}`: {message}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// Writing an output file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS (or the CSV/JSON writer) said.
        #[source]
        source: std::io::Error,
    },
}

impl LoadgenError {
    pub(crate) fn setting(setting: &'static str, message: impl Into<String>) -> LoadgenError {
        LoadgenError::InvalidSetting {
            setting,
            message: message.into(),
        }
    }

    pub(crate) fn write(
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> LoadgenError {
        LoadgenError::Write {
            path: path.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = LoadgenError::Unreachable {
            url: "http://127.0.0.1:9/v1/models".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "target http://127.0.0.1:9/v1/models is unreachable: connection refused"
        );
        let e = LoadgenError::setting("concurrency", "must be ≥ 1");
        assert_eq!(e.to_string(), "invalid setting `concurrency`: must be ≥ 1");
    }
}
