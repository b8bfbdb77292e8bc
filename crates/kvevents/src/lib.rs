/*!
vLLM's KV-cache events on the wire.

# Brief overview

vLLM publishes every change to its prefix cache over ZMQ as three frames —
topic, an 8-byte big-endian sequence number, and a msgpack batch
`[ts, [event…], dp_rank]`. This crate decodes ([`decode_payload`],
[`decode_frames`]) and encodes ([`encode_payload`]) that format into
[`kvroute_core::KvEvent`]s, tracks sequence numbers to notice lost or restarted
streams ([`SeqTracker`]), and — with the `zmq` feature — opens the sockets
([`Subscriber`] for the router, [`Publisher`] for the emulated engine).

```
use kvroute_core::{BlockHash, KvEvent};
use kvroute_kvevents::{decode_payload, encode_payload, EventBatch};

let batch = EventBatch {
    ts: 1.0,
    events: vec![KvEvent::BlockRemoved { block_hashes: vec![BlockHash(7)] }],
    dp_rank: None,
    skipped: 0,
};
assert_eq!(decode_payload(&encode_payload(&batch))?, batch);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

pub use crate::seq::{SeqStatus, SeqTracker};
#[cfg(feature = "zmq")]
pub use crate::socket::{Endpoint, Publisher, Received, SocketError, Subscriber};
pub use crate::wire::{
    decode_frames, decode_payload, encode_frames, encode_payload, EventBatch, WireError,
};

mod seq;
#[cfg(feature = "zmq")]
mod socket;
mod wire;
