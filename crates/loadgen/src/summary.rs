//! The client side of a run in numbers: [`ClientSummary`] (its latencies as
//! [`Stats`], the one definition in `kvroute-core`).
//!
//! Only requests started after the warm-up are summarised. Latencies are
//! taken over successful requests; percentiles are nearest-rank over the
//! exact per-request values (unlike the engines' bucket estimates). Rates
//! are over the measured window: from the first measured request's start to
//! the last one's end. A request is *good* under the [`Slo`] if it
//! succeeded, its TTFT is within `ttft_secs` and its TPOT (when it has one)
//! within `tpot_secs`.

use crate::config::Slo;
use crate::record::RequestRecord;
pub use kvroute_core::Stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Requests per instance (the `instance` column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceCounts {
    /// Measured requests served there.
    pub requests: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Prompt tokens of its successful requests.
    pub prompt_tokens: u64,
    /// Cached prompt tokens its successful requests reported.
    pub cached_tokens: u64,
}

/// Client-side summary of a run (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSummary {
    /// Every request sent, warm-up included.
    pub requests_sent: usize,
    /// Requests started during the warm-up (not summarised).
    pub warmup_requests: usize,
    /// Of those, failed.
    pub warmup_failed: usize,
    /// Measured requests (sent after the warm-up).
    pub requests: usize,
    /// Measured requests that succeeded.
    pub ok: usize,
    /// Measured requests that failed.
    pub failed: usize,
    /// Failures of measured requests by [`ErrorKind`](crate::ErrorKind) name.
    pub errors: BTreeMap<String, usize>,
    /// HTTP statuses of measured requests (`0`: no response).
    pub statuses: BTreeMap<u16, usize>,
    /// Time to first token, seconds.
    pub ttft: Stats,
    /// Time per output token after the first, seconds.
    pub tpot: Stats,
    /// Per-request mean inter-chunk latency, seconds.
    pub itl: Stats,
    /// End-to-end latency, seconds.
    pub e2e: Stats,
    /// Measured window, seconds.
    pub window_secs: f64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Prompt tokens of successful requests per second.
    pub input_tps: f64,
    /// Output tokens of successful requests per second.
    pub output_tps: f64,
    /// Good requests per second.
    pub goodput_rps: f64,
    /// The objective behind `goodput_rps`.
    pub slo: Slo,
    /// Good requests / measured requests.
    pub slo_attainment: Option<f64>,
    /// Prompt tokens of successful requests.
    pub prompt_tokens: u64,
    /// Output tokens of successful requests.
    pub output_tokens: u64,
    /// Σ cached / Σ prompt tokens over successful requests that reported
    /// `cached_tokens` (`None` if none did).
    pub cache_hit_rate: Option<f64>,
    /// Σ router-predicted cached / Σ prompt tokens over successful requests
    /// that carried the header (`None` if none did).
    pub predicted_hit_rate: Option<f64>,
    /// Requests per instance.
    pub per_instance: BTreeMap<String, InstanceCounts>,
}

impl ClientSummary {
    /// Summarise `records` (all of them; warm-up ones are counted apart).
    pub fn of(records: &[RequestRecord], slo: Slo) -> ClientSummary {
        let mut s = ClientSummary {
            requests_sent: records.len(),
            slo,
            ..ClientSummary::default()
        };
        let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
        for r in records.iter().filter(|r| r.warmup) {
            s.warmup_requests += 1;
            s.warmup_failed += usize::from(!r.ok());
        }
        s.requests = measured.len();
        let ok: Vec<&RequestRecord> = measured.iter().copied().filter(|r| r.ok()).collect();
        s.ok = ok.len();
        s.failed = s.requests - s.ok;
        for r in &measured {
            *s.statuses.entry(r.status).or_insert(0) += 1;
            let inst = s.per_instance.entry(r.instance.clone()).or_default();
            inst.requests += 1;
            match r.error_kind {
                Some(kind) => {
                    *s.errors.entry(kind.name().to_string()).or_insert(0) += 1;
                    inst.failed += 1;
                }
                None => {
                    inst.prompt_tokens += u64::from(r.prompt_tokens);
                    inst.cached_tokens += u64::from(r.cached_tokens.unwrap_or(0));
                }
            }
        }
        s.ttft = Stats::of(ok.iter().map(|r| r.ttft));
        s.tpot = Stats::of(ok.iter().filter_map(|r| r.tpot));
        s.itl = Stats::of(ok.iter().filter_map(|r| r.itl_mean));
        s.e2e = Stats::of(ok.iter().map(|r| r.e2e));

        let first = measured
            .iter()
            .map(|r| r.start)
            .fold(f64::INFINITY, f64::min);
        let last = measured
            .iter()
            .map(|r| r.start + r.e2e)
            .fold(f64::NEG_INFINITY, f64::max);
        s.window_secs = if last > first { last - first } else { 0.0 };
        s.prompt_tokens = ok.iter().map(|r| u64::from(r.prompt_tokens)).sum();
        s.output_tokens = ok.iter().map(|r| u64::from(r.output_tokens)).sum();
        let good = ok.iter().filter(|r| slo.met(r.ttft, r.tpot, r.e2e)).count();
        if s.window_secs > 0.0 {
            let per_sec = |x: f64| x / s.window_secs;
            s.throughput_rps = per_sec(s.ok as f64);
            s.input_tps = per_sec(s.prompt_tokens as f64);
            s.output_tps = per_sec(s.output_tokens as f64);
            s.goodput_rps = per_sec(good as f64);
        }
        s.slo_attainment = (s.requests > 0).then(|| good as f64 / s.requests as f64);
        s.cache_hit_rate = ratio(ok.iter().map(|r| (r.cached_tokens, r.prompt_tokens)));
        s.predicted_hit_rate = ratio(
            ok.iter()
                .map(|r| (r.predicted_cached_tokens, r.prompt_tokens)),
        );
        s
    }
}

/// Σ part / Σ whole over the pairs whose part is known.
fn ratio(pairs: impl Iterator<Item = (Option<u32>, u32)>) -> Option<f64> {
    let (mut part, mut whole, mut any) = (0u64, 0u64, false);
    for (p, w) in pairs {
        if let Some(p) = p {
            any = true;
            part += u64::from(p);
            whole += u64::from(w);
        }
    }
    match (any, whole) {
        (true, 0) => Some(0.0),
        (true, w) => Some(part as f64 / w as f64),
        (false, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ErrorKind;

    fn ok(id: u64, start: f64, ttft: f64, e2e: f64, out: u32) -> RequestRecord {
        RequestRecord {
            id,
            session: id,
            turn: 0,
            instance: if id.is_multiple_of(2) { "a" } else { "b" }.into(),
            status: 200,
            error: String::new(),
            start,
            ttft,
            tpot: (out > 1).then(|| (e2e - ttft) / f64::from(out - 1)),
            itl_mean: None,
            e2e,
            prompt_tokens: 100,
            cached_tokens: Some(50),
            predicted_cached_tokens: None,
            output_tokens: out,
            engine_ttft: None,
            engine_e2e: None,
            error_kind: None,
            warmup: false,
            max_tokens: out,
            itls: Vec::new(),
        }
    }

    #[test]
    fn summary_arithmetic() {
        let mut records = vec![
            ok(0, 0.0, 0.1, 1.0, 10), // tpot 0.1
            ok(1, 1.0, 0.3, 2.0, 11), // tpot 0.17
            ok(2, 2.0, 3.0, 4.0, 1),  // misses the TTFT SLO; no tpot
        ];
        let mut failed = ok(3, 2.5, f64::NAN, 0.5, 0);
        failed.error = "HTTP 503".into();
        failed.error_kind = Some(ErrorKind::Status);
        failed.status = 503;
        failed.cached_tokens = None;
        records.push(failed);
        let mut warm = ok(4, 0.0, 9.0, 9.0, 2);
        warm.warmup = true;
        records.push(warm);

        let s = ClientSummary::of(&records, Slo::default());
        assert_eq!(
            (
                s.requests_sent,
                s.warmup_requests,
                s.requests,
                s.ok,
                s.failed
            ),
            (5, 1, 4, 3, 1)
        );
        assert_eq!(s.errors.get("status"), Some(&1));
        assert_eq!(s.statuses.get(&503), Some(&1));
        assert_eq!(s.statuses.get(&200), Some(&3));
        assert_eq!(s.ttft.n, 3);
        assert!((s.ttft.mean.unwrap() - (0.1 + 0.3 + 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(s.tpot.n, 2);
        // Window: first start 0.0, last end max(1.0, 3.0, 6.0, 3.0) = 6.0.
        assert_eq!(s.window_secs, 6.0);
        assert!((s.throughput_rps - 0.5).abs() < 1e-12);
        assert!((s.output_tps - 22.0 / 6.0).abs() < 1e-12);
        assert!((s.goodput_rps - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.slo_attainment, Some(0.5));
        assert_eq!(s.cache_hit_rate, Some(0.5));
        assert_eq!(s.predicted_hit_rate, None);
        assert_eq!(s.per_instance["a"].requests, 2);
        assert_eq!(s.per_instance["b"].failed, 1);
        assert_eq!(s.per_instance["b"].prompt_tokens, 100);
    }

    #[test]
    fn empty_run() {
        let s = ClientSummary::of(&[], Slo::default());
        assert_eq!((s.requests, s.window_secs, s.throughput_rps), (0, 0.0, 0.0));
        assert_eq!(s.slo_attainment, None);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"mean\":null"), "{json}");
    }
}
