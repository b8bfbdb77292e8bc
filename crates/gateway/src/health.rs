//! Health probes: `GET /health` on every instance each
//! `health.interval_secs`, and at once when a request could not connect to
//! one (a *suspect*).
//!
//! A new instance takes no requests before its first successful probe.
//! `health.unhealthy_threshold` consecutive failures — failed probes and
//! connection errors alike — take an instance out (`Unhealthy`); the first
//! successful probe puts it back, unless it is ejected for failing requests
//! (`[outlier]`): then only once the ejection has run its time. Draining and removed instances keep their
//! admin state; a drained instance is still probed so that it comes back
//! healthy when undrained.

use crate::gateway::Gateway;
use crate::upstream::Engine;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Suspects are probed at most this often.
const MIN_SUSPECT_GAP: Duration = Duration::from_millis(50);

pub(crate) async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let Some(every) = gw.timeouts.health_interval else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = gw.probe_now.notified() => {
                tokio::time::sleep(MIN_SUSPECT_GAP).await;
            }
            _ = stop.changed() => return,
        }
        probe_all(&gw).await;
        gw.probed.send_replace(true);
    }
}

async fn probe_all(gw: &Arc<Gateway>) {
    let engines = gw.engines();
    let probes = engines
        .iter()
        .filter(|e| !e.is_removed())
        .map(|e| probe(gw, e));
    futures_util::future::join_all(probes).await;
}

/// Probe one instance and record the result.
pub(crate) async fn probe(gw: &Gateway, e: &Engine) -> bool {
    let up = e.ext();
    up.probes.fetch_add(1, Ordering::Relaxed);
    let ok = match up.url().join("/health") {
        Ok(uri) => {
            let mut req = Request::new(Full::new(Bytes::new()));
            *req.method_mut() = Method::GET;
            *req.uri_mut() = uri;
            let work = async {
                let resp = gw.client.request(req).await.ok()?;
                let ok = resp.status().is_success();
                // Read the (small) body so the connection can be reused.
                let _ = resp.into_body().collect().await;
                Some(ok)
            };
            matches!(
                tokio::time::timeout(gw.timeouts.health, work).await,
                Ok(Some(true))
            )
        }
        Err(_) => false,
    };
    if ok {
        gw.mark_healthy(e);
    } else {
        up.probe_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(instance = %up.name(), failures = up.consecutive_failures() + 1, "health probe failed");
        gw.mark_failure(e);
    }
    ok
}
