/*!
The kvroute simulator: vLLM instances modelled step by step, a cluster of
them on simulated time, and the router in the loop running the very same
policy, directory and accounting code as the live router.

# Brief overview

* [`Engine`] — one instance: vLLM V1's scheduler (continuous batching,
  token budget, chunked prefill, FCFS admission, preemption by recompute), a
  paged KV cache with prefix caching and LRU eviction ([`BlockPool`]), and a
  step-latency model from a [`Profile`]. It emits vLLM's KV events and keeps
  vLLM's counters.
* [`profile`] — engine profiles (TOML): limits and latency coefficients.
* [`Cluster`] — N engines on one simulated clock with the router in the
  loop: the live router's [`Dispatcher`](kvroute_routing::Dispatcher),
  policy and directory, fed with engine gauges every metrics interval and
  with KV events (or predictions) through a directory of chosen freshness.
  Produces [`RequestRecord`]s and a [`Summary`], which counts the requests
  refused before they ran ([`Rejections`], e.g. longer than the profile's
  `max_model_len`) by [`RejectCause`].

```
use kvroute_core::{HashAlgo, Nanos};
use kvroute_sim::{Engine, EngineRequest, Profile};

let mut e = Engine::new(Profile::load("vllm-cpu-tiny")?, HashAlgo::Xxh3);
e.add(Nanos::ZERO, EngineRequest { id: 1, prompt: vec![7; 100], max_tokens: 2 })?;
let mut now = Nanos::ZERO;
let mut finished = Vec::new();
while let Some(end) = e.start_step(now) {
    now = end;
    finished.extend(e.finish_step().finished);
}
assert_eq!(finished.len(), 1);
assert_eq!(finished[0].output_tokens, 2);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

pub use crate::cluster::{engine_estimates, Cluster, ClusterConfig, Driver, RunResult, SimError};
pub use crate::engine::{AdmitError, Engine, EngineCounters, EngineRequest, Finished, StepOutput};
pub use crate::kv::BlockPool;
pub use crate::profile::{EngineLimits, Frontend, LatencyModel, Profile, ProfileError, StepWork};
pub use crate::summary::{cv, RejectCause, Rejections, RequestRecord, Summary};
pub use crate::sweep::{run_shared, Sweep, SweepPoint, SweepRow};
pub use kvroute_core::Slo;
pub use kvroute_core::Stats;

pub mod calibrate;
mod cluster;
mod engine;
mod kv;
pub mod profile;
mod summary;
mod sweep;
