//! The metrics collector: every `metrics_interval_secs`, GET each engine's
//! `/metrics` (vLLM or SGLang names, read by `kvroute-metrics`) and
//!
//! * hand running / waiting / KV usage to the dispatcher
//!   ([`Dispatcher::update_gauges`](kvroute_routing::Dispatcher::update_gauges)),
//!   where policies see them as load;
//! * mirror the engine's prefix-cache counters (to compare the router's
//!   predicted cached tokens with the engine's actual hits);
//! * read `vllm:cache_config_info`: bound the instance's directory entries
//!   by its `num_gpu_blocks`, and warn once if its block size or hash
//!   algorithm differs from the router's (exact mode cannot match then).
//!
//! * watch exact-mode instances for a feed that went blind (see [`FeedCheck`]).
//!
//! All instances are polled concurrently; a slow or dead engine delays no
//! other. Nothing here is on the request path.

use crate::config::RouterConfig;
use crate::gateway::Gateway;
use crate::upstream::{Engine, FeedFallback, Upstream};
use kvroute_core::InstanceId;
use kvroute_directory::Mode;
use kvroute_metrics::{CacheConfig, EngineReading, Scrape};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

pub(crate) async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let Some(every) = gw.timeouts.metrics_interval else {
        return;
    };
    let client = match kvroute_metrics::http_client(&kvroute_http::ClientOptions {
        connect_timeout: RouterConfig::secs(gw.config().proxy.connect_timeout_secs),
        ca_file: gw.config().proxy.ca_file.clone(),
        http2_over_tls: gw.config().proxy.http2,
        ..kvroute_http::ClientOptions::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            // Gateway::new built the same TLS settings already: not reached.
            tracing::error!(error = %e, "no client for engine metrics polls");
            return;
        }
    };
    let timeout = every.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checks: HashMap<InstanceId, FeedCheck> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let live: Vec<_> = gw
            .engines()
            .into_iter()
            .filter(|e| !e.is_removed())
            .collect();
        let polls = live.iter().map(|e| {
            let client = &client;
            let gw = &gw;
            let u = e.ext();
            async move {
                let url = format!("{}/metrics", u.name());
                match kvroute_metrics::fetch(client, &url, timeout).await {
                    Ok(scrape) => {
                        u.engine.polls_ok.fetch_add(1, Ordering::Relaxed);
                        apply_scrape(gw, u, &scrape);
                    }
                    Err(e) => {
                        u.engine.polls_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(instance = %u.name(), error = %e, "metrics poll failed");
                    }
                }
            }
        });
        futures_util::future::join_all(polls).await;
        if *stop.borrow() {
            // Stopping: the KV-event subscribers are already gone, so the
            // feed checks would see a silent feed that is merely closed.
            return;
        }
        for e in live.iter().filter(|e| e.ext().kv_events().is_some()) {
            if gw.config.directory.mode == Mode::Exact {
                checks.entry(e.id()).or_default().after_poll(&gw, e);
            }
        }
    }
}

/// Per-instance evidence that an exact-mode feed went blind, gathered poll
/// by poll from the engine's own counters:
///
/// * **silent**: the engine computed at least four blocks' worth of prompt
///   tokens (`prefix_cache_queries − prefix_cache_hits` grew) across two
///   polls in a row, the router's requests to it averaged at least a block,
///   and no KV-event batch arrived meanwhile. The engine stores blocks as it
///   computes them, so events must have been published — and were not
///   received (events disabled, wrong endpoint or topic, a firewall, a
///   publisher that never reconnected). Predicted entries until batches flow
///   again for `exact_resume_secs`.
/// * **mismatch**: over at least 32 blocks of engine queries, the engine hit
///   its prefix cache on ≥ 10 % of prompt tokens but the router's exact
///   directory predicted < 1/20 of that rate for the requests it sent there.
///   The directory holds the engine's blocks, yet the router's block hashes
///   are not the engine's: a different tokenizer, chat template, block size,
///   hash algorithm or `PYTHONHASHSEED`. Predicted entries (which match
///   the router's own hashes) for five minutes, then exact mode is tried again.
#[derive(Debug, Default)]
struct FeedCheck {
    last: Option<Counters>,
    computed_since_batch: u64,
    silent_polls: u32,
    window: Counters,
    mismatch_since: Option<Instant>,
}

/// Counters read at one poll.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    queries: u64,
    hits: u64,
    batches: u64,
    routed: u64,
    prompt_tokens: u64,
    predicted: u64,
}

/// How long a hash mismatch keeps an instance in predicted mode before
/// exact mode is tried again.
const MISMATCH_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

impl FeedCheck {
    fn after_poll(&mut self, gw: &Gateway, e: &Engine) {
        let up = e.ext();
        let c = &e.counters;
        let now = Counters {
            queries: up.engine.prefix_cache_queries.load(Ordering::Relaxed),
            hits: up.engine.prefix_cache_hits.load(Ordering::Relaxed),
            batches: up.kv.batches.load(Ordering::Relaxed),
            routed: c.routed.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            predicted: c.predicted_cached_tokens.load(Ordering::Relaxed),
        };
        let Some(prev) = self.last.replace(now) else {
            return;
        };
        // Engine counters reset when it restarts: a drop counts as nothing.
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (dq, dh) = (d(now.queries, prev.queries), d(now.hits, prev.hits));
        let (dr, dp) = (
            d(now.routed, prev.routed),
            d(now.prompt_tokens, prev.prompt_tokens),
        );
        let block = gw.encoder.hasher().block_size() as u64;
        let id = up.id();
        let reasons = up.kv.fallback_reasons();

        if now.batches != prev.batches {
            self.computed_since_batch = 0;
            self.silent_polls = 0;
        } else if dr > 0 && dp / dr >= block {
            self.computed_since_batch += d(dq, dh);
            if self.computed_since_batch >= 4 * block {
                self.silent_polls += 1;
            }
        }
        if self.silent_polls >= 2 && reasons & FeedFallback::SILENT == 0 {
            up.kv.silences.fetch_add(1, Ordering::Relaxed);
            up.kv.set_fallback(FeedFallback::SILENT, &gw.dispatcher, id);
            tracing::warn!(
                instance = %up.name(),
                computed_tokens = self.computed_since_batch,
                secs_since_last_event = up.kv.secs_since_last_event(),
                "the engine is computing prompts but no KV events arrive (events disabled? wrong endpoint or topic? port unreachable?): predicted entries until they do"
            );
        }

        if let Some(since) = self.mismatch_since {
            if since.elapsed() >= MISMATCH_RETRY {
                self.mismatch_since = None;
                up.kv
                    .clear_fallback(FeedFallback::MISMATCH, &gw.dispatcher, id);
                tracing::info!(instance = %up.name(), "retrying exact entries after a hash mismatch");
            }
            self.window = Counters::default();
            return;
        }
        if gw.dispatcher.directory().mode(id) != Mode::Exact
            || !gw.dispatcher.policy().uses_directory()
        {
            // Predicted entries would count as matches: measure only in exact
            // mode. A policy that reads no directory predicts nothing cached,
            // so there is nothing to compare the engine's hits with.
            self.window = Counters::default();
            return;
        }
        let w = &mut self.window;
        w.queries += dq;
        w.hits += dh;
        w.prompt_tokens += dp;
        w.predicted += d(now.predicted, prev.predicted);
        if w.queries < 32 * block || w.prompt_tokens == 0 {
            return;
        }
        let engine_rate = w.hits as f64 / w.queries as f64;
        let router_rate = w.predicted as f64 / w.prompt_tokens as f64;
        if engine_rate >= 0.1 && router_rate * 20.0 < engine_rate {
            up.kv.mismatches.fetch_add(1, Ordering::Relaxed);
            up.kv
                .set_fallback(FeedFallback::MISMATCH, &gw.dispatcher, id);
            self.mismatch_since = Some(Instant::now());
            tracing::error!(
                instance = %up.name(),
                engine_hit_rate = engine_rate,
                predicted_hit_rate = router_rate,
                "the engine's prefix cache hits but the router's block hashes never match its KV events: check --tokenizer, the chat template, hashing.block_size, hashing.algo and hashing.seed (PYTHONHASHSEED) against the engine; predicted entries meanwhile"
            );
        }
        self.window = Counters::default();
    }
}

/// Apply one engine scrape to the dispatcher, directory and mirrors.
pub(crate) fn apply_scrape(gw: &Gateway, up: &Upstream, scrape: &Scrape) {
    match EngineReading::from_scrape(scrape) {
        Ok(g) => {
            let mut gauges = g.gauges;
            gauges.observed_at = gw.dispatcher.now();
            gw.dispatcher.update_gauges(up.id(), gauges);
            let to_u64 = |v: f64| {
                if v.is_finite() && v > 0.0 {
                    v as u64
                } else {
                    0
                }
            };
            if let Some(q) = g.prefix_cache_queries_tokens {
                up.engine
                    .prefix_cache_queries
                    .store(to_u64(q), Ordering::Relaxed);
            }
            if let Some(h) = g.prefix_cache_hits_tokens {
                up.engine
                    .prefix_cache_hits
                    .store(to_u64(h), Ordering::Relaxed);
            }
        }
        Err(e) => {
            tracing::debug!(instance = %up.name(), error = %e, "no load gauges in the engine's /metrics")
        }
    }
    if let Ok(cc) = CacheConfig::from_scrape(scrape) {
        up.engine.block_size.store(cc.block_size, Ordering::Relaxed);
        let ours = gw.encoder.hasher();
        let algo_differs = cc
            .hash_algo
            .as_deref()
            .is_some_and(|a| a != ours.algo().to_string());
        if (cc.block_size as usize != ours.block_size() || algo_differs)
            && !up.warned_block_size.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                instance = %up.name(),
                engine_block_size = cc.block_size,
                router_block_size = ours.block_size(),
                engine_hash_algo = cc.hash_algo.as_deref().unwrap_or("?"),
                router_hash_algo = %ours.algo(),
                "the engine hashes blocks differently from the router: exact-mode matches will fail"
            );
        }
        if let Some(n) = cc.num_gpu_blocks {
            let old = up.engine.num_gpu_blocks.swap(n, Ordering::Relaxed);
            if old != n {
                // The engine's capacity in the router's blocks.
                let tokens = n.saturating_mul(u64::from(cc.block_size));
                let blocks = tokens / (ours.block_size() as u64).max(1);
                gw.dispatcher
                    .directory()
                    .set_capacity(up.id(), usize::try_from(blocks).unwrap_or(usize::MAX));
                tracing::info!(instance = %up.name(), engine_blocks = n, directory_blocks = blocks, "directory capacity set from the engine's cache config");
            }
        }
    }
}
