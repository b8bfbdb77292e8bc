//! A run as `vllm bench serve --save-result` writes it, so plotting scripts
//! written for vLLM's benchmark read loadgen's runs unchanged.
//!
//! The keys and their arithmetic follow vLLM's `benchmarks/serve.py`
//! (vLLM 0.32): `duration`, `completed`, `failed`, token totals,
//! `request_throughput`, `request_goodput` (`null` without `--goodput`),
//! `output_throughput`, `total_token_throughput`,
//! `max_output_tokens_per_s` and `max_concurrent_requests` (over one-second
//! buckets), and for each selected metric (`ttft`, `tpot`, `itl`, `e2el`)
//! `mean_*_ms`, `median_*_ms`, `std_*_ms` (population) and `p{P}_*_ms` for
//! each selected percentile, interpolated linearly between order statistics
//! as numpy's `percentile` does (loadgen's own table uses nearest rank). As
//! in vLLM, ITL percentiles are over every gap between streamed chunks,
//! TPOT over requests with more than one output token, and a metric without
//! samples reads 0. `--save-detailed` adds the per-request lists;
//! `generated_texts` holds empty strings, as loadgen does not keep the
//! text.
//!
//! Only measured requests (after the warm-up) count; `duration` is the
//! measured window.

use crate::config::{Api, Slo};
use crate::report::RunReport;
use crate::summary::Stats;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// A latency metric of vLLM's result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Time to first token.
    Ttft,
    /// Time per output token after the first.
    Tpot,
    /// Inter-token latency (every gap between chunks).
    Itl,
    /// End-to-end latency.
    E2el,
}

impl Metric {
    /// vLLM's name (`ttft`, `tpot`, `itl`, `e2el`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Ttft => "ttft",
            Metric::Tpot => "tpot",
            Metric::Itl => "itl",
            Metric::E2el => "e2el",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        match s.trim() {
            "ttft" => Ok(Metric::Ttft),
            "tpot" => Ok(Metric::Tpot),
            "itl" => Ok(Metric::Itl),
            "e2el" | "e2e" => Ok(Metric::E2el),
            other => Err(format!(
                "unknown metric {other:?} (ttft, tpot, itl or e2el)"
            )),
        }
    }
}

/// What the result file says besides the measurements.
#[derive(Debug, Clone)]
pub struct BenchResultOptions {
    /// Metrics with statistics in the file (vLLM's `--percentile-metrics`;
    /// default ttft, tpot, itl).
    pub metrics: Vec<Metric>,
    /// Percentiles of each (vLLM's `--metric-percentiles`; default 99).
    pub percentiles: Vec<f64>,
    /// The goodput objective (vLLM's `--goodput`); `None`:
    /// `request_goodput` is `null`.
    pub goodput: Option<Slo>,
    /// Add the per-request lists (`--save-detailed`).
    pub detailed: bool,
    /// `label` (default: the backend name).
    pub label: Option<String>,
    /// `tokenizer_id`.
    pub tokenizer_id: String,
    /// `request_rate`: requests per second, `None` for `"inf"`.
    pub request_rate: Option<f64>,
    /// `burstiness`: 1 for Poisson arrivals, 1/CV² for gamma ones.
    pub burstiness: f64,
    /// `max_concurrency`.
    pub max_concurrency: Option<usize>,
    /// Extra top-level keys (`--metadata KEY=VALUE`).
    pub metadata: BTreeMap<String, String>,
}

impl Default for BenchResultOptions {
    /// vLLM's defaults: ttft, tpot and itl at the 99th percentile, no
    /// goodput, not detailed, infinite rate, burstiness 1.
    fn default() -> Self {
        BenchResultOptions {
            metrics: vec![Metric::Ttft, Metric::Tpot, Metric::Itl],
            percentiles: vec![99.0],
            goodput: None,
            detailed: false,
            label: None,
            tokenizer_id: String::new(),
            request_rate: None,
            burstiness: 1.0,
            max_concurrency: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// vLLM's `backend` for loadgen's API.
fn backend(api: Api) -> &'static str {
    match api {
        Api::Chat => "openai-chat",
        Api::Completions => "openai",
    }
}

/// numpy's default (`linear`) percentile of sorted samples; 0 without any.
pub fn percentile_linear(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// `99` for 99.0, `99.9` for 99.9 (vLLM's key spelling).
pub fn percentile_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
pub fn date_stamp(unix_secs: f64) -> String {
    let secs = unix_secs.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// vLLM's default file name:
/// `{label}-{rate}qps[-concurrency{N}]-{model's last path part}-{date}.json`.
pub fn default_file_name(report: &RunReport, o: &BenchResultOptions) -> String {
    let label = o
        .label
        .clone()
        .unwrap_or_else(|| backend(report.run.api).to_string());
    let rate = o.request_rate.map_or("inf".to_string(), |r| format!("{r}"));
    let concurrency = o
        .max_concurrency
        .map_or(String::new(), |n| format!("-concurrency{n}"));
    let model = report.run.model.rsplit('/').next().unwrap_or("model");
    format!(
        "{label}-{rate}qps{concurrency}-{model}-{}.json",
        date_stamp(report.run.started_at_unix)
    )
}

/// The result object (see the module docs).
pub fn bench_result(report: &RunReport, o: &BenchResultOptions) -> Map<String, Value> {
    let measured: Vec<_> = report.records.iter().filter(|r| !r.warmup).collect();
    let ok: Vec<_> = measured.iter().filter(|r| r.ok()).collect();
    let duration = report.client.window_secs;
    let per_sec = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
    let total_input: u64 = ok.iter().map(|r| u64::from(r.prompt_tokens)).sum();
    let total_output: u64 = ok.iter().map(|r| u64::from(r.output_tokens)).sum();

    let mut m = Map::new();
    m.insert("date".into(), json!(date_stamp(report.run.started_at_unix)));
    m.insert("endpoint_type".into(), json!(backend(report.run.api)));
    m.insert("backend".into(), json!(backend(report.run.api)));
    m.insert("label".into(), json!(o.label));
    m.insert("model_id".into(), json!(report.run.model));
    m.insert("tokenizer_id".into(), json!(o.tokenizer_id));
    m.insert("num_prompts".into(), json!(measured.len()));
    for (k, v) in &o.metadata {
        m.insert(k.clone(), json!(v));
    }
    m.insert(
        "request_rate".into(),
        o.request_rate.map_or(json!("inf"), |r| json!(r)),
    );
    m.insert("burstiness".into(), json!(o.burstiness));
    m.insert("max_concurrency".into(), json!(o.max_concurrency));
    m.insert("duration".into(), json!(duration));
    m.insert("completed".into(), json!(ok.len()));
    m.insert("failed".into(), json!(measured.len() - ok.len()));
    m.insert("total_input_tokens".into(), json!(total_input));
    m.insert("total_output_tokens".into(), json!(total_output));
    m.insert("request_throughput".into(), json!(per_sec(ok.len() as f64)));
    let goodput = o.goodput.map(|slo| {
        let good = ok.iter().filter(|r| slo.met(r.ttft, r.tpot, r.e2e)).count();
        per_sec(good as f64)
    });
    m.insert("request_goodput".into(), json!(goodput));
    m.insert(
        "output_throughput".into(),
        json!(per_sec(total_output as f64)),
    );
    m.insert(
        "total_token_throughput".into(),
        json!(per_sec((total_input + total_output) as f64)),
    );

    // Output tokens and requests in flight per one-second bucket, as vLLM
    // counts them: a token at first-token time, then one per chunk gap.
    let (mut max_tokens_per_s, mut max_concurrent) = (0.0f64, 0u64);
    if let Some(t0) = ok.iter().map(|r| r.start).reduce(f64::min) {
        let end = ok.iter().map(|r| r.start + r.e2e).fold(t0, f64::max);
        let buckets = (end - t0).ceil() as usize + 1;
        let mut tokens = vec![0.0f64; buckets];
        let mut inflight = vec![0u64; buckets];
        for r in &ok {
            let mut t = r.start + r.ttft;
            let mut count = |t: f64| {
                let b = (t - t0) as isize;
                if (0..buckets as isize).contains(&b) {
                    tokens[b as usize] += 1.0;
                }
            };
            count(t);
            for gap in &r.itls {
                t += gap;
                count(t);
            }
            let first = ((r.start - t0) as usize).min(buckets - 1);
            let last = ((r.start + r.e2e - t0) as usize).min(buckets - 1);
            for c in &mut inflight[first..=last] {
                *c += 1;
            }
        }
        max_tokens_per_s = tokens.iter().copied().fold(0.0, f64::max);
        max_concurrent = inflight.iter().copied().max().unwrap_or(0);
    }
    m.insert("max_output_tokens_per_s".into(), json!(max_tokens_per_s));
    m.insert("max_concurrent_requests".into(), json!(max_concurrent));

    for metric in &o.metrics {
        let mut xs: Vec<f64> = match metric {
            Metric::Ttft => ok.iter().map(|r| r.ttft).collect(),
            Metric::Tpot => ok.iter().filter_map(|r| r.tpot).collect(),
            Metric::Itl => ok.iter().flat_map(|r| r.itls.iter().copied()).collect(),
            Metric::E2el => ok.iter().map(|r| r.e2e).collect(),
        };
        xs.retain(|x| x.is_finite());
        xs.sort_by(f64::total_cmp);
        let stats = Stats::of(xs.iter().copied());
        let name = metric.name();
        m.insert(
            format!("mean_{name}_ms"),
            json!(stats.mean.unwrap_or(0.0) * 1e3),
        );
        m.insert(
            format!("median_{name}_ms"),
            json!(percentile_linear(&xs, 50.0) * 1e3),
        );
        m.insert(
            format!("std_{name}_ms"),
            json!(stats.std.unwrap_or(0.0) * 1e3),
        );
        for &p in &o.percentiles {
            m.insert(
                format!("p{}_{name}_ms", percentile_word(p)),
                json!(percentile_linear(&xs, p) * 1e3),
            );
        }
    }

    if o.detailed {
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let list = |f: &dyn Fn(&crate::RequestRecord) -> Value| -> Value {
            Value::Array(measured.iter().map(|r| f(r)).collect())
        };
        m.insert("input_lens".into(), list(&|r| json!(r.prompt_tokens)));
        m.insert(
            "output_lens".into(),
            list(&|r| json!(if r.ok() { r.output_tokens } else { 0 })),
        );
        m.insert("ttfts".into(), list(&|r| json!(finite(r.ttft))));
        m.insert("itls".into(), list(&|r| json!(r.itls)));
        m.insert("latencies".into(), list(&|r| json!(r.e2e)));
        m.insert("start_times".into(), list(&|r| json!(r.start)));
        m.insert("generated_texts".into(), list(&|_| json!("")));
        m.insert("errors".into(), list(&|r| json!(r.error)));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = 2.5, 3.7, 3.97
        let xs = [1.0, 2.0, 3.0, 4.0];
        for (p, want) in [
            (50.0, 2.5),
            (90.0, 3.7),
            (99.0, 3.97),
            (0.0, 1.0),
            (100.0, 4.0),
        ] {
            assert!((percentile_linear(&xs, p) - want).abs() < 1e-12, "p{p}");
        }
        assert_eq!(percentile_linear(&[], 99.0), 0.0);
        assert_eq!(percentile_linear(&[7.0], 25.0), 7.0);
        // numpy.std([1, 2, 3, 4]) = 1.118033988749895 (population)
        let s = Stats::of(xs);
        assert_eq!(s.mean, Some(2.5));
        assert!((s.std.unwrap() - 1.118_033_988_749_895).abs() < 1e-12);
        assert_eq!(percentile_word(99.0), "99");
        assert_eq!(percentile_word(99.9), "99.9");
    }

    #[test]
    fn dates_as_vllm_stamps_them() {
        assert_eq!(date_stamp(0.0), "19700101-000000");
        // 2024-02-29 12:34:56 UTC (a leap day).
        assert_eq!(date_stamp(1_709_210_096.0), "20240229-123456");
        assert_eq!(date_stamp(1_796_040_000.0), "20261130-120000");
    }

    #[test]
    fn metric_names() {
        assert_eq!("e2el".parse::<Metric>(), Ok(Metric::E2el));
        assert_eq!(" ttft".parse::<Metric>(), Ok(Metric::Ttft));
        assert!("latency".parse::<Metric>().is_err());
    }
}
