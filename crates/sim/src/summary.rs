//! Per-request records of a run and the summary computed from them: latency
//! percentiles, throughput, goodput under an SLO, cache hit rate, load
//! imbalance, and the requests refused at the door ([`Rejections`], by
//! [`RejectCause`]), which every printed summary puts first: a summary of the
//! requests that ran says nothing about the ones that did not.

use kvroute_core::{Slo, Stats};
use serde::{Deserialize, Serialize};

/// One request's outcome (a row of the per-request CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub id: u64,
    /// Session id.
    pub session: u64,
    /// Turn within the session (0-based).
    pub turn: u32,
    /// Instance that served it.
    pub instance: u32,
    /// Arrival at the router, seconds.
    pub arrival: f64,
    /// First token, seconds (NaN if it failed).
    pub first_token: f64,
    /// Last token, seconds (NaN if it failed).
    pub finish: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens the engine served from its prefix cache.
    pub cached_tokens: u32,
    /// Prompt tokens the router's directory predicted cached.
    pub predicted_cached_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Time from arrival to first scheduling, seconds.
    pub queue_time: f64,
    /// Preemptions suffered.
    pub preemptions: u32,
    /// Empty if it succeeded, else why it failed.
    pub error: String,
    /// Why it was refused before it ran (empty if it was not).
    #[serde(default)]
    pub rejected: Option<RejectCause>,
    /// Later turns of its session that were never sent because this one
    /// was refused (a session stops at its first refused turn).
    #[serde(default)]
    pub dropped_turns: u32,
}

/// Why the simulated cluster refused a request before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCause {
    /// Prompt plus `max_tokens` exceeds the profile's `max_model_len`.
    TooLong,
    /// An empty prompt.
    EmptyPrompt,
    /// The router had no instance to send it to.
    NoInstance,
    /// Anything else the engine refused.
    Other,
}

/// The requests of a run refused before they ran, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejections {
    /// Longer than `max_model_len` (prompt plus `max_tokens`).
    pub too_long: usize,
    /// Empty prompts.
    pub empty_prompt: usize,
    /// No instance to route to.
    pub no_instance: usize,
    /// Refused for another reason.
    pub other: usize,
    /// Later turns of the refused requests' sessions, never sent.
    pub dropped_turns: usize,
    /// The `max_model_len` the `too_long` requests exceeded (0: unknown).
    pub max_model_len: u32,
}

impl Rejections {
    /// Count one refused request.
    pub fn add(&mut self, cause: RejectCause) {
        *match cause {
            RejectCause::TooLong => &mut self.too_long,
            RejectCause::EmptyPrompt => &mut self.empty_prompt,
            RejectCause::NoInstance => &mut self.no_instance,
            RejectCause::Other => &mut self.other,
        } += 1;
    }

    /// Requests refused, all causes.
    pub fn total(&self) -> usize {
        self.too_long + self.empty_prompt + self.no_instance + self.other
    }

    /// The causes that refused anything, largest first, each with its count
    /// and a phrase (`"longer than max_model_len 4096"`).
    pub fn by_cause(&self) -> Vec<(usize, String)> {
        let limit = if self.max_model_len > 0 {
            format!("longer than max_model_len {}", self.max_model_len)
        } else {
            "longer than max_model_len".into()
        };
        let mut out: Vec<(usize, String)> = [
            (self.too_long, limit),
            (self.empty_prompt, "with an empty prompt".into()),
            (self.no_instance, "with no instance to route to".into()),
            (self.other, "refused by an engine for another reason".into()),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.0));
        out
    }

    /// One line: `"680 of 1000 requests (68.0 %): 680 longer than
    /// max_model_len 4096; 120 later turns of their sessions never sent"`,
    /// or `None` when nothing was refused.
    pub fn describe(&self, requests: usize) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let causes: Vec<String> = self
            .by_cause()
            .into_iter()
            .map(|(n, why)| format!("{n} {why}"))
            .collect();
        let mut line = format!(
            "{total} of {requests} requests ({:.1} %): {}",
            100.0 * total as f64 / requests.max(1) as f64,
            causes.join(", ")
        );
        if self.dropped_turns > 0 {
            line.push_str(&format!(
                "; {} later turns of their sessions never sent",
                self.dropped_turns
            ));
        }
        Some(line)
    }
}

impl RequestRecord {
    /// Time to first token, seconds.
    pub fn ttft(&self) -> f64 {
        self.first_token - self.arrival
    }
    /// Time per output token after the first, seconds (None for one-token outputs).
    pub fn tpot(&self) -> Option<f64> {
        (self.output_tokens > 1)
            .then(|| (self.finish - self.first_token) / f64::from(self.output_tokens - 1))
    }
    /// End-to-end latency, seconds.
    pub fn e2e(&self) -> f64 {
        self.finish - self.arrival
    }
    /// Whether it finished.
    pub fn ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// The summary of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests measured (after warm-up).
    pub requests: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Of the failed, those refused before they ran, by cause (in the
    /// simulator every failure is one: a request that runs finishes).
    #[serde(default)]
    pub rejected: Rejections,
    /// TTFT, seconds.
    pub ttft: Stats,
    /// TPOT, seconds.
    pub tpot: Stats,
    /// End-to-end latency, seconds.
    pub e2e: Stats,
    /// Queueing before first scheduling, seconds.
    pub queue: Stats,
    /// Completed requests per second over the measured window.
    pub throughput_rps: f64,
    /// Output tokens per second over the measured window.
    pub output_tps: f64,
    /// Requests per second that met the SLO.
    pub goodput_rps: f64,
    /// Σ cached prompt tokens / Σ prompt tokens (engine-side).
    pub cache_hit_rate: f64,
    /// Σ predicted cached tokens / Σ prompt tokens (router-side).
    pub predicted_hit_rate: f64,
    /// Coefficient of variation of per-instance busy time.
    pub busy_cv: f64,
    /// Coefficient of variation of per-instance request counts.
    pub requests_cv: f64,
    /// Preemptions.
    pub preemptions: u64,
}

/// Coefficient of variation (std / mean); 0 for an empty or zero sample.
pub fn cv(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    var.sqrt() / mean
}

impl Summary {
    /// The share of the measured requests refused before they ran (0 when
    /// there were none).
    pub fn rejected_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.rejected.total() as f64 / self.requests as f64
        }
    }

    /// Summarise `records` (all of them: filter warm-up first), given each
    /// instance's busy time in seconds and the run's measured window.
    pub fn of(records: &[RequestRecord], busy_secs: &[f64], window_secs: f64, slo: Slo) -> Summary {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
        let window = window_secs.max(1e-9);
        let prompt: u64 = ok.iter().map(|r| u64::from(r.prompt_tokens)).sum();
        let cached: u64 = ok.iter().map(|r| u64::from(r.cached_tokens)).sum();
        let predicted: u64 = ok
            .iter()
            .map(|r| u64::from(r.predicted_cached_tokens))
            .sum();
        let good = ok
            .iter()
            .filter(|r| slo.met(r.ttft(), r.tpot(), r.e2e()))
            .count();
        let mut per_instance = vec![0f64; busy_secs.len()];
        for r in records {
            if let Some(c) = per_instance.get_mut(r.instance as usize) {
                *c += 1.0;
            }
        }
        let ratio = |a: u64| {
            if prompt == 0 {
                0.0
            } else {
                a as f64 / prompt as f64
            }
        };
        let mut rejected = Rejections::default();
        for r in records {
            if let Some(cause) = r.rejected {
                rejected.add(cause);
            }
            rejected.dropped_turns += r.dropped_turns as usize;
        }
        Summary {
            requests: records.len(),
            failed: records.len() - ok.len(),
            rejected,
            ttft: Stats::of(ok.iter().map(|r| r.ttft())),
            tpot: Stats::of(ok.iter().filter_map(|r| r.tpot())),
            e2e: Stats::of(ok.iter().map(|r| r.e2e())),
            queue: Stats::of(ok.iter().map(|r| r.queue_time)),
            throughput_rps: ok.len() as f64 / window,
            output_tps: ok.iter().map(|r| f64::from(r.output_tokens)).sum::<f64>() / window,
            goodput_rps: good as f64 / window,
            cache_hit_rate: ratio(cached),
            predicted_hit_rate: ratio(predicted),
            busy_cv: cv(busy_secs),
            requests_cv: cv(&per_instance),
            preemptions: records.iter().map(|r| u64::from(r.preemptions)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, rejected: Option<RejectCause>, dropped_turns: u32) -> RequestRecord {
        RequestRecord {
            id,
            session: id,
            turn: 0,
            instance: 0,
            arrival: 0.0,
            first_token: if rejected.is_some() { f64::NAN } else { 0.5 },
            finish: if rejected.is_some() { f64::NAN } else { 1.0 },
            prompt_tokens: 10,
            cached_tokens: 0,
            predicted_cached_tokens: 0,
            output_tokens: 2,
            queue_time: 0.0,
            preemptions: 0,
            error: if rejected.is_some() {
                "refused".into()
            } else {
                String::new()
            },
            rejected,
            dropped_turns,
        }
    }

    #[test]
    fn rejections_are_counted_by_cause_and_described() {
        let records = vec![
            record(0, None, 0),
            record(1, Some(RejectCause::TooLong), 3),
            record(2, Some(RejectCause::TooLong), 0),
            record(3, Some(RejectCause::EmptyPrompt), 0),
        ];
        let mut s = Summary::of(&records, &[1.0], 1.0, Slo::default());
        s.rejected.max_model_len = 4096;
        assert_eq!((s.requests, s.failed, s.rejected.total()), (4, 3, 3));
        assert_eq!((s.rejected.too_long, s.rejected.dropped_turns), (2, 3));
        assert_eq!(s.rejected_share(), 0.75);
        assert_eq!(
            s.rejected.describe(s.requests).unwrap(),
            "3 of 4 requests (75.0 %): 2 longer than max_model_len 4096, \
             1 with an empty prompt; 3 later turns of their sessions never sent"
        );
        let clean = Summary::of(&records[..1], &[1.0], 1.0, Slo::default());
        assert_eq!(
            (clean.rejected.describe(1), clean.rejected_share()),
            (None, 0.0)
        );
        assert_eq!(Summary::default().rejected_share(), 0.0);
    }

    #[test]
    fn a_rejected_record_round_trips_through_csv() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(record(1, Some(RejectCause::TooLong), 2))
            .unwrap();
        w.serialize(record(2, None, 0)).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with(",error,rejected,dropped_turns"),
            "{text}"
        );
        assert!(text.contains(",refused,too_long,2\n"), "{text}");
        let back: Vec<RequestRecord> = csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            (back[0].rejected, back[0].dropped_turns),
            (Some(RejectCause::TooLong), 2)
        );
        assert_eq!(back[1].rejected, None);
    }

    #[test]
    fn cv_of_equal_and_skewed() {
        assert_eq!(cv(&[2.0, 2.0]), 0.0);
        assert!((cv(&[0.0, 2.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cv(&[]), 0.0);
    }
}
