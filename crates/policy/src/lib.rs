/*!
kvroute's routing policies, one per file, all behind
[`kvroute_core::Policy`].

# Brief overview

| name | kind | rule |
|---|---|---|
| [`round_robin`](RoundRobin) | load-only | next instance in turn |
| [`least_request`](LeastRequest) | load-only | fewest router-side in-flight requests |
| [`power_of_two`](PowerOfTwo) | load-only | two random candidates, lower load wins |
| [`prefix_hash`](PrefixHash) | cache-aware | rendezvous hash of the first K blocks, bounded-load spill |
| [`cache_affinity`](CacheAffinity) | cache-aware | longest cached prefix, ties by load |
| [`weighted`](Weighted) | cache-aware | max of α·cached − β·load − γ·KV usage |
| [`sglang_cache_aware`](SglangCacheAware) | row to beat | SGLang router's cache_aware |
| [`dualmap`](DualMap) | row to beat | two hash candidates, cache first, load under SLO pressure |
| [`preble_e2`](PrebleE2) | row to beat | Preble's exploit/explore |

Each file opens with its algorithm and parameters. Build one by name with
[`PolicyConfig`] (serde: a TOML table or JSON object tagged by `name`, or a
`name:key=value` spec).

Policies never measure anything themselves: load and prefix overlap come from
the caller's [`ClusterView`](kvroute_core::ClusterView), and the caller
reports routing and completion through the trait's hooks. This crate has no
async runtime and no HTTP dependency.

```
use kvroute_core::{RouteRequest, StaticView, InstanceId};
use kvroute_policy::PolicyConfig;

let policy = PolicyConfig::parse("cache_affinity")?.build();
let view = StaticView::idle(3).with_matched(2, 5); // instance 2 holds 5 blocks
let decision = policy.pick(&RouteRequest::default(), &view)?;
assert_eq!(decision.instance, InstanceId(2));
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

pub use crate::cache_affinity::{CacheAffinity, CacheAffinityConfig};
pub use crate::dualmap::{DualMap, DualMapConfig};
pub use crate::least_request::{LeastRequest, LeastRequestConfig};
pub use crate::power_of_two::{PowerOfTwo, PowerOfTwoConfig};
pub use crate::preble_e2::{PrebleE2, PrebleE2Config};
pub use crate::prefix_hash::{PrefixHash, PrefixHashConfig};
pub use crate::registry::{ConfigError, PolicyConfig, POLICY_NAMES};
pub use crate::round_robin::{RoundRobin, RoundRobinConfig};
pub use crate::sglang_cache_aware::{SglangCacheAware, SglangCacheAwareConfig};
pub use crate::shared::{Key as SharedKey, SharedPrefix, SharedPrefixConfig};
pub use crate::weighted::{Weighted, WeightedConfig};

mod cache_affinity;
mod dualmap;
mod least_request;
mod power_of_two;
mod preble_e2;
mod prefix_hash;
mod registry;
mod round_robin;
mod select;
mod sglang_cache_aware;
mod shared;
mod weighted;
