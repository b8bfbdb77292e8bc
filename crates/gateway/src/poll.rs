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
//! All instances are polled concurrently; a slow or dead engine delays no
//! other. Nothing here is on the request path.

use crate::gateway::Gateway;
use crate::upstream::Upstream;
use kvroute_metrics::{CacheConfig, EngineGauges as Polled, Scrape};
use kvroute_routing::EngineGauges;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

pub(crate) async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let Some(every) = gw.timeouts.metrics_interval else {
        return;
    };
    let client = kvroute_metrics::http_client();
    let timeout = every.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let ups = gw.upstreams();
        let polls = ups.iter().filter(|u| !u.is_removed()).map(|u| {
            let client = &client;
            let gw = &gw;
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
    }
}

/// Apply one engine scrape to the dispatcher, directory and mirrors.
pub(crate) fn apply_scrape(gw: &Gateway, up: &Upstream, scrape: &Scrape) {
    match Polled::from_scrape(scrape) {
        Ok(g) => {
            gw.dispatcher.update_gauges(
                up.id(),
                EngineGauges {
                    running: g.running,
                    waiting: g.waiting,
                    kv_usage: g.kv_usage,
                    observed_at: gw.dispatcher.now(),
                },
            );
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
