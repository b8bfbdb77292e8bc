//! The crate's one error type, [`MetricsError`].
//!
//! Expected outcomes are not errors: a metric missing from a scrape is `None`
//! in every accessor, and a counter reset is a flag on the delta. Errors are
//! reserved for input that is not a `/metrics` page at all, for values a
//! caller asked for by name that cannot be produced, and (feature `poll`) for
//! transport failures.

use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The text has lines, but none of them is a Prometheus sample: it is not
    /// a `/metrics` page (an HTML error page, JSON, ...).
    #[error(
        "not a Prometheus text exposition: line {line} is neither a sample nor a comment: {text:?}"
    )]
    NotExposition {
        /// 1-based number of the first offending line.
        line: usize,
        /// That line, truncated to 120 characters.
        text: String,
    },
    /// A metric the caller needs is absent from the scrape.
    #[error("metric {name} is missing from the scrape")]
    MissingMetric {
        /// The metric name (or the list of accepted names).
        name: String,
    },
    /// The scrape has neither `vllm:` nor `sglang:` metrics.
    #[error("cannot tell which engine produced this /metrics page (no vllm: or sglang: metrics)")]
    UnknownEngine,
    /// A label value could not be read as the expected type.
    #[error("label {label}={value:?} of {metric} is not a valid {expected}")]
    BadLabel {
        /// The metric carrying the label.
        metric: String,
        /// The label name.
        label: String,
        /// The raw value.
        value: String,
        /// What it should have been ("integer", "bool", ...).
        expected: &'static str,
    },
    /// [`VllmMetrics::observe`](crate::VllmMetrics::observe) was given a
    /// name that is not one of the emulated vLLM histograms.
    #[error("{name:?} is not a histogram the vLLM emulation exposes")]
    UnknownHistogram {
        /// The name given.
        name: String,
    },
    /// A URL could not be parsed or is not `http://`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The HTTP request failed before a response arrived (connect refused,
    /// connection reset, ...).
    #[error("GET {url} failed: {reason}")]
    Http {
        /// The URL fetched.
        url: String,
        /// The error and its causes, joined with `: `.
        reason: String,
    },
    /// The server answered with a non-2xx status.
    #[error("GET {url} returned HTTP {status}")]
    HttpStatus {
        /// The URL fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// No complete response within the timeout.
    #[error("GET {url} timed out after {after:?}")]
    Timeout {
        /// The URL fetched.
        url: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The response body could not be read, was too large, or was not UTF-8.
    #[error("GET {url}: bad body: {reason}")]
    Body {
        /// The URL fetched.
        url: String,
        /// What was wrong.
        reason: String,
    },
}
