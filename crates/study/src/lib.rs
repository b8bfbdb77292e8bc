/*!
kvroute's studies: which routing works, by how much, and why.

# Brief overview

[`run`] carries out the four studies of the proposal kvroute grew from and
writes, under the output directory, one CSV per study, figures (SVG and PNG)
and `results.md` with the tables and a verdict on each expected outcome:

1. **policies side by side** — the six policies and the three published rows
   to beat, on multi-turn ShareGPT and on RAG, 2 instances, at 30/60/90 % of
   capacity ([`sims`], plus the live system when the caller provides it);
2. **weights** of the scoring formula — an (α, β, γ) grid, heat maps, the best
   weights per workload and one robust default;
3. **staleness** — directory sync and metrics poll intervals from 0 to 30 s;
4. **scale** — 2 → 1024 instances with the load scaled alike; the gain of
   cache-aware over load-only routing against instance count.

Capacity is the highest session rate at which round-robin keeps the mean
TTFT within the SLO, found by bisection in the simulator.
*/

#![deny(missing_docs)]

pub mod plot;
mod report;
pub mod sims;
mod studies;

pub use crate::report::Verdict;
pub use crate::studies::{run, LiveRow, LiveRunner, RouterChoice, StudyConfig, StudyOutput};

use kvroute_workload::Session;
use std::sync::Arc;

/// A workload prepared for the studies.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name (`sharegpt`, `rag`).
    pub name: String,
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
