//! [`Dispatcher`]: one routing decision, end to end, and the accounting that
//! follows it until the request ends.
//!
//! ```text
//! route(req) ─▶ View{eligible, loads, directory overlap (lazy, once)} ─▶ Policy::pick
//!            ─▶ account: in-flight += 1, pending prefill += uncached tokens,
//!                        directory.record_routed (predicted mode, policies that
//!                        read the directory), policy.on_routed
//!            ─▶ Routed { decision, guard }
//! guard.first_token()  ─▶ pending prefill −= uncached tokens; TTFT noted (dispatcher's clock)
//! guard.finish(outcome) or drop(guard) ─▶ in-flight −= 1, policy.on_completed{.., ttft}
//! explain(req)         ─▶ the same view, Policy::explain (nothing accounted, nothing changes)
//! ```
//!
//! The guard is the only way load goes down, and dropping it is enough: a
//! stream cut by the client, a backend error, a timeout, a panic unwinding
//! through a task all end the request exactly once (tower's
//! `PendingRequests` pattern). The live router and the simulator both route
//! through this type, so their accounting cannot drift apart.

use crate::instance::{Health, Instance, InstanceState, InstanceTable};
use kvroute_core::EngineGauges;
use kvroute_core::{
    BlockHash, CandidateScore, Clock, ClusterView, Completion, Decision, InstanceId, InstanceLoad,
    Nanos, Outcome, Overlap, PickError, Policy, RouteRequest,
};
use kvroute_directory::{Directory, Mode};
use parking_lot::RwLock;
use std::cell::OnceCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Routes requests with one policy over one instance table and directory.
///
/// The table is the one registry of instances: their state, load and
/// counters, plus an `X` per instance that the owner keeps there (the live
/// router's addresses and feed statistics; nothing in the simulator).
#[derive(Debug)]
pub struct Dispatcher<X = ()> {
    policy: Arc<dyn Policy>,
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    table: RwLock<InstanceTable<X>>,
}

/// A routing decision and the guard that accounts for the request until it ends.
#[derive(Debug)]
pub struct Routed<X = ()> {
    /// What the policy decided (with `cached_blocks` filled from the directory).
    pub decision: Decision,
    /// Ends the request's accounting when finished or dropped.
    pub guard: InflightGuard<X>,
}

/// What a state change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: InstanceState,
    /// The state after.
    pub to: InstanceState,
}

impl Transition {
    /// Whether the state changed.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

impl Dispatcher<()> {
    /// A dispatcher with no instances yet.
    pub fn new(policy: Box<dyn Policy>, directory: Arc<Directory>, clock: Arc<dyn Clock>) -> Self {
        Dispatcher::with_ext(policy, directory, clock)
    }

    /// Add an instance (healthy) and return its id. Ids are never reused.
    pub fn add_instance(&self, name: impl Into<String>) -> InstanceId {
        self.add(name, Health::OK, |_| ())
    }
}

impl<X> Dispatcher<X> {
    /// A dispatcher whose instances carry an `X` each.
    pub fn with_ext(
        policy: Box<dyn Policy>,
        directory: Arc<Directory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Dispatcher {
            policy: Arc::from(policy),
            directory,
            clock,
            table: RwLock::new(InstanceTable::default()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Add an instance with `health` and an `X` made from its id; ids are
    /// never reused.
    pub fn add(
        &self,
        name: impl Into<String>,
        health: Health,
        ext: impl FnOnce(InstanceId) -> X,
    ) -> InstanceId {
        let mut t = self.table.write();
        let id = InstanceId(t.all.len() as u32);
        t.all
            .push(Arc::new(Instance::new(id, name.into(), health, ext(id))));
        t.refresh_eligible();
        id
    }

    /// Apply `f` to `id` under the table lock and refresh who is eligible.
    /// `None` for an unknown or removed instance (removal is final).
    fn change(&self, id: InstanceId, f: impl FnOnce(&Instance<X>)) -> Option<Transition> {
        let mut t = self.table.write();
        let inst = t.get(id)?;
        if inst.is_removed() {
            return None;
        }
        let from = inst.state();
        f(inst);
        let to = inst.state();
        t.refresh_eligible();
        Some(Transition { from, to })
    }

    /// Drain `id` (no new requests; in-flight ones finish) or put it back.
    pub fn set_draining(&self, id: InstanceId, draining: bool) -> Option<Transition> {
        use crate::instance::{ACTIVE, DRAINING};
        self.change(id, |i| {
            i.set_admin(if draining { DRAINING } else { ACTIVE })
        })
    }

    /// Remove `id` for good; its directory entries are cleared.
    pub fn remove(&self, id: InstanceId) -> Option<Transition> {
        let t = self.change(id, |i| i.set_admin(crate::instance::REMOVED))?;
        self.directory.clear(self.clock.now(), id);
        Some(t)
    }

    /// Set or clear a [`Health`] reason (`Health::FAILING`, `Health::EJECTED`).
    pub fn set_health(&self, id: InstanceId, reason: u8, on: bool) -> Option<Transition> {
        self.change(id, |i| {
            i.set_health_bits(reason, on);
        })
    }

    /// Change an instance's state directly (tests, simulations): `Healthy`
    /// clears every health reason, `Unhealthy` sets `FAILING`.
    pub fn set_state(&self, id: InstanceId, state: InstanceState) -> bool {
        let t = match state {
            InstanceState::Removed => self.remove(id),
            InstanceState::Draining => self.set_draining(id, true),
            InstanceState::Unhealthy => self.change(id, |i| {
                i.set_admin(crate::instance::ACTIVE);
                i.set_health_bits(Health::FAILING, true);
            }),
            InstanceState::Healthy => self.change(id, |i| {
                i.set_admin(crate::instance::ACTIVE);
                i.set_health_bits(Health::FAILING | Health::EJECTED, false);
            }),
        };
        t.is_some()
    }

    /// Record the engine's gauges for `id` (from a metrics poll).
    pub fn update_gauges(&self, id: InstanceId, gauges: EngineGauges) {
        if let Some(i) = self.table.read().get(id) {
            i.set_gauges(gauges);
        }
    }

    /// Run `f` over the instance table (metrics, admin API).
    pub fn with_table<R>(&self, f: impl FnOnce(&InstanceTable<X>) -> R) -> R {
        f(&self.table.read())
    }

    /// An instance by id.
    pub fn instance(&self, id: InstanceId) -> Option<Arc<Instance<X>>> {
        self.table.read().get(id).cloned()
    }

    /// Every instance ever added (removed ones included), by id.
    pub fn instances(&self) -> Vec<Arc<Instance<X>>> {
        self.table.read().all.clone()
    }

    /// Route `req` among all eligible instances.
    pub fn route(&self, req: &RouteRequest) -> Result<Routed<X>, PickError> {
        self.route_excluding(req, &[])
    }

    /// Route `req`, never to one of `exclude` (instances that already failed it).
    pub fn route_excluding(
        &self,
        req: &RouteRequest,
        exclude: &[InstanceId],
    ) -> Result<Routed<X>, PickError> {
        let now = self.clock.now();
        let table = self.table.read();
        let filtered: Vec<InstanceId>;
        let eligible: &[InstanceId] = if exclude.is_empty() {
            &table.eligible
        } else {
            filtered = table
                .eligible
                .iter()
                .copied()
                .filter(|i| !exclude.contains(i))
                .collect();
            &filtered
        };
        let view = View {
            table: &table,
            eligible,
            directory: &self.directory,
            now,
            prompt: &req.block_hashes,
            prompt_overlap: OnceCell::new(),
        };
        let mut decision = self.policy.pick(req, &view)?;
        let inst = table
            .get(decision.instance)
            .filter(|_| eligible.contains(&decision.instance))
            .cloned()
            .ok_or(PickError::NoInstance)?;
        let uses_directory = self.policy.uses_directory();
        if uses_directory && decision.cached_blocks == 0 && !req.block_hashes.is_empty() {
            decision.cached_blocks = view.prompt_overlap().get(decision.instance);
        }
        drop(view);
        drop(table);

        let cached_tokens = req.blocks_to_tokens(decision.cached_blocks);
        let prefill = u64::from(req.prompt_tokens - cached_tokens);
        inst.begin(prefill);
        let c = &inst.counters;
        c.routed.fetch_add(1, Ordering::Relaxed);
        c.prompt_tokens
            .fetch_add(u64::from(req.prompt_tokens), Ordering::Relaxed);
        c.predicted_cached_tokens
            .fetch_add(u64::from(cached_tokens), Ordering::Relaxed);
        let mut predicted = Vec::new();
        if uses_directory {
            self.directory.record_routed(
                now,
                decision.instance,
                &req.block_hashes,
                Some(&mut predicted),
            );
        }
        self.policy.on_routed(req, &decision);
        Ok(Routed {
            decision,
            guard: InflightGuard {
                policy: Arc::clone(&self.policy),
                directory: Arc::clone(&self.directory),
                instance: inst,
                request: req.id,
                pending_prefill: prefill,
                predicted,
                clock: Arc::clone(&self.clock),
                routed_at: now,
                ttft: None,
                ended: false,
            },
        })
    }

    /// The candidates the policy would weigh for `req` among the eligible
    /// instances, with their matched blocks, terms and scores
    /// ([`Policy::explain`]). Read-only: nothing is accounted or predicted,
    /// and later decisions are the same as if it had not been called.
    pub fn explain(&self, req: &RouteRequest) -> Vec<CandidateScore> {
        let now = self.clock.now();
        let table = self.table.read();
        let view = View {
            table: &table,
            eligible: &table.eligible,
            directory: &self.directory,
            now,
            prompt: &req.block_hashes,
            prompt_overlap: OnceCell::new(),
        };
        self.policy.explain(req, &view)
    }

    /// Set how `id`'s directory entries are fed.
    pub fn set_directory_mode(&self, id: InstanceId, mode: Mode) {
        self.directory.set_mode(id, mode);
    }

    /// The current time.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }
}

/// The request's share of an instance's load, released exactly once.
#[derive(Debug)]
pub struct InflightGuard<X = ()> {
    policy: Arc<dyn Policy>,
    directory: Arc<Directory>,
    instance: Arc<Instance<X>>,
    request: kvroute_core::RequestId,
    pending_prefill: u64,
    /// Blocks this routing added to the instance's predicted entries; taken
    /// back if the request fails before the engine produced anything (the
    /// engine never cached them), forgotten at the first token.
    predicted: Vec<BlockHash>,
    clock: Arc<dyn Clock>,
    routed_at: Nanos,
    ttft: Option<Nanos>,
    ended: bool,
}

impl<X> InflightGuard<X> {
    /// The instance the request went to.
    pub fn instance(&self) -> InstanceId {
        self.instance.id()
    }

    /// The instance's entry.
    pub fn entry(&self) -> &Arc<Instance<X>> {
        &self.instance
    }

    /// The first token arrived: the prompt's prefill is no longer pending
    /// (and its blocks are in the engine's cache). The first call notes the
    /// time to first token, reported to the policy when the request ends.
    pub fn first_token(&mut self) {
        if self.ttft.is_none() && !self.ended {
            self.ttft = Some(self.clock.now().saturating_sub(self.routed_at));
        }
        self.predicted = Vec::new();
        self.release_prefill();
    }

    /// Time to first token, once the first token has arrived.
    pub fn ttft(&self) -> Option<Nanos> {
        self.ttft
    }

    fn release_prefill(&mut self) {
        let p = std::mem::take(&mut self.pending_prefill);
        if p > 0 {
            self.instance.prefill_done(p);
        }
    }

    /// End the request with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        if outcome == Outcome::Failed && !self.predicted.is_empty() {
            // The engine never produced a token: it did not cache the prompt.
            self.directory.retract(self.instance.id(), &self.predicted);
        }
        self.predicted = Vec::new();
        self.release_prefill();
        self.instance.end();
        let c = &self.instance.counters;
        match outcome {
            Outcome::Finished => &c.finished,
            Outcome::Failed => &c.failed,
            Outcome::Cancelled => &c.cancelled,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.policy.on_completed(&Completion {
            request: self.request,
            instance: self.instance.id(),
            outcome,
            ttft: self.ttft,
        });
    }
}

impl<X> Drop for InflightGuard<X> {
    fn drop(&mut self) {
        self.end(Outcome::Cancelled);
    }
}

/// The [`ClusterView`] a policy sees during one decision.
struct View<'a, X> {
    table: &'a InstanceTable<X>,
    eligible: &'a [InstanceId],
    directory: &'a Directory,
    now: Nanos,
    prompt: &'a [BlockHash],
    prompt_overlap: OnceCell<Overlap>,
}

impl<X> View<'_, X> {
    fn prompt_overlap(&self) -> &Overlap {
        self.prompt_overlap
            .get_or_init(|| self.directory.overlap(self.now, self.prompt))
    }
}

impl<X> ClusterView for View<'_, X> {
    fn instances(&self) -> &[InstanceId] {
        self.eligible
    }

    fn load(&self, id: InstanceId) -> InstanceLoad {
        self.table.get(id).map(|i| i.load()).unwrap_or_default()
    }

    fn overlap(&self, hashes: &[BlockHash]) -> Overlap {
        if std::ptr::eq(hashes, self.prompt) {
            self.prompt_overlap().clone()
        } else {
            self.directory.overlap(self.now, hashes)
        }
    }

    fn cached_blocks(&self, id: InstanceId) -> u64 {
        self.directory.instance_blocks(id)
    }

    fn now(&self) -> Nanos {
        self.now
    }
}
