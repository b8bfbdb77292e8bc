//! [`Engine`]: one vLLM instance — V1 scheduler, paged KV cache with prefix
//! caching, and a step-latency model — driven by whoever owns the clock.
//!
//! The owner calls [`Engine::add`] when a request arrives, [`Engine::start_step`]
//! when the engine is idle and has work (it returns when the step ends), and
//! [`Engine::finish_step`] at that time. The discrete-event cluster does this on
//! simulated time; `sim serve` does it on the wall clock.
//!
//! One step, as `vllm/v1/core/sched/scheduler.py` schedules it:
//!
//! 1. **Running requests first**, in order: each gets `min(remaining tokens,
//!    token budget)` new tokens (1 when decoding, a chunk when its prefill is
//!    unfinished). If its KV blocks cannot be allocated, the *last* running
//!    request is preempted (blocks freed, progress reset, put back at the head
//!    of the waiting queue) until they can — or the request itself is the one
//!    preempted.
//! 2. **Then waiting requests** in arrival order, only if nothing was
//!    preempted, while the budget lasts and fewer than `max_num_seqs` run: a
//!    request (new or preempted) first takes its longest cached prefix (full
//!    blocks, at most `num_tokens − 1` tokens so one is always computed), then
//!    as many new tokens as the budget allows; if its blocks cannot be
//!    allocated, admission stops for this step.
//! 3. Full blocks that this step computes are hashed and cached at once
//!    (`BlockStored`). A request whose computed tokens reach its length samples
//!    one token; at `max_tokens` it finishes (`ignore_eos`) and frees its
//!    blocks last-first.
//!
//! The step lasts `LatencyModel::step_secs` of its work.

use crate::kv::BlockPool;
use crate::profile::{Profile, StepWork};
use crate::summary::RejectCause;
use kvroute_core::{mix64, BlockHash, BlockHasher, ChainDigest, HashAlgo, KvEvent, Nanos};
use std::collections::{HashMap, VecDeque};

/// A request as the engine receives it.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    /// Caller's id (unique among live requests of this engine).
    pub id: u64,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Output tokens to generate (`max_tokens` with `ignore_eos`).
    pub max_tokens: u32,
}

/// Why a request was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Prompt plus output exceeds the engine's `max_model_len`.
    #[error("prompt ({prompt} tokens) + max_tokens ({max_tokens}) exceeds max_model_len {max_model_len}")]
    TooLong {
        /// Prompt tokens.
        prompt: u32,
        /// Requested output tokens.
        max_tokens: u32,
        /// The limit.
        max_model_len: u32,
    },
    /// Empty prompt or zero output tokens.
    #[error("a request needs at least one prompt token and max_tokens ≥ 1")]
    Empty,
    /// The id is already in use.
    #[error("request id {0} is already in the engine")]
    DuplicateId(u64),
}

impl AdmitError {
    /// The cause a run's [`Summary`](crate::Summary) counts it under.
    pub fn cause(&self) -> RejectCause {
        match self {
            AdmitError::TooLong { .. } => RejectCause::TooLong,
            AdmitError::Empty => RejectCause::EmptyPrompt,
            AdmitError::DuplicateId(_) => RejectCause::Other,
        }
    }
}

/// A finished request's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Caller's id.
    pub id: u64,
    /// When it was added.
    pub arrival: Nanos,
    /// When it was first scheduled.
    pub first_scheduled: Nanos,
    /// When its first output token was produced.
    pub first_token: Nanos,
    /// When its last output token was produced.
    pub finish: Nanos,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens served from the prefix cache at first admission.
    pub cached_tokens: u32,
    /// Output tokens produced.
    pub output_tokens: u32,
    /// Times it was preempted.
    pub preemptions: u32,
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Step start.
    pub start: Nanos,
    /// Step end (= when its tokens are out).
    pub end: Nanos,
    /// The latency model's inputs for this step.
    pub work: StepWork,
    /// Requests that produced a token this step, with the token.
    pub tokens: Vec<(u64, u32)>,
    /// Requests whose first token this was.
    pub first_tokens: Vec<u64>,
    /// Requests that finished.
    pub finished: Vec<Finished>,
}

/// Monotonic counters, named after vLLM's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineCounters {
    /// `vllm:prefix_cache_queries` (prompt tokens looked up at admission).
    pub prefix_cache_queries: u64,
    /// `vllm:prefix_cache_hits` (of those, found cached).
    pub prefix_cache_hits: u64,
    /// `vllm:prompt_tokens`.
    pub prompt_tokens: u64,
    /// `vllm:generation_tokens`.
    pub generation_tokens: u64,
    /// `vllm:num_preemptions`.
    pub preemptions: u64,
    /// `vllm:request_success`.
    pub requests_finished: u64,
    /// Requests aborted by the caller.
    pub requests_aborted: u64,
    /// Steps run.
    pub steps: u64,
    /// Total step time (busy time).
    pub busy: Nanos,
    /// Prefill tokens computed (including recomputation after preemption).
    pub prefill_tokens_computed: u64,
}

#[derive(Debug)]
struct Req {
    arrival: Nanos,
    /// Prompt followed by generated tokens.
    tokens: Vec<u32>,
    prompt_len: u32,
    max_tokens: u32,
    output_len: u32,
    /// Chain digests of full blocks of `tokens` computed so far.
    digests: Vec<ChainDigest>,
    blocks: Vec<u32>,
    num_computed: u32,
    /// Leading blocks already registered in the prefix cache.
    num_cached_blocks: usize,
    cached_tokens: Option<u32>,
    first_scheduled: Option<Nanos>,
    first_token: Option<Nanos>,
    preemptions: u32,
}

impl Req {
    fn num_tokens(&self) -> u32 {
        self.tokens.len() as u32
    }
}

/// A scheduled step: start, end, work, and (request, new tokens) pairs.
#[derive(Debug)]
struct InStep {
    start: Nanos,
    end: Nanos,
    work: StepWork,
    scheduled: Vec<(u64, u32)>,
}

/// One emulated vLLM instance.
#[derive(Debug)]
pub struct Engine {
    profile: Profile,
    hasher: BlockHasher,
    pool: BlockPool,
    reqs: HashMap<u64, Req>,
    waiting: VecDeque<u64>,
    running: Vec<u64>,
    /// The step in progress.
    in_step: Option<InStep>,
    counters: EngineCounters,
    vocab: u32,
}

impl Engine {
    /// An idle engine with an empty cache. `algo` chooses the block hash
    /// (`Sha256Cbor` to publish vLLM's exact hashes, `Xxh3` for speed).
    pub fn new(profile: Profile, algo: HashAlgo) -> Engine {
        let hasher = BlockHasher::new(algo, profile.limits.block_size as usize)
            .unwrap_or_else(|_| unreachable!("validated profiles have block_size > 0"));
        let pool = BlockPool::new(profile.limits.num_blocks, profile.limits.block_size);
        Engine {
            profile,
            hasher,
            pool,
            reqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            in_step: None,
            counters: EngineCounters::default(),
            vocab: 32_000,
        }
    }

    /// Token ids of generated output are drawn below this (default 32,000).
    pub fn set_vocab(&mut self, vocab: u32) {
        self.vocab = vocab.max(2);
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The block hasher (the router must use the same one).
    pub fn hasher(&self) -> &BlockHasher {
        &self.hasher
    }

    /// How long the front end holds a prompt of `tokens` tokens before the
    /// scheduler sees it (the profile's [`Frontend`](crate::profile::Frontend)).
    pub fn frontend_delay(&self, tokens: u32) -> Nanos {
        Nanos::from_secs_f64(self.profile.frontend.delay_secs(tokens))
    }

    /// Whether `r` would be accepted by [`add`](Engine::add).
    pub fn check(&self, r: &EngineRequest) -> Result<(), AdmitError> {
        let prompt = r.prompt.len() as u32;
        if prompt == 0 || r.max_tokens == 0 {
            return Err(AdmitError::Empty);
        }
        let max_model_len = self.profile.limits.max_model_len;
        if prompt.saturating_add(r.max_tokens) > max_model_len {
            return Err(AdmitError::TooLong {
                prompt,
                max_tokens: r.max_tokens,
                max_model_len,
            });
        }
        if self.reqs.contains_key(&r.id) {
            return Err(AdmitError::DuplicateId(r.id));
        }
        Ok(())
    }

    /// Queue a request.
    pub fn add(&mut self, now: Nanos, r: EngineRequest) -> Result<(), AdmitError> {
        self.check(&r)?;
        let prompt = r.prompt.len() as u32;
        let digests = self.hasher.chain_blocks(None, &r.prompt);
        let mut tokens = r.prompt;
        tokens.reserve(r.max_tokens as usize);
        self.reqs.insert(
            r.id,
            Req {
                arrival: now,
                tokens,
                prompt_len: prompt,
                max_tokens: r.max_tokens,
                output_len: 0,
                digests,
                blocks: Vec::new(),
                num_computed: 0,
                num_cached_blocks: 0,
                cached_tokens: None,
                first_scheduled: None,
                first_token: None,
                preemptions: 0,
            },
        );
        self.waiting.push_back(r.id);
        Ok(())
    }

    /// Drop a request (client gone). Its blocks are freed; its cached blocks
    /// stay cached. Returns whether it was known.
    pub fn abort(&mut self, id: u64) -> bool {
        let Some(req) = self.reqs.remove(&id) else {
            return false;
        };
        self.pool.free(&req.blocks);
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&w| w != id);
        if let Some(step) = &mut self.in_step {
            step.scheduled.retain(|(w, _)| *w != id);
        }
        self.counters.requests_aborted += 1;
        true
    }

    /// Drop every cached block hash (vLLM's `POST /reset_prefix_cache`).
    /// Refused (false) while requests hold blocks, as vLLM refuses it.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.has_work() || self.in_step.is_some() {
            return false;
        }
        self.pool.reset_prefix_cache();
        true
    }

    /// Whether a step is in progress.
    pub fn is_busy(&self) -> bool {
        self.in_step.is_some()
    }

    /// Whether any request is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// `(running, waiting)` request counts, as `/metrics` reports them.
    pub fn queue_lengths(&self) -> (u32, u32) {
        (self.running.len() as u32, self.waiting.len() as u32)
    }

    /// KV-cache usage, `0..=1`.
    pub fn kv_usage(&self) -> f64 {
        self.pool.usage()
    }

    /// Blocks findable in the prefix cache.
    pub fn cached_blocks(&self) -> usize {
        self.pool.num_cached()
    }

    /// Counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Take the KV events recorded since the last call.
    pub fn drain_kv_events(&mut self) -> Vec<KvEvent> {
        self.pool.drain_events()
    }

    /// Hashes of prefix-cached free blocks in eviction order (tests).
    pub fn eviction_order(&self) -> Vec<BlockHash> {
        self.pool.eviction_order()
    }

    /// Schedule a batch at `now`. Returns when the step ends, or `None` if
    /// there is nothing to run (or a step is already in progress).
    pub fn start_step(&mut self, now: Nanos) -> Option<Nanos> {
        if self.in_step.is_some() {
            return None;
        }
        let (work, scheduled) = self.schedule(now);
        if scheduled.is_empty() {
            return None;
        }
        let secs = self.profile.latency.step_secs(&work);
        let end = now.saturating_add(Nanos::from_secs_f64(secs));
        self.in_step = Some(InStep {
            start: now,
            end,
            work,
            scheduled,
        });
        Some(end)
    }

    /// Complete the step in progress (call at the time `start_step` returned).
    pub fn finish_step(&mut self) -> StepOutput {
        let Some(InStep {
            start,
            end,
            work,
            scheduled,
        }) = self.in_step.take()
        else {
            return StepOutput::default();
        };
        self.counters.steps += 1;
        self.counters.busy = self.counters.busy.saturating_add(end.saturating_sub(start));
        self.counters.prefill_tokens_computed += work.prefill_tokens;
        let mut out = StepOutput {
            start,
            end,
            work,
            ..Default::default()
        };
        for (id, n) in scheduled {
            let vocab = self.vocab;
            let Some(req) = self.reqs.get_mut(&id) else {
                continue; // aborted mid-step
            };
            req.num_computed += n;
            if req.num_computed < req.num_tokens() {
                continue; // prefill chunk, no token yet
            }
            let token = (mix64(id ^ (u64::from(req.output_len) << 40)) % u64::from(vocab)) as u32;
            req.tokens.push(token);
            req.output_len += 1;
            self.counters.generation_tokens += 1;
            out.tokens.push((id, token));
            if req.first_token.is_none() {
                req.first_token = Some(end);
                out.first_tokens.push(id);
            }
            // Extend the hash chain when the new token completes a block.
            let bs = self.profile.limits.block_size as usize;
            let full = req.tokens.len() / bs;
            while req.digests.len() < full {
                let i = req.digests.len();
                let parent = i
                    .checked_sub(1)
                    .map(|p| req.digests[p])
                    .unwrap_or(self.hasher.root());
                let d = self
                    .hasher
                    .hash_one(&parent, &req.tokens[i * bs..(i + 1) * bs]);
                req.digests.push(d);
            }
            if req.output_len >= req.max_tokens {
                let req = self.reqs.remove(&id).unwrap_or_else(|| unreachable!());
                self.running.retain(|&r| r != id);
                self.pool.free(&req.blocks);
                self.counters.requests_finished += 1;
                out.finished.push(Finished {
                    id,
                    arrival: req.arrival,
                    first_scheduled: req.first_scheduled.unwrap_or(start),
                    first_token: req.first_token.unwrap_or(end),
                    finish: end,
                    prompt_tokens: req.prompt_len,
                    cached_tokens: req.cached_tokens.unwrap_or(0),
                    output_tokens: req.output_len,
                    preemptions: req.preemptions,
                });
            }
        }
        out
    }

    /// The scheduler: pick this step's requests and token counts.
    fn schedule(&mut self, now: Nanos) -> (StepWork, Vec<(u64, u32)>) {
        let limits = self.profile.limits.clone();
        let mut budget = limits.max_num_batched_tokens;
        let mut work = StepWork::default();
        let mut scheduled: Vec<(u64, u32)> = Vec::new();
        let mut preempted_any = false;

        // 1. Running requests.
        let mut idx = 0;
        while idx < self.running.len() && budget > 0 {
            let id = self.running[idx];
            let (remaining, computed) = {
                let r = &self.reqs[&id];
                (r.num_tokens() - r.num_computed, r.num_computed)
            };
            let n = remaining.min(budget);
            if n == 0 {
                idx += 1;
                continue;
            }
            let mut ok = false;
            loop {
                if self.allocate(id, &[], computed + n) {
                    ok = true;
                    break;
                }
                let Some(victim) = self.running.pop() else {
                    break;
                };
                self.preempt(victim);
                preempted_any = true;
                if victim == id {
                    break;
                }
            }
            if !ok {
                break;
            }
            self.account(id, n, &mut work);
            scheduled.push((id, n));
            budget -= n;
            idx += 1;
        }

        // 2. Waiting requests, unless something was preempted.
        while !preempted_any
            && budget > 0
            && self.running.len() < limits.max_num_seqs
            && !self.waiting.is_empty()
        {
            let id = self.waiting[0];
            let (hit_blocks, num_tokens) = {
                let r = &self.reqs[&id];
                let max_hit = ((r.num_tokens() - 1) / limits.block_size) as usize;
                let hashes: Vec<BlockHash> = r
                    .digests
                    .iter()
                    .take(max_hit)
                    .map(|d| d.block_hash())
                    .collect();
                (self.pool.longest_hit(&hashes, max_hit), r.num_tokens())
            };
            let cached_tokens = hit_blocks.len() as u32 * limits.block_size;
            let mut n = num_tokens - cached_tokens;
            if limits.chunked_prefill {
                n = n.min(budget);
            } else if n > budget {
                break;
            }
            if !self.allocate(id, &hit_blocks, cached_tokens + n) {
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            let r = self.reqs.get_mut(&id).unwrap_or_else(|| unreachable!());
            r.num_computed = cached_tokens;
            r.first_scheduled.get_or_insert(now);
            if r.cached_tokens.is_none() {
                r.cached_tokens = Some(cached_tokens);
                self.counters.prompt_tokens += u64::from(r.prompt_len);
            }
            self.counters.prefix_cache_queries += u64::from(num_tokens);
            self.counters.prefix_cache_hits += u64::from(cached_tokens);
            self.account(id, n, &mut work);
            scheduled.push((id, n));
            budget -= n;
        }
        (work, scheduled)
    }

    /// Give request `id` blocks for `total_tokens` tokens, first taking the
    /// prefix-hit blocks `hit`. Caches the full blocks those tokens complete.
    fn allocate(&mut self, id: u64, hit: &[u32], total_tokens: u32) -> bool {
        let bs = self.profile.limits.block_size;
        let have = self.reqs[&id].blocks.len() + hit.len();
        let need = total_tokens.div_ceil(bs) as usize;
        let new = need.saturating_sub(have);
        if new + self.pool.count_free_among(hit) > self.pool.num_free() {
            return false;
        }
        self.pool.touch(hit);
        let Some(fresh) = self.pool.allocate(new) else {
            return false;
        };
        let req = self.reqs.get_mut(&id).unwrap_or_else(|| unreachable!());
        if req.blocks.is_empty() {
            req.num_cached_blocks = hit.len();
        }
        req.blocks.extend_from_slice(hit);
        req.blocks.extend(fresh);
        // Blocks full after this step, with known token ids, become cached now.
        let full = ((total_tokens.min(req.num_tokens())) / bs) as usize;
        let full = full.min(req.digests.len()).min(req.blocks.len());
        if full > req.num_cached_blocks {
            let from = req.num_cached_blocks;
            let hashes: Vec<BlockHash> = req.digests[from..full]
                .iter()
                .map(|d| d.block_hash())
                .collect();
            let parent = from.checked_sub(1).map(|p| req.digests[p].block_hash());
            let toks = &req.tokens[from * bs as usize..full * bs as usize];
            self.pool
                .cache(&req.blocks[from..full], &hashes, parent, toks);
            req.num_cached_blocks = full;
        }
        true
    }

    fn preempt(&mut self, id: u64) {
        let Some(req) = self.reqs.get_mut(&id) else {
            return;
        };
        let blocks = std::mem::take(&mut req.blocks);
        req.num_computed = 0;
        req.num_cached_blocks = 0;
        req.preemptions += 1;
        self.pool.free(&blocks);
        self.waiting.push_front(id);
        self.counters.preemptions += 1;
    }

    fn account(&self, id: u64, n: u32, work: &mut StepWork) {
        let r = &self.reqs[&id];
        if n == 1 && r.output_len > 0 && r.num_computed + 1 == r.num_tokens() {
            work.add_decode(r.num_computed + 1);
        } else {
            work.add_prefill(n, r.num_computed);
            if r.num_computed + n == r.num_tokens() {
                work.add_sampled();
            }
        }
    }
}
