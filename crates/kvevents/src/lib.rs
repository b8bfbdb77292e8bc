/*!
vLLM's KV-cache events on the wire.

# Brief overview

vLLM publishes every change to its prefix cache over ZMQ as three frames —
topic, an 8-byte big-endian sequence number, and a msgpack batch
`[ts, [event…], dp_rank]`. This crate decodes ([`decode_payload`],
[`decode_frames`]) and encodes ([`encode_payload`]) that format into
[`kvroute_core::KvEvent`]s, tracks sequence numbers to notice lost or restarted
streams ([`SeqTracker`]), and — with the `zmq` feature — speaks ZeroMQ's
wire protocol itself, with hard limits on what a peer can make it allocate
([`Limits`]): [`Subscriber`] for the router (every connection numbered, so
publishers can be told apart), [`Publisher`] with vLLM's replay socket for the
emulated engine, and [`replay`] to fetch missed batches.

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
pub use crate::socket::{
    replay, AddrRange, Endpoint, Incoming, Peer, Publisher, Received, Refusal, SocketError,
    SubscribeOptions, Subscriber, SubscriberStats,
};
pub use crate::wire::{
    decode_frames, decode_payload, encode_frames, encode_payload, EventBatch, WireError,
};
#[cfg(feature = "zmq")]
pub use crate::zmtp::{Limits, ZmtpError};

mod seq;
#[cfg(feature = "zmq")]
mod socket;
mod wire;
#[cfg(feature = "zmq")]
mod zmtp;
