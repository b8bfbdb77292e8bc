//! The simulator against the live system: the same replays (same sessions,
//! same Poisson arrivals, same policies) run on live engines through the
//! router and in the simulator with a profile, row by row
//! ([`validate`]), and the comparison as a table ([`validation_table`]).

use crate::{Live, LiveError};
use kvroute_sim::Profile;
use kvroute_study::capacity;
use kvroute_study::sims::{self, Job};
use kvroute_study::{workloads, LiveRunner, Regime, RouterChoice};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// One replay, live and simulated.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationRow {
    /// Workload name.
    pub workload: String,
    /// Policy spec.
    pub policy: String,
    /// Offered load, as a fraction of round-robin's simulated capacity.
    pub load: f64,
    /// Sessions per second offered.
    pub rate: f64,
    /// Requests completed live.
    pub requests_live: usize,
    /// Requests completed in the simulator.
    pub requests_sim: usize,
    /// Mean TTFT live (engine timers), s.
    pub ttft_mean_live: f64,
    /// Mean TTFT simulated, s.
    pub ttft_mean_sim: f64,
    /// p90 TTFT live (client timers), s.
    pub ttft_p90_live: f64,
    /// p90 TTFT simulated, s.
    pub ttft_p90_sim: f64,
    /// Mean E2E live (engine timers), s.
    pub e2e_mean_live: f64,
    /// Mean E2E simulated, s.
    pub e2e_mean_sim: f64,
    /// p90 E2E live (client timers), s.
    pub e2e_p90_live: f64,
    /// p90 E2E simulated, s.
    pub e2e_p90_sim: f64,
    /// Prefix-cache hit rate live.
    pub hit_live: f64,
    /// Prefix-cache hit rate simulated.
    pub hit_sim: f64,
}

fn err(sim: f64, live: f64) -> f64 {
    sim / live - 1.0
}

/// Replay each workload spec (one-line `--workload` syntax) with each
/// policy at each load (a fraction of round-robin's capacity in the
/// simulator) on `instances` live instances and in the simulator.
pub fn validate(
    live: &Live,
    profile: &Profile,
    workload_specs: &[String],
    policies: &[String],
    loads: &[f64],
    instances: usize,
    seed: u64,
) -> Result<Vec<ValidationRow>, LiveError> {
    let mut rows = Vec::new();
    for spec in workload_specs {
        let name = spec.split(':').next().unwrap_or(spec);
        let w = workloads::build_spec(name, spec, seed)?;
        let sub = Arc::new(live.subset(&w));
        let regime = Regime::new(profile, &sub, instances)?;
        // Round-robin's capacity under the regime's SLO, in the simulator.
        let cap = capacity::search(
            &regime,
            &Job::new("validate", "round_robin", seed, f64::NAN, 0.0),
            0.0,
        )?
        .row
        .sessions_per_s;
        for &load in loads {
            for p in policies {
                eprintln!(
                    "[validate] {} {p} at {:.0}% ({:.3} sessions/s) on {}",
                    sub.name,
                    load * 100.0,
                    load * cap,
                    live.engines()
                );
                let l = live.run(
                    &sub,
                    &RouterChoice::Kvroute(p.clone()),
                    instances,
                    load * cap,
                    load,
                    seed,
                )?;
                // Everything counted, as in the live run.
                let job = Job {
                    warmup_fraction: 0.0,
                    ..Job::new("validate", p, seed, load, load * cap)
                };
                let s = sims::run(&regime, &job)?;
                rows.push(ValidationRow {
                    workload: sub.name.clone(),
                    policy: p.clone(),
                    load,
                    rate: load * cap,
                    requests_live: l.requests,
                    requests_sim: s.requests,
                    ttft_mean_live: l.ttft_mean,
                    ttft_mean_sim: s.ttft_mean,
                    ttft_p90_live: l.client_ttft_p90,
                    ttft_p90_sim: s.ttft_p90,
                    e2e_mean_live: l.e2e_mean,
                    e2e_mean_sim: s.e2e_mean,
                    e2e_p90_live: l.client_e2e_p90,
                    e2e_p90_sim: s.e2e_p90,
                    hit_live: l.hit_rate,
                    hit_sim: s.hit_rate,
                });
            }
        }
    }
    Ok(rows)
}

/// The comparison as markdown under `heading`: one line per replay with
/// each error (simulated ÷ live − 1), then the mean |error| over all.
pub fn validation_table(rows: &[ValidationRow], heading: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{heading}\n");
    md.push_str("| workload | policy | load | requests | TTFT mean live / sim (err) | TTFT p90 live / sim (err) | E2E mean live / sim (err) | E2E p90 live / sim (err) | hit rate live / sim |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    let mut abs = [0.0f64; 4];
    for r in rows {
        let e = [
            err(r.ttft_mean_sim, r.ttft_mean_live),
            err(r.ttft_p90_sim, r.ttft_p90_live),
            err(r.e2e_mean_sim, r.e2e_mean_live),
            err(r.e2e_p90_sim, r.e2e_p90_live),
        ];
        for (acc, x) in abs.iter_mut().zip(e) {
            *acc += x.abs() / rows.len() as f64;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {:.0}% | {} / {} | {:.3} / {:.3} ({}) | {:.3} / {:.3} ({}) | {:.2} / {:.2} ({}) | {:.2} / {:.2} ({}) | {:.1}% / {:.1}% |",
            r.workload, r.policy, r.load * 100.0, r.requests_live, r.requests_sim,
            r.ttft_mean_live, r.ttft_mean_sim, pct(e[0]), r.ttft_p90_live, r.ttft_p90_sim, pct(e[1]),
            r.e2e_mean_live, r.e2e_mean_sim, pct(e[2]), r.e2e_p90_live, r.e2e_p90_sim, pct(e[3]),
            r.hit_live * 100.0, r.hit_sim * 100.0
        );
    }
    let _ = writeln!(
        md,
        "\nMean |error| over {} runs: TTFT mean {:.1}%, TTFT p90 {:.1}%, E2E mean {:.1}%, E2E p90 {:.1}%.",
        rows.len(),
        abs[0] * 100.0,
        abs[1] * 100.0,
        abs[2] * 100.0,
        abs[3] * 100.0
    );
    md
}
