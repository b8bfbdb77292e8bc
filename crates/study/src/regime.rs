//! [`Regime`]: where a user runs — an engine profile, a workload, a number of
//! instances — and the latency objective that defines capacity there.
//!
//! # The SLO of a regime
//!
//! A fixed SLO (say 2 s) means nothing across regimes: a 70B model prefilling
//! a 30k-token prompt cannot meet it even alone, an 8B model on a 1k-token
//! chat always does. So each regime's SLO is derived from its own unloaded
//! latency: the simulator runs the workload's 90th-percentile prompt alone on
//! one instance, cold, and
//!
//! ```text
//! TTFT SLO = max(TTFT_FACTOR × that TTFT, MIN_TTFT_SLO)
//! TPOT SLO = max(TPOT_FACTOR × its mean decode step, MIN_TPOT_SLO)
//! ```
//!
//! — so a request meets the SLO unless queueing, interference or recomputation
//! made it several times slower than it has to be. Capacity is the highest
//! arrival rate at which the 90th percentiles of TTFT and TPOT stay within
//! the SLO with no request failed (DualMap's headline metric is the same
//! shape: the highest rate with ≥ 90 % of requests within a TTFT SLO).

use crate::{StudyError, Workload};
use kvroute_policy::PolicyConfig;
use kvroute_sim::{Cluster, ClusterConfig, Profile, Slo};
use kvroute_workload::{Session, Turn};
use std::sync::Arc;

/// TTFT SLO as a multiple of the p90 prompt's unloaded TTFT.
pub const TTFT_FACTOR: f64 = 4.0;
/// TPOT SLO as a multiple of the unloaded decode step.
pub const TPOT_FACTOR: f64 = 3.0;
/// Floors of the SLOs, seconds.
pub const MIN_TTFT_SLO: f64 = 0.25;
/// Floor of the TPOT SLO, seconds.
pub const MIN_TPOT_SLO: f64 = 0.02;

/// Arrival windows at least this many session durations long count as a
/// sustained rate (see [`Regime::max_rate`]): with sessions arriving over
/// 3 durations, two thirds of the run sees the full concurrency.
pub const STEADY_SPANS: f64 = 3.0;

/// An engine profile, a workload, an instance count.
#[derive(Debug, Clone)]
pub struct Regime {
    /// The engines.
    pub profile: Profile,
    /// The traffic, cut to what the profile's context holds.
    pub workload: Arc<Workload>,
    /// Instances.
    pub instances: usize,
    /// Its latency objective.
    pub slo: Slo,
    /// Requests of the workload dropped because prompt plus output exceed
    /// the profile's `max_model_len` (a multi-turn session ends before its
    /// first such turn, as a client would have to).
    pub dropped: usize,
    /// Requests per session, mean.
    pub turns_per_session: f64,
    /// The p90 prompt's unloaded TTFT and TPOT, seconds.
    pub unloaded: (f64, f64),
    /// A session's mean duration when nothing queues, seconds: its think
    /// times, its prefills (scaled from the p90 prompt's by length) and its
    /// decodes.
    pub session_secs: f64,
}

impl Regime {
    /// A regime, its SLO derived from the profile and the workload.
    pub fn new(
        profile: &Profile,
        workload: &Arc<Workload>,
        instances: usize,
    ) -> Result<Regime, StudyError> {
        let (workload, dropped) = fit(workload, profile.limits.max_model_len as usize);
        if workload.sessions.is_empty() {
            return Err(StudyError::Config(format!(
                "no request of {} fits {}'s context of {} tokens",
                workload.name, profile.name, profile.limits.max_model_len
            )));
        }
        let (slo, unloaded) = slo_for(profile, &workload)?;
        let requests: usize = workload.sessions.iter().map(|s| s.turns.len()).sum();
        let session_secs = session_secs(&workload, unloaded);
        Ok(Regime {
            session_secs,
            slo,
            profile: profile.clone(),
            turns_per_session: requests as f64 / workload.sessions.len() as f64,
            workload,
            instances,
            dropped,
            unloaded,
        })
    }

    /// A rough session rate near round-robin's capacity, where a capacity
    /// search starts (it doubles or halves from there).
    pub fn rough_capacity(&self) -> f64 {
        let (ttft, tpot) = self.unloaded;
        let out: f64 = {
            let (n, sum) = self
                .workload
                .sessions
                .iter()
                .flat_map(|s| &s.turns)
                .fold((0usize, 0u64), |(n, s), t| {
                    (n + 1, s + u64::from(t.max_tokens))
                });
            sum as f64 / n.max(1) as f64
        };
        // A request occupies an instance for about its prefill; decode is
        // batched (assume 16 at once).
        let per_request = ttft + out * tpot / 16.0;
        self.instances as f64 / (per_request.max(1e-4) * self.turns_per_session.max(1.0))
    }

    /// The highest session rate this workload can offer open-loop: its
    /// sessions arriving over at least [`STEADY_SPANS`] session durations,
    /// so that most requests run while the full load is on. Beyond it a
    /// finite sample is a burst of concurrent sessions, not a rate, and a
    /// capacity search stops there (`capped`).
    pub fn max_rate(&self) -> f64 {
        self.workload.sessions.len() as f64 / (STEADY_SPANS * self.session_secs.max(1e-3))
    }

    /// `profile/workload/N`.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}",
            self.profile.name, self.workload.name, self.instances
        )
    }
}

/// Mean unloaded duration of a session of `w`: think times between turns,
/// each turn's prefill (the p90 prompt's unloaded TTFT scaled by prompt
/// length, an overestimate for cached turns) and decode at the unloaded TPOT.
fn session_secs(w: &Workload, (ttft, tpot): (f64, f64)) -> f64 {
    let p90_len = p90_prompt(w).map_or(1, |(len, _)| len.max(1)) as f64;
    let total: f64 = w
        .sessions
        .iter()
        .map(|s| {
            let turns: f64 = s
                .turns
                .iter()
                .map(|t| {
                    ttft * t.prompt_tokens.len() as f64 / p90_len + f64::from(t.max_tokens) * tpot
                })
                .sum();
            turns + s.think_time.as_secs_f64() * s.turns.len().saturating_sub(1) as f64
        })
        .sum();
    total / w.sessions.len().max(1) as f64
}

/// The 90th-percentile prompt of a workload (over every turn), and the
/// output length asked for with it.
fn p90_prompt(w: &Workload) -> Option<(usize, u32)> {
    let mut turns: Vec<&Turn> = w.sessions.iter().flat_map(|s| &s.turns).collect();
    if turns.is_empty() {
        return None;
    }
    turns.sort_by_key(|t| t.prompt_tokens.len());
    let t = turns[(turns.len() - 1) * 9 / 10];
    Some((t.prompt_tokens.len(), t.max_tokens))
}

/// `w` without the requests `max_model_len` cannot hold, and how many went.
fn fit(w: &Arc<Workload>, max_model_len: usize) -> (Arc<Workload>, usize) {
    let fits = |t: &Turn| t.prompt_tokens.len() + t.max_tokens as usize <= max_model_len;
    if w.sessions.iter().flat_map(|s| &s.turns).all(fits) {
        return (Arc::clone(w), 0);
    }
    let mut dropped = 0;
    let sessions: Vec<Session> = w
        .sessions
        .iter()
        .filter_map(|s| {
            let keep = s.turns.iter().take_while(|t| fits(t)).count();
            dropped += s.turns.len() - keep;
            (keep > 0).then(|| {
                let mut s = s.clone();
                s.turns.truncate(keep);
                s
            })
        })
        .collect();
    let w = Workload {
        sessions: Arc::new(sessions),
        ..Workload::clone(w)
    };
    (Arc::new(w), dropped)
}

/// The SLO of `workload` on `profile` (see the module docs), and the
/// unloaded TTFT and TPOT it is derived from.
pub fn slo_for(profile: &Profile, workload: &Workload) -> Result<(Slo, (f64, f64)), StudyError> {
    let (len, out) = p90_prompt(workload)
        .ok_or_else(|| StudyError::Config(format!("workload {} is empty", workload.name)))?;
    let out = out.clamp(2, 64);
    let len = len
        .min((profile.limits.max_model_len as usize).saturating_sub(out as usize))
        .max(1);
    let session = Session::single(
        0,
        kvroute_core::Nanos::ZERO,
        Turn {
            messages: Vec::new(),
            prompt_text: None,
            prompt_tokens: (0..len as u32).map(|i| 1000 + i % 50_000).collect(),
            max_tokens: out,
        },
    );
    let policy =
        PolicyConfig::parse("round_robin").map_err(|e| StudyError::Config(e.to_string()))?;
    let c = ClusterConfig::new(1, profile.clone(), policy);
    let r = Cluster::new(c, std::iter::once(Ok::<_, String>(session)))
        .and_then(Cluster::run)
        .map_err(|e| StudyError::Sim(e.to_string()))?;
    let rec = r.records.first().filter(|r| r.ok()).ok_or_else(|| {
        StudyError::Sim(format!(
            "the p90 prompt of {} ({len} tokens) does not run alone on {}",
            workload.name, profile.name
        ))
    })?;
    let (ttft, tpot) = (rec.ttft(), rec.tpot().unwrap_or(0.0));
    Ok((
        Slo::new(
            (TTFT_FACTOR * ttft).max(MIN_TTFT_SLO),
            (TPOT_FACTOR * tpot).max(MIN_TPOT_SLO),
        ),
        (ttft, tpot),
    ))
}
