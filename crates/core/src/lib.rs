/*!
The one trait set of kvroute.

# Brief overview

Every other kvroute crate speaks these types. A caller (the live router, the
simulator, or your own proxy) turns a prompt into a [`RouteRequest`] — its block
hashes computed with a [`BlockHasher`] configured like the engines — and asks a
[`Policy`] to [`pick`](Policy::pick) an instance given a [`ClusterView`]: the
eligible instances, each one's [`InstanceLoad`], and each one's prefix
[`Overlap`] with the prompt. The answer is a [`Decision`] naming the instance,
the blocks it is believed to hold, and a [`Reason`]; [`Policy::explain`]
lists the candidates it weighed ([`CandidateScore`]).

Two decisions shape the crate:

* **`pick` is synchronous and allocation-light.** Deciding is computation over a
  consistent snapshot, never I/O, so the same code runs inside an async proxy
  and inside a discrete-event simulator. Time comes from a [`Clock`]
  ([`SystemClock`] live, [`ManualClock`] simulated), never from `Instant::now()`.
* **Instances are dense indices ([`InstanceId`]), not URLs.** Per-instance
  state is a vector lookup; names and addresses belong to the caller.

No async runtime, no HTTP: this crate (and `kvroute-policy` on top of it) can be
embedded in any proxy.

```
use kvroute_core::{BlockHasher, HashAlgo, BlockHash};

let hasher = BlockHasher::new(HashAlgo::Sha256Cbor, 32)?;
let tokens: Vec<u32> = (5..37).collect();
assert_eq!(hasher.hash_blocks(&tokens), vec![BlockHash(15778777955027974201)]);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

pub use crate::decision::{Decision, Reason};
pub use crate::event::KvEvent;
pub use crate::explain::{CandidateScore, Term};
pub use crate::hash::{
    BlockHasher, ChainDigest, HashAlgo, UnknownHashAlgo, ZeroBlockSize, VLLM_DEFAULT_SEED,
};
pub use crate::ids::{BlockHash, InstanceId, RequestId, SessionId};
pub use crate::load::{EngineGauges, InstanceLoad};
pub use crate::policy::{ClusterView, Completion, Outcome, Overlap, PickError, Policy};
pub use crate::request::RouteRequest;
pub use crate::rng::{mix64, BuildMix, FastMap, MixHasher, SeededRng};
pub use crate::slo::Slo;
pub use crate::stats::Stats;
pub use crate::time::{Clock, ManualClock, Nanos, SystemClock};
pub use crate::view::StaticView;

mod decision;
mod event;
mod explain;
mod hash;
mod ids;
mod load;
mod policy;
mod request;
mod rng;
mod slo;
mod stats;
mod time;
mod view;
