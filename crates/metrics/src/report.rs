//! The engine side of one run: [`EngineReport`], [`TimerStats`].
//!
//! A run's engine timers are the change of the engine's cumulative metrics
//! between a scrape taken before the run and one taken after it
//! ([`EngineReport::from_scrapes`]). Per instance that gives, for every
//! latency histogram, the count, the exact mean and bucket-estimated p50 /
//! p90 / p99, and for every counter its increase; across instances
//! [`EngineReport::total`] adds the counters and merges the histograms
//! bucket-wise (so the total's percentiles are those of the pooled
//! observations, not an average of percentiles).
//!
//! **Resets.** If an engine restarts during the run its counters start again
//! from zero; the part before the restart is lost. The report then holds the
//! values since the restart, sets [`restarted`](EngineReport::restarted) and
//! lists each affected metric in [`resets`](EngineReport::resets). A reset is
//! detected when a value goes down, when `process_start_time_seconds`
//! changes, or when the metric's `_created` timestamp changes (Python's
//! client exports one per counter and histogram).
//!
//! A metric absent from the `after` scrape is `None`; one absent only from
//! `before` counts from zero (vLLM creates some labelled series lazily).

use crate::engine::{first_counter, EngineKind, MetricNames, VLLM_NAMES};
use crate::histogram::Histogram;
use crate::scrape::Scrape;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// Summary of one latency histogram over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerStats {
    /// Observations.
    pub count: f64,
    /// Exact mean (`sum / count`), seconds; `None` if no observation.
    pub mean: Option<f64>,
    /// Median estimated from the buckets (PromQL `histogram_quantile`,
    /// capped by Markov's bound `mean / (1 − q)`: see
    /// [`Histogram::quantile_bounded`]).
    pub p50: Option<f64>,
    /// 90th percentile estimated from the buckets.
    pub p90: Option<f64>,
    /// 99th percentile estimated from the buckets.
    pub p99: Option<f64>,
    /// The run's histogram itself, for merging and other quantiles.
    pub histogram: Histogram,
}

impl TimerStats {
    /// Summarise `histogram`.
    pub fn from_histogram(histogram: Histogram) -> TimerStats {
        TimerStats {
            count: histogram.count,
            mean: histogram.mean(),
            p50: histogram.quantile_bounded(0.5),
            p90: histogram.quantile_bounded(0.9),
            p99: histogram.quantile_bounded(0.99),
            histogram,
        }
    }
}

/// Engine-side timers and counters of one run on one instance (or, from
/// [`EngineReport::total`], on several). Times are seconds, counters are
/// increases over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineReport {
    /// The engine, if recognised (`None` in a total over different engines).
    pub engine: Option<EngineKind>,
    /// Time to first token.
    pub ttft_seconds: Option<TimerStats>,
    /// End-to-end request latency (engine's view).
    pub e2e_seconds: Option<TimerStats>,
    /// Time waiting in the scheduler queue.
    pub queue_seconds: Option<TimerStats>,
    /// Prefill phase.
    pub prefill_seconds: Option<TimerStats>,
    /// Decode phase.
    pub decode_seconds: Option<TimerStats>,
    /// Gap between consecutive output tokens (one observation per token).
    pub inter_token_seconds: Option<TimerStats>,
    /// Per-request mean time per output token after the first.
    pub time_per_output_token_seconds: Option<TimerStats>,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries_tokens: Option<f64>,
    /// Prompt tokens found in the prefix cache.
    pub prefix_cache_hits_tokens: Option<f64>,
    /// Prompt tokens processed.
    pub prompt_tokens: Option<f64>,
    /// Tokens generated.
    pub generation_tokens: Option<f64>,
    /// Preemptions (SGLang: retractions).
    pub preemptions: Option<f64>,
    /// Requests finished, any reason.
    pub requests_finished: Option<f64>,
    /// Requests finished per `finished_reason` (vLLM only: stop, length,
    /// abort, error, repetition).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub finished_by_reason: BTreeMap<String, f64>,
    /// True if the engine restarted during the run (values are then only
    /// those since the restart).
    #[serde(default)]
    pub restarted: bool,
    /// Metrics whose value is a post-reset value rather than a true delta.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resets: Vec<String>,
}

/// Compares two scrapes for one metric.
struct Diff<'a> {
    before: &'a Scrape,
    after: &'a Scrape,
    restarted: bool,
    resets: Vec<String>,
}

impl Diff<'_> {
    /// Was `name` re-created between the scrapes (restart or `_created` change)?
    fn recreated(&self, name: &str) -> bool {
        self.restarted
            || matches!(
                (self.before.created(name), self.after.created(name)),
                (Some(b), Some(a)) if a != b
            )
    }

    fn timer(&mut self, names: &[&'static str]) -> Option<TimerStats> {
        let (name, after) = names
            .iter()
            .find_map(|n| self.after.histogram(n).map(|h| (*n, h)))?;
        let delta = match self.before.histogram(name) {
            Some(before) if self.recreated(name) && !before.is_empty() => after.since_reset(),
            Some(before) => after.delta(&before),
            None => after,
        };
        if delta.reset {
            self.resets.push(name.to_string());
        }
        Some(TimerStats::from_histogram(delta))
    }

    fn counter(&mut self, names: &[&'static str]) -> Option<f64> {
        let (name, after) = first_counter(self.after, names)?;
        let Some(before) = self.before.counter(name) else {
            return Some(after);
        };
        if after < before || (before != 0.0 && self.recreated(name)) {
            self.resets.push(name.to_string());
            Some(after)
        } else {
            Some(after - before)
        }
    }
}

impl EngineReport {
    /// The run between scrape `before` and scrape `after` of one instance.
    /// The engine is detected from `after` (vLLM names are tried if it is
    /// neither vLLM nor SGLang; every field is then likely `None`).
    pub fn from_scrapes(before: &Scrape, after: &Scrape) -> EngineReport {
        let engine = EngineKind::detect(after);
        let names: &MetricNames = engine.map_or(&VLLM_NAMES, EngineKind::names);
        let start = "process_start_time_seconds";
        let restarted = matches!(
            (before.gauge(start), after.gauge(start)),
            (Some(b), Some(a)) if a != b
        );
        let mut d = Diff {
            before,
            after,
            restarted,
            resets: Vec::new(),
        };
        let mut r = EngineReport {
            engine,
            ttft_seconds: d.timer(names.ttft),
            e2e_seconds: d.timer(names.e2e),
            queue_seconds: d.timer(names.queue),
            prefill_seconds: d.timer(names.prefill),
            decode_seconds: d.timer(names.decode),
            inter_token_seconds: d.timer(names.inter_token),
            time_per_output_token_seconds: d.timer(names.time_per_output_token),
            prefix_cache_queries_tokens: d.counter(names.prefix_cache_queries),
            prefix_cache_hits_tokens: d.counter(names.prefix_cache_hits),
            prompt_tokens: d.counter(names.prompt_tokens),
            generation_tokens: d.counter(names.generation_tokens),
            preemptions: d.counter(names.preemptions),
            requests_finished: d.counter(names.requests_finished),
            ..EngineReport::default()
        };
        if engine == Some(EngineKind::Vllm) {
            let metric = "vllm:request_success_total";
            let after_by = after.counter_by(metric, "finished_reason");
            let before_by = before.counter_by(metric, "finished_reason");
            let reset = r.resets.iter().any(|n| n == metric);
            r.finished_by_reason = after_by
                .into_iter()
                .map(|(k, a)| {
                    let b = if reset {
                        0.0
                    } else {
                        before_by.get(&k).copied().unwrap_or(0.0)
                    };
                    (k, if a < b { a } else { a - b })
                })
                .collect();
        }
        let mut resets = d.resets;
        resets.sort();
        resets.dedup();
        r.restarted = restarted || !resets.is_empty();
        r.resets = resets;
        r
    }

    /// Everything since the engine started: the run from an empty scrape to `after`.
    pub fn since_start(after: &Scrape) -> EngineReport {
        EngineReport::from_scrapes(&Scrape::default(), after)
    }

    /// Prefix-cache hit rate over the run: hits / queries (tokens); `None`
    /// without queries.
    pub fn prefix_cache_hit_rate(&self) -> Option<f64> {
        match (
            self.prefix_cache_hits_tokens,
            self.prefix_cache_queries_tokens,
        ) {
            (Some(h), Some(q)) if q > 0.0 => Some(h / q),
            _ => None,
        }
    }

    /// The sum over instances: counters added, histograms merged bucket-wise
    /// and re-summarised. A field is `None` only if it is `None` everywhere.
    pub fn total(reports: &[EngineReport]) -> EngineReport {
        let mut t = EngineReport {
            engine: reports.first().and_then(|r| r.engine),
            ..EngineReport::default()
        };
        let mut timers: [Option<Histogram>; 7] = Default::default();
        for r in reports {
            if r.engine != t.engine {
                t.engine = None;
            }
            for (acc, stats) in timers.iter_mut().zip(r.timers()) {
                if let Some(s) = stats {
                    match acc {
                        Some(h) => h.merge(&s.histogram),
                        None => *acc = Some(s.histogram.clone()),
                    }
                }
            }
            add(
                &mut t.prefix_cache_queries_tokens,
                r.prefix_cache_queries_tokens,
            );
            add(&mut t.prefix_cache_hits_tokens, r.prefix_cache_hits_tokens);
            add(&mut t.prompt_tokens, r.prompt_tokens);
            add(&mut t.generation_tokens, r.generation_tokens);
            add(&mut t.preemptions, r.preemptions);
            add(&mut t.requests_finished, r.requests_finished);
            for (k, v) in &r.finished_by_reason {
                *t.finished_by_reason.entry(k.clone()).or_insert(0.0) += v;
            }
            t.restarted |= r.restarted;
            for n in &r.resets {
                if !t.resets.contains(n) {
                    t.resets.push(n.clone());
                }
            }
        }
        let [ttft, e2e, queue, prefill, decode, itl, tpot] =
            timers.map(|h| h.map(TimerStats::from_histogram));
        t.ttft_seconds = ttft;
        t.e2e_seconds = e2e;
        t.queue_seconds = queue;
        t.prefill_seconds = prefill;
        t.decode_seconds = decode;
        t.inter_token_seconds = itl;
        t.time_per_output_token_seconds = tpot;
        t
    }

    /// The seven timers in table order.
    fn timers(&self) -> [Option<&TimerStats>; 7] {
        [
            self.ttft_seconds.as_ref(),
            self.e2e_seconds.as_ref(),
            self.queue_seconds.as_ref(),
            self.prefill_seconds.as_ref(),
            self.decode_seconds.as_ref(),
            self.inter_token_seconds.as_ref(),
            self.time_per_output_token_seconds.as_ref(),
        ]
    }

    /// A one-line-per-instance comparison: requests, TTFT mean / p50 / p99,
    /// e2e mean, queue mean (all ms), prefix-cache hit rate, preemptions.
    pub fn comparison_table(rows: &[(&str, &EngineReport)]) -> String {
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
            "instance",
            "requests",
            "ttft_mean",
            "ttft_p50",
            "ttft_p99",
            "e2e_mean",
            "queue_mean",
            "hit_rate",
            "preempt"
        );
        for (name, r) in rows {
            let t = r.ttft_seconds.as_ref();
            let _ = writeln!(
                out,
                "{:<width$} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
                name,
                num(r.requests_finished.or(t.map(|t| t.count))),
                ms(t.and_then(|t| t.mean)),
                ms(t.and_then(|t| t.p50)),
                ms(t.and_then(|t| t.p99)),
                ms(r.e2e_seconds.as_ref().and_then(|t| t.mean)),
                ms(r.queue_seconds.as_ref().and_then(|t| t.mean)),
                pct(r.prefix_cache_hit_rate()),
                num(r.preemptions),
            );
        }
        out
    }
}

fn add(acc: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *acc = Some(acc.unwrap_or(0.0) + v);
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{:.1}", s * 1e3))
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{:.1}%", x * 100.0))
}

/// A table: one row per timer (ms) with count, mean, p50, p90, p99, then the
/// counters and the prefix-cache hit rate.
impl fmt::Display for EngineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = self
            .engine
            .map_or_else(|| "engine".to_string(), |e| e.to_string());
        writeln!(
            f,
            "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10}",
            format!("{engine} timer (ms)"),
            "count",
            "mean",
            "p50",
            "p90",
            "p99"
        )?;
        let labels = [
            "ttft",
            "e2e",
            "queue",
            "prefill",
            "decode",
            "inter_token",
            "time_per_output_token",
        ];
        for (label, t) in labels.iter().zip(self.timers()) {
            let Some(t) = t else { continue };
            let reset = if t.histogram.reset { "  (reset)" } else { "" };
            writeln!(
                f,
                "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10}{reset}",
                label,
                t.count,
                ms(t.mean),
                ms(t.p50),
                ms(t.p90),
                ms(t.p99)
            )?;
        }
        let counters = [
            ("requests_finished", self.requests_finished),
            ("prompt_tokens", self.prompt_tokens),
            ("generation_tokens", self.generation_tokens),
            ("prefix_cache_queries", self.prefix_cache_queries_tokens),
            ("prefix_cache_hits", self.prefix_cache_hits_tokens),
            ("preemptions", self.preemptions),
        ];
        for (label, v) in counters {
            if v.is_some() {
                writeln!(f, "{:<22} {:>9}", label, num(v))?;
            }
        }
        if !self.finished_by_reason.is_empty() {
            let parts: Vec<String> = self
                .finished_by_reason
                .iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "{:<22} {}", "finished_by_reason", parts.join(" "))?;
        }
        if let Some(rate) = self.prefix_cache_hit_rate() {
            writeln!(f, "{:<22} {:>9}", "prefix_cache_hit_rate", pct(Some(rate)))?;
        }
        if self.restarted {
            writeln!(
                f,
                "engine restarted during the run; reset: {}",
                self.resets.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ttft: [f64; 3], sum: f64, queries: f64, hits: f64, created: f64, start: f64) -> Scrape {
        let text = format!(
            "process_start_time_seconds {start}\n\
             # TYPE vllm:time_to_first_token_seconds histogram\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"0.1\",model_name=\"m\"}} {}\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"1.0\",model_name=\"m\"}} {}\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"m\"}} {}\n\
             vllm:time_to_first_token_seconds_count{{engine=\"0\",model_name=\"m\"}} {}\n\
             vllm:time_to_first_token_seconds_sum{{engine=\"0\",model_name=\"m\"}} {sum}\n\
             # TYPE vllm:time_to_first_token_seconds_created gauge\n\
             vllm:time_to_first_token_seconds_created{{engine=\"0\",model_name=\"m\"}} {created}\n\
             # TYPE vllm:prefix_cache_queries_total counter\n\
             vllm:prefix_cache_queries_total{{engine=\"0\",model_name=\"m\"}} {queries}\n\
             # TYPE vllm:prefix_cache_hits_total counter\n\
             vllm:prefix_cache_hits_total{{engine=\"0\",model_name=\"m\"}} {hits}\n\
             # TYPE vllm:request_success_total counter\n\
             vllm:request_success_total{{engine=\"0\",finished_reason=\"length\",model_name=\"m\"}} {}\n",
            ttft[0], ttft[1], ttft[2], ttft[2], ttft[2]
        );
        Scrape::parse(&text).unwrap()
    }

    #[test]
    fn delta_between_two_scrapes() {
        let before = page([1.0, 2.0, 2.0], 0.3, 1000.0, 0.0, 5.0, 1.0);
        let after = page([3.0, 6.0, 7.0], 4.3, 5000.0, 3000.0, 5.0, 1.0);
        let r = EngineReport::from_scrapes(&before, &after);
        assert_eq!(r.engine, Some(EngineKind::Vllm));
        let t = r.ttft_seconds.as_ref().unwrap();
        assert_eq!(t.count, 5.0);
        assert!((t.mean.unwrap() - 0.8).abs() < 1e-12);
        // Δbuckets: 2, 4, 5. p50: rank 2.5 in (0.1, 1.0], 0.5 of 2 → 0.1 + 0.9/4.
        assert!((t.p50.unwrap() - 0.325).abs() < 1e-12);
        assert_eq!(t.p99, Some(1.0));
        assert_eq!(r.prefix_cache_queries_tokens, Some(4000.0));
        assert_eq!(r.prefix_cache_hits_tokens, Some(3000.0));
        assert_eq!(r.prefix_cache_hit_rate(), Some(0.75));
        assert_eq!(r.requests_finished, Some(5.0));
        assert_eq!(r.finished_by_reason.get("length"), Some(&5.0));
        assert!(!r.restarted && r.resets.is_empty());
        // Missing everywhere → None, never a panic.
        assert_eq!(r.e2e_seconds, None);
        assert_eq!(r.preemptions, None);
    }

    #[test]
    fn a_restart_yields_the_after_values_and_says_so() {
        let before = page([10.0, 20.0, 20.0], 9.0, 9000.0, 100.0, 5.0, 1.0);
        // Process restarted: counts are smaller, start time changed.
        let after = page([1.0, 1.0, 1.0], 0.05, 500.0, 200.0, 6.0, 2.0);
        let r = EngineReport::from_scrapes(&before, &after);
        assert!(r.restarted);
        assert_eq!(r.prefix_cache_queries_tokens, Some(500.0));
        // Hits went up (100 → 200) but the restart makes it a reset too.
        assert_eq!(r.prefix_cache_hits_tokens, Some(200.0));
        assert!(r
            .resets
            .contains(&"vllm:prefix_cache_hits_total".to_string()));
        let t = r.ttft_seconds.unwrap();
        assert!(t.histogram.reset);
        assert_eq!(t.count, 1.0);
        assert_eq!(r.finished_by_reason.get("length"), Some(&1.0));
    }

    #[test]
    fn a_changed_created_timestamp_is_a_reset_even_if_counts_grew() {
        let before = page([1.0, 1.0, 1.0], 0.05, 10.0, 0.0, 5.0, 1.0);
        let after = page([3.0, 4.0, 4.0], 1.0, 20.0, 0.0, 6.0, 1.0);
        let r = EngineReport::from_scrapes(&before, &after);
        let t = r.ttft_seconds.unwrap();
        assert!(t.histogram.reset);
        assert_eq!(t.count, 4.0);
        assert_eq!(
            r.resets,
            vec!["vllm:time_to_first_token_seconds".to_string()]
        );
        // The counters' own `_created` did not change, so they are deltas.
        assert_eq!(r.prefix_cache_queries_tokens, Some(10.0));
    }

    #[test]
    fn total_merges_instances() {
        let zero = Scrape::default();
        let a =
            EngineReport::from_scrapes(&zero, &page([1.0, 2.0, 2.0], 0.3, 100.0, 50.0, 5.0, 1.0));
        let b =
            EngineReport::from_scrapes(&zero, &page([0.0, 1.0, 2.0], 3.0, 300.0, 50.0, 5.0, 1.0));
        let t = EngineReport::total(&[a.clone(), b]);
        let ttft = t.ttft_seconds.as_ref().unwrap();
        assert_eq!(
            ttft.histogram.buckets,
            vec![(0.1, 1.0), (1.0, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(ttft.count, 4.0);
        assert!((ttft.mean.unwrap() - 0.825).abs() < 1e-12);
        assert_eq!(t.prefix_cache_hit_rate(), Some(0.25));
        assert_eq!(t.finished_by_reason.get("length"), Some(&4.0));
        assert_eq!(t.engine, Some(EngineKind::Vllm));
        assert_eq!(t.e2e_seconds, None);
        assert_eq!(EngineReport::total(&[]), EngineReport::default());
        // A total over one report is that report.
        assert_eq!(EngineReport::total(std::slice::from_ref(&a)), a);
    }

    #[test]
    fn json_round_trip() {
        let r = EngineReport::since_start(&page([1.0, 2.0, 3.0], 1.5, 10.0, 5.0, 5.0, 1.0));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"+Inf\""), "{json}");
        let back: EngineReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn table_rendering() {
        let r = EngineReport::since_start(&page([1.0, 2.0, 3.0], 1.5, 10.0, 5.0, 5.0, 1.0));
        let table = r.to_string();
        assert!(table.contains("ttft"), "{table}");
        assert!(table.contains("500.0"), "{table}"); // mean 0.5 s
        assert!(table.contains("50.0%"), "{table}");
        assert!(!table.contains("e2e"), "{table}");
        let cmp =
            EngineReport::comparison_table(&[("a", &r), ("instance-b", &EngineReport::default())]);
        assert_eq!(cmp.lines().count(), 3);
        assert!(cmp.lines().nth(2).unwrap().starts_with("instance-b"));
    }
}
