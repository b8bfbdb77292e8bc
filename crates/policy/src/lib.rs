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
| [`sglang_cache_aware`](SglangCacheAware) | row to beat | sglang-router 0.3.2's cache_aware on its own approximate tree |
| [`dualmap`](DualMap) | row to beat | two hash candidates past the hot shared prefix, cache first, load under SLO pressure |
| [`preble_e2`](PrebleE2) | row to beat | Preble's exploit/explore over its global tree, windowed cost, rebalancing |
| [`dynamo_kv`](DynamoKv) | row to beat | Dynamo's classic KV-router logit, temperature softmax |
| [`llmd_epp`](LlmdEpp) | row to beat | llm-d / GIE endpoint picker: queue 2, KV 2, prefix 3 |

Each file opens with its algorithm and parameters. Build one by name with
[`PolicyConfig`] (serde: a TOML table or JSON object tagged by `name`, or a
`name:key=value` spec); one table in `registry.rs` lists them.

Prompts that all start alike (a system prompt every request carries) would
make a policy keyed on the first blocks, or on the longest match, send
everything to the first instance that cached them. [`SharedPrefix`] finds
the prefix a hot share of recent traffic has in common, and `prefix_hash`,
`cache_affinity`, `weighted` and `dualmap` key and score on what lies past
it. Every policy explains its candidates ([`Policy::explain`](kvroute_core::Policy::explain)).

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
pub use crate::dynamo_kv::{DynamoKv, DynamoKvConfig};
pub use crate::least_request::{LeastRequest, LeastRequestConfig};
pub use crate::llmd_epp::{LlmdEpp, LlmdEppConfig};
pub use crate::power_of_two::{PowerOfTwo, PowerOfTwoConfig};
pub use crate::preble_e2::{PrebleE2, PrebleE2Config};
pub use crate::prefix_hash::{PrefixHash, PrefixHashConfig};
pub use crate::registry::{ConfigError, EngineEstimates, PolicyConfig, PolicySpec, POLICY_NAMES};
pub use crate::round_robin::{RoundRobin, RoundRobinConfig};
pub use crate::sglang_cache_aware::{SglangCacheAware, SglangCacheAwareConfig};
pub use crate::shared::{Key as SharedKey, SharedPrefix, SharedPrefixConfig};
pub use crate::weighted::{Weighted, WeightedConfig};

mod cache_affinity;
mod dualmap;
mod dynamo_kv;
mod least_request;
mod llmd_epp;
mod power_of_two;
mod preble_e2;
mod prefix_hash;
mod registry;
mod round_robin;
mod select;
mod sglang_cache_aware;
mod shared;
mod weighted;
