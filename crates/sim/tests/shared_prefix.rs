//! Shared-prefix traffic: no policy piles requests onto a few instances when
//! every prompt starts with one of a few long system prompts.
//! See: issue 13 ("Policies that hold up on real traffic").
//!
//! **Workload.** 6 groups, each with its own system prompt of 2,048–8,192
//! tokens (uniform); each request is one group's system prompt (group drawn
//! uniformly) and a question of 100–300 fresh tokens, 16 output tokens,
//! single turn. Poisson arrivals: 200 requests at 10/s (every policy gets
//! its caches filled), then 600 at 60/s (the measured phase). 16 instances,
//! exact directory (the studies' mode).
//!
//! **Engine and load.** A slow engine, so that a few hundred requests load
//! 16 instances: 10 ms per step, 0.2 ms per new prefill token, 30 ns per
//! (new token × attended token), 0.2 ms per decoding sequence, 512 tokens
//! per step. A question after a cached 5k-token system prompt costs ≈ 0.07 s
//! of prefill, so one instance serves ≈ 12 such requests per second and the
//! cluster ≈ 190: at 60/s it runs at about a third of its capacity — busy
//! (every instance has requests in flight most of the time) but far from
//! saturation. A missed system prompt costs ≈ 1.4 s. Concentrated, the
//! other way round: a group sent to one instance brings it 10 requests per
//! second, close to its capacity, and if the 6 groups share 6 instances the
//! other 10 idle while those queue.
//!
//! **What is asserted**, over the measured phase (after a 2 s settling):
//!
//! * *No instance stays idle while others queue.* Sampled every 10 ms:
//!   the instance-time during which an instance had nothing in flight while
//!   another had at least 4 requests waiting for their first token (4 ≈
//!   0.3 s of queued prefill), as a share of all instance-time, is at most
//!   10 %. Concentrating the 6 groups on a few instances scores ≈ 60 % (10
//!   of 16 instances idle while the others queue: `sglang_cache_aware`'s
//!   default scores 64 % here). Policies that do not weigh load at every
//!   decision — a strict rotation, a hash home with a load bound, two
//!   candidates — still leave an instance idle for a moment while a
//!   neighbour has a burst of long prompts (up to 7 % here), which the bound
//!   admits.
//! * *Every instance serves*: each receives at least a third of its fair
//!   share of the measured requests (600 / 16 ≈ 37).
//! * *Busy-time CV* (per-instance engine busy seconds over the whole run,
//!   warm-up included) at most 0.25: one instance left idle for the whole
//!   run among 16 otherwise equally busy ones gives sqrt(1/15) ≈ 0.26, so
//!   the bound admits less than one instance's worth of idleness.
//!   Concentration on 6 of 16 gives ≈ 1.3.
//!
//! `sglang_cache_aware`, `preble_e2` and `llmd_epp` reproduce originals that
//! concentrate a shared prompt on its first holder by design (their files
//! say until when); they are checked here with their opt-in
//! `discount_shared_prefix`, and `sglang_cache_aware`'s faithful default is
//! checked against its own bound (the imbalance threshold).
//!
//! The observed values are printed (`--nocapture`).

use kvroute_core::{Nanos, SeededRng};
use kvroute_policy::{PolicyConfig, POLICY_NAMES};
use kvroute_sim::{cv, Cluster, ClusterConfig, Profile, RunResult};
use kvroute_workload::{Session, Turn};

const INSTANCES: usize = 16;
const GROUPS: usize = 6;
const WARM_REQUESTS: usize = 200;
const WARM_RATE: f64 = 10.0;
const MEASURED_REQUESTS: usize = 600;
const RATE: f64 = 60.0;
const SETTLE_SECS: f64 = 2.0;
/// Requests awaiting their first token that count as a queue.
const BACKLOG: usize = 4;
const MAX_IDLE_WHILE_QUEUED: f64 = 0.10;
const MAX_BUSY_CV: f64 = 0.25;

fn tokens(rng: &SeededRng, n: usize) -> Vec<u32> {
    (0..n).map(|_| 1000 + rng.below(100_000) as u32).collect()
}

/// The sessions, and when the measured phase starts (seconds).
fn workload(seed: u64) -> (Vec<Session>, f64) {
    let rng = SeededRng::new(seed);
    let prompts: Vec<Vec<u32>> = (0..GROUPS)
        .map(|_| {
            let n = 2048 + rng.below(6144 + 1);
            tokens(&rng, n)
        })
        .collect();
    let (mut t, mut measured_from) = (0.0, 0.0);
    let sessions = (0..WARM_REQUESTS + MEASURED_REQUESTS)
        .map(|i| {
            if i == WARM_REQUESTS {
                measured_from = t;
            }
            let rate = if i < WARM_REQUESTS { WARM_RATE } else { RATE };
            t += -(1.0 - rng.unit()).ln() / rate;
            let mut prompt = prompts[rng.below(GROUPS)].clone();
            prompt.extend(tokens(&rng, 100 + rng.below(201)));
            Session::single(
                i as u64,
                Nanos::from_secs_f64(t),
                Turn {
                    messages: vec![],
                    prompt_text: None,
                    prompt_tokens: prompt,
                    max_tokens: 16,
                },
            )
        })
        .collect();
    (sessions, measured_from)
}

fn profile() -> Profile {
    let mut p = Profile::load("vllm-cpu-tiny").unwrap();
    p.name = "shared-prefix-test".into();
    p.limits.block_size = 16;
    p.limits.num_blocks = 8192;
    p.limits.max_model_len = 9216;
    p.limits.max_num_batched_tokens = 512;
    let l = &mut p.latency;
    l.step_overhead = 0.01;
    l.prefill_per_token = 2e-4;
    l.prefill_per_attn_token = 3e-8;
    l.decode_per_seq = 2e-4;
    l.decode_per_ctx_token = 0.0;
    l.lm_head_per_sampled_seq = 0.0;
    l.forward = vec![];
    p.frontend = Default::default();
    p
}

fn run(spec: &str) -> (RunResult, f64) {
    let (sessions, measured_from) = workload(7);
    let c = ClusterConfig::new(INSTANCES, profile(), PolicyConfig::parse(spec).unwrap());
    let r = Cluster::new(c, sessions.into_iter().map(Ok::<_, String>))
        .unwrap()
        .run()
        .unwrap();
    assert!(r.records.iter().all(|x| x.ok()), "{spec}: failed requests");
    (r, measured_from + SETTLE_SECS)
}

/// What the assertions look at.
#[derive(Debug)]
struct Balance {
    /// Share of instance-time idle while another instance had a backlog.
    idle_while_queued: f64,
    /// Measured requests per instance.
    served: Vec<usize>,
    /// CV of per-instance busy seconds over the whole run.
    busy_cv: f64,
    /// Largest difference in requests in flight between two instances.
    max_inflight_spread: usize,
    /// Mean TTFT of the measured requests (for the log).
    ttft: f64,
}

fn balance(r: &RunResult, from: f64) -> Balance {
    let to = r.records.iter().map(|x| x.arrival).fold(0.0, f64::max);
    let measured: Vec<_> = r.records.iter().filter(|x| x.arrival >= from).collect();
    let step = 0.01;
    let (mut idle_time, mut samples, mut spread) = (0.0, 0usize, 0);
    let mut t = from;
    while t < to {
        let (mut inflight, mut waiting) = ([0usize; INSTANCES], [0usize; INSTANCES]);
        for x in &r.records {
            if x.arrival <= t && t < x.finish {
                inflight[x.instance as usize] += 1;
                if t < x.first_token {
                    waiting[x.instance as usize] += 1;
                }
            }
        }
        if waiting.iter().any(|&w| w >= BACKLOG) {
            idle_time += inflight.iter().filter(|&&n| n == 0).count() as f64;
        }
        let (lo, hi) = (inflight.iter().min(), inflight.iter().max());
        spread = spread.max(hi.unwrap_or(&0) - lo.unwrap_or(&0));
        samples += 1;
        t += step;
    }
    let mut served = vec![0; INSTANCES];
    for x in &measured {
        served[x.instance as usize] += 1;
    }
    Balance {
        idle_while_queued: idle_time / (samples.max(1) * INSTANCES) as f64,
        served,
        busy_cv: cv(&r.busy_secs),
        max_inflight_spread: spread,
        ttft: measured.iter().map(|x| x.ttft()).sum::<f64>() / measured.len().max(1) as f64,
    }
}

fn check(spec: &str) {
    let (r, from) = run(spec);
    let b = balance(&r, from);
    eprintln!(
        "{spec}: idle while queued {:.3}, busy CV {:.3}, served {:?}, in-flight spread {}, TTFT {:.3} s, hit rate {:.3}",
        b.idle_while_queued, b.busy_cv, b.served, b.max_inflight_spread, b.ttft, r.summary.cache_hit_rate
    );
    assert!(
        b.idle_while_queued <= MAX_IDLE_WHILE_QUEUED,
        "{spec}: instances idle while others queue for {:.1} % of instance-time",
        100.0 * b.idle_while_queued
    );
    let fair = MEASURED_REQUESTS / INSTANCES;
    assert!(
        b.served.iter().all(|&n| n * 3 >= fair),
        "{spec}: some instance served under a third of its share: {:?}",
        b.served
    );
    assert!(b.busy_cv <= MAX_BUSY_CV, "{spec}: busy CV {:.3}", b.busy_cv);
}

/// The policies as this test runs them: each registry name, with the
/// opt-in for the rows whose originals concentrate a shared prompt.
const SPECS: &[&str] = &[
    "round_robin",
    "least_request",
    "power_of_two",
    "prefix_hash",
    "cache_affinity",
    "weighted",
    "sglang_cache_aware:discount_shared_prefix=true",
    "dualmap",
    "preble_e2:discount_shared_prefix=true",
    "dynamo_kv",
    "llmd_epp:discount_shared_prefix=true",
];

macro_rules! no_collapse {
    ($($test:ident => $k:expr,)+) => {
        $(#[test] fn $test() { check(SPECS[$k]) })+
    };
}

no_collapse! {
    round_robin => 0,
    least_request => 1,
    power_of_two => 2,
    prefix_hash => 3,
    cache_affinity => 4,
    weighted => 5,
    sglang_cache_aware_discounting => 6,
    dualmap => 7,
    preble_e2_discounting => 8,
    dynamo_kv => 9,
    llmd_epp_discounting => 10,
}

#[test]
fn every_policy_is_covered() {
    let names: Vec<&str> = SPECS
        .iter()
        .map(|s| s.split(':').next().unwrap_or(s))
        .collect();
    assert_eq!(names, POLICY_NAMES);
}

/// sglang-router's own behaviour, kept as the default: the holder of a
/// shared prompt takes its traffic, load-blind, until in-flight counts
/// differ by more than `balance_abs_threshold` (64) and by 1.5×.
#[test]
fn sglang_cache_aware_concentrates_up_to_its_imbalance_threshold() {
    let (r, from) = run("sglang_cache_aware");
    let b = balance(&r, from);
    eprintln!(
        "sglang_cache_aware (default): idle while queued {:.3}, busy CV {:.3}, served {:?}, in-flight spread {}",
        b.idle_while_queued, b.busy_cv, b.served, b.max_inflight_spread
    );
    // It concentrates (as the original does) ...
    assert!(b.busy_cv > 0.5, "{b:?}");
    // ... but never past its imbalance rule: once the spread exceeds 64 the
    // next request goes to the least loaded instance (one more may arrive
    // at the holder in the same instant of simulated time).
    assert!(b.max_inflight_spread <= 64 + 2, "{b:?}");
}
