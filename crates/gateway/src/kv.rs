//! The exact-mode feed: one task per instance subscribes to the engine's
//! KV-event stream (ZMQ SUB, binding or connecting per its endpoint) and
//! applies every batch to the directory.
//!
//! ```text
//! recv batch ─▶ SeqTracker::observe(seq)
//!   First / InOrder ─────────────────────────────┐
//!   Gap{expected, got} ─▶ replay socket? ─ yes, complete ─▶ apply the missing batches
//!                         └─ no / incomplete ─▶ count lost; instance → Predicted (fallback)
//!   Restart (seq went back: the engine restarted) ─▶ clear the instance's entries
//!                                                  ▼
//!   apply the batch's events; record lag (now − batch ts)
//!   in fallback and in order for directory.exact_resume_secs ─▶ instance → Exact
//! ```
//!
//! While an instance is in fallback, routing predictions fill in what the
//! lost batches would have said, and events keep being applied (they are
//! still true). The subscriber reconnects with backoff if its socket fails;
//! the tracker survives reconnections, so batches lost meanwhile show up as
//! a gap.
//!
//! Replay follows vLLM's `ZmqEventPublisher`: a DEALER connects to the
//! engine's `replay_endpoint` (a ROUTER), sends `["", start_seq (8 bytes
//! big-endian)]`, and receives `["", seq, payload]` frames for every
//! buffered batch from `start_seq` on, then `["", -1, ""]`.

use crate::gateway::Gateway;
use crate::upstream::Upstream;
use bytes::Bytes;
use kvroute_directory::Mode;
use kvroute_kvevents::{
    decode_payload, Endpoint, EventBatch, Received, SeqStatus, SeqTracker, SocketError, Subscriber,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Per-stream state.
#[derive(Debug, Default)]
struct StreamState {
    tracker: SeqTracker,
    /// In fallback since the last gap at this instant.
    in_order_since: Option<Instant>,
}

pub(crate) async fn run(
    gw: Arc<Gateway>,
    up: Arc<Upstream>,
    endpoint: Endpoint,
    mut stop: watch::Receiver<bool>,
) {
    let topic = gw.config.directory.kv_topic.clone();
    let mut st = StreamState::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::select! {
            r = Subscriber::open(endpoint.clone(), &topic) => r,
            _ = stop.changed() => return,
        };
        match opened {
            Ok(mut sub) => {
                backoff = Duration::from_millis(100);
                up.kv.connects.fetch_add(1, Ordering::Relaxed);
                up.kv.connected.store(true, Ordering::Relaxed);
                tracing::info!(instance = %up.name(), endpoint = %endpoint, "subscribed to KV events");
                loop {
                    let r = tokio::select! {
                        r = sub.recv() => r,
                        _ = stop.changed() => {
                            up.kv.connected.store(false, Ordering::Relaxed);
                            return;
                        }
                    };
                    match r {
                        Ok(batch) => on_batch(&gw, &up, &mut st, batch).await,
                        Err(SocketError::Wire(e)) => {
                            up.kv.decode_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(instance = %up.name(), error = %e, "not a KV-event batch");
                        }
                        Err(e) => {
                            tracing::warn!(instance = %up.name(), error = %e, "KV-event socket failed; reconnecting");
                            break;
                        }
                    }
                }
                up.kv.connected.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(instance = %up.name(), endpoint = %endpoint, error = %e, "cannot open the KV-event socket");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn on_batch(gw: &Gateway, up: &Upstream, st: &mut StreamState, r: Received) {
    let id = up.id();
    let dir = gw.dispatcher.directory();
    let status = st.tracker.observe(r.seq);
    match status {
        SeqStatus::First | SeqStatus::InOrder => {}
        SeqStatus::Gap { expected, got } => {
            up.kv.gaps.fetch_add(1, Ordering::Relaxed);
            let missing = u64::try_from(got.saturating_sub(expected)).unwrap_or(0);
            let replayed = match up.replay() {
                Some(ep) => match replay(ep, expected, got).await {
                    Ok(batches) => batches,
                    Err(e) => {
                        tracing::warn!(instance = %up.name(), error = %e, "KV-event replay failed");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            let complete = replayed.len() as u64 == missing
                && replayed
                    .iter()
                    .zip(expected..)
                    .all(|((seq, _), want)| *seq == want);
            let n = replayed.len() as u64;
            for (_, batch) in replayed {
                apply(gw, up, batch);
            }
            up.kv.replayed_batches.fetch_add(n, Ordering::Relaxed);
            if complete {
                tracing::info!(instance = %up.name(), expected, got, "KV-event gap filled from the replay socket");
            } else {
                up.kv
                    .lost_batches
                    .fetch_add(missing.saturating_sub(n), Ordering::Relaxed);
                if dir.mode(id) == Mode::Exact {
                    gw.dispatcher.set_directory_mode(id, Mode::Predicted);
                    up.kv.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                st.in_order_since = Some(Instant::now());
                tracing::warn!(instance = %up.name(), expected, got, "KV-event batches lost: predicted entries until the stream is in order again");
            }
        }
        SeqStatus::Restart { expected, got } => {
            up.kv.restarts.fetch_add(1, Ordering::Relaxed);
            dir.clear(gw.dispatcher.now(), id);
            tracing::info!(instance = %up.name(), expected, got, "KV-event publisher restarted: the instance's entries are cleared");
        }
    }
    let ts = r.batch.ts;
    apply(gw, up, r.batch);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let lag = now - ts;
    if lag.is_finite() {
        let lag = lag.max(0.0);
        gw.metrics.kv_lag(up.name(), lag);
        up.kv
            .last_lag_us
            .store((lag * 1e6).min(u64::MAX as f64) as u64, Ordering::Relaxed);
    }
    if let Some(since) = st.in_order_since {
        let in_order = matches!(status, SeqStatus::InOrder | SeqStatus::Restart { .. });
        if in_order && since.elapsed() >= gw.timeouts.exact_resume {
            gw.dispatcher.set_directory_mode(id, Mode::Exact);
            st.in_order_since = None;
            tracing::info!(instance = %up.name(), "KV-event stream in order again: back to exact entries");
        }
    }
}

fn apply(gw: &Gateway, up: &Upstream, batch: EventBatch) {
    let dir = gw.dispatcher.directory();
    let now = gw.dispatcher.now();
    let n = batch.events.len() as u64;
    for ev in batch.events {
        let s = dir.apply(now, up.id(), ev);
        up.kv.blocks_stored.fetch_add(s.stored, Ordering::Relaxed);
        up.kv.blocks_removed.fetch_add(s.removed, Ordering::Relaxed);
    }
    up.kv.events.fetch_add(n, Ordering::Relaxed);
    up.kv.batches.fetch_add(1, Ordering::Relaxed);
}

/// Ask the engine's replay socket for batches `from..to`.
async fn replay(endpoint: &str, from: i64, to: i64) -> Result<Vec<(i64, EventBatch)>, String> {
    let work = async {
        let mut s = zeromq::DealerSocket::new();
        s.connect(endpoint).await.map_err(|e| e.to_string())?;
        let req = ZmqMessage::try_from(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&from.to_be_bytes()),
        ])
        .map_err(|_| "empty message".to_string())?;
        s.send(req).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        loop {
            let msg = s.recv().await.map_err(|e| e.to_string())?;
            let frames: Vec<&Bytes> = msg.iter().skip_while(|f| f.is_empty()).collect();
            let seq_bytes: [u8; 8] = frames
                .first()
                .and_then(|f| f.as_ref().try_into().ok())
                .ok_or("replay frame without an 8-byte sequence number")?;
            let seq = i64::from_be_bytes(seq_bytes);
            if seq < 0 {
                break;
            }
            if seq >= from && seq < to {
                let payload = frames.get(1).ok_or("replay frame without payload")?;
                let batch = decode_payload(payload).map_err(|e| e.to_string())?;
                out.push((seq, batch));
            }
        }
        Ok::<_, String>(out)
    };
    tokio::time::timeout(REPLAY_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {REPLAY_TIMEOUT:?}"))?
}
