//! [`RunReport`]: what a run measured, and how it is written.
//!
//! * `requests.csv`: one [`RequestRecord`] per request, in id order.
//! * `summary.json`: the run's settings ([`RunInfo`]), `interrupted`, the
//!   [`ClientSummary`], one [`InstanceReport`] per engine (its
//!   [`EngineReport`]: engine-side TTFT / e2e / queue / prefill / decode /
//!   ITL with exact means and bucket percentiles, prefix-cache counters) and
//!   their total, and notes on anything that makes the numbers partial.
//! * [`Display`](std::fmt::Display): a table for the terminal with the
//!   client's and the engines' numbers side by side.

use crate::config::{Api, LoadgenConfig, Pacing, Slo};
use crate::error::LoadgenError;
use crate::record::RequestRecord;
use crate::summary::{ClientSummary, Stats};
use kvroute_metrics::{EngineReport, TimerStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;

/// The settings a run was made with, as recorded in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Target base URL.
    pub url: String,
    /// Endpoint family.
    pub api: Api,
    /// Model requested.
    pub model: String,
    /// Pacing actually used.
    pub pacing: Pacing,
    /// Request cap.
    pub num_requests: Option<u64>,
    /// Time after which no new request was started, seconds.
    pub duration_secs: Option<f64>,
    /// Warm-up, seconds.
    pub warmup_secs: f64,
    /// Per-request timeout, seconds.
    pub timeout_secs: f64,
    /// Engines scraped.
    pub engines: Vec<String>,
    /// Probe mode.
    pub probe: bool,
    /// Goodput objective.
    pub slo: Slo,
    /// Start of the load, Unix seconds.
    pub started_at_unix: f64,
    /// From the first request to the last answer (or the abort), seconds.
    pub wall_secs: f64,
    /// Fields merged into every request body.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// The caller's free-form facts ([`LoadgenConfig::meta`]).
    #[serde(default)]
    pub meta: BTreeMap<String, serde_json::Value>,
}

impl RunInfo {
    pub(crate) fn new(
        c: &LoadgenConfig,
        model: &str,
        pacing: Pacing,
        started_at_unix: f64,
        wall_secs: f64,
    ) -> RunInfo {
        RunInfo {
            url: c.url.clone(),
            api: c.api,
            model: model.to_string(),
            pacing,
            num_requests: c.num_requests,
            duration_secs: c.duration.map(|d| d.as_secs_f64()),
            warmup_secs: c.warmup.as_secs_f64(),
            timeout_secs: c.timeout.as_secs_f64(),
            engines: c.engines.clone(),
            probe: c.probe,
            slo: c.slo,
            started_at_unix,
            wall_secs,
            extra_body: c.extra_body.clone(),
            meta: c.meta.clone(),
        }
    }
}

/// One engine's side of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// The engine's base URL.
    pub url: String,
    /// Its timers and counters over the run (`None` if the final scrape failed).
    pub report: Option<EngineReport>,
    /// Why there is no report.
    pub error: Option<String>,
}

/// Everything a run measured (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Settings.
    pub run: RunInfo,
    /// True if the caller's shutdown signal ended the run early.
    pub interrupted: bool,
    /// Client-side summary.
    pub client: ClientSummary,
    /// Per engine, in the configured order.
    pub engines: Vec<InstanceReport>,
    /// All engines pooled (`None` without engines).
    pub engine_total: Option<EngineReport>,
    /// Anything that makes the numbers partial (failed scrapes, a run that
    /// ended within its warm-up).
    pub notes: Vec<String>,
    /// One per request, in id order (in `requests.csv`, not in `summary.json`).
    #[serde(skip)]
    pub records: Vec<RequestRecord>,
}

impl RunReport {
    /// Write `requests.csv` and `summary.json` into `dir` (created if needed).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), LoadgenError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| LoadgenError::write(dir, e))?;
        self.write_csv(dir.join("requests.csv"))?;
        let path = dir.join("summary.json");
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| LoadgenError::write(&path, e))?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| LoadgenError::write(&path, e))
    }

    /// Write the per-request CSV to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<(), LoadgenError> {
        let path = path.as_ref();
        let file = std::fs::File::create(path).map_err(|e| LoadgenError::write(path, e))?;
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
        if self.records.is_empty() {
            // Still give readers the header.
            w.write_record(CSV_COLUMNS)
                .map_err(|e| LoadgenError::write(path, e))?;
        }
        for r in &self.records {
            w.serialize(r).map_err(|e| LoadgenError::write(path, e))?;
        }
        let mut inner = w
            .into_inner()
            .map_err(|e| LoadgenError::write(path, e.into_error()))?;
        inner.flush().map_err(|e| LoadgenError::write(path, e))
    }
}

/// The columns of `requests.csv`, in order.
pub const CSV_COLUMNS: [&str; 20] = [
    "id",
    "session",
    "turn",
    "instance",
    "status",
    "error",
    "start",
    "ttft",
    "tpot",
    "itl_mean",
    "e2e",
    "prompt_tokens",
    "cached_tokens",
    "predicted_cached_tokens",
    "output_tokens",
    "engine_ttft",
    "engine_e2e",
    "error_kind",
    "warmup",
    "max_tokens",
];

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{:.1}", s * 1e3))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{:.1}%", x * 100.0))
}

fn client_cells(s: Option<&Stats>) -> String {
    match s {
        Some(s) if s.n > 0 => format!(
            "{:>6} {:>9} {:>8} {:>9} {:>9} {:>9}",
            s.n,
            ms(s.mean),
            ms(s.std),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99)
        ),
        _ => format!(
            "{:>6} {:>9} {:>8} {:>9} {:>9} {:>9}",
            "-", "-", "-", "-", "-", "-"
        ),
    }
}

fn engine_cells(t: Option<&TimerStats>) -> String {
    match t {
        Some(t) => format!(
            "{:>6} {:>9} {:>9} {:>9} {:>9}",
            t.count,
            ms(t.mean),
            ms(t.p50),
            ms(t.p90),
            ms(t.p99)
        ),
        None => format!("{:>6} {:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-", "-"),
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.client;
        let r = &self.run;
        let pacing = match r.pacing {
            Pacing::Open {
                max_in_flight: None,
            } => "open loop".to_string(),
            Pacing::Open {
                max_in_flight: Some(n),
            } => format!("open loop, ≤ {n} sessions in flight"),
            Pacing::Closed { concurrency } => format!("closed loop × {concurrency}"),
        };
        writeln!(
            f,
            "loadgen: {} → {} (model {}), {pacing}{}, {:.1} s{}",
            r.api.name(),
            r.url,
            r.model,
            if r.probe { ", probe" } else { "" },
            r.wall_secs,
            if self.interrupted {
                " — INTERRUPTED"
            } else {
                ""
            }
        )?;
        let errors: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            f,
            "requests    {} sent: {} measured ({} ok, {} failed{}), {} warm-up",
            c.requests_sent,
            c.requests,
            c.ok,
            c.failed,
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join(", "))
            },
            c.warmup_requests
        )?;
        writeln!(
            f,
            "throughput  {:.2} req/s, {:.1} output tok/s, {:.1} input tok/s over {:.1} s",
            c.throughput_rps, c.output_tps, c.input_tps, c.window_secs
        )?;
        writeln!(
            f,
            "goodput     {:.2} req/s ({}): {} of requests",
            c.goodput_rps,
            c.slo,
            pct(c.slo_attainment)
        )?;
        writeln!(
            f,
            "prefix hit  client-reported {}, router-predicted {}, engines {}",
            pct(c.cache_hit_rate),
            pct(c.predicted_hit_rate),
            pct(self
                .engine_total
                .as_ref()
                .and_then(EngineReport::prefix_cache_hit_rate))
        )?;
        writeln!(f)?;
        let e = self.engine_total.as_ref();
        writeln!(
            f,
            "{:<10} │ {:>6} {:>9} {:>8} {:>9} {:>9} {:>9} │ {:>6} {:>9} {:>9} {:>9} {:>9}",
            "ms",
            "client",
            "mean",
            "std",
            "p50",
            "p90",
            "p99",
            "engine",
            "mean",
            "p50",
            "p90",
            "p99"
        )?;
        let rows: [(&str, Option<&Stats>, Option<&TimerStats>); 7] = [
            (
                "ttft",
                Some(&c.ttft),
                e.and_then(|e| e.ttft_seconds.as_ref()),
            ),
            (
                "tpot",
                Some(&c.tpot),
                e.and_then(|e| e.time_per_output_token_seconds.as_ref()),
            ),
            (
                "itl",
                Some(&c.itl),
                e.and_then(|e| e.inter_token_seconds.as_ref()),
            ),
            ("e2e", Some(&c.e2e), e.and_then(|e| e.e2e_seconds.as_ref())),
            ("queue", None, e.and_then(|e| e.queue_seconds.as_ref())),
            ("prefill", None, e.and_then(|e| e.prefill_seconds.as_ref())),
            ("decode", None, e.and_then(|e| e.decode_seconds.as_ref())),
        ];
        for (name, client, engine) in rows {
            if client.is_none() && engine.is_none() {
                continue;
            }
            writeln!(
                f,
                "{name:<10} │ {} │ {}",
                client_cells(client),
                engine_cells(engine)
            )?;
        }
        writeln!(f)?;
        let width = c
            .per_instance
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(8);
        writeln!(
            f,
            "{:<width$} {:>8} {:>7} {:>9}",
            "instance", "requests", "failed", "cached"
        )?;
        for (name, i) in &c.per_instance {
            let cached =
                (i.prompt_tokens > 0).then(|| i.cached_tokens as f64 / i.prompt_tokens as f64);
            writeln!(
                f,
                "{name:<width$} {:>8} {:>7} {:>9}",
                i.requests,
                i.failed,
                pct(cached)
            )?;
        }
        if !self.engines.is_empty() {
            writeln!(f)?;
            let mut rows: Vec<(&str, &EngineReport)> = self
                .engines
                .iter()
                .filter_map(|i| i.report.as_ref().map(|r| (i.url.as_str(), r)))
                .collect();
            if let Some(t) = &self.engine_total {
                if rows.len() > 1 {
                    rows.push(("total", t));
                }
            }
            f.write_str(&EngineReport::comparison_table(&rows))?;
            writeln!(
                f,
                "engine means are exact; engine percentiles are bucket estimates (interpolated as PromQL histogram_quantile, capped at mean/(1−q)); client percentiles are exact"
            )?;
            for i in &self.engines {
                if let Some(e) = &i.error {
                    writeln!(f, "{}: no report: {e}", i.url)?;
                }
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadgenConfig;
    use crate::record::ErrorKind;

    fn report() -> RunReport {
        let config = LoadgenConfig::new("http://127.0.0.1:1");
        let rec = RequestRecord {
            id: 0,
            session: 0,
            turn: 0,
            instance: "http://127.0.0.1:1".into(),
            status: 0,
            error: "connection refused".into(),
            start: 0.0,
            ttft: f64::NAN,
            tpot: None,
            itl_mean: None,
            e2e: 0.001,
            prompt_tokens: 5,
            cached_tokens: None,
            predicted_cached_tokens: None,
            output_tokens: 0,
            engine_ttft: None,
            engine_e2e: None,
            error_kind: Some(ErrorKind::Connect),
            warmup: false,
            max_tokens: 3,
            itls: Vec::new(),
        };
        RunReport {
            run: RunInfo::new(&config, "tiny", config.effective_pacing(), 0.0, 1.0),
            interrupted: true,
            client: ClientSummary::of(std::slice::from_ref(&rec), config.slo),
            engines: vec![],
            engine_total: None,
            notes: vec!["a note".into()],
            records: vec![rec],
        }
    }

    #[test]
    fn writes_csv_and_json() {
        let dir =
            std::env::temp_dir().join(format!("kvroute-loadgen-report-{}", std::process::id()));
        let r = report();
        r.write(&dir).unwrap();
        let csv = std::fs::read_to_string(dir.join("requests.csv")).unwrap();
        assert_eq!(csv.lines().next().unwrap(), CSV_COLUMNS.join(","));
        assert_eq!(csv.lines().count(), 2);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["interrupted"], true);
        assert_eq!(json["client"]["errors"]["connect"], 1);
        assert_eq!(json["run"]["model"], "tiny");
        assert!(json.get("records").is_none());
        let back: RunReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.client, r.client);

        // No records: the header alone.
        let empty = RunReport {
            records: vec![],
            ..report()
        };
        empty.write(&dir).unwrap();
        let csv = std::fs::read_to_string(dir.join("requests.csv")).unwrap();
        assert_eq!(csv.trim_end(), CSV_COLUMNS.join(","));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_mentions_failures_and_interruption() {
        let text = report().to_string();
        assert!(text.contains("INTERRUPTED"), "{text}");
        assert!(text.contains("connect 1"), "{text}");
        assert!(text.contains("note: a note"), "{text}");
    }
}
