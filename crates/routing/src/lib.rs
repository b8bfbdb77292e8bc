/*!
The routing pipeline shared by kvroute's live router and its simulator.

# Brief overview

A [`Dispatcher`] owns a [`Policy`](kvroute_core::Policy), a
[`Directory`](kvroute_directory::Directory) and an [`InstanceTable`]. For each
request it builds the policy's [`ClusterView`](kvroute_core::ClusterView)
(eligible instances, loads combining the engine's last gauges with the
router's own in-flight counts, prefix overlap computed once and only if
asked), calls `pick`, and accounts for the decision. The returned
[`InflightGuard`] carries the request's share of load until it is finished
or dropped, on every path.

```
use std::sync::Arc;
use kvroute_core::{BlockHash, ManualClock, Nanos, Outcome, RouteRequest};
use kvroute_directory::{Directory, Freshness};
use kvroute_policy::PolicyConfig;
use kvroute_routing::Dispatcher;

let d = Dispatcher::new(
    PolicyConfig::parse("cache_affinity")?.build(),
    Arc::new(Directory::new(Freshness::Live)),
    Arc::new(ManualClock::new(Nanos::ZERO)),
);
let (a, _b) = (d.add_instance("a"), d.add_instance("b"));
let req = RouteRequest {
    block_hashes: vec![BlockHash(1), BlockHash(2)],
    block_size: 16, prompt_tokens: 40, ..Default::default()
};
let first = d.route(&req)?;
let turn2 = d.route(&req)?; // same prefix: same instance, 2 blocks predicted cached
assert_eq!(turn2.decision.instance, first.decision.instance);
assert_eq!(turn2.decision.cached_blocks, 2);
assert_eq!(d.instance(first.decision.instance).unwrap().inflight(), 2);
first.guard.finish(Outcome::Finished);
drop(turn2); // a dropped guard counts as cancelled
assert_eq!(d.instance(a).unwrap().inflight() + d.instance(_b).unwrap().inflight(), 0);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

pub use crate::dispatcher::{Dispatcher, InflightGuard, Routed, Transition};
pub use crate::instance::{Health, Instance, InstanceCounters, InstanceState, InstanceTable};
pub use kvroute_core::EngineGauges;

mod dispatcher;
mod instance;
