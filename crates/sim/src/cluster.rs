//! [`Cluster`]: N simulated instances on one simulated clock, with the router
//! in the loop.
//!
//! The router here *is* the live router's routing code: a
//! [`Dispatcher`](kvroute_routing::Dispatcher) with the configured policy and
//! [`Directory`](kvroute_directory::Directory), on a
//! [`ManualClock`](kvroute_core::ManualClock) that the event loop advances.
//! What the router may know is limited the way it is in production:
//!
//! * **load**: the engines' gauges (`running`, `waiting`, KV usage) are
//!   copied into the dispatcher every `metrics_interval` (a `/metrics`
//!   poll), or after every change when the interval is 0; the router's own
//!   in-flight counts are always current;
//! * **cache**: in `exact` mode the engines' KV events feed the directory,
//!   in `predicted` mode routing does; either way the directory shows them
//!   with its `Freshness` (e.g. published every T seconds).
//!
//! The policy is built from the configuration with the profile's timings
//! filled in where the configuration leaves them unset
//! ([`engine_estimates`]): DualMap's and Preble's latency estimates then
//! use the simulated engine's prefill and decode speeds.
//!
//! Events, in time order (ties in the order they were scheduled):
//! session start → turn arrival (hash, route, engine add, maybe start a step)
//! → step end (tokens, finishes, KV events → directory, next turn after the
//! think time, next step) … and a metrics poll every interval.

use crate::engine::{Engine, EngineRequest, Finished};
use crate::profile::{Profile, StepWork};
use crate::summary::{RejectCause, RequestRecord, Summary};
use kvroute_core::{
    BlockHasher, HashAlgo, ManualClock, Nanos, Outcome, PickError, RequestId, RouteRequest,
    SessionId, Slo,
};
use kvroute_directory::{Directory, Freshness, Mode};
use kvroute_policy::{EngineEstimates, PolicyConfig};
use kvroute_routing::{Dispatcher, EngineGauges, InflightGuard};
use kvroute_workload::Session;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Driver {
    /// Each session starts at its own `arrival` time; its later turns follow
    /// its answers after the think time.
    #[default]
    Open,
    /// `concurrency` sessions at a time; a new one starts when one ends.
    Closed {
        /// Sessions in flight.
        concurrency: usize,
    },
}

/// Everything a cluster run needs besides its workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Number of instances.
    pub instances: usize,
    /// Engine profile (all instances alike).
    pub profile: Profile,
    /// Routing policy.
    pub policy: PolicyConfig,
    /// Where directory entries come from.
    pub directory_mode: Mode,
    /// How fresh the directory is.
    pub directory_freshness: Freshness,
    /// Engine gauges reach the router every this often (0: always current).
    pub metrics_interval: Nanos,
    /// Block hash used by engines and router.
    pub hash_algo: HashAlgo,
    /// Arrival driver.
    pub driver: Driver,
    /// Requests arriving before this are run but not summarised.
    pub warmup: Nanos,
    /// Stop admitting new sessions after this simulated time (None: run out the workload).
    pub horizon: Option<Nanos>,
    /// SLO for goodput.
    pub slo: Slo,
}

impl ClusterConfig {
    /// Defaults: `n` instances of `profile`, the given policy, exact directory,
    /// live freshness and metrics, open loop, no warm-up.
    pub fn new(instances: usize, profile: Profile, policy: PolicyConfig) -> ClusterConfig {
        ClusterConfig {
            instances,
            profile,
            policy,
            directory_mode: Mode::Exact,
            directory_freshness: Freshness::Live,
            metrics_interval: Nanos::ZERO,
            hash_algo: HashAlgo::Xxh3,
            driver: Driver::Open,
            warmup: Nanos::ZERO,
            horizon: None,
            slo: Slo::default(),
        }
    }
}

/// The engine timings policies estimate latency with, from a profile: the
/// time per token of a full prefill chunk (`max_num_batched_tokens` new
/// tokens, no cached context) and the time of a decode step of one request
/// with 1,000 tokens of context (TPOT).
pub fn engine_estimates(profile: &Profile) -> EngineEstimates {
    let chunk = profile.limits.max_num_batched_tokens.max(1);
    let mut prefill = StepWork::default();
    prefill.add_prefill(chunk, 0);
    let mut decode = StepWork::default();
    decode.add_decode(1000);
    EngineEstimates {
        prefill_secs_per_token: profile.latency.step_secs(&prefill) / f64::from(chunk),
        tpot_secs: profile.latency.step_secs(&decode),
    }
}

/// A run that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot work.
    #[error("invalid simulation: {0}")]
    Config(String),
    /// The workload failed to produce a session.
    #[error("workload: {0}")]
    Workload(String),
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Every request, in completion order.
    pub records: Vec<RequestRecord>,
    /// Summary over the requests that arrived after the warm-up.
    pub summary: Summary,
    /// Per-instance busy time, seconds.
    pub busy_secs: Vec<f64>,
    /// Simulated time at the end, seconds.
    pub end_secs: f64,
    /// Engine-reported prefix cache hit rate over the whole run (tokens).
    pub engine_hit_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    SessionStart,
    Turn {
        slot: usize,
    },
    /// A routed request clears the engine's front end.
    EngineAdd {
        instance: usize,
        id: u64,
    },
    StepEnd {
        instance: usize,
    },
    Poll,
}

struct Live {
    session: Session,
    next_turn: usize,
}

struct InFlight {
    slot: usize,
    turn: u32,
    instance: usize,
    arrival: Nanos,
    predicted_cached_tokens: u32,
    guard: InflightGuard,
}

/// The event loop's state.
pub struct Cluster {
    config: ClusterConfig,
    clock: Arc<ManualClock>,
    dispatcher: Dispatcher,
    engines: Vec<Engine>,
    hasher: BlockHasher,
    queue: BinaryHeap<Reverse<(Nanos, u64, Event)>>,
    seq: u64,
    sessions: Box<dyn Iterator<Item = Result<Session, String>>>,
    pending: Option<Session>,
    slots: Vec<Option<Live>>,
    free_slots: Vec<usize>,
    inflight: HashMap<u64, InFlight>,
    /// Requests in an engine's front end, by id.
    frontend: HashMap<u64, EngineRequest>,
    next_request: u64,
    records: Vec<RequestRecord>,
    exhausted: bool,
    /// A workload error met inside an event handler.
    error: Option<SimError>,
}

impl Cluster {
    /// A cluster ready to run `sessions` (in arrival order for the open driver).
    pub fn new<I, E>(config: ClusterConfig, sessions: I) -> Result<Cluster, SimError>
    where
        I: IntoIterator<Item = Result<Session, E>>,
        I::IntoIter: 'static,
        E: std::fmt::Display,
    {
        if config.instances == 0 {
            return Err(SimError::Config("at least one instance is needed".into()));
        }
        if let Driver::Closed { concurrency: 0 } = config.driver {
            return Err(SimError::Config("closed loop needs concurrency ≥ 1".into()));
        }
        config
            .profile
            .validate()
            .map_err(|e| SimError::Config(e.to_string()))?;
        let clock = Arc::new(ManualClock::new(Nanos::ZERO));
        let directory = Arc::new(Directory::new(config.directory_freshness));
        let policy = config
            .policy
            .clone()
            .with_engine_estimates(&engine_estimates(&config.profile))
            .build();
        let dispatcher = Dispatcher::new(policy, directory, clock.clone());
        let mut engines = Vec::with_capacity(config.instances);
        for i in 0..config.instances {
            let id = dispatcher.add_instance(format!("sim-{i}"));
            dispatcher.set_directory_mode(id, config.directory_mode);
            dispatcher
                .directory()
                .set_capacity(id, config.profile.limits.num_blocks);
            engines.push(Engine::new(config.profile.clone(), config.hash_algo));
        }
        let hasher = engines[0].hasher().clone();
        let sessions = Box::new(sessions.into_iter().map(|r| r.map_err(|e| e.to_string())));
        Ok(Cluster {
            config,
            clock,
            dispatcher,
            engines,
            hasher,
            queue: BinaryHeap::new(),
            seq: 0,
            sessions,
            pending: None,
            slots: Vec::new(),
            free_slots: Vec::new(),
            inflight: HashMap::new(),
            frontend: HashMap::new(),
            next_request: 0,
            records: Vec::new(),
            exhausted: false,
            error: None,
        })
    }

    /// The dispatcher (to inspect counters after a run).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Run to completion.
    pub fn run(mut self) -> Result<RunResult, SimError> {
        match self.config.driver {
            Driver::Open => self.schedule_next_open()?,
            Driver::Closed { concurrency } => {
                for _ in 0..concurrency {
                    if !self.start_next_session(Nanos::ZERO)? {
                        break;
                    }
                }
            }
        }
        if self.config.metrics_interval > Nanos::ZERO {
            self.push(self.config.metrics_interval, Event::Poll);
        }
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if let Some(e) = self.error.take() {
                return Err(e);
            }
            self.clock.set(t);
            match ev {
                Event::SessionStart => {
                    self.start_pending(t);
                    self.schedule_next_open()?;
                }
                Event::Turn { slot } => self.turn_arrives(t, slot),
                Event::EngineAdd { instance, id } => {
                    if let Some(r) = self.frontend.remove(&id) {
                        // Checked at routing time; the id is unique.
                        let _ = self.engines[instance].add(t, r);
                        self.kick(instance, t);
                    }
                }
                Event::StepEnd { instance } => self.step_ends(t, instance)?,
                Event::Poll => {
                    for i in 0..self.engines.len() {
                        self.publish_gauges(i, t);
                    }
                    // Keep polling while anything else is still to happen.
                    if !self.queue.is_empty() {
                        self.push(t.saturating_add(self.config.metrics_interval), Event::Poll);
                    }
                }
            }
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.finish()),
        }
    }

    fn push(&mut self, t: Nanos, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn next_session(&mut self) -> Result<Option<Session>, SimError> {
        if self.exhausted {
            return Ok(None);
        }
        match self.sessions.next() {
            Some(Ok(s)) => Ok(Some(s)),
            Some(Err(e)) => Err(SimError::Workload(e)),
            None => {
                self.exhausted = true;
                Ok(None)
            }
        }
    }

    fn past_horizon(&self, t: Nanos) -> bool {
        self.config.horizon.is_some_and(|h| t > h)
    }

    fn schedule_next_open(&mut self) -> Result<(), SimError> {
        if let Some(s) = self.next_session()? {
            if self.past_horizon(s.arrival) {
                self.exhausted = true;
                return Ok(());
            }
            let t = s.arrival.max(self.clock_now());
            self.pending = Some(s);
            self.push(t, Event::SessionStart);
        }
        Ok(())
    }

    fn clock_now(&self) -> Nanos {
        use kvroute_core::Clock;
        self.clock.now()
    }

    fn start_pending(&mut self, t: Nanos) {
        if let Some(s) = self.pending.take() {
            self.start_session(t, s);
        }
    }

    /// Closed loop: start the next session now. Returns false when none is left.
    fn start_next_session(&mut self, t: Nanos) -> Result<bool, SimError> {
        if self.past_horizon(t) {
            return Ok(false);
        }
        match self.next_session()? {
            Some(s) => {
                self.start_session(t, s);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn start_session(&mut self, t: Nanos, session: Session) {
        if session.turns.is_empty() {
            return;
        }
        let live = Live {
            session,
            next_turn: 0,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(live);
                s
            }
            None => {
                self.slots.push(Some(live));
                self.slots.len() - 1
            }
        };
        self.push(t, Event::Turn { slot });
    }

    fn turn_arrives(&mut self, t: Nanos, slot: usize) {
        let Some(live) = self.slots[slot].as_mut() else {
            return;
        };
        let k = live.next_turn;
        live.next_turn += 1;
        let session_id = live.session.id;
        let turn = &live.session.turns[k];
        let tokens = turn.prompt_tokens.clone();
        let max_tokens = turn.max_tokens.max(1);
        let id = self.next_request;
        self.next_request += 1;
        let req = RouteRequest {
            id: RequestId(id),
            session: Some(SessionId(session_id)),
            block_hashes: self.hasher.hash_blocks(&tokens),
            block_size: self.hasher.block_size() as u32,
            prompt_tokens: tokens.len() as u32,
            expected_output_tokens: Some(max_tokens),
        };
        let routed = match self.dispatcher.route(&req) {
            Ok(r) => r,
            Err(e) => {
                let cause = match e {
                    PickError::NoInstance => RejectCause::NoInstance,
                };
                let why = (cause, e.to_string());
                self.fail(t, slot, k as u32, id, &req, u32::MAX, why);
                return;
            }
        };
        let instance = routed.decision.instance.index();
        let predicted = req.blocks_to_tokens(routed.decision.cached_blocks);
        let engine_req = EngineRequest {
            id,
            prompt: tokens,
            max_tokens,
        };
        if let Err(e) = self.engines[instance].check(&engine_req) {
            routed.guard.finish(Outcome::Failed);
            let why = (e.cause(), e.to_string());
            self.fail(t, slot, k as u32, id, &req, instance as u32, why);
            return;
        }
        let delay = self.engines[instance].frontend_delay(req.prompt_tokens);
        self.inflight.insert(
            id,
            InFlight {
                slot,
                turn: k as u32,
                instance,
                arrival: t,
                predicted_cached_tokens: predicted,
                guard: routed.guard,
            },
        );
        if delay > Nanos::ZERO {
            self.frontend.insert(id, engine_req);
            self.push(t.saturating_add(delay), Event::EngineAdd { instance, id });
        } else {
            // Checked just above; the id is unique.
            let _ = self.engines[instance].add(t, engine_req);
            self.kick(instance, t);
        }
    }

    /// Record a request refused before it ran, and end its session.
    #[allow(clippy::too_many_arguments)]
    fn fail(
        &mut self,
        t: Nanos,
        slot: usize,
        turn: u32,
        id: u64,
        req: &RouteRequest,
        instance: u32,
        (cause, error): (RejectCause, String),
    ) {
        let (session, dropped_turns) = self.slots[slot].as_ref().map_or((0, 0), |l| {
            let left = l.session.turns.len().saturating_sub(l.next_turn);
            (l.session.id, u32::try_from(left).unwrap_or(u32::MAX))
        });
        self.records.push(RequestRecord {
            id,
            session,
            turn,
            instance,
            arrival: t.as_secs_f64(),
            first_token: f64::NAN,
            finish: f64::NAN,
            prompt_tokens: req.prompt_tokens,
            cached_tokens: 0,
            predicted_cached_tokens: 0,
            output_tokens: 0,
            queue_time: f64::NAN,
            preemptions: 0,
            error,
            rejected: Some(cause),
            dropped_turns,
        });
        // The session cannot go on (later turns contain this one).
        self.end_session(t, slot);
    }

    fn end_session(&mut self, t: Nanos, slot: usize) {
        self.slots[slot] = None;
        self.free_slots.push(slot);
        if let Driver::Closed { .. } = self.config.driver {
            if let Err(e) = self.start_next_session(t) {
                // Reported when the event loop comes back up.
                self.error.get_or_insert(e);
            }
        }
    }

    /// Start a step on an idle instance with work.
    fn kick(&mut self, instance: usize, t: Nanos) {
        if let Some(end) = self.engines[instance].start_step(t) {
            self.push(end, Event::StepEnd { instance });
        }
        if self.config.metrics_interval == Nanos::ZERO {
            self.publish_gauges(instance, t);
        }
    }

    fn step_ends(&mut self, t: Nanos, instance: usize) -> Result<(), SimError> {
        let out = self.engines[instance].finish_step();
        for id in &out.first_tokens {
            if let Some(f) = self.inflight.get_mut(id) {
                f.guard.first_token();
            }
        }
        for fin in out.finished {
            self.complete(t, fin);
        }
        let events = self.engines[instance].drain_kv_events();
        if self.config.directory_mode == Mode::Exact {
            let id = kvroute_core::InstanceId(instance as u32);
            for ev in events {
                self.dispatcher.directory().apply(t, id, ev);
            }
        }
        self.kick(instance, t);
        Ok(())
    }

    fn complete(&mut self, t: Nanos, fin: Finished) {
        let Some(f) = self.inflight.remove(&fin.id) else {
            return;
        };
        f.guard.finish(Outcome::Finished);
        let session = self.slots[f.slot].as_ref().map_or(0, |l| l.session.id);
        self.records.push(RequestRecord {
            id: fin.id,
            session,
            turn: f.turn,
            instance: f.instance as u32,
            arrival: f.arrival.as_secs_f64(),
            first_token: fin.first_token.as_secs_f64(),
            finish: fin.finish.as_secs_f64(),
            prompt_tokens: fin.prompt_tokens,
            cached_tokens: fin.cached_tokens,
            predicted_cached_tokens: f.predicted_cached_tokens,
            output_tokens: fin.output_tokens,
            queue_time: fin
                .first_scheduled
                .saturating_sub(fin.arrival)
                .as_secs_f64(),
            preemptions: fin.preemptions,
            error: String::new(),
            rejected: None,
            dropped_turns: 0,
        });
        let more = self.slots[f.slot]
            .as_ref()
            .map(|l| (l.next_turn < l.session.turns.len(), l.session.think_time));
        match more {
            Some((true, think)) => self.push(t.saturating_add(think), Event::Turn { slot: f.slot }),
            Some((false, _)) => self.end_session(t, f.slot),
            None => {}
        }
    }

    fn publish_gauges(&mut self, instance: usize, t: Nanos) {
        let e = &self.engines[instance];
        let (running, waiting) = e.queue_lengths();
        self.dispatcher.update_gauges(
            kvroute_core::InstanceId(instance as u32),
            EngineGauges {
                running,
                waiting,
                kv_usage: e.kv_usage(),
                observed_at: t,
            },
        );
    }

    fn finish(self) -> RunResult {
        let end = self.clock_now().as_secs_f64();
        let warm = self.config.warmup.as_secs_f64();
        let measured: Vec<RequestRecord> = self
            .records
            .iter()
            // Failed-before-arrival records have NaN arrivals: keep them.
            .filter(|r| r.arrival.is_nan() || r.arrival >= warm)
            .cloned()
            .collect();
        let busy: Vec<f64> = self
            .engines
            .iter()
            .map(|e| e.counters().busy.as_secs_f64())
            .collect();
        let first = measured
            .iter()
            .map(|r| r.arrival)
            .fold(f64::INFINITY, f64::min);
        let last = measured
            .iter()
            .map(|r| {
                if r.finish.is_finite() {
                    r.finish
                } else {
                    r.arrival
                }
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let window = if first.is_finite() && last > first {
            last - first
        } else {
            0.0
        };
        let mut summary = Summary::of(&measured, &busy, window, self.config.slo);
        summary.preemptions = self.engines.iter().map(|e| e.counters().preemptions).sum();
        summary.rejected.max_model_len = self.config.profile.limits.max_model_len;
        let (q, h) = self.engines.iter().fold((0u64, 0u64), |(q, h), e| {
            (
                q + e.counters().prefix_cache_queries,
                h + e.counters().prefix_cache_hits,
            )
        });
        RunResult {
            records: self.records,
            summary,
            busy_secs: busy,
            end_secs: end,
            engine_hit_rate: if q == 0 { 0.0 } else { h as f64 / q as f64 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_the_profile() {
        let mut p = Profile::load("vllm-cpu-tiny").unwrap();
        let e = engine_estimates(&p);
        let l = &p.latency;
        // A full chunk: the per-token cost plus its share of the step and
        // of the chunk's causal attention.
        assert!(e.prefill_secs_per_token > l.prefill_per_token);
        assert!(e.prefill_secs_per_token < 4.0 * l.prefill_per_token);
        assert!(e.tpot_secs >= l.step_overhead + l.decode_per_seq);
        // Linear in the per-token cost.
        let ppt = l.prefill_per_token;
        p.latency.prefill_per_token *= 10.0;
        let slower = engine_estimates(&p).prefill_secs_per_token;
        assert!((slower - e.prefill_secs_per_token - 9.0 * ppt).abs() < 1e-12);
        // The cluster hands them to policies that left them unset.
        let c = PolicyConfig::parse("dualmap")
            .unwrap()
            .with_engine_estimates(&e);
        let PolicyConfig::DualMap(d) = c else {
            panic!("{c:?}")
        };
        assert_eq!(d.prefill_secs_per_token, Some(e.prefill_secs_per_token));
    }
}
