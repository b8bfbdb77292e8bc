//! The studies' figures, drawn from their rows alone: the same functions
//! draw them at the end of a run and from a finished run's CSVs
//! ([`render_from`], `sim study --figures-from DIR`), so a figure can be
//! redrawn without simulating again.
//!
//! | figure | rows | file |
//! |---|---|---|
//! | capacity ÷ round-robin's, per profile | `study1_capacity.csv` | `capacity_{profile}` |
//! | p90 TTFT against offered load, by family | `study1_capacity_probes.csv` + capacity | `latency_{profile}_{workload}` |
//! | weights α × β at the best γ | `study2_weights.csv` | `weights_{workload}` |
//! | p90 TTFT against staleness | `study3_staleness.csv` | `staleness_{sync,metrics}_{workload}` |
//! | gain against instances | `study4_scale.csv` | `scale_gain` |

use crate::capacity::{self, CapacityRow};
use crate::plot::{self, BarChart, BarSeries, Heatmap, LineChart, Panels, RefLine, Series, Stamp};
use crate::report::{weights_of, weights_summary};
use crate::sims::SimRow;
use crate::spread::Spread;
use crate::studies::{all_policies, file_safe, CACHE_AWARE, LOAD_ONLY, ROWS_TO_BEAT};
use crate::StudyError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a figure needs to know about a regime.
#[derive(Debug, Clone, PartialEq)]
pub struct RegimeKey {
    /// Engine profile.
    pub profile: String,
    /// Workload.
    pub workload: String,
    /// Instances.
    pub instances: usize,
    /// Requests per session (rates are drawn in requests per second).
    pub turns_per_session: f64,
    /// The TTFT objective, seconds.
    pub slo_ttft: f64,
}

impl RegimeKey {
    /// `profile/workload/instances`, as [`Regime::label`](crate::Regime::label).
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.profile, self.workload, self.instances)
    }

    /// Whether `r` ran in this regime.
    pub(crate) fn holds(&self, r: &SimRow) -> bool {
        self.is(&r.profile, &r.workload, r.instances)
    }

    fn is(&self, profile: &str, workload: &str, instances: usize) -> bool {
        profile == self.profile && workload == self.workload && instances == self.instances
    }

    /// Whether capacity search `c` ran in this regime.
    fn searched(&self, c: &CapacityRow) -> bool {
        self.is(&c.profile, &c.workload, c.instances)
    }

    /// Those of `regimes` that `rows` hold runs of.
    fn in_rows(regimes: &[RegimeKey], rows: &[SimRow]) -> Vec<RegimeKey> {
        regimes
            .iter()
            .filter(|r| rows.iter().any(|x| r.holds(x)))
            .cloned()
            .collect()
    }
}

impl From<&crate::Regime> for RegimeKey {
    fn from(r: &crate::Regime) -> RegimeKey {
        RegimeKey {
            profile: r.profile.name.clone(),
            workload: r.workload.name.clone(),
            instances: r.instances,
            turns_per_session: r.turns_per_session,
            slo_ttft: r.slo.ttft_secs,
        }
    }
}

fn objective(r: &RegimeKey) -> RefLine {
    RefLine {
        y: r.slo_ttft,
        label: format!("TTFT objective {} s", plot::tick(r.slo_ttft)),
    }
}

fn missed(x: &SimRow) -> bool {
    !x.meets_slo || x.failed > 0
}

/// Capacity under the objective relative to round-robin's, one bar chart
/// per profile (median and range over seeds).
pub fn capacity_bars(
    plots: &Path,
    regimes: &[RegimeKey],
    policies: &[&str],
    rows: &[CapacityRow],
    seeds: usize,
    stamp: &Stamp,
) -> Result<Vec<PathBuf>, StudyError> {
    let mut files = Vec::new();
    let mut profiles: Vec<&str> = regimes.iter().map(|r| r.profile.as_str()).collect();
    profiles.dedup();
    let caps = |r: &RegimeKey, pol: &str| -> Vec<(u64, f64)> {
        rows.iter()
            .filter(|c| r.searched(c) && c.policy == pol)
            .map(|c| (c.seed, c.requests_per_s))
            .collect()
    };
    for p in profiles {
        let mine: Vec<&RegimeKey> = regimes.iter().filter(|r| r.profile == p).collect();
        let series = policies
            .iter()
            .filter(|x| **x != "round_robin")
            .map(|pol| BarSeries {
                label: pol.to_string(),
                values: mine
                    .iter()
                    .map(|r| {
                        let (s, _) = crate::spread::compare(
                            &caps(r, pol),
                            &caps(r, "round_robin"),
                            capacity::TOLERANCE,
                        );
                        (s.median, s.lo, s.hi)
                    })
                    .collect(),
            })
            .collect();
        files.extend(plot::bar_chart(
            &plots.join(format!("capacity_{}", file_safe(p))),
            &BarChart {
                title: format!(
                    "{p}, {} instances: capacity under the objective ÷ round-robin's (median, range over {seeds} seeds)",
                    mine.first().map_or(0, |r| r.instances),
                ),
                y_label: "capacity under the objective ÷ round-robin's".into(),
                x_label: "workload".into(),
                categories: mine.iter().map(|r| r.workload.clone()).collect(),
                series,
                reference: Some(1.0),
            },
            stamp,
        )?);
    }
    Ok(files)
}

/// Where a latency curve (sorted by rate) stands at the capacity `rate`:
/// interpolated on log–log axes between the probes around it.
pub(crate) fn knee(points: &[(f64, f64)], rate: f64) -> Option<(f64, f64)> {
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
        .collect();
    let i = pts.iter().position(|p| p.0 >= rate)?;
    if i == 0 || (pts[i].0 - rate).abs() <= 1e-12 * rate {
        return Some((rate, pts[i].1));
    }
    let (a, b) = (pts[i - 1], pts[i]);
    let t = (rate.ln() - a.0.ln()) / (b.0.ln() - a.0.ln());
    Some((rate, (a.1.ln() + t * (b.1.ln() - a.1.ln())).exp()))
}

/// Capacity under the objective seen as p90 TTFT against the offered rate
/// (the capacity probes of one seed): small multiples by policy family,
/// the objective dashed, objective-missing probes hollow, each policy's
/// capacity marked.
pub fn latency_panels(
    plots: &Path,
    regimes: &[RegimeKey],
    policies: &[&str],
    probes: &[SimRow],
    capacity: &[CapacityRow],
    seed: u64,
    stamp: &Stamp,
) -> Result<Vec<PathBuf>, StudyError> {
    let mut files = Vec::new();
    for r in regimes {
        let series_of = |pol: &str| {
            let mut rows: Vec<&SimRow> = probes
                .iter()
                .filter(|x| r.holds(x) && x.policy == pol && x.seed == seed)
                .collect();
            rows.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let mut s = Series::new(
                pol,
                rows.iter()
                    .map(|x| (x.rate * r.turns_per_session, x.ttft_p90))
                    .collect(),
            );
            s.missed = rows.iter().map(|x| missed(x)).collect();
            s.knee = capacity
                .iter()
                .find(|c| r.searched(c) && c.policy == pol && c.seed == seed && !c.capped)
                .and_then(|c| knee(&s.points, c.requests_per_s));
            s
        };
        let panel = |title: &str, family: &[&str]| LineChart {
            title: title.into(),
            x_label: "offered requests per second".into(),
            y_label: "p90 time to first token (s)".into(),
            log_x: true,
            log_y: true,
            series: family
                .iter()
                .filter(|pol| policies.contains(pol))
                .map(|pol| series_of(pol))
                .collect(),
            refs: vec![objective(r)],
            x_ticks: Vec::new(),
        };
        files.extend(plot::line_panels(
            &plots.join(format!("latency_{}_{}", file_safe(&r.profile), r.workload)),
            &Panels {
                title: format!(
                    "{} — p90 TTFT against offered load (capacity probes, seed {seed}; \
                     × the capacity: the highest rate meeting the SLO, TTFT and TPOT)",
                    r.label()
                ),
                panels: vec![
                    panel("load-only", &LOAD_ONLY),
                    panel("kvroute cache-aware", &CACHE_AWARE),
                    panel("rows to beat (published designs)", &ROWS_TO_BEAT),
                ],
            },
            stamp,
        )?);
    }
    Ok(files)
}

/// The weights grid of each regime: p90 TTFT ÷ objective over α × β at the
/// γ of the best cell (median over seeds).
pub fn weights_heatmaps(
    plots: &Path,
    regimes: &[RegimeKey],
    rows: &[SimRow],
    seeds: usize,
    stamp: &Stamp,
) -> Result<Vec<PathBuf>, StudyError> {
    let mut files = Vec::new();
    let grid = |pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter_map(|x| weights_of(&x.policy))
            .map(|w| pick(&w))
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let (alphas, betas) = (grid(|w| w.0), grid(|w| w.1));
    for (r, best) in regimes.iter().filter_map(|r| {
        weights_summary(rows, std::slice::from_ref(r))
            .pop()
            .map(|b| (r, b))
    }) {
        let g = best.best.2;
        let values = betas
            .iter()
            .map(|&b| {
                alphas
                    .iter()
                    .map(|&a| {
                        Spread::of(
                            rows.iter()
                                .filter(|x| r.holds(x) && weights_of(&x.policy) == Some((a, b, g)))
                                .map(|x| x.ttft_p90 / x.slo_ttft),
                        )
                        .median
                    })
                    .collect()
            })
            .collect();
        files.extend(plot::heatmap(
            &plots.join(format!("weights_{}", r.workload)),
            &Heatmap {
                title: format!(
                    "{} — p90 TTFT ÷ objective at weighted's capacity, γ = {g} (median of {seeds} seeds)",
                    r.label(),
                ),
                x_label: "α (weight of the prompt's cached share)".into(),
                y_label: "β (weight of load)".into(),
                xs: alphas.clone(),
                ys: betas.clone(),
                values,
                value_label: "p90 TTFT ÷ objective".into(),
                threshold: Some(1.0),
                log_scale: true,
            },
            stamp,
        )?);
    }
    Ok(files)
}

/// p90 TTFT against the directory sync interval and the metrics poll
/// interval, per regime (median and range over seeds).
pub fn staleness_lines(
    plots: &Path,
    regimes: &[RegimeKey],
    rows: &[SimRow],
    stamp: &Stamp,
) -> Result<Vec<PathBuf>, StudyError> {
    let mut files = Vec::new();
    for r in regimes {
        for (study, xget, xname) in [
            (
                "staleness_sync",
                (|x: &SimRow| x.sync_secs) as fn(&SimRow) -> f64,
                "directory sync interval (s)",
            ),
            (
                "staleness_metrics",
                |x| x.metrics_secs,
                "metrics poll interval (s)",
            ),
        ] {
            let mine: Vec<&SimRow> = rows
                .iter()
                .filter(|x| x.study == study && r.holds(x))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut intervals: Vec<f64> = mine.iter().map(|x| xget(x)).collect();
            intervals.sort_by(f64::total_cmp);
            intervals.dedup();
            let policies: Vec<&str> = all_policies()
                .into_iter()
                .filter(|p| mine.iter().any(|x| x.policy == *p))
                .collect();
            let series = policies
                .iter()
                .map(|p| {
                    let mut s = Series::new(*p, Vec::new());
                    for &i in &intervals {
                        let at: Vec<&&SimRow> = mine
                            .iter()
                            .filter(|x| x.policy == *p && xget(x) == i)
                            .collect();
                        let sp = Spread::of(at.iter().map(|x| x.ttft_p90));
                        s.points.push((i, sp.median));
                        s.ranges.push((i, sp.lo, sp.hi));
                        // Hollow where most seeds missed the objective.
                        let n_missed = at.iter().filter(|x| missed(x)).count();
                        s.missed.push(2 * n_missed > at.len());
                    }
                    s
                })
                .collect();
            let load = mine.first().map_or(f64::NAN, |x| x.load);
            files.extend(plot::line_chart(
                &plots.join(format!("{study}_{}", r.workload)),
                &LineChart {
                    title: format!(
                        "{} — p90 TTFT against {xname} ({:.0} % of each policy's capacity)",
                        r.label(),
                        load * 100.0
                    ),
                    x_label: xname.into(),
                    y_label: "p90 time to first token (s)".into(),
                    log_x: false,
                    log_y: false,
                    series,
                    refs: vec![objective(r)],
                    x_ticks: intervals,
                },
                stamp,
            )?);
        }
    }
    Ok(files)
}

/// The gain of cache-aware routing against the number of instances.
pub fn scale_gain(
    plots: &Path,
    profile: &str,
    rows: &[SimRow],
    stamp: &Stamp,
) -> Result<Vec<PathBuf>, StudyError> {
    let gains = crate::report::scale_gains(rows);
    let series = gains
        .iter()
        .map(|(w, pts)| Series {
            label: w.to_string(),
            points: pts.iter().map(|(n, s)| (*n, s.median)).collect(),
            ranges: pts.iter().map(|(n, s)| (*n, s.lo, s.hi)).collect(),
            ..Default::default()
        })
        .collect();
    let mut measured: Vec<f64> = gains
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(n, _)| *n))
        .collect();
    measured.sort_by(f64::total_cmp);
    measured.dedup();
    let load = rows.first().map_or(f64::NAN, |x| x.load);
    Ok(plot::line_chart(
        &plots.join("scale_gain"),
        &LineChart {
            title: format!(
                "{profile} — gain of cache-aware routing against instances ({:.0} % of round-robin's capacity)",
                load * 100.0
            ),
            x_label: "instances (log scale)".into(),
            y_label: "gain: p90 TTFT, best load-only ÷ best cache-aware".into(),
            log_x: true,
            log_y: false,
            series,
            refs: vec![RefLine {
                y: 1.0,
                label: "gain 1: no difference".into(),
            }],
            x_ticks: measured,
        },
        stamp,
    )?)
}

/// The regimes among `regimes` that `rows` hold runs of.
pub(crate) fn regimes_in(
    regimes: &[std::sync::Arc<crate::Regime>],
    rows: &[SimRow],
) -> Vec<RegimeKey> {
    let keys: Vec<RegimeKey> = regimes.iter().map(|r| RegimeKey::from(&**r)).collect();
    RegimeKey::in_rows(&keys, rows)
}

/// The rows of a CSV a run wrote; a damaged file is refused with its name.
pub(crate) fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, StudyError> {
    let bad = |e: &dyn std::fmt::Display| StudyError::Write {
        path: path.display().to_string(),
        message: format!("reading: {e}"),
    };
    let mut r = csv::Reader::from_path(path).map_err(|e| bad(&e))?;
    r.deserialize().map(|x| x.map_err(|e| bad(&e))).collect()
}

/// The regimes of a finished run, from its capacity rows (requests per
/// session = requests ÷ sessions per second) and probes (the objective).
fn regimes_of(capacity: &[CapacityRow], probes: &[SimRow]) -> Vec<RegimeKey> {
    let mut seen: BTreeMap<(String, String, usize), usize> = BTreeMap::new();
    let mut out: Vec<RegimeKey> = Vec::new();
    for c in capacity {
        let key = (c.profile.clone(), c.workload.clone(), c.instances);
        let turns = (c.sessions_per_s > 0.0 && c.requests_per_s.is_finite())
            .then(|| c.requests_per_s / c.sessions_per_s);
        match seen.get(&key) {
            Some(&i) => {
                if out[i].turns_per_session.is_nan() {
                    out[i].turns_per_session = turns.unwrap_or(f64::NAN);
                }
            }
            None => {
                seen.insert(key, out.len());
                let slo_ttft = probes
                    .iter()
                    .find(|p| {
                        p.profile == c.profile
                            && p.workload == c.workload
                            && p.instances == c.instances
                    })
                    .map_or(f64::NAN, |p| p.slo_ttft);
                out.push(RegimeKey {
                    profile: c.profile.clone(),
                    workload: c.workload.clone(),
                    instances: c.instances,
                    turns_per_session: turns.unwrap_or(f64::NAN),
                    slo_ttft,
                });
            }
        }
    }
    out
}

/// Draw every figure again from the CSVs a finished `sim study` left in
/// `dir`, into `dir/plots`. The studies' choices are read back from the
/// rows: the regimes, the seeds, the weights grid, the intervals.
pub fn render_from(dir: &Path, stamp: &Stamp) -> Result<Vec<PathBuf>, StudyError> {
    let capacity: Vec<CapacityRow> = read_csv(&dir.join("study1_capacity.csv"))?;
    let probes: Vec<SimRow> = read_csv(&dir.join("study1_capacity_probes.csv"))?;
    let weights: Vec<SimRow> = read_csv(&dir.join("study2_weights.csv"))?;
    let staleness: Vec<SimRow> = read_csv(&dir.join("study3_staleness.csv"))?;
    let scale: Vec<SimRow> = read_csv(&dir.join("study4_scale.csv"))?;
    let plots = dir.join("plots");
    let regimes = regimes_of(&capacity, &probes);
    let policies: Vec<&str> = all_policies()
        .into_iter()
        .filter(|p| capacity.iter().any(|c| c.policy == *p))
        .collect();
    let mut seeds: Vec<u64> = capacity.iter().map(|c| c.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let seed0 = seeds.first().copied().unwrap_or(0);
    let mut files = capacity_bars(&plots, &regimes, &policies, &capacity, seeds.len(), stamp)?;
    let first = regimes.first().map(|r| r.profile.clone());
    let first_profile: Vec<RegimeKey> = regimes
        .iter()
        .filter(|r| Some(&r.profile) == first.as_ref())
        .cloned()
        .collect();
    files.extend(latency_panels(
        &plots,
        &first_profile,
        &policies,
        &probes,
        &capacity,
        seed0,
        stamp,
    )?);
    files.extend(weights_heatmaps(
        &plots,
        &RegimeKey::in_rows(&regimes, &weights),
        &weights,
        seeds.len(),
        stamp,
    )?);
    files.extend(staleness_lines(
        &plots,
        &RegimeKey::in_rows(&regimes, &staleness),
        &staleness,
        stamp,
    )?);
    if let Some(p) = scale.first().map(|x| x.profile.clone()) {
        files.extend(scale_gain(&plots, &p, &scale, stamp)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::studies::write_csv;

    fn sim(study: &str, workload: &str, policy: &str, seed: u64) -> SimRow {
        SimRow {
            study: study.into(),
            profile: "p@128k".into(),
            workload: workload.into(),
            policy: policy.into(),
            instances: 8,
            seed,
            load: 0.8,
            slo_ttft: 2.0,
            ttft_p90: 1.0 + seed as f64 * 0.1,
            meets_slo: true,
            ..Default::default()
        }
    }

    /// A finished run's CSVs, written as a run writes them, drawn again:
    /// every figure kind, named as the run names them.
    #[test]
    fn figures_are_redrawn_from_a_runs_csvs() {
        let dir = std::env::temp_dir().join(format!("kvroute-figures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut cap, mut probes, mut weights, mut stale, mut scale) =
            (vec![], vec![], vec![], vec![], vec![]);
        for w in ["gsp", "rag"] {
            for pol in ["round_robin", "cache_affinity"] {
                for seed in [0, 1] {
                    cap.push(CapacityRow {
                        profile: "p@128k".into(),
                        workload: w.into(),
                        instances: 8,
                        policy: pol.into(),
                        seed,
                        sessions_per_s: 2.0,
                        requests_per_s: 8.0,
                        missed_at: 3.0,
                        ..Default::default()
                    });
                    for (k, rate) in [1.0, 2.0, 3.0].into_iter().enumerate() {
                        let mut r = sim("capacity", w, pol, seed);
                        r.rate = rate;
                        r.ttft_p90 = 0.5 * (k + 1) as f64;
                        r.meets_slo = k < 2;
                        probes.push(r);
                    }
                    for sync in [0.0, 5.0] {
                        let mut r = sim("staleness_sync", w, pol, seed);
                        r.sync_secs = sync;
                        stale.push(r);
                    }
                }
            }
            for (a, b) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
                for seed in [0, 1] {
                    let spec = format!("weighted:alpha={a},beta={b},gamma=0");
                    weights.push(sim("weights", w, &spec, seed));
                }
            }
            for n in [2, 8, 32] {
                for pol in ["round_robin", "cache_affinity"] {
                    for seed in [0, 1] {
                        let mut r = sim("scale", w, pol, seed);
                        r.instances = n;
                        r.ttft_p90 = if pol == "round_robin" { 2.0 } else { 1.0 };
                        scale.push(r);
                    }
                }
            }
        }
        write_csv(&dir.join("study1_capacity.csv"), &cap).unwrap();
        write_csv(&dir.join("study1_capacity_probes.csv"), &probes).unwrap();
        write_csv(&dir.join("study2_weights.csv"), &weights).unwrap();
        write_csv(&dir.join("study3_staleness.csv"), &stale).unwrap();
        write_csv(&dir.join("study4_scale.csv"), &scale).unwrap();
        let stamp = Stamp {
            command: "sim study --figures-from".into(),
            commit: "test".into(),
        };
        let files = render_from(&dir, &stamp).unwrap();
        let mut names: Vec<String> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "capacity_p_128k.png",
                "latency_p_128k_gsp.png",
                "latency_p_128k_rag.png",
                "scale_gain.png",
                "staleness_sync_gsp.png",
                "staleness_sync_rag.png",
                "weights_gsp.png",
                "weights_rag.png",
            ]
        );
        // The regimes read back: requests per session from the capacity
        // rows, the objective from the probes.
        let keys = regimes_of(&cap, &probes);
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].turns_per_session, keys[0].slo_ttft), (4.0, 2.0));
        // A damaged CSV is refused with its name.
        std::fs::write(dir.join("study2_weights.csv"), "study,profile\nweights").unwrap();
        let e = render_from(&dir, &stamp).unwrap_err().to_string();
        assert!(e.contains("study2_weights.csv"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_knee_is_interpolated_on_log_axes() {
        let pts = [(1.0, 0.1), (4.0, 1.6)];
        let (x, y) = knee(&pts, 2.0).unwrap();
        assert_eq!(x, 2.0);
        // Halfway in log rate is halfway in log latency: √(0.1 × 1.6) = 0.4.
        assert!((y - 0.4).abs() < 1e-12, "{y}");
        assert_eq!(knee(&pts, 4.0), Some((4.0, 1.6)));
        assert_eq!(knee(&pts, 8.0), None, "beyond the probes");
        assert_eq!(knee(&pts, f64::INFINITY), None);
    }
}
