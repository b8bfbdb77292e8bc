//! A vLLM-compatible `/metrics` page from plain numbers: [`VllmMetrics`].
//!
//! The simulator's emulated vLLM engine keeps its counters, gauges and
//! histograms in a [`VllmMetrics`] and serves [`VllmMetrics::render`], so the
//! router, the load generator and this crate's [`Scrape`](crate::Scrape) read
//! it exactly like a real vLLM 0.32 page: the same metric names, HELP texts,
//! types, label names (`engine`, `model_name`, `finished_reason`), label
//! order, bucket boundaries and number formatting. Every sample line it
//! renders for the numbers of `tests/fixtures/vllm-0.32-metrics.txt` occurs
//! verbatim in that real page (a test checks this).
//!
//! **Why not `prometheus-client`.** That crate writes OpenMetrics only: a
//! counter's `# TYPE` line drops the `_total` suffix, a `.` is appended to
//! every HELP text, the page ends in `# EOF`, and floats are printed Rust's way
//! (`1795475553.6` where Python writes `1.7954755536e+09`). vLLM uses Python's
//! `prometheus_client`, whose default is the classic text format 0.0.4, so the
//! format is written here directly (it is a few lines per metric type), with
//! Python's float formatting reproduced ([`format_value`]).
//!
//! Not emitted: the `_created` series Python adds to every counter and
//! histogram, and vLLM metrics kvroute does not read (`iteration_tokens`,
//! `num_requests_waiting_by_reason`, MFU estimates, ...).
//!
//! Bucket boundaries are the `le` values of the real page. Latency buckets
//! are constants; vLLM derives the token-count buckets from `max_model_len`
//! (1-2-5 steps up to it: [`token_count_bounds`]), so [`VllmMetrics::new`]
//! takes it.

use crate::engine::CacheConfig;
use crate::error::MetricsError;
use crate::histogram::Histogram;
use kvroute_core::Nanos;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

/// `le` bounds of `vllm:time_to_first_token_seconds` (vLLM 0.32).
pub const TTFT_BOUNDS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// `le` bounds of `vllm:inter_token_latency_seconds` and
/// `vllm:request_time_per_output_token_seconds` (vLLM 0.32).
pub const INTER_TOKEN_BOUNDS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// `le` bounds of the per-request phase histograms: e2e, queue, inference,
/// prefill and decode time (vLLM 0.32).
pub const REQUEST_LATENCY_BOUNDS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// vLLM's `build_1_2_5_buckets(max_model_len)`: 1, 2, 5, 10, 20, 50, ... up
/// to and including `max_model_len`; the `le` bounds of the token-count
/// histograms (`request_prompt_tokens`, `request_generation_tokens`,
/// `request_prefill_kv_computed_tokens`). `max_model_len = 2048` gives the
/// real page's 1 … 2000.
pub fn token_count_bounds(max_model_len: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale: u64 = 1;
    loop {
        for m in [1u64, 2, 5] {
            let Some(v) = m.checked_mul(scale) else {
                return out;
            };
            if v > max_model_len {
                return out;
            }
            out.push(v as f64);
        }
        let Some(next) = scale.checked_mul(10) else {
            return out;
        };
        scale = next;
    }
}

/// The histograms a vLLM engine exposes that the emulation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VllmHistogram {
    /// `vllm:request_prompt_tokens`: prompt length per request.
    RequestPromptTokens,
    /// `vllm:request_generation_tokens`: output length per request.
    RequestGenerationTokens,
    /// `vllm:time_to_first_token_seconds`.
    TimeToFirstToken,
    /// `vllm:inter_token_latency_seconds`: one observation per output token after the first.
    InterTokenLatency,
    /// `vllm:request_time_per_output_token_seconds`: decode time / (tokens - 1) per request.
    RequestTimePerOutputToken,
    /// `vllm:e2e_request_latency_seconds`.
    E2eRequestLatency,
    /// `vllm:request_queue_time_seconds`: time WAITING.
    RequestQueueTime,
    /// `vllm:request_inference_time_seconds`: time RUNNING (prefill + decode).
    RequestInferenceTime,
    /// `vllm:request_prefill_time_seconds`: scheduled → first token.
    RequestPrefillTime,
    /// `vllm:request_decode_time_seconds`: first token → last token.
    RequestDecodeTime,
    /// `vllm:request_prefill_kv_computed_tokens`: prompt tokens not served from the cache.
    RequestPrefillKvComputedTokens,
}

impl VllmHistogram {
    /// All of them, in the order vLLM's page lists them.
    pub const ALL: [VllmHistogram; 11] = [
        VllmHistogram::RequestPromptTokens,
        VllmHistogram::RequestGenerationTokens,
        VllmHistogram::TimeToFirstToken,
        VllmHistogram::InterTokenLatency,
        VllmHistogram::RequestTimePerOutputToken,
        VllmHistogram::E2eRequestLatency,
        VllmHistogram::RequestQueueTime,
        VllmHistogram::RequestInferenceTime,
        VllmHistogram::RequestPrefillTime,
        VllmHistogram::RequestDecodeTime,
        VllmHistogram::RequestPrefillKvComputedTokens,
    ];

    /// The metric name.
    pub fn name(self) -> &'static str {
        self.meta().0
    }

    /// vLLM's HELP text.
    pub fn help(self) -> &'static str {
        self.meta().1
    }

    fn meta(self) -> (&'static str, &'static str) {
        use VllmHistogram::*;
        match self {
            RequestPromptTokens => (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
            ),
            RequestGenerationTokens => (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
            ),
            TimeToFirstToken => (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
            ),
            InterTokenLatency => (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
            ),
            RequestTimePerOutputToken => (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
            ),
            E2eRequestLatency => (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
            ),
            RequestQueueTime => (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
            ),
            RequestInferenceTime => (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
            ),
            RequestPrefillTime => (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
            ),
            RequestDecodeTime => (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
            ),
            RequestPrefillKvComputedTokens => (
                "vllm:request_prefill_kv_computed_tokens",
                "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            ),
        }
    }

    /// The finite `le` bounds vLLM uses for this histogram.
    pub fn bounds(self, max_model_len: u64) -> Vec<f64> {
        use VllmHistogram::*;
        match self {
            RequestPromptTokens | RequestGenerationTokens | RequestPrefillKvComputedTokens => {
                token_count_bounds(max_model_len)
            }
            TimeToFirstToken => TTFT_BOUNDS.to_vec(),
            InterTokenLatency | RequestTimePerOutputToken => INTER_TOKEN_BOUNDS.to_vec(),
            E2eRequestLatency | RequestQueueTime | RequestInferenceTime | RequestPrefillTime
            | RequestDecodeTime => REQUEST_LATENCY_BOUNDS.to_vec(),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for VllmHistogram {
    type Err = MetricsError;

    /// By metric name, with or without the `vllm:` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let full = if s.starts_with("vllm:") {
            s.to_string()
        } else {
            format!("vllm:{s}")
        };
        VllmHistogram::ALL
            .into_iter()
            .find(|h| h.name() == full)
            .ok_or_else(|| MetricsError::UnknownHistogram {
                name: s.to_string(),
            })
    }
}

/// Why a request finished: the `finished_reason` label of
/// `vllm:request_success_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FinishedReason {
    /// A stop string or token.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// Aborted (client went away).
    Abort,
    /// Failed.
    Error,
    /// Repetition detected.
    Repetition,
}

impl FinishedReason {
    /// All, in the order vLLM lists them.
    pub const ALL: [FinishedReason; 5] = [
        FinishedReason::Stop,
        FinishedReason::Length,
        FinishedReason::Abort,
        FinishedReason::Error,
        FinishedReason::Repetition,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishedReason::Stop => "stop",
            FinishedReason::Length => "length",
            FinishedReason::Abort => "abort",
            FinishedReason::Error => "error",
            FinishedReason::Repetition => "repetition",
        }
    }
}

/// One finished request's timeline, for [`VllmMetrics::record_finished`].
/// Times are on the caller's clock (the simulator's virtual time).
#[derive(Debug, Clone, Copy)]
pub struct FinishedRequest<'a> {
    /// The engine's front end received it (TTFT and e2e start here).
    pub arrival: Nanos,
    /// It entered the scheduler's waiting queue.
    pub queued: Nanos,
    /// It was first scheduled (if never, pass `finished`).
    pub scheduled: Nanos,
    /// When each output token was produced; `[0]` is the first token.
    pub token_times: &'a [Nanos],
    /// It finished (normally the last token time).
    pub finished: Nanos,
    /// Prompt length in tokens.
    pub prompt_tokens: u64,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u64,
    /// Why it finished.
    pub reason: FinishedReason,
}

/// The numbers behind an emulated vLLM `/metrics` page. Gauges and counters
/// are public fields; histograms are reached through
/// [`histogram`](VllmMetrics::histogram) / [`histogram_mut`](VllmMetrics::histogram_mut)
/// or fed by [`observe`](VllmMetrics::observe) and
/// [`record_finished`](VllmMetrics::record_finished).
#[derive(Debug, Clone, PartialEq)]
pub struct VllmMetrics {
    /// The `engine` label (data-parallel rank), `"0"` for one engine.
    pub engine: String,
    /// `vllm:num_requests_running`.
    pub num_requests_running: f64,
    /// `vllm:num_requests_waiting`.
    pub num_requests_waiting: f64,
    /// `vllm:kv_cache_usage_perc`, 0..1.
    pub kv_cache_usage_perc: f64,
    /// `vllm:prefix_cache_queries_total` (tokens).
    pub prefix_cache_queries: f64,
    /// `vllm:prefix_cache_hits_total` (tokens).
    pub prefix_cache_hits: f64,
    /// `vllm:num_preemptions_total`.
    pub num_preemptions: f64,
    /// `vllm:prompt_tokens_total`.
    pub prompt_tokens: f64,
    /// `vllm:generation_tokens_total`.
    pub generation_tokens: f64,
    /// `vllm:request_success_total` per `finished_reason` (absent = 0; all
    /// five reasons are always rendered, as vLLM does).
    pub request_success: BTreeMap<FinishedReason, f64>,
    /// Rendered as `vllm:cache_config_info` if set.
    pub cache_config: Option<CacheConfig>,
    histograms: Vec<Histogram>,
}

impl VllmMetrics {
    /// All zero, with vLLM's bucket layouts; `max_model_len` sets the
    /// token-count buckets ([`token_count_bounds`]).
    pub fn new(max_model_len: u64) -> VllmMetrics {
        VllmMetrics {
            engine: "0".to_string(),
            num_requests_running: 0.0,
            num_requests_waiting: 0.0,
            kv_cache_usage_perc: 0.0,
            prefix_cache_queries: 0.0,
            prefix_cache_hits: 0.0,
            num_preemptions: 0.0,
            prompt_tokens: 0.0,
            generation_tokens: 0.0,
            request_success: BTreeMap::new(),
            cache_config: None,
            histograms: VllmHistogram::ALL
                .iter()
                .map(|h| Histogram::with_bounds(&h.bounds(max_model_len)))
                .collect(),
        }
    }

    /// One of the histograms.
    pub fn histogram(&self, which: VllmHistogram) -> &Histogram {
        &self.histograms[which.index()]
    }

    /// One of the histograms, to set or edit directly.
    pub fn histogram_mut(&mut self, which: VllmHistogram) -> &mut Histogram {
        &mut self.histograms[which.index()]
    }

    /// Add one observation to histogram `name` (`vllm:time_to_first_token_seconds`,
    /// with or without the `vllm:` prefix).
    ///
    /// Errors: [`MetricsError::UnknownHistogram`] for any other name.
    pub fn observe(&mut self, name: &str, value: f64) -> Result<(), MetricsError> {
        let which: VllmHistogram = name.parse()?;
        self.histogram_mut(which).observe(value);
        Ok(())
    }

    /// Count a request's prefix-cache lookup when it is scheduled, as vLLM
    /// does: queries += prompt tokens, hits += tokens found cached.
    pub fn record_scheduled(&mut self, prompt_tokens: u64, cached_tokens: u64) {
        self.prefix_cache_queries += prompt_tokens as f64;
        self.prefix_cache_hits += cached_tokens.min(prompt_tokens) as f64;
    }

    /// Record a finished request the way vLLM's V1 metrics do: the success
    /// counter for its reason, prompt and generation token counters, and the
    /// histograms — prompt / generation length, e2e (`finished − arrival`),
    /// queue (`scheduled − queued`), prefill-computed tokens (`prompt −
    /// cached`), and, if it produced tokens, TTFT (`first − arrival`), prefill
    /// (`first − scheduled`), decode (`last − first`), inference (`last −
    /// scheduled`), one inter-token latency per later token, and
    /// time-per-output-token (`decode / (tokens − 1)`, 0 for one token).
    /// Prefix-cache counters are not touched (see
    /// [`record_scheduled`](VllmMetrics::record_scheduled)); real vLLM grows
    /// `generation_tokens_total` per step, this at the end.
    pub fn record_finished(&mut self, r: &FinishedRequest<'_>) {
        use VllmHistogram::*;
        let secs = |later: Nanos, earlier: Nanos| later.saturating_sub(earlier).as_secs_f64();
        let n = r.token_times.len();
        *self.request_success.entry(r.reason).or_insert(0.0) += 1.0;
        self.prompt_tokens += r.prompt_tokens as f64;
        self.generation_tokens += n as f64;
        self.histogram_mut(RequestPromptTokens)
            .observe(r.prompt_tokens as f64);
        self.histogram_mut(RequestGenerationTokens)
            .observe(n as f64);
        self.histogram_mut(RequestPrefillKvComputedTokens)
            .observe(r.prompt_tokens.saturating_sub(r.cached_tokens) as f64);
        self.histogram_mut(E2eRequestLatency)
            .observe(secs(r.finished, r.arrival));
        self.histogram_mut(RequestQueueTime)
            .observe(secs(r.scheduled, r.queued));
        if let (Some(&first), Some(&last)) = (r.token_times.first(), r.token_times.last()) {
            let decode = secs(last, first);
            self.histogram_mut(TimeToFirstToken)
                .observe(secs(first, r.arrival));
            self.histogram_mut(RequestPrefillTime)
                .observe(secs(first, r.scheduled));
            self.histogram_mut(RequestDecodeTime).observe(decode);
            self.histogram_mut(RequestInferenceTime)
                .observe(secs(last, r.scheduled));
            for w in r.token_times.windows(2) {
                self.histogram_mut(InterTokenLatency)
                    .observe(secs(w[1], w[0]));
            }
            let tpot = if n > 1 { decode / (n - 1) as f64 } else { 0.0 };
            self.histogram_mut(RequestTimePerOutputToken).observe(tpot);
        }
    }

    /// The `/metrics` page, in the classic Prometheus text format as vLLM
    /// 0.32 writes it, for a model served as `model_name`.
    pub fn render(&self, model_name: &str) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let base = [("engine", self.engine.as_str()), ("model_name", model_name)];
        let gauges = [
            (
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                self.num_requests_running,
            ),
            (
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
                self.num_requests_waiting,
            ),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                self.kv_cache_usage_perc,
            ),
        ];
        for (name, help, v) in gauges {
            header(&mut out, name, help, "gauge");
            sample(&mut out, name, &base, v);
        }
        let counters = [
            (
                "vllm:prefix_cache_queries_total",
                "Prefix cache queries, in terms of number of queried tokens.",
                self.prefix_cache_queries,
            ),
            (
                "vllm:prefix_cache_hits_total",
                "Prefix cache hits, in terms of number of cached tokens.",
                self.prefix_cache_hits,
            ),
            (
                "vllm:num_preemptions_total",
                "Cumulative number of preemption from the engine.",
                self.num_preemptions,
            ),
            (
                "vllm:prompt_tokens_total",
                "Number of prefill tokens processed.",
                self.prompt_tokens,
            ),
            (
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
                self.generation_tokens,
            ),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, help, "counter");
            sample(&mut out, name, &base, v);
        }
        let name = "vllm:request_success_total";
        header(
            &mut out,
            name,
            "Count of successfully processed requests.",
            "counter",
        );
        for reason in FinishedReason::ALL {
            let v = self.request_success.get(&reason).copied().unwrap_or(0.0);
            let labels = [
                ("engine", self.engine.as_str()),
                ("finished_reason", reason.as_str()),
                ("model_name", model_name),
            ];
            sample(&mut out, name, &labels, v);
        }
        for which in VllmHistogram::ALL {
            let h = self.histogram(which);
            let name = which.name();
            header(&mut out, name, which.help(), "histogram");
            for &(le, c) in &h.buckets {
                let le = format_value(le);
                let labels = [
                    ("engine", self.engine.as_str()),
                    ("le", le.as_str()),
                    ("model_name", model_name),
                ];
                sample(&mut out, &format!("{name}_bucket"), &labels, c);
            }
            sample(&mut out, &format!("{name}_count"), &base, h.count);
            sample(&mut out, &format!("{name}_sum"), &base, h.sum);
        }
        if let Some(c) = &self.cache_config {
            let name = "vllm:cache_config_info";
            header(
                &mut out,
                name,
                "Information of the LLMEngine CacheConfig",
                "gauge",
            );
            let block_size = c.block_size.to_string();
            let blocks = c
                .num_gpu_blocks
                .map_or_else(|| "None".to_string(), |b| b.to_string());
            let prefix = match c.enable_prefix_caching {
                Some(true) => "True",
                Some(false) => "False",
                None => "None",
            };
            let labels = [
                ("block_size", block_size.as_str()),
                ("enable_prefix_caching", prefix),
                ("engine", self.engine.as_str()),
                ("num_gpu_blocks", blocks.as_str()),
                (
                    "prefix_caching_hash_algo",
                    c.hash_algo.as_deref().unwrap_or("None"),
                ),
            ];
            sample(&mut out, name, &labels, 1.0);
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; `labels` must already be sorted by name (Python's
/// client writes them in declaration order, and vLLM declares them sorted).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_into(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

fn escape_label_into(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A number as Python's `prometheus_client` writes it (`floatToGoString`):
/// `+Inf`, `-Inf`, `NaN`, else Python's `repr`, except that positive values
/// of 10⁶ and up with a fractional repr become `d.ddde+0N` (Go's style, e.g.
/// `1.085976576e+09`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let s = python_repr(v);
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 => {
            let digits = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = digits.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => s,
    }
}

/// Python's `repr(float)` for a finite value: the shortest round-tripping
/// digits, fixed notation for decimal exponents -4..=15 (with `.0` if
/// integral), else `d.ddde±XX`.
fn python_repr(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                let zeros = "0".repeat(int_len - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let frac = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_matches_python() {
        // Pairs checked against CPython 3.11 `repr`.
        let cases = [
            (0.0, "0.0"),
            (6.0, "6.0"),
            (6000.0, "6000.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.0002492309999979625, "0.0002492309999979625"),
            (12.959999999999999, "12.959999999999999"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e100, "1e+100"),
            (-2.5, "-2.5"),
            (-1.5e-7, "-1.5e-07"),
            (4758589440.0, "4758589440.0"),
        ];
        for (v, want) in cases {
            assert_eq!(python_repr(v), want, "{v}");
        }
    }

    #[test]
    fn values_format_like_prometheus_client() {
        // Every one of these occurs in the real vLLM page.
        let cases = [
            (4.75858944e9, "4.75858944e+09"),
            (1.085976576e9, "1.085976576e+09"),
            (1.79547550289e9, "1.79547550289e+09"),
            (1.7954755536155922e9, "1.7954755536155922e+09"),
            (20000.0, "20000.0"),
            (1.4286060333251953, "1.4286060333251953"),
            (0.001, "0.001"),
            (2560.0, "2560.0"),
            (f64::INFINITY, "+Inf"),
            (1e6, "1e+06"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(v), want, "{v}");
        }
    }

    #[test]
    fn token_bounds_follow_vllm_1_2_5() {
        assert_eq!(
            token_count_bounds(2048),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]
        );
        assert_eq!(token_count_bounds(5), vec![1.0, 2.0, 5.0]);
        assert!(token_count_bounds(0).is_empty());
        assert_eq!(token_count_bounds(u64::MAX).len(), 58);
    }

    #[test]
    fn histogram_names_parse() {
        assert_eq!(
            "vllm:time_to_first_token_seconds"
                .parse::<VllmHistogram>()
                .unwrap(),
            VllmHistogram::TimeToFirstToken
        );
        assert_eq!(
            "request_decode_time_seconds"
                .parse::<VllmHistogram>()
                .unwrap(),
            VllmHistogram::RequestDecodeTime
        );
        assert!("vllm:nope".parse::<VllmHistogram>().is_err());
        let mut m = VllmMetrics::new(2048);
        assert!(matches!(
            m.observe("nope", 1.0),
            Err(MetricsError::UnknownHistogram { .. })
        ));
        m.observe("vllm:e2e_request_latency_seconds", 0.4).unwrap();
        assert_eq!(m.histogram(VllmHistogram::E2eRequestLatency).count, 1.0);
    }

    #[test]
    fn record_finished_fills_every_histogram_consistently() {
        let mut m = VllmMetrics::new(2048);
        let ms = Nanos::from_millis;
        let tokens = [ms(300), ms(320), ms(350), ms(360)];
        m.record_scheduled(1000, 512);
        m.record_finished(&FinishedRequest {
            arrival: ms(0),
            queued: ms(10),
            scheduled: ms(50),
            token_times: &tokens,
            finished: ms(365),
            prompt_tokens: 1000,
            cached_tokens: 512,
            reason: FinishedReason::Length,
        });
        use VllmHistogram::*;
        let sum = |h| m.histogram(h).sum;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(sum(TimeToFirstToken), 0.3));
        assert!(close(sum(E2eRequestLatency), 0.365));
        assert!(close(sum(RequestQueueTime), 0.04));
        assert!(close(sum(RequestPrefillTime), 0.25));
        assert!(close(sum(RequestDecodeTime), 0.06));
        assert!(close(sum(RequestInferenceTime), 0.31));
        assert!(close(sum(InterTokenLatency), 0.06));
        assert_eq!(m.histogram(InterTokenLatency).count, 3.0);
        assert!(close(sum(RequestTimePerOutputToken), 0.02));
        assert_eq!(sum(RequestPrefillKvComputedTokens), 488.0);
        assert_eq!(sum(RequestGenerationTokens), 4.0);
        assert_eq!((m.prompt_tokens, m.generation_tokens), (1000.0, 4.0));
        assert_eq!(
            (m.prefix_cache_queries, m.prefix_cache_hits),
            (1000.0, 512.0)
        );
        assert_eq!(m.request_success.get(&FinishedReason::Length), Some(&1.0));
        // A request that never produced a token only touches the per-request basics.
        m.record_finished(&FinishedRequest {
            arrival: ms(0),
            queued: ms(0),
            scheduled: ms(5),
            token_times: &[],
            finished: ms(5),
            prompt_tokens: 10,
            cached_tokens: 0,
            reason: FinishedReason::Abort,
        });
        assert_eq!(m.histogram(TimeToFirstToken).count, 1.0);
        assert_eq!(m.histogram(E2eRequestLatency).count, 2.0);
        // One output token: TPOT is observed as 0.
        m.record_finished(&FinishedRequest {
            arrival: ms(0),
            queued: ms(0),
            scheduled: ms(0),
            token_times: &[ms(100)],
            finished: ms(100),
            prompt_tokens: 10,
            cached_tokens: 0,
            reason: FinishedReason::Stop,
        });
        assert_eq!(m.histogram(RequestTimePerOutputToken).count, 2.0);
        assert!(close(m.histogram(RequestTimePerOutputToken).sum, 0.02));
    }

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "x", &[("model_name", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "x{model_name=\"a\\\"b\\\\c\\nd\"} 1.0\n");
    }
}
