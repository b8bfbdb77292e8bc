//! [`RequestRecord`]: one request as the client saw it (a row of
//! `requests.csv`), and [`ErrorKind`], how it failed.
//!
//! Every request sent has a record, failed ones included; a failure is a
//! non-empty `error` with an [`ErrorKind`], never a missing row. Times are
//! seconds. `ttft` is NaN when no token arrived (written as `NaN`, which
//! both `sim calibrate` and pandas read as a float); the other unknowns are
//! empty cells.
//!
//! The columns `status`, `prompt_tokens`, `cached_tokens`,
//! `predicted_cached_tokens`, `output_tokens`, `ttft`, `e2e`, `engine_ttft`
//! and `engine_e2e` are read by `sim calibrate`: keep their names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No response at all: connection refused or reset before the headers.
    Connect,
    /// The server answered with a non-2xx status.
    Status,
    /// The body broke off, or ended without `[DONE]`.
    Stream,
    /// The server sent an error event inside the stream.
    Server,
    /// A stream chunk was not valid JSON, or no token was generated.
    Protocol,
    /// The request took longer than the configured timeout.
    Timeout,
    /// Cancelled because the run was interrupted.
    Aborted,
}

impl ErrorKind {
    /// The snake_case name (as in the CSV and `summary.json`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Status => "status",
            ErrorKind::Stream => "stream",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Aborted => "aborted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One request (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Dense id in order of sending (0, 1, 2, …).
    pub id: u64,
    /// The session's id.
    pub session: u64,
    /// Turn within the session, 0-based.
    pub turn: u32,
    /// Where it was served: the router's `x-kvroute-instance` header, else
    /// the URL the request was sent to.
    pub instance: String,
    /// HTTP status; 0 if no response arrived.
    pub status: u16,
    /// Empty if it succeeded, else what went wrong.
    pub error: String,
    /// When it was sent, seconds since the start of the run.
    pub start: f64,
    /// Time to the first chunk carrying generated text (NaN if none came).
    pub ttft: f64,
    /// (e2e − ttft) / (output_tokens − 1); empty for one-token outputs.
    pub tpot: Option<f64>,
    /// Mean gap between consecutive text chunks; empty with fewer than two.
    pub itl_mean: Option<f64>,
    /// From sending to the end of the stream (or to the failure).
    pub e2e: f64,
    /// `usage.prompt_tokens`, else our own token count of the prompt.
    pub prompt_tokens: u32,
    /// `usage.prompt_tokens_details.cached_tokens`, when the server says.
    pub cached_tokens: Option<u32>,
    /// The router's `x-kvroute-cached-tokens` header, when present.
    pub predicted_cached_tokens: Option<u32>,
    /// `usage.completion_tokens`, else the number of text chunks.
    pub output_tokens: u32,
    /// Engine-side TTFT of this request (probe mode, exact).
    pub engine_ttft: Option<f64>,
    /// Engine-side end-to-end latency of this request (probe mode, exact).
    pub engine_e2e: Option<f64>,
    /// How it failed (empty if it succeeded).
    pub error_kind: Option<ErrorKind>,
    /// Started during the warm-up (kept here, left out of the summary).
    pub warmup: bool,
    /// The `max_tokens` requested.
    pub max_tokens: u32,
    /// Gaps between consecutive text chunks, seconds (kept in memory for
    /// the inter-token latency percentiles, as `vllm bench serve` takes
    /// them over every gap; not a CSV column).
    #[serde(skip)]
    pub itls: Vec<f64>,
}

impl RequestRecord {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.error_kind.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RequestRecord {
        RequestRecord {
            id: 0,
            session: 3,
            turn: 1,
            instance: "http://a".into(),
            status: 500,
            error: "HTTP 500: boom, really".into(),
            start: 0.5,
            ttft: f64::NAN,
            tpot: None,
            itl_mean: None,
            e2e: 0.01,
            prompt_tokens: 12,
            cached_tokens: None,
            predicted_cached_tokens: Some(8),
            output_tokens: 0,
            engine_ttft: None,
            engine_e2e: None,
            error_kind: Some(ErrorKind::Status),
            warmup: false,
            max_tokens: 4,
            itls: Vec::new(),
        }
    }

    #[test]
    fn csv_round_trip_with_nan_and_empty_cells() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(record()).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "id,session,turn,instance,status,error,start,ttft,tpot,itl_mean,e2e,prompt_tokens,\
             cached_tokens,predicted_cached_tokens,output_tokens,engine_ttft,engine_e2e,error_kind,\
             warmup,max_tokens"
        );
        assert_eq!(
            lines.next().unwrap(),
            "0,3,1,http://a,500,\"HTTP 500: boom, really\",0.5,NaN,,,0.01,12,,8,0,,,status,false,4"
        );
        let back: RequestRecord = csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .next()
            .unwrap()
            .unwrap();
        assert!(back.ttft.is_nan());
        assert_eq!(back.error_kind, Some(ErrorKind::Status));
        assert_eq!(back.predicted_cached_tokens, Some(8));
        assert!(!back.ok());
    }
}
