//! KV-event sockets over [ZMTP](crate::zmtp) on tokio (feature `zmq`):
//! [`Subscriber`] for the router, [`Publisher`] (with vLLM's replay socket)
//! for the emulated engine, and [`replay`] to fetch missed batches.
//!
//! vLLM's publisher *binds* when its endpoint has a wildcard host
//! (`tcp://*:5557`) and *connects* otherwise, in which case the subscriber
//! must bind. Both sides are supported through [`Endpoint`]; a connecting
//! side reconnects with backoff for as long as it lives, as libzmq does.
//!
//! ```text
//! Subscriber (bind)    accept ─▶ allowed address? ─ no ─▶ Refused (closed at once)
//!                              └▶ under max_connections? ─ no ─▶ Refused
//!                              └▶ handshake (timeout) ─▶ subscribe ─▶ Connected{peer}
//!                                 ─▶ Batch{peer, …} | Malformed{peer, …} … ─▶ Disconnected{peer, why}
//! Subscriber (connect) connect ─▶ handshake ─▶ … same … ─▶ Disconnected ─▶ retry (100 ms … 5 s)
//! ```
//!
//! Every connection gets its own number ([`Peer::connection`]) and its
//! address, so a consumer can tell publishers apart, notice a second
//! publisher on one endpoint, and know when one went away.

use crate::wire::{decode_frames, decode_payload, encode_frames, EventBatch, WireError};
use crate::zmtp::{
    encode_message, handshake, subscribe_message, Inbound, Limits, Reader, SocketType,
    Subscription, ZmtpError,
};
use bytes::Bytes;
use kvroute_core::KvEvent;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Messages queued per subscriber connection on a publisher (its high-water
/// mark); beyond it the publisher drops, as a ZMQ PUB does.
const PUB_QUEUE: usize = 10_000;

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
        let ep = match s.split_once(':') {
            Some(("bind", addr)) => Endpoint::Bind(addr.into()),
            Some(("connect", addr)) => Endpoint::Connect(addr.into()),
            _ => return Err(SocketError::Endpoint(s.to_string())),
        };
        split_tcp(ep.address()).map_err(|_| SocketError::Endpoint(s.to_string()))?;
        Ok(ep)
    }
}

impl Endpoint {
    /// The `tcp://HOST:PORT` part.
    pub fn address(&self) -> &str {
        match self {
            Endpoint::Bind(a) | Endpoint::Connect(a) => a,
        }
    }

    /// For a bind endpoint, the IP it binds to, if it is a literal address
    /// (`*` is the unspecified address). `None` for host names and for
    /// connect endpoints.
    pub fn bind_ip(&self) -> Option<IpAddr> {
        let Endpoint::Bind(a) = self else { return None };
        let (host, _) = split_tcp(a).ok()?;
        if host == "*" {
            return Some(IpAddr::from([0, 0, 0, 0]));
        }
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
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

/// `tcp://HOST:PORT` → (`HOST`, port).
fn split_tcp(addr: &str) -> Result<(&str, u16), SocketError> {
    let bad = || SocketError::Endpoint(addr.to_string());
    let rest = addr.strip_prefix("tcp://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse().map_err(|_| bad())?;
    Ok((host, port))
}

/// The socket addresses of `tcp://HOST:PORT` (`*` binds every address).
async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, SocketError> {
    let (host, port) = split_tcp(addr)?;
    let host = if host == "*" { "0.0.0.0" } else { host };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| SocketError::Io {
            endpoint: addr.to_string(),
            source,
        })?
        .collect();
    if found.is_empty() {
        return Err(SocketError::Endpoint(addr.to_string()));
    }
    Ok(found)
}

/// A socket-level failure.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Not `bind:tcp://HOST:PORT` or `connect:tcp://HOST:PORT`.
    #[error("endpoint {0:?} must be bind:tcp://HOST:PORT or connect:tcp://HOST:PORT")]
    Endpoint(String),
    /// Binding, resolving or connecting failed.
    #[error("{endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The peer broke the protocol or a limit.
    #[error("{endpoint}: {source}")]
    Zmtp {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: ZmtpError,
    },
    /// No answer in time.
    #[error("{endpoint}: no answer within {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The time waited.
        after: Duration,
    },
    /// A message was not a KV-event batch.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// One connection to a socket: its number (unique per socket, counting
/// from 1) and the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The connection's number.
    pub connection: u64,
    /// The peer's address.
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.connection, self.addr)
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

/// Why a bound subscriber refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is not in [`SubscribeOptions::allow`].
    NotAllowed,
    /// [`Limits::max_connections`] peers are connected already.
    TooManyConnections,
}

/// What a [`Subscriber`] hands its owner, in order per connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A publisher finished its handshake and was subscribed.
    Connected(Peer),
    /// A KV-event batch.
    Batch(Peer, Received),
    /// A message that was not a KV-event batch (the connection stays).
    Malformed(Peer, WireError),
    /// A connection ended (closed by the peer, or a protocol or limit
    /// violation, which closes it).
    Disconnected(Peer, String),
    /// A connection refused at accept (closed before any byte was read).
    Refused(SocketAddr, Refusal),
}

/// Address ranges allowed to connect: `10.0.0.0/8`, `127.0.0.1`, `::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    net: IpAddr,
    prefix: u8,
}

impl AddrRange {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AddrRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR range (10.0.0.0/8, ::1)");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(AddrRange { net, prefix })
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// How a [`Subscriber`] subscribes and what it accepts.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Topic prefix to subscribe to ("" for all).
    pub topic: String,
    /// Protocol bounds.
    pub limits: Limits,
    /// Addresses allowed to connect to a bound subscriber (empty: any).
    pub allow: Vec<AddrRange>,
    /// Items queued for the owner before connections wait (backpressure).
    pub queue: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            topic: String::new(),
            limits: Limits::default(),
            allow: Vec::new(),
            queue: 1024,
        }
    }
}

/// Counters a subscriber keeps itself (items may be dropped from the
/// owner's queue under a flood; these never are).
#[derive(Debug, Default)]
pub struct SubscriberStats {
    /// Connections refused at accept.
    pub refused: AtomicU64,
    /// Connections ended by a protocol or limit violation.
    pub violations: AtomicU64,
}

/// A SUB socket receiving KV-event batches.
pub struct Subscriber {
    rx: mpsc::Receiver<Incoming>,
    task: Option<JoinHandle<()>>,
    endpoint: Endpoint,
    local_addr: Option<SocketAddr>,
    stats: Arc<SubscriberStats>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.endpoint)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Subscriber {
    /// Open a subscriber on `endpoint`. A bind endpoint is bound before this
    /// returns (an error says why it could not be); a connect endpoint is
    /// dialled in the background until a publisher answers.
    pub async fn open(
        endpoint: Endpoint,
        options: SubscribeOptions,
    ) -> Result<Subscriber, SocketError> {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(SubscriberStats::default());
        let options = Arc::new(options);
        let (task, local_addr) = match &endpoint {
            Endpoint::Bind(addr) => {
                let listener = bind(addr).await?;
                let local = listener.local_addr().ok();
                let task = tokio::spawn(accept_subscribers(
                    listener,
                    options,
                    tx,
                    Arc::clone(&stats),
                ));
                (task, local)
            }
            Endpoint::Connect(addr) => {
                split_tcp(addr)?;
                let task = tokio::spawn(dial_publisher(
                    addr.clone(),
                    options,
                    tx,
                    Arc::clone(&stats),
                ));
                (task, None)
            }
        };
        Ok(Subscriber {
            rx,
            task: Some(task),
            endpoint,
            local_addr,
            stats,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The bound address (bind endpoints; useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Counters kept by the socket itself.
    pub fn stats(&self) -> &SubscriberStats {
        &self.stats
    }

    /// Close the socket and its connections, and wait until they are gone
    /// (a bound port is free again when this returns; dropping closes too,
    /// a moment later).
    pub async fn close(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// The next item; `None` only if the socket's task ended.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next batch, skipping everything else (tests, simple consumers).
    pub async fn recv_batch(&mut self) -> Option<Received> {
        loop {
            if let Incoming::Batch(_, r) = self.recv().await? {
                return Some(r);
            }
        }
    }
}

async fn bind(addr: &str) -> Result<TcpListener, SocketError> {
    let addrs = resolve(addr).await?;
    TcpListener::bind(&addrs[..])
        .await
        .map_err(|source| SocketError::Io {
            endpoint: addr.to_string(),
            source,
        })
}

async fn accept_subscribers(
    listener: TcpListener,
    options: Arc<SubscribeOptions>,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<SubscriberStats>,
) {
    let slots = Arc::new(Semaphore::new(options.limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut next = 0u64;
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(x) => x,
                    Err(_) => {
                        // Out of file descriptors and the like.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let refusal = if !options.allow.is_empty()
                    && !options.allow.iter().any(|r| r.contains(addr.ip()))
                {
                    Some(Refusal::NotAllowed)
                } else {
                    None
                };
                let permit = match refusal {
                    None => Arc::clone(&slots).try_acquire_owned().ok(),
                    Some(_) => None,
                };
                let Some(permit) = permit else {
                    drop(stream);
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    let why = refusal.unwrap_or(Refusal::TooManyConnections);
                    let _ = tx.try_send(Incoming::Refused(addr, why));
                    continue;
                };
                next += 1;
                let peer = Peer { connection: next, addr };
                let (options, tx, stats) = (Arc::clone(&options), tx.clone(), Arc::clone(&stats));
                conns.spawn(async move {
                    let why = serve_publisher(stream, peer, &options, &tx, &stats).await;
                    let _ = tx.send(Incoming::Disconnected(peer, why)).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn dial_publisher(
    addr: String,
    options: Arc<SubscribeOptions>,
    tx: mpsc::Sender<Incoming>,
    stats: Arc<SubscriberStats>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut next = 0u64;
    loop {
        let target = resolve(&addr).await;
        if let Ok(addrs) = target {
            if let Ok(stream) = TcpStream::connect(&addrs[..]).await {
                backoff = MIN_BACKOFF;
                next += 1;
                let peer = Peer {
                    connection: next,
                    addr: stream.peer_addr().unwrap_or(addrs[0]),
                };
                let why = serve_publisher(stream, peer, &options, &tx, &stats).await;
                if tx.send(Incoming::Disconnected(peer, why)).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Handshake with one publisher, subscribe, and hand its batches over until
/// it goes away; returns why it ended.
async fn serve_publisher(
    stream: TcpStream,
    peer: Peer,
    options: &SubscribeOptions,
    tx: &mpsc::Sender<Incoming>,
    stats: &SubscriberStats,
) -> String {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = Reader::new(BufReader::new(r), options.limits);
    let result: Result<(), ZmtpError> = async {
        handshake(&mut r, &mut w, SocketType::Sub).await?;
        w.write_all(&subscribe_message(options.topic.as_bytes()))
            .await?;
        if tx.send(Incoming::Connected(peer)).await.is_err() {
            return Ok(());
        }
        loop {
            let Inbound::Message(frames) = r.next(&mut w).await? else {
                continue;
            };
            let refs: Vec<&[u8]> = frames.iter().map(|b| b.as_ref()).collect();
            let item = match decode_frames(&refs) {
                Ok((topic, seq, batch)) => Incoming::Batch(peer, Received { topic, seq, batch }),
                Err(e) => Incoming::Malformed(peer, e),
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => "subscriber closed".to_string(),
        Err(ZmtpError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "closed by the peer".to_string()
        }
        Err(e) => {
            if !matches!(e, ZmtpError::Io(_)) {
                stats.violations.fetch_add(1, Ordering::Relaxed);
            }
            e.to_string()
        }
    }
}

/// One subscriber connection of a [`Publisher`].
struct PubPeer {
    subscriptions: Vec<Vec<u8>>,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct PubShared {
    peers: Mutex<Vec<(u64, PubPeer)>>,
}

/// The batches a publisher keeps for replay.
#[derive(Default)]
struct ReplayBuffer {
    batches: Mutex<VecDeque<(i64, Bytes)>>,
}

/// A PUB socket sending KV-event batches as vLLM does, with vLLM's replay
/// socket (a ROUTER answering "everything from sequence number N").
pub struct Publisher {
    shared: Arc<PubShared>,
    endpoint: Endpoint,
    topic: Vec<u8>,
    seq: i64,
    local_addr: Option<SocketAddr>,
    replay: Option<(Arc<ReplayBuffer>, usize)>,
    replay_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Publisher {
    /// Open a publisher on `endpoint` with `topic`. A connect endpoint is
    /// dialled in the background and redialled whenever the subscriber goes
    /// away (batches sent meanwhile are dropped, as vLLM's PUB drops them).
    pub async fn open(endpoint: Endpoint, topic: &str) -> Result<Publisher, SocketError> {
        let shared = Arc::new(PubShared::default());
        let limits = Limits::default();
        let (task, local_addr) = match &endpoint {
            Endpoint::Bind(addr) => {
                let listener = bind(addr).await?;
                let local = listener.local_addr().ok();
                let shared = Arc::clone(&shared);
                let task = tokio::spawn(async move {
                    let mut conns = JoinSet::new();
                    let mut next = 0u64;
                    loop {
                        tokio::select! {
                            Some(_) = conns.join_next(), if !conns.is_empty() => {}
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    next += 1;
                                    conns.spawn(serve_subscriber(stream, next, Arc::clone(&shared), limits));
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        }
                    }
                });
                (task, local)
            }
            Endpoint::Connect(addr) => {
                split_tcp(addr)?;
                let (addr, shared) = (addr.clone(), Arc::clone(&shared));
                let task = tokio::spawn(async move {
                    let mut backoff = MIN_BACKOFF;
                    let mut next = 0u64;
                    loop {
                        if let Ok(addrs) = resolve(&addr).await {
                            if let Ok(stream) = TcpStream::connect(&addrs[..]).await {
                                backoff = MIN_BACKOFF;
                                next += 1;
                                serve_subscriber(stream, next, Arc::clone(&shared), limits).await;
                            }
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                });
                (task, None)
            }
        };
        Ok(Publisher {
            shared,
            endpoint,
            topic: topic.as_bytes().to_vec(),
            seq: 0,
            local_addr,
            replay: None,
            replay_addr: None,
            tasks: vec![task],
        })
    }

    /// Also serve vLLM's replay protocol on `addr` (`tcp://HOST:PORT`,
    /// bound), keeping the last `buffer_steps` batches (vLLM: 10,000).
    pub async fn with_replay(
        mut self,
        addr: &str,
        buffer_steps: usize,
    ) -> Result<Publisher, SocketError> {
        let listener = bind(addr).await?;
        self.replay_addr = listener.local_addr().ok();
        let buffer = Arc::new(ReplayBuffer::default());
        let topic = Bytes::from(self.topic.clone());
        let buf = Arc::clone(&buffer);
        self.tasks.push(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve_replay(stream, Arc::clone(&buf), topic.clone()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
        self.replay = Some((buffer, buffer_steps.max(1)));
        Ok(self)
    }

    /// The bound address (bind endpoints).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The replay socket's bound address, if any.
    pub fn replay_addr(&self) -> Option<SocketAddr> {
        self.replay_addr
    }

    /// Subscribers connected now (whether or not subscribed yet).
    pub fn subscribers(&self) -> usize {
        self.shared.peers.lock().len()
    }

    /// Send one batch (sequence numbers count up from 0). Never waits: a
    /// subscriber whose queue is full, or none at all, loses the batch.
    pub fn send(&mut self, ts: f64, events: Vec<KvEvent>) {
        let batch = EventBatch {
            ts,
            events,
            dp_rank: None,
            skipped: 0,
        };
        self.send_seq(self.seq, &batch);
    }

    /// Send `batch` as number `seq` (the next [`send`](Self::send) follows
    /// it): what a restarted publisher, or one that skipped numbers, sends.
    pub fn send_seq(&mut self, seq: i64, batch: &EventBatch) {
        let frames = encode_frames(&self.topic, seq, batch);
        let wire = Bytes::from(encode_message(&frames));
        for (_, p) in self.shared.peers.lock().iter() {
            if p.subscriptions.iter().any(|s| self.topic.starts_with(s)) {
                let _ = p.tx.try_send(wire.clone());
            }
        }
        if let Some((buf, cap)) = &self.replay {
            let mut b = buf.batches.lock();
            if b.len() == *cap {
                b.pop_front();
            }
            let payload = frames.into_iter().nth(2).unwrap_or_default();
            b.push_back((seq, Bytes::from(payload)));
        }
        self.seq = seq.saturating_add(1);
    }

    /// Whether a subscriber has subscribed to this publisher's topic (batches
    /// sent before that are lost, as with any PUB socket).
    pub fn has_subscriber(&self) -> bool {
        self.shared
            .peers
            .lock()
            .iter()
            .any(|(_, p)| p.subscriptions.iter().any(|s| self.topic.starts_with(s)))
    }

    /// Batches sent so far.
    pub fn sent(&self) -> i64 {
        self.seq
    }
}

/// One subscriber connected to a publisher: track its subscriptions, write
/// what the publisher queues for it.
async fn serve_subscriber(stream: TcpStream, id: u64, shared: Arc<PubShared>, limits: Limits) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = Reader::new(BufReader::new(r), limits);
    if handshake(&mut r, &mut w, SocketType::Pub).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(PUB_QUEUE);
    shared.peers.lock().push((
        id,
        PubPeer {
            subscriptions: Vec::new(),
            tx: tx.clone(),
        },
    ));
    let writer = async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        loop {
            let mut pong = Vec::new();
            let Ok(inbound) = r.next(&mut pong).await else {
                return;
            };
            if !pong.is_empty() && tx.send(Bytes::from(pong)).await.is_err() {
                return;
            }
            let Some(sub) = Subscription::from_inbound(&inbound) else {
                continue;
            };
            let mut peers = shared.peers.lock();
            if let Some((_, p)) = peers.iter_mut().find(|(i, _)| *i == id) {
                match sub {
                    Subscription::Subscribe(t) => p.subscriptions.push(t),
                    Subscription::Cancel(t) => {
                        if let Some(i) = p.subscriptions.iter().position(|s| *s == t) {
                            p.subscriptions.swap_remove(i);
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    shared.peers.lock().retain(|(i, _)| *i != id);
}

const END_SEQ: i64 = -1;

/// Answer replay requests on one ROUTER connection, as vLLM's publisher
/// does: `["", start]` → `["", topic, seq, payload]`… then `["", "", -1, ""]`.
async fn serve_replay(stream: TcpStream, buffer: Arc<ReplayBuffer>, topic: Bytes) {
    let (r, mut w) = stream.into_split();
    let mut r = Reader::new(BufReader::new(r), Limits::default());
    if handshake(&mut r, &mut w, SocketType::Router).await.is_err() {
        return;
    }
    loop {
        let Ok(Inbound::Message(frames)) = r.next(&mut w).await else {
            return;
        };
        let Some(start) = frames
            .last()
            .and_then(|f| <[u8; 8]>::try_from(f.as_ref()).ok())
            .map(i64::from_be_bytes)
        else {
            continue;
        };
        let batches: Vec<(i64, Bytes)> = buffer
            .batches
            .lock()
            .iter()
            .filter(|(s, _)| *s >= start)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (seq, payload) in batches {
            out.extend(encode_message(&[
                &b""[..],
                &topic,
                &seq.to_be_bytes(),
                &payload,
            ]));
        }
        out.extend(encode_message(&[
            &b""[..],
            b"",
            &END_SEQ.to_be_bytes(),
            b"",
        ]));
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Ask an engine's replay socket (`tcp://HOST:PORT`, vLLM's
/// `replay_endpoint`) for batches `from..to`, within `timeout`.
///
/// vLLM 0.32 answers `["", topic, seq, payload]` per buffered batch from
/// `from` on, then `["", "", -1, ""]`; older versions leave the topic out.
/// Both are read. Batches outside `from..to` are skipped.
pub async fn replay(
    addr: &str,
    from: i64,
    to: i64,
    timeout: Duration,
) -> Result<Vec<(i64, EventBatch)>, SocketError> {
    let work = async {
        let io = |source| SocketError::Io {
            endpoint: addr.to_string(),
            source,
        };
        let zmtp = |source| SocketError::Zmtp {
            endpoint: addr.to_string(),
            source,
        };
        let addrs = resolve(addr).await?;
        let stream = TcpStream::connect(&addrs[..]).await.map_err(io)?;
        let (r, mut w) = stream.into_split();
        let mut r = Reader::new(BufReader::new(r), Limits::default());
        handshake(&mut r, &mut w, SocketType::Dealer)
            .await
            .map_err(zmtp)?;
        w.write_all(&encode_message(&[&b""[..], &from.to_be_bytes()]))
            .await
            .map_err(io)?;
        let mut out = Vec::new();
        loop {
            let Inbound::Message(frames) = r.next(&mut w).await.map_err(zmtp)? else {
                continue;
            };
            // Drop the empty delimiter, then [topic,] seq, payload.
            let body: Vec<&Bytes> = match frames.split_first() {
                Some((d, rest)) if d.is_empty() => rest.iter().collect(),
                _ => frames.iter().collect(),
            };
            let (seq, payload) = match body.as_slice() {
                [_, seq, payload] | [seq, payload] => (seq, payload),
                _ => {
                    return Err(SocketError::Wire(WireError::Frames(format!(
                        "replay answer of {} frames",
                        frames.len()
                    ))))
                }
            };
            let seq: [u8; 8] = seq.as_ref().try_into().map_err(|_| {
                SocketError::Wire(WireError::Frames(
                    "replay answer without an 8-byte sequence number".into(),
                ))
            })?;
            let seq = i64::from_be_bytes(seq);
            if seq == END_SEQ {
                return Ok(out);
            }
            if (from..to).contains(&seq) {
                out.push((seq, decode_payload(payload)?));
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SocketError::Timeout {
            endpoint: addr.to_string(),
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_name_their_bind_address() {
        let e: Endpoint = "bind:tcp://127.0.0.1:5557".parse().unwrap();
        assert_eq!(e, Endpoint::Bind("tcp://127.0.0.1:5557".into()));
        assert_eq!(e.bind_ip(), Some(IpAddr::from([127, 0, 0, 1])));
        let e: Endpoint = "bind:tcp://*:5557".parse().unwrap();
        assert_eq!(e.bind_ip(), Some(IpAddr::from([0, 0, 0, 0])));
        let e: Endpoint = "bind:tcp://[::1]:5557".parse().unwrap();
        assert!(e.bind_ip().unwrap().is_loopback());
        let e: Endpoint = "connect:tcp://engine-0:5557".parse().unwrap();
        assert_eq!(e.bind_ip(), None);
        for bad in [
            "tcp://h:1",
            "bind:ipc:///x",
            "bind:tcp://h",
            "bind:tcp://:1",
            "bind:tcp://h:x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn address_ranges() {
        let r: AddrRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains("10.1.2.3".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: AddrRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let any: AddrRange = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("8.8.8.8".parse().unwrap()));
        let v6: AddrRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "::1/129", "10.0.0.0/"] {
            assert!(bad.parse::<AddrRange>().is_err(), "{bad}");
        }
    }
}
