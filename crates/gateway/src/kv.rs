//! The exact-mode feed: one task per instance subscribes to the engine's
//! KV-event stream and applies its batches to the directory, trusting as
//! little as it can.
//!
//! ```text
//! Connected / Disconnected(peer) ─▶ publisher count; the owner's stream ends
//! Refused / violation / Malformed ─▶ counted, logged at warn (at most every 10 s)
//! Batch(peer, seq, events)
//!   another connection owns the stream, and spoke within 30 s? ─▶ ignored, counted;
//!                         instance → Predicted ("conflict") until it stops
//!   SeqTracker::observe(seq)
//!     First, seq > 0 (joined a running engine) ─▶ replay 0..seq if a replay socket is set
//!     Gap{expected, got}  ─▶ replay? complete ─▶ apply the missing batches
//!                            └─ no / incomplete ─▶ count lost; instance → Predicted ("gap")
//!     Restart (seq went back: a new engine) ─▶ reset, at most one per min_reset_interval
//!   apply the events (AllBlocksCleared is a reset too); lag; last-event time
//!   in order for exact_resume_secs since the last gap/conflict/silence ─▶ back to Exact
//! ```
//!
//! # Trust model
//!
//! Anyone who can reach a KV-event port can speak on it, and what they say
//! decides routing. So: the router binds where its config says (loopback and
//! private addresses are fine; anything else is warned about at start-up),
//! refuses addresses outside `directory.kv_events_allow` before reading a
//! byte, bounds every frame and message ([`Limits`]), and accepts batches
//! from one connection at a time — the *owner*, the first to speak after the
//! previous owner left. A second publisher on the same endpoint is ignored and
//! makes the instance fall back to predicted entries (its stream can no
//! longer be trusted to be the engine's) until it has been quiet for
//! `exact_resume_secs`. Resets (a sequence number going back, an
//! `AllBlocksCleared`) are honoured at most once per
//! `directory.min_reset_interval_secs`; more fall back to predicted entries
//! instead of wiping the directory. What is refused is counted per instance
//! and logged at `warn`.
//!
//! While an instance is in fallback, routing predictions fill in what the
//! events would have said, and events keep being applied (they are still
//! true). Replay follows vLLM's `ZmqEventPublisher` (see
//! [`kvroute_kvevents::replay`]).

use crate::metrics::RouterMetrics;
use crate::upstream::{Engine, FeedFallback, Upstream};
use kvroute_core::KvEvent;
use kvroute_directory::Mode;
use kvroute_kvevents::{
    AddrRange, Endpoint, EventBatch, Incoming, Limits, Peer, Received, SeqStatus, SeqTracker,
    SubscribeOptions, Subscriber,
};
use kvroute_routing::Dispatcher;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An owner silent this long loses the stream to another connection.
const OWNER_HANDOVER: Duration = Duration::from_secs(30);
/// Repeated warnings of one kind are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a feed task needs, and nothing else.
#[derive(Debug, Clone)]
pub(crate) struct FeedContext {
    pub(crate) dispatcher: Arc<Dispatcher<Upstream>>,
    pub(crate) metrics: Arc<RouterMetrics>,
    pub(crate) topic: String,
    pub(crate) limits: Limits,
    pub(crate) allow: Vec<AddrRange>,
    pub(crate) exact_resume: Duration,
    pub(crate) min_reset_interval: Duration,
}

/// A warning that repeats: logged at most every [`WARN_EVERY`], with a count
/// of what was not logged.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    quiet: u64,
}

impl Throttle {
    /// `Some(n)` when it is time to log (n: occurrences since the last log).
    fn tick(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.quiet) + 1)
    }
}

/// The state of one instance's stream.
#[derive(Debug, Default)]
struct Feed {
    tracker: SeqTracker,
    /// The connection whose batches are applied, and when it last spoke.
    owner: Option<(u64, Instant)>,
    /// Connections that finished their handshake and are still open.
    open: Vec<u64>,
    /// In order since (set by every gap, conflict or silence).
    in_order_since: Option<Instant>,
    last_reset: Option<Instant>,
    warn_foreign: Throttle,
    warn_refused: Throttle,
    warn_malformed: Throttle,
    warn_violation: Throttle,
}

pub(crate) async fn run(
    ctx: FeedContext,
    engine: Arc<Engine>,
    endpoint: Endpoint,
    mut stop: watch::Receiver<bool>,
) {
    let up = engine.ext();
    let options = SubscribeOptions {
        topic: ctx.topic.clone(),
        limits: ctx.limits,
        allow: ctx.allow.clone(),
        queue: 1024,
    };
    let mut backoff = Duration::from_millis(100);
    let mut sub = loop {
        match Subscriber::open(endpoint.clone(), options.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(instance = %up.name(), endpoint = %endpoint, error = %e, "cannot open the KV-event socket; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    tracing::info!(instance = %up.name(), endpoint = %endpoint, "KV-event socket open");
    let mut feed = Feed::default();
    loop {
        let item = tokio::select! {
            i = sub.recv() => i,
            _ = stop.changed() => break,
        };
        let Some(item) = item else { break };
        feed.on_item(&ctx, up, item).await;
    }
    up.kv.publishers.store(0, Ordering::Relaxed);
}

impl Feed {
    async fn on_item(&mut self, ctx: &FeedContext, up: &Upstream, item: Incoming) {
        let kv = &up.kv;
        match item {
            Incoming::Connected(peer) => {
                self.open.push(peer.connection);
                kv.connects.fetch_add(1, Ordering::Relaxed);
                kv.publishers
                    .store(self.open.len() as u32, Ordering::Relaxed);
                tracing::info!(instance = %up.name(), %peer, publishers = self.open.len(), "KV-event publisher connected");
            }
            Incoming::Disconnected(peer, why) => {
                let was_open = match self.open.iter().position(|&c| c == peer.connection) {
                    Some(i) => {
                        self.open.swap_remove(i);
                        true
                    }
                    None => false,
                };
                if was_open {
                    kv.publishers
                        .store(self.open.len() as u32, Ordering::Relaxed);
                    if self.owner.is_some_and(|(c, _)| c == peer.connection) {
                        self.owner = None;
                    }
                    tracing::info!(instance = %up.name(), %peer, reason = %why, "KV-event publisher disconnected");
                }
                // Dropped before its handshake completed, or for breaking a limit.
                let violation = !was_open
                    || why.contains("exceeds the limit")
                    || why.contains("more than")
                    || why.contains("protocol");
                if violation {
                    kv.violations.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = self.warn_violation.tick() {
                        tracing::warn!(instance = %up.name(), %peer, reason = %why, count = n, "KV-event connection dropped for breaking the protocol or a limit");
                    }
                }
            }
            Incoming::Refused(addr, why) => {
                kv.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.warn_refused.tick() {
                    tracing::warn!(instance = %up.name(), %addr, reason = ?why, count = n, "KV-event connection refused (see directory.kv_events_allow)");
                }
            }
            Incoming::Malformed(peer, e) => {
                kv.decode_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.warn_malformed.tick() {
                    tracing::warn!(instance = %up.name(), %peer, error = %e, count = n, "KV-event message is not a batch; ignored");
                }
            }
            Incoming::Batch(peer, r) => self.on_batch(ctx, up, peer, r).await,
        }
    }

    async fn on_batch(&mut self, ctx: &FeedContext, up: &Upstream, peer: Peer, r: Received) {
        let kv = &up.kv;
        let now = Instant::now();
        match self.owner {
            Some((owner, last)) if owner != peer.connection => {
                if now.duration_since(last) < OWNER_HANDOVER {
                    kv.foreign_batches.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = self.warn_foreign.tick() {
                        tracing::warn!(instance = %up.name(), %peer, owner, count = n, "a second KV-event publisher on one endpoint: its batches are ignored and the instance's entries are predicted until it stops");
                    }
                    self.fall_back(ctx, up, FeedFallback::CONFLICT);
                    return;
                }
                tracing::warn!(instance = %up.name(), %peer, owner, "the KV-event stream's owner has been silent for {OWNER_HANDOVER:?}: another connection takes over");
                self.tracker = SeqTracker::new();
            }
            _ => {}
        }
        self.owner = Some((peer.connection, now));
        let status = self.tracker.observe(r.seq);
        match status {
            SeqStatus::InOrder => {}
            SeqStatus::First => {
                if r.seq > 0 {
                    // A running engine: what it stored before is unknown.
                    let replayed = match up.replay() {
                        Some(ep) => self.fetch(up, ep, 0, r.seq).await,
                        None => Vec::new(),
                    };
                    tracing::info!(instance = %up.name(), seq = r.seq, replayed = replayed.len(), "joined a running KV-event stream; earlier batches {}", if up.replay().is_some() { "replayed from the engine's buffer" } else { "are unknown (set the instance's replay endpoint to fetch them)" });
                    for (_, b) in replayed {
                        self.apply(ctx, up, b);
                    }
                }
            }
            SeqStatus::Gap { expected, got } => {
                kv.gaps.fetch_add(1, Ordering::Relaxed);
                let missing =
                    u64::try_from(i128::from(got) - i128::from(expected)).unwrap_or(u64::MAX);
                let replayed = match up.replay() {
                    Some(ep) => self.fetch(up, ep, expected, got).await,
                    None => Vec::new(),
                };
                let complete = replayed.len() as u64 == missing
                    && replayed
                        .iter()
                        .zip(expected..)
                        .all(|((s, _), want)| *s == want);
                let n = replayed.len() as u64;
                for (_, batch) in replayed {
                    self.apply(ctx, up, batch);
                }
                kv.replayed_batches.fetch_add(n, Ordering::Relaxed);
                if complete {
                    tracing::info!(instance = %up.name(), expected, got, "KV-event gap filled from the replay socket");
                } else {
                    kv.lost_batches
                        .fetch_add(missing.saturating_sub(n), Ordering::Relaxed);
                    tracing::warn!(instance = %up.name(), expected, got, "KV-event batches lost: predicted entries until the stream is in order again");
                    self.fall_back(ctx, up, FeedFallback::GAP);
                }
            }
            SeqStatus::Restart { expected, got } => {
                kv.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(instance = %up.name(), expected, got, "KV-event sequence went back: the engine restarted");
                self.reset(ctx, up, "the sequence went back");
            }
        }
        let ts = r.batch.ts;
        self.apply(ctx, up, r.batch);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        kv.last_event_unix_ms
            .store(wall.as_millis() as u64, Ordering::Relaxed);
        let lag = wall.as_secs_f64() - ts;
        if lag.is_finite() {
            let lag = lag.max(0.0);
            ctx.metrics.kv_lag(up.name(), lag);
            kv.last_lag_us
                .store((lag * 1e6).min(u64::MAX as f64) as u64, Ordering::Relaxed);
        }
        self.maybe_resume(ctx, up, status);
    }

    /// Replay `from..to` from the engine's buffer (empty on failure, logged).
    async fn fetch(&self, up: &Upstream, ep: &str, from: i64, to: i64) -> Vec<(i64, EventBatch)> {
        match kvroute_kvevents::replay(ep, from, to, REPLAY_TIMEOUT).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(instance = %up.name(), error = %e, "KV-event replay failed");
                Vec::new()
            }
        }
    }

    /// Apply a batch; an `AllBlocksCleared` is a reset, rate-limited.
    fn apply(&mut self, ctx: &FeedContext, up: &Upstream, batch: EventBatch) {
        let dir = ctx.dispatcher.directory();
        let now = ctx.dispatcher.now();
        let n = batch.events.len() as u64;
        for ev in batch.events {
            if matches!(ev, KvEvent::AllBlocksCleared) {
                self.reset(ctx, up, "the engine cleared its cache");
                continue;
            }
            let s = dir.apply(now, up.id(), ev);
            up.kv.blocks_stored.fetch_add(s.stored, Ordering::Relaxed);
            up.kv.blocks_removed.fetch_add(s.removed, Ordering::Relaxed);
        }
        up.kv.events.fetch_add(n, Ordering::Relaxed);
        up.kv.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Forget the instance's entries, unless that happened within
    /// `min_reset_interval`: then fall back to predicted entries instead.
    fn reset(&mut self, ctx: &FeedContext, up: &Upstream, why: &str) {
        let now = Instant::now();
        if self
            .last_reset
            .is_some_and(|t| now.duration_since(t) < ctx.min_reset_interval)
        {
            up.kv.resets_suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(instance = %up.name(), reason = why, "repeated KV-event resets: entries kept, predicted until the stream is in order again");
            self.fall_back(ctx, up, FeedFallback::RESETS);
            return;
        }
        self.last_reset = Some(now);
        up.kv.resets.fetch_add(1, Ordering::Relaxed);
        ctx.dispatcher
            .directory()
            .clear(ctx.dispatcher.now(), up.id());
        tracing::info!(instance = %up.name(), reason = why, "the instance's directory entries are cleared");
    }

    fn fall_back(&mut self, ctx: &FeedContext, up: &Upstream, why: u8) {
        self.in_order_since = Some(Instant::now());
        up.kv.set_fallback(why, &ctx.dispatcher, up.id());
    }

    /// Back to exact once the stream has been in order, from its owner, for
    /// `exact_resume` since the last gap, conflict, reset storm or silence.
    fn maybe_resume(&mut self, ctx: &FeedContext, up: &Upstream, status: SeqStatus) {
        let resumable = FeedFallback::GAP
            | FeedFallback::CONFLICT
            | FeedFallback::RESETS
            | FeedFallback::SILENT;
        let reasons = up.kv.fallback_reasons();
        if reasons & resumable == 0 {
            self.in_order_since = None;
            return;
        }
        let since = *self.in_order_since.get_or_insert_with(Instant::now);
        let in_order = matches!(status, SeqStatus::InOrder | SeqStatus::First);
        if in_order && since.elapsed() >= ctx.exact_resume {
            up.kv.clear_fallback(resumable, &ctx.dispatcher, up.id());
            self.in_order_since = None;
            if ctx.dispatcher.directory().mode(up.id()) == Mode::Exact {
                tracing::info!(instance = %up.name(), "KV-event stream in order again: back to exact entries");
            }
        }
    }
}
