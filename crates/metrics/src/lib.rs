/*!
Engine `/metrics` for kvroute: read what vLLM and SGLang report, summarise a
run, and write a vLLM-compatible page for the simulator.

# Brief overview

A [`Scrape`] is one parsed `/metrics` page (parsed by the `prometheus-parse`
crate, after a minimal pre-filter for the colons in `vllm:` names). Its
accessors aggregate over label sets: [`Scrape::gauge`], [`Scrape::counter`]
(with or without `_total`), [`Scrape::histogram`] (a [`Histogram`] merged
across label sets) and [`Scrape::info`] for info metrics.

From a scrape:

* [`EngineKind::detect`] tells vLLM from SGLang, and [`MetricNames`] says
  where each engine publishes each quantity;
* [`EngineReading`] is the load a router polls (running, waiting, KV usage),
  ready to copy into a policy's [`InstanceLoad`](kvroute_core::InstanceLoad);
* [`CacheConfig`] is vLLM's block size, block count and hash algorithm.

From two scrapes, before and after a run, an [`EngineReport`] holds the
engine-side timers of that run (TTFT, e2e, queue, prefill, decode, inter-token,
as [`TimerStats`]: count, exact mean, bucket p50/p90/p99) and counter deltas
(prefix-cache queries and hits, tokens, preemptions), with counter resets
flagged; [`EngineReport::total`] pools instances.

The other direction: [`VllmMetrics`] holds an emulated engine's numbers and
[`renders`](VllmMetrics::render) them as a page that parses exactly like a
real vLLM 0.32 page.

With the `poll` feature, `fetch` GETs one page (Tokio + hyper); without it
the crate does no I/O and depends on no async runtime.

```
use kvroute_metrics::{EngineReading, EngineReport, Scrape, VllmHistogram, VllmMetrics};

// A simulated engine after two requests...
let mut engine = VllmMetrics::new(2048);
engine.num_requests_running = 3.0;
engine.kv_cache_usage_perc = 0.25;
engine.observe("vllm:time_to_first_token_seconds", 0.05)?;
engine.observe("vllm:time_to_first_token_seconds", 0.30)?;
let page = engine.render("tiny");

// ...read back the way the router reads a real vLLM.
let after = Scrape::parse(&page)?;
assert_eq!(after.gauge("vllm:num_requests_running"), Some(3.0));
let load = EngineReading::from_scrape(&after)?.gauges;
assert_eq!((load.running, load.kv_usage), (3, 0.25));

let ttft = after.histogram(VllmHistogram::TimeToFirstToken.name()).unwrap();
assert_eq!(ttft.mean(), Some(0.175));
// Median by PromQL rules: rank 1 of 2 fills the 0.04..0.06 bucket.
assert_eq!(ttft.quantile(0.5), Some(0.06));

let report = EngineReport::since_start(&after);
assert_eq!(report.ttft_seconds.unwrap().count, 2.0);
# Ok::<(), Box<dyn std::error::Error>>(())
```

# Layout

* `scrape`: [`Scrape`], [`Sample`], [`Labels`] — parsing and aggregation.
* `histogram`: [`Histogram`] — delta, merge, mean, PromQL quantile.
* `engine`: [`EngineKind`], [`MetricNames`], [`EngineReading`], [`CacheConfig`]
  — which engine, which names (vLLM facts checked on a real 0.32 page, SGLang
  names from its `metrics/collector.py`).
* `report`: [`EngineReport`], [`TimerStats`] — one run's engine timers.
* `exposition`: [`VllmMetrics`] — a vLLM-compatible page writer.
* `poll` (feature `poll`): `fetch` — one page over HTTP.
* `error`: [`MetricsError`], the one error type.
*/

#![deny(missing_docs)]

pub use crate::engine::{
    CacheConfig, EngineKind, EngineReading, MetricNames, CACHE_CONFIG_INFO, SGLANG_NAMES,
    VLLM_NAMES,
};
pub use crate::error::MetricsError;
pub use crate::exposition::{
    format_value, token_count_bounds, FinishedReason, FinishedRequest, VllmHistogram, VllmMetrics,
    INTER_TOKEN_BOUNDS, REQUEST_LATENCY_BOUNDS, TTFT_BOUNDS,
};
pub use crate::histogram::Histogram;
#[cfg(feature = "poll")]
pub use crate::poll::{fetch, http_client, HttpClient, MAX_BODY_BYTES};
pub use crate::report::{EngineReport, TimerStats};
pub use crate::scrape::{Labels, Sample, SampleValue, Scrape};

mod engine;
mod error;
mod exposition;
mod histogram;
#[cfg(feature = "poll")]
mod poll;
mod report;
mod scrape;
