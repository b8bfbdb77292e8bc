/*!
Which instance holds which KV-cache blocks.

# Brief overview

[`PrefixIndex`] maps each block hash to the instances holding it and answers
the one question routing asks: *how many leading blocks of this prompt does
each instance hold?* ([`PrefixIndex::match_prefix`], O(prompt blocks)). Each
instance's entries are bounded by a capacity with LRU eviction, so a directory
built from predictions forgets the way the engine's cache does.

[`Directory`] wraps the index for sharing between routing (many readers) and
its feeds, per instance in one of two [`Mode`]s:

* **predicted**: a routed request's blocks are assumed cached where it went
  ([`Directory::record_routed`]); works with any engine;
* **exact**: the engine's own KV events ([`Directory::apply`]) are the only
  writes.

and with a [`Freshness`] — live, or published every T seconds, or delayed by
T — so the value of fresh cache metadata can be measured in the router and in
the simulator alike.

```
use kvroute_core::{BlockHash, InstanceId, Nanos};
use kvroute_directory::{Directory, Freshness};

let dir = Directory::new(Freshness::Live);
let prompt = [BlockHash(11), BlockHash(12), BlockHash(13)];
dir.record_routed(Nanos::ZERO, InstanceId(1), &prompt[..2], None);
let overlap = dir.overlap(Nanos::ZERO, &prompt);
assert_eq!(overlap.get(InstanceId(1)), 2);
assert_eq!(overlap.get(InstanceId(0)), 0);
```
*/

#![deny(missing_docs)]

pub use crate::directory::{ApplyStats, Directory, Freshness, Mode, Op};
pub use crate::index::PrefixIndex;
pub use crate::snapshot::{InstanceSnapshot, Snapshot, SnapshotError};

mod directory;
mod index;
mod lru;
mod snapshot;
