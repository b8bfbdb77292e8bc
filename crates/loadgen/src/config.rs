//! [`LoadgenConfig`]: what to send where, and how fast.
//!
//! The sessions themselves are not part of the config: [`run`](crate::run)
//! takes them separately, so a caller can build them however it likes
//! (usually [`kvroute_workload::build_workload`]).

use crate::record::RequestRecord;
pub use kvroute_core::Slo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Which OpenAI endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions` with `messages` (the engine applies its
    /// chat template). Turns without messages (token-only traces) fall back
    /// to `/v1/completions` with token ids.
    #[default]
    Chat,
    /// `POST /v1/completions` with `prompt_text` (the template already
    /// applied), or the token ids when a trace has no text.
    Completions,
}

impl Api {
    /// `chat` or `completions`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
        }
    }
}

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Api, String> {
        match s {
            "chat" => Ok(Api::Chat),
            "completions" | "completion" => Ok(Api::Completions),
            other => Err(format!("unknown API {other:?} (chat or completions)")),
        }
    }
}

/// When sessions start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pacing {
    /// Open loop: each session starts at its `arrival` time (relative to the
    /// start of the run), whatever the server's state. With `max_in_flight`,
    /// a session whose time has come waits for one of that many slots.
    Open {
        /// Cap on sessions in flight (None: unlimited).
        max_in_flight: Option<usize>,
    },
    /// Closed loop: `concurrency` sessions in flight; a new one starts as
    /// soon as one ends. Arrival times are ignored.
    Closed {
        /// Sessions in flight (≥ 1).
        concurrency: usize,
    },
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing::Open {
            max_in_flight: None,
        }
    }
}

/// Called with every finished request (success or not), e.g. to advance a
/// progress bar. Runs on the request's task: keep it cheap.
#[derive(Clone)]
pub struct RecordHook(pub Arc<dyn Fn(&RequestRecord) + Send + Sync>);

impl RecordHook {
    /// Wrap a closure.
    pub fn new(f: impl Fn(&RequestRecord) + Send + Sync + 'static) -> RecordHook {
        RecordHook(Arc::new(f))
    }
}

impl fmt::Debug for RecordHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordHook(..)")
    }
}

/// Everything about a run except the sessions.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// Base URL of the router or engine: `http://host:port` (a trailing
    /// `/v1` is accepted and dropped).
    pub url: String,
    /// Endpoint family.
    pub api: Api,
    /// Model name to request; `None`: the first id of `GET /v1/models`.
    pub model: Option<String>,
    /// Open or closed loop.
    pub pacing: Pacing,
    /// Send at most this many requests (turns), then stop starting new ones.
    pub num_requests: Option<u64>,
    /// Stop starting new requests this long after the start.
    pub duration: Option<Duration>,
    /// Requests started within this long after the start are sent but left
    /// out of the summary; the engines' "before" scrape is taken at its end.
    pub warmup: Duration,
    /// Limit for one request, from sending it to the end of its stream.
    pub timeout: Duration,
    /// Engines' base URLs, scraped (`/metrics`) before and after the run.
    pub engines: Vec<String>,
    /// One request at a time, with every engine scraped before and after
    /// each, for exact per-request engine-side TTFT and e2e. Forces closed
    /// loop with concurrency 1. Without `engines`, the target itself is
    /// scraped.
    pub probe: bool,
    /// Objective for goodput.
    pub slo: Slo,
    /// After the caller's shutdown signal: how long in-flight requests may
    /// still finish before they are aborted.
    pub drain: Duration,
    /// After the last request: how long to wait for the engines to report
    /// no running or waiting requests before the final scrape.
    pub settle: Duration,
    /// Limit for the pre-flight probe, each `/metrics` scrape, and opening
    /// any connection.
    pub probe_timeout: Duration,
    /// Headers sent with every request to the target (`--header`), besides
    /// `Authorization: Bearer` with `api_key`. Not recorded in the outputs.
    pub headers: Vec<(String, String)>,
    /// API key of the target (vLLM's `--api-key`). Not recorded.
    pub api_key: Option<String>,
    /// Fields merged into every request body, overriding loadgen's own
    /// (`--extra-body`, as in `vllm bench serve`).
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// PEM file of CA certificates trusted for `https://` targets and
    /// engines, besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Free-form facts copied into `summary.json` under `run.meta` (the
    /// binary records the workload spec, seed and arrival process there).
    pub meta: BTreeMap<String, serde_json::Value>,
    /// Called with each finished request.
    pub on_record: Option<RecordHook>,
}

impl LoadgenConfig {
    /// Defaults around a target URL: chat API, model from `/v1/models`, open
    /// loop, no limits, no warm-up, 10 min request timeout, 5 s drain, 2 s
    /// settle, 5 s probe timeout.
    pub fn new(url: impl Into<String>) -> LoadgenConfig {
        LoadgenConfig {
            url: url.into(),
            api: Api::Chat,
            model: None,
            pacing: Pacing::default(),
            num_requests: None,
            duration: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(600),
            engines: Vec::new(),
            probe: false,
            slo: Slo::default(),
            drain: Duration::from_secs(5),
            settle: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
            headers: Vec::new(),
            api_key: None,
            extra_body: serde_json::Map::new(),
            ca_file: None,
            meta: BTreeMap::new(),
            on_record: None,
        }
    }

    /// The pacing actually used (`probe` forces closed loop, concurrency 1).
    pub fn effective_pacing(&self) -> Pacing {
        if self.probe {
            Pacing::Closed { concurrency: 1 }
        } else {
            self.pacing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_forces_one_at_a_time() {
        let mut c = LoadgenConfig::new("http://127.0.0.1:8000");
        assert_eq!(
            c.effective_pacing(),
            Pacing::Open {
                max_in_flight: None
            }
        );
        c.probe = true;
        assert_eq!(c.effective_pacing(), Pacing::Closed { concurrency: 1 });
    }

    #[test]
    fn api_names() {
        assert_eq!("chat".parse::<Api>(), Ok(Api::Chat));
        assert_eq!("completions".parse::<Api>(), Ok(Api::Completions));
        assert!("grpc".parse::<Api>().is_err());
        assert_eq!(
            serde_json::to_string(&Pacing::Closed { concurrency: 4 }).unwrap(),
            r#"{"kind":"closed","concurrency":4}"#
        );
    }
}
