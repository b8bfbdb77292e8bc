//! The engine task: one [`Engine`] stepped on the wall clock.
//!
//! ```text
//!  HTTP handlers ──Command::Add{request, token channel}──▶ ┐
//!                ──Command::Abort(id)────────────────────▶ ├─ mpsc ─▶ engine task
//!                                                          ┘           │
//!   loop: take every queued command (vLLM also admits only between steps)
//!         if there is work: start_step(now) → sleep until the step ends →
//!                           finish_step → tokens to each request's channel,
//!                           vLLM metrics, KV events to the ZMQ publisher
//!         else: wait for a command
//! ```
//!
//! Time runs `speedup` times faster than the wall clock (1.0: real time), so
//! tests can use realistic latency profiles without waiting for them.

use crate::metrics::EngineMetrics;
use kvroute_core::{KvEvent, Nanos};
use kvroute_kvevents::Publisher;
use kvroute_sim::{Engine, EngineRequest, Finished};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// What a request's stream receives.
#[derive(Debug, Clone)]
pub enum TokenEvent {
    /// One generated token.
    Token(u32),
    /// The request finished; its timeline.
    Done(Finished),
}

/// Messages to the engine task.
#[derive(Debug)]
pub enum Command {
    /// Queue a request; tokens go to `tx`.
    Add {
        /// The request.
        request: EngineRequest,
        /// Where its tokens go.
        tx: mpsc::UnboundedSender<TokenEvent>,
        /// Where admission errors go.
        admitted: tokio::sync::oneshot::Sender<Result<(), kvroute_sim::AdmitError>>,
    },
    /// The client went away.
    Abort(u64),
    /// Drop the prefix cache; answers whether it was done.
    ResetPrefixCache(tokio::sync::oneshot::Sender<bool>),
}

/// Simulated time: wall time since start, times the speed-up.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: Instant,
    speedup: f64,
}

impl ScaledClock {
    /// A clock starting now.
    pub fn new(speedup: f64) -> ScaledClock {
        ScaledClock {
            origin: Instant::now(),
            speedup: if speedup.is_finite() && speedup > 0.0 {
                speedup
            } else {
                1.0
            },
        }
    }

    /// Engine time now.
    pub fn now(&self) -> Nanos {
        Nanos::from_secs_f64(self.origin.elapsed().as_secs_f64() * self.speedup)
    }

    /// The wall-clock instant of engine time `t`.
    pub fn instant(&self, t: Nanos) -> Instant {
        self.origin + Duration::from_secs_f64(t.as_secs_f64() / self.speedup)
    }

    /// Engine time → wall time since the clock started.
    pub fn wall(&self, t: Nanos) -> Nanos {
        Nanos::from_secs_f64(t.as_secs_f64() / self.speedup)
    }
}

/// State shared between the engine task and the HTTP handlers.
#[derive(Debug)]
pub struct Shared {
    /// vLLM-named metrics. A std mutex: it is never held across an `.await`.
    pub metrics: Mutex<EngineMetrics>,
}

/// Run the engine until every command sender is gone.
pub async fn run(
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    mut publisher: Option<Publisher>,
    clock: ScaledClock,
) {
    let mut streams: HashMap<u64, mpsc::UnboundedSender<TokenEvent>> = HashMap::new();
    loop {
        while let Ok(cmd) = rx.try_recv() {
            apply(&mut engine, cmd, &mut streams, &shared, clock.now());
        }
        publish_gauges(&engine, &shared);
        if engine.has_work() {
            if let Some(end) = engine.start_step(clock.now()) {
                tokio::time::sleep_until(clock.instant(end).into()).await;
                let out = engine.finish_step();
                // A block, not drop(): the guard must not live across the await below.
                {
                    let mut metrics = lock(&shared.metrics);
                    let wall_end = clock.wall(out.end);
                    for &(id, token) in &out.tokens {
                        metrics.on_token(id, wall_end);
                        let gone = streams
                            .get(&id)
                            .is_none_or(|tx| tx.send(TokenEvent::Token(token)).is_err());
                        if gone {
                            streams.remove(&id);
                            metrics.forget(id);
                            engine.abort(id);
                        }
                    }
                    for f in out.finished {
                        metrics.on_finished(&f, |t| clock.wall(t));
                        if let Some(tx) = streams.remove(&f.id) {
                            let _ = tx.send(TokenEvent::Done(f));
                        }
                    }
                    metrics.set_counters(engine.counters());
                }
                let events = engine.drain_kv_events();
                if let Some(p) = publisher.as_mut() {
                    publish(p, events);
                }
                continue;
            }
        }
        match rx.recv().await {
            Some(cmd) => apply(&mut engine, cmd, &mut streams, &shared, clock.now()),
            None => break,
        }
    }
}

pub(crate) fn lock(m: &Mutex<EngineMetrics>) -> std::sync::MutexGuard<'_, EngineMetrics> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn apply(
    engine: &mut Engine,
    cmd: Command,
    streams: &mut HashMap<u64, mpsc::UnboundedSender<TokenEvent>>,
    shared: &Shared,
    now: Nanos,
) {
    match cmd {
        Command::Add {
            request,
            tx,
            admitted,
        } => {
            let id = request.id;
            let result = engine.add(now, request);
            if result.is_ok() {
                streams.insert(id, tx);
            }
            let _ = admitted.send(result);
        }
        Command::Abort(id) => {
            streams.remove(&id);
            if engine.abort(id) {
                lock(&shared.metrics).forget(id);
            }
        }
        Command::ResetPrefixCache(done) => {
            let _ = done.send(engine.reset_prefix_cache());
        }
    }
}

fn publish_gauges(engine: &Engine, shared: &Shared) {
    let (running, waiting) = engine.queue_lengths();
    lock(&shared.metrics).set_gauges(running, waiting, engine.kv_usage());
}

fn publish(p: &mut Publisher, events: Vec<KvEvent>) {
    if events.is_empty() {
        return;
    }
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    p.send(ts, events);
}
