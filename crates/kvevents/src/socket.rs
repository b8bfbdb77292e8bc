//! ZMQ sockets for KV events (feature `zmq`, pure-Rust `zeromq` crate on tokio).
//!
//! vLLM's publisher *binds* when its endpoint has a wildcard host (`tcp://*:5557`)
//! and *connects* otherwise, in which case the subscriber must bind. Both
//! sides are supported here through [`Endpoint`].

use crate::wire::{decode_frames, encode_frames, EventBatch, WireError};
use bytes::Bytes;
use kvroute_core::KvEvent;
use std::fmt;
use std::str::FromStr;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// Where a socket lives and which side opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Bind this address; the peer connects.
    Bind(String),
    /// Connect to this address; the peer binds.
    Connect(String),
}

impl FromStr for Endpoint {
    type Err = SocketError;
    /// `bind:tcp://127.0.0.1:5557` or `connect:tcp://127.0.0.1:5557`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("bind", addr)) if addr.starts_with("tcp://") => Ok(Endpoint::Bind(addr.into())),
            Some(("connect", addr)) if addr.starts_with("tcp://") => {
                Ok(Endpoint::Connect(addr.into()))
            }
            _ => Err(SocketError::Endpoint(s.to_string())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Bind(a) => write!(f, "bind:{a}"),
            Endpoint::Connect(a) => write!(f, "connect:{a}"),
        }
    }
}

/// A socket-level failure.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Not `bind:tcp://…` or `connect:tcp://…`.
    #[error("endpoint {0:?} must be bind:tcp://HOST:PORT or connect:tcp://HOST:PORT")]
    Endpoint(String),
    /// The ZMQ layer failed.
    #[error("zmq {endpoint}: {source}")]
    Zmq {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: zeromq::ZmqError,
    },
    /// A message was not a KV-event batch.
    #[error(transparent)]
    Wire(#[from] WireError),
}

fn zmq_err(endpoint: &Endpoint) -> impl FnOnce(zeromq::ZmqError) -> SocketError + '_ {
    move |source| SocketError::Zmq {
        endpoint: endpoint.to_string(),
        source,
    }
}

/// A SUB socket receiving KV-event batches.
pub struct Subscriber {
    socket: zeromq::SubSocket,
    endpoint: Endpoint,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// One received batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The topic frame.
    pub topic: Vec<u8>,
    /// The sequence number.
    pub seq: i64,
    /// The batch.
    pub batch: EventBatch,
}

impl Subscriber {
    /// Open a subscriber on `endpoint`, subscribed to `topic` ("" for all).
    pub async fn open(endpoint: Endpoint, topic: &str) -> Result<Subscriber, SocketError> {
        let mut socket = zeromq::SubSocket::new();
        match &endpoint {
            Endpoint::Bind(a) => socket.bind(a).await.map(|_| ()),
            Endpoint::Connect(a) => socket.connect(a).await,
        }
        .map_err(zmq_err(&endpoint))?;
        socket.subscribe(topic).await.map_err(zmq_err(&endpoint))?;
        Ok(Subscriber { socket, endpoint })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Wait for the next batch. A malformed message is returned as
    /// `SocketError::Wire` and the socket stays usable.
    pub async fn recv(&mut self) -> Result<Received, SocketError> {
        let msg = self.socket.recv().await.map_err(zmq_err(&self.endpoint))?;
        let frames: Vec<&[u8]> = msg.iter().map(|b| b.as_ref()).collect();
        let (topic, seq, batch) = decode_frames(&frames)?;
        Ok(Received { topic, seq, batch })
    }
}

/// A PUB socket sending KV-event batches as vLLM does.
pub struct Publisher {
    socket: zeromq::PubSocket,
    endpoint: Endpoint,
    topic: Vec<u8>,
    seq: i64,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Publisher {
    /// Open a publisher on `endpoint` with `topic`.
    pub async fn open(endpoint: Endpoint, topic: &str) -> Result<Publisher, SocketError> {
        let mut socket = zeromq::PubSocket::new();
        match &endpoint {
            Endpoint::Bind(a) => socket.bind(a).await.map(|_| ()),
            Endpoint::Connect(a) => socket.connect(a).await,
        }
        .map_err(zmq_err(&endpoint))?;
        Ok(Publisher {
            socket,
            endpoint,
            topic: topic.as_bytes().to_vec(),
            seq: 0,
        })
    }

    /// Send one batch (sequence numbers count up from 0).
    pub async fn send(&mut self, ts: f64, events: Vec<KvEvent>) -> Result<(), SocketError> {
        let batch = EventBatch {
            ts,
            events,
            dp_rank: None,
            skipped: 0,
        };
        let frames = encode_frames(&self.topic, self.seq, &batch);
        self.seq += 1;
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let msg = ZmqMessage::try_from(frames)
            .map_err(|_| SocketError::Wire(WireError::Frames("empty message".into())))?;
        self.socket.send(msg).await.map_err(zmq_err(&self.endpoint))
    }

    /// Batches sent so far.
    pub fn sent(&self) -> i64 {
        self.seq
    }
}
