/*!
kvroute's studies: which routing works, where users run it, by how much.

# Brief overview

[`run`] carries out the studies of the proposal kvroute grew from, in
*regimes* ([`Regime`]: a measured GPU engine profile, a workload, an instance
count, and the SLO derived from them), and writes one CSV per study,
figures (SVG and PNG) and `results.md` with the tables and, per regime, a
verdict on each of the proposal's four expected outcomes:

1. **capacity under SLO** of every policy (three load-only, kvroute's three
   cache-aware, five published and production designs) in every regime —
   the highest rate at which p90 TTFT and p90 TPOT stay within the SLO
   ([`capacity`]) — and percentiles and goodput at fixed loads;
2. **weights** of the scoring formula;
3. **staleness** of the directory and of the load metrics, 0 → 30 s;
4. **scale**, 2 → 1024 instances;
5. the **live** system with the peer routers, when the caller provides it.

Every point runs with several seeds; [`spread`] holds the rule by which a
difference counts as beyond the noise.
*/

#![deny(missing_docs)]

pub mod capacity;
pub mod figures;
pub mod plot;
pub mod regime;
mod report;
pub mod sims;
pub mod spread;
mod studies;
pub mod workloads;

pub use crate::regime::Regime;
pub use crate::report::Verdict;
pub use crate::studies::{
    all_policies, live_workloads, report_from, run, LiveRow, LiveRunner, RouterChoice, StudyConfig,
    StudyOutput, CACHE_AWARE, LOAD_ONLY, ROWS_TO_BEAT,
};

use kvroute_workload::Session;
use std::sync::Arc;

/// A workload prepared for the studies.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name (`sharegpt`, `rag`).
    pub name: String,
    /// The one-line spec it was built from (`--workload` syntax).
    pub spec: String,
    /// Whether sessions have several turns.
    pub multi_turn: bool,
    /// The sessions (arrivals are reassigned per run).
    pub sessions: Arc<Vec<Session>>,
    /// Token ids are below this (for replication).
    pub vocab: u32,
}

/// Why a study could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A configuration error.
    #[error("study configuration: {0}")]
    Config(String),
    /// A simulation failed.
    #[error("simulation: {0}")]
    Sim(String),
    /// A live run failed.
    #[error("live run: {0}")]
    Live(String),
    /// Writing results failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A figure failed.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}
