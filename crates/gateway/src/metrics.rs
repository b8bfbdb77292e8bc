//! [`RouterMetrics`]: the router's own Prometheus `/metrics` page
//! (`prometheus-client`).
//!
//! Two kinds of series:
//!
//! * **event counters and histograms** updated where things happen: routing
//!   decision latency (measured around `Dispatcher::route`), decisions by
//!   reason, retries, errors by kind, KV-event lag;
//! * **per-instance state read at scrape time** by a [`Collector`] over the
//!   dispatcher's table and the upstream list: requests by outcome, prompt
//!   and predicted-cached tokens (the dispatcher's own counters — nothing
//!   extra on the request path), in-flight, pending prefill, state, directory
//!   blocks and mode, the engine's mirrored gauges and prefix-cache counters
//!   (`vllm:prefix_cache_hits_total` / `queries_total`, to compare with the
//!   router's predictions), KV-event statistics, health probes.
//!
//! | series | labels |
//! |---|---|
//! | `kvroute_requests_total` | worker, policy, outcome (`finished`, `failed`, `cancelled`) |
//! | `kvroute_routed_requests_total` | worker |
//! | `kvroute_prompt_tokens_total`, `kvroute_predicted_cached_tokens_total` | worker |
//! | `kvroute_engine_prefix_cache_queries_total`, `kvroute_engine_prefix_cache_hits_total` | worker |
//! | `kvroute_inflight_requests`, `kvroute_pending_prefill_tokens` | worker |
//! | `kvroute_instance_state` (1 for the current state) | worker, state |
//! | `kvroute_directory_blocks`, `kvroute_directory_mode` | worker (, mode) |
//! | `kvroute_engine_requests_running`, `_waiting`, `kvroute_engine_kv_cache_usage` | worker |
//! | `kvroute_kv_event_batches_total`, `_events_total`, `_gaps_total`, `_lost_batches_total`, `_replayed_batches_total`, `_restarts_total`, `_decode_errors_total`, `kvroute_directory_fallbacks_total` | worker |
//! | `kvroute_kv_event_lag_seconds` (histogram) | worker |
//! | `kvroute_route_decision_seconds` (histogram), `kvroute_route_decisions_total` | policy (, reason) |
//! | `kvroute_retries_total`, `kvroute_errors_total` | (kind) |

use crate::upstream::{Engine, Upstream};
use kvroute_core::Reason;
use kvroute_directory::Mode;
use kvroute_routing::{Dispatcher, InstanceState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

type Label1 = [(&'static str, &'static str); 1];
type InstanceLabel = [(&'static str, String); 1];
type CodeLabel = [(&'static str, u16); 1];
type HttpLabels = [(&'static str, String); 3];

/// The router's metrics.
#[derive(Debug)]
pub struct RouterMetrics {
    registry: Registry,
    policy: &'static str,
    decision_seconds: Histogram,
    decisions: Family<Label1, Counter>,
    retries: Counter,
    errors: Family<Label1, Counter>,
    kv_lag: Family<InstanceLabel, Histogram, fn() -> Histogram>,
    ttft: Family<CodeLabel, Histogram, fn() -> Histogram>,
    e2e: Family<CodeLabel, Histogram, fn() -> Histogram>,
    http: Family<HttpLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~9 min.
    Histogram::new(exponential_buckets(1e-3, 2.0, 20))
}

fn lag_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(exponential_buckets(1e-4, 2.0, 20))
}

impl RouterMetrics {
    pub(crate) fn new(
        policy: &'static str,
        dispatcher: Arc<Dispatcher<Upstream>>,
    ) -> RouterMetrics {
        let mut registry = Registry::default();
        // 1 µs … ~0.5 s.
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        registry.register(
            "kvroute_route_decision_seconds",
            "Time spent in Dispatcher::route (policy pick and accounting)",
            decision_seconds.clone(),
        );
        let decisions = Family::<Label1, Counter>::default();
        registry.register(
            "kvroute_route_decisions",
            "Routing decisions by the policy branch that made them",
            decisions.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "kvroute_retries",
            "Requests re-sent to another instance after a failure before any byte reached the client",
            retries.clone(),
        );
        let errors = Family::<Label1, Counter>::default();
        registry.register(
            "kvroute_errors",
            "Errors by kind (bad_request, body_too_large, tokenize, no_instance, connect, upstream, upstream_status, timeout, stream, stream_timeout)",
            errors.clone(),
        );
        let kv_lag = Family::<InstanceLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            lag_histogram,
        );
        registry.register(
            "kvroute_kv_event_lag_seconds",
            "KV-event batch lag: arrival time minus the engine's batch timestamp",
            kv_lag.clone(),
        );
        let ttft = Family::<CodeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "kvroute_time_to_first_token_seconds",
            "Routed completions: from the router receiving the request to the first token passing it, by the engine's status code",
            ttft.clone(),
        );
        let e2e = Family::<CodeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "kvroute_request_duration_seconds",
            "Routed completions: from the router receiving the request to the last byte of the answer, by the engine's status code",
            e2e.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "kvroute_http_requests",
            "Requests the router answered, by method, route and status code",
            http.clone(),
        );
        registry.register_collector(Box::new(StateCollector { policy, dispatcher }));
        RouterMetrics {
            registry,
            policy,
            decision_seconds,
            decisions,
            retries,
            errors,
            kv_lag,
            ttft,
            e2e,
            http,
        }
    }

    /// A routing decision took `secs` and was made for `reason`.
    pub(crate) fn decision(&self, secs: f64, reason: Reason) {
        self.decision_seconds.observe(secs);
        self.decisions
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// A retry.
    pub(crate) fn retry(&self) {
        self.retries.inc();
    }

    /// An error of `kind`.
    pub(crate) fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// A KV-event batch arrived `lag_secs` after the engine stamped it.
    pub(crate) fn kv_lag(&self, instance: &str, lag_secs: f64) {
        self.kv_lag
            .get_or_create(&[("worker", instance.to_string())])
            .observe(lag_secs);
    }

    /// A routed completion's first token passed the router `secs` after
    /// the request arrived.
    pub(crate) fn ttft(&self, code: u16, secs: f64) {
        self.ttft.get_or_create(&[("code", code)]).observe(secs);
    }

    /// A routed completion's answer ended `secs` after the request arrived.
    pub(crate) fn e2e(&self, code: u16, secs: f64) {
        self.e2e.get_or_create(&[("code", code)]).observe(secs);
    }

    /// The router answered a request.
    pub(crate) fn http(&self, method: &str, route: &'static str, code: u16) {
        self.http
            .get_or_create(&[
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }

    /// Total errors of `kind` so far.
    pub fn errors(&self, kind: &'static str) -> u64 {
        self.errors.get(&[("kind", kind)]).map_or(0, |c| c.get())
    }

    /// Total retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// The policy label.
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// The page in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The page in the Prometheus text format 0.0.4 (what `promtool check
    /// metrics` and scrapers without OpenMetrics support read).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }

    /// The page in the format an `Accept` header asks for, and its content type.
    pub fn negotiate(&self, accept: Option<&str>) -> (String, &'static str) {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (
                self.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            (
                self.render_text(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
    }
}

/// OpenMetrics text → Prometheus text 0.0.4: counters are named after their
/// `_total` samples, `# UNIT` and `# EOF` lines and `_created` samples go.
pub(crate) fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))
        {
            let (kind, body) = rest;
            let (name, tail) = body.split_once(' ').unwrap_or((body, ""));
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
                continue;
            }
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        if !line.starts_with('#') && sample.ends_with("_created") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Per-instance series, read at scrape time.
struct StateCollector {
    policy: &'static str,
    dispatcher: Arc<Dispatcher<Upstream>>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

const STATES: [InstanceState; 4] = [
    InstanceState::Healthy,
    InstanceState::Unhealthy,
    InstanceState::Draining,
    InstanceState::Removed,
];

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        // A removed instance's series go with it.
        let insts: Vec<Arc<Engine>> = self
            .dispatcher
            .instances()
            .into_iter()
            .filter(|e| !e.is_removed())
            .collect();
        let dir = self.dispatcher.directory();

        {
            let mut m = enc.encode_descriptor(
                "kvroute_requests",
                "Requests routed to an instance that ended, by how they ended",
                None,
                MetricType::Counter,
            )?;
            for e in &insts {
                let c = &e.counters;
                for (outcome, v) in [
                    ("finished", &c.finished),
                    ("failed", &c.failed),
                    ("cancelled", &c.cancelled),
                ] {
                    let labels = [
                        ("worker", e.name()),
                        ("policy", self.policy),
                        ("outcome", outcome),
                    ];
                    ConstCounter::new(v.load(Ordering::Relaxed))
                        .encode(m.encode_family(&labels)?)?;
                }
            }
        }
        counter(
            &mut enc,
            "kvroute_routed_requests",
            "Requests routed to the instance (each retry attempt counts)",
            &insts,
            |_, e| e.counters.routed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "kvroute_prompt_tokens",
            "Prompt tokens routed to the instance",
            &insts,
            |_, e| e.counters.prompt_tokens.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "kvroute_predicted_cached_tokens",
            "Prompt tokens the router predicted were cached on the instance it chose",
            &insts,
            |_, e| e.counters.predicted_cached_tokens.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "kvroute_engine_prefix_cache_queries",
            "Mirror of the engine's vllm:prefix_cache_queries_total (tokens), from the last poll",
            &insts,
            |u, _| u.engine.prefix_cache_queries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "kvroute_engine_prefix_cache_hits",
            "Mirror of the engine's vllm:prefix_cache_hits_total (tokens), from the last poll",
            &insts,
            |u, _| u.engine.prefix_cache_hits.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "kvroute_inflight_requests",
            "Requests in flight from this router",
            &insts,
            |_, e| f64::from(e.inflight()),
        )?;
        gauge(
            &mut enc,
            "kvroute_pending_prefill_tokens",
            "Uncached prompt tokens sent that have not produced a first token yet",
            &insts,
            |_, e| e.pending_prefill_tokens() as f64,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "kvroute_instance_state",
                "1 for the instance's current state",
                None,
                MetricType::Gauge,
            )?;
            for e in &insts {
                let cur = e.state();
                for s in STATES {
                    let labels = [("worker", e.name()), ("state", s.as_str())];
                    ConstGauge::new(i64::from(cur == s)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        gauge(
            &mut enc,
            "kvroute_directory_blocks",
            "Blocks the directory believes the instance holds",
            &insts,
            |u, _| dir.instance_blocks(u.id()) as f64,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "kvroute_directory_mode",
                "1 for where the instance's directory entries come from now (exact: KV events; predicted: routing)",
                None,
                MetricType::Gauge,
            )?;
            for e in &insts {
                let cur = dir.mode(e.id());
                for mode in [Mode::Predicted, Mode::Exact] {
                    let labels = [("worker", e.name()), ("mode", mode.as_str())];
                    ConstGauge::new(i64::from(cur == mode)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        gauge(
            &mut enc,
            "kvroute_engine_requests_running",
            "The engine's running requests (last poll)",
            &insts,
            |_, e| f64::from(e.gauges().running),
        )?;
        gauge(
            &mut enc,
            "kvroute_engine_requests_waiting",
            "The engine's waiting requests (last poll)",
            &insts,
            |_, e| f64::from(e.gauges().waiting),
        )?;
        gauge(
            &mut enc,
            "kvroute_engine_kv_cache_usage",
            "The engine's KV-cache usage, 0..1 (last poll)",
            &insts,
            |_, e| e.gauges().kv_usage,
        )?;
        gauge(
            &mut enc,
            "kvroute_engine_num_gpu_blocks",
            "The engine's KV blocks (vllm:cache_config_info; 0 unknown)",
            &insts,
            |u, _| u.engine.num_gpu_blocks.load(Ordering::Relaxed) as f64,
        )?;
        let kv = |name: &'static str, help: &'static str, f: fn(&Upstream) -> u64| (name, help, f);
        for (name, help, f) in [
            kv(
                "kvroute_kv_event_batches",
                "KV-event batches applied",
                |u| u.kv.batches.load(Ordering::Relaxed),
            ),
            kv("kvroute_kv_events", "KV events applied", |u| {
                u.kv.events.load(Ordering::Relaxed)
            }),
            kv(
                "kvroute_kv_event_gaps",
                "Sequence gaps in the KV-event stream",
                |u| u.kv.gaps.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_lost_batches",
                "KV-event batches lost in gaps and not replayed",
                |u| u.kv.lost_batches.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_replayed_batches",
                "KV-event batches recovered from the replay socket",
                |u| u.kv.replayed_batches.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_restarts",
                "Publisher restarts (sequence went backwards)",
                |u| u.kv.restarts.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_decode_errors",
                "Messages that were not KV-event batches",
                |u| u.kv.decode_errors.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_directory_fallbacks",
                "Falls back from exact to predicted entries (gap, conflict, silence, hash mismatch, reset storm)",
                |u| u.kv.fallbacks.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_refused_connections",
                "KV-event connections refused (address not allowed, too many)",
                |u| u.kv.refused.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_violations",
                "KV-event connections dropped for breaking the protocol or a limit",
                |u| u.kv.violations.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_foreign_batches",
                "KV-event batches ignored because another connection owned the stream",
                |u| u.kv.foreign_batches.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_resets",
                "Directory resets from the feed (engine restarts, caches cleared)",
                |u| u.kv.resets.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_resets_suppressed",
                "Resets refused for coming faster than min_reset_interval_secs",
                |u| u.kv.resets_suppressed.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_silences",
                "Times the engine computed prompts but no KV events arrived",
                |u| u.kv.silences.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_kv_event_hash_mismatches",
                "Times the router's block hashes were found not to match the engine's",
                |u| u.kv.mismatches.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_ejections",
                "Times the instance was ejected for failing requests",
                |u| u64::from(u.ejections()),
            ),
            kv("kvroute_health_probes", "Health probes sent", |u| {
                u.probes.load(Ordering::Relaxed)
            }),
            kv(
                "kvroute_health_probe_failures",
                "Health probes failed",
                |u| u.probe_failures.load(Ordering::Relaxed),
            ),
            kv(
                "kvroute_engine_polls_failed",
                "Failed /metrics polls of the engine",
                |u| u.engine.polls_failed.load(Ordering::Relaxed),
            ),
        ] {
            counter(&mut enc, name, help, &insts, |u, _| f(u))?;
        }
        gauge(
            &mut enc,
            "kvroute_kv_event_last_lag_seconds",
            "Lag of the last KV-event batch",
            &insts,
            |u, _| u.kv.last_lag_us.load(Ordering::Relaxed) as f64 / 1e6,
        )?;
        gauge(
            &mut enc,
            "kvroute_kv_event_seconds_since_last",
            "Seconds since the last KV-event batch was applied (-1: none yet)",
            &insts,
            |u, _| u.kv.secs_since_last_event().unwrap_or(-1.0),
        )?;
        gauge(
            &mut enc,
            "kvroute_kv_event_publishers",
            "KV-event publishers connected now",
            &insts,
            |u, _| f64::from(u.kv.publishers.load(Ordering::Relaxed)),
        )?;
        Ok(())
    }
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &'static str,
    insts: &[Arc<Engine>],
    f: impl Fn(&Upstream, &Engine) -> f64,
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for e in insts {
        let labels = [("worker", e.name())];
        ConstGauge::new(f(e.ext(), e)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &'static str,
    insts: &[Arc<Engine>],
    f: impl Fn(&Upstream, &Engine) -> u64,
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for e in insts {
        let labels = [("worker", e.name())];
        ConstCounter::new(f(e.ext(), e)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every family registered in this file is documented in
    /// docs/metrics.md (counters under their `_total` name).
    #[test]
    fn every_metric_is_documented() {
        let src = include_str!("metrics.rs");
        let doc = include_str!("../../../docs/metrics.md");
        let mut names: Vec<&str> = src
            .split('"')
            .filter(|s| {
                s.starts_with("kvroute_")
                    && s.len() > 8
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 30, "{names:?}");
        for n in names {
            let documented =
                doc.contains(&format!("`{n}`")) || doc.contains(&format!("`{n}_total`"));
            assert!(documented, "{n} is not in docs/metrics.md");
        }
    }
}
