//! ZMTP 3.0, the ZeroMQ wire protocol (rfc.zeromq.org/spec/23), with the NULL
//! mechanism: exactly what vLLM's KV-event sockets speak (PUB/SUB for the
//! stream, DEALER/ROUTER for replay), with a hard bound on everything a peer
//! can make this side allocate or wait for.
//!
//! ```text
//! greeting  (64 bytes, both ways): FF 00×7 01 7F | 03 00 | "NULL" + 16×00 | as-server | 31×00
//! READY     (command, both ways):  05 "READY" ( name-len name value-len(u32 BE) value )*
//!                                  properties: Socket-Type (PUB, SUB, DEALER, ROUTER), Identity
//! frame:    flags (bit0 MORE, bit1 LONG, bit2 COMMAND) | size (1 byte, or 8 if LONG) | body
//! ```
//!
//! Why not a general ZeroMQ library: the pure-Rust `zeromq` crate allocated
//! whatever frame length a peer announced (a 73-byte packet aborted the
//! router), and libzmq bounds each frame but buffers a multipart message of
//! any number of frames until it completes. Here a frame longer than
//! [`Limits::max_frame_bytes`] or a message of more than
//! [`Limits::max_frames`] frames ends the connection before anything is
//! allocated for it, and a peer that does not finish its handshake within
//! [`Limits::handshake_timeout`] is dropped.
//!
//! This side announces ZMTP 3.0, so a libzmq peer falls back to 3.0's
//! subscription messages (`0x01` + topic as a data frame); 3.1's SUBSCRIBE
//! and CANCEL commands and PING heartbeats are understood too.

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// Bounds on what a peer can make a socket allocate or wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes. A peer announcing more is
    /// disconnected before any memory is set aside for it.
    pub max_frame_bytes: usize,
    /// Most frames in one message (vLLM's batches have 3, replay answers 4).
    pub max_frames: usize,
    /// Longest a peer may take to send its greeting and READY.
    pub handshake_timeout: Duration,
    /// Most peers connected at once to a bound socket; more are refused.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 << 20,
            max_frames: 8,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// The socket types this implementation speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketType {
    Pub,
    Sub,
    Dealer,
    Router,
}

impl SocketType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
        }
    }

    /// Peer types ZMTP allows this type to talk to.
    fn accepts(self, peer: &[u8]) -> bool {
        let ok: &[&[u8]] = match self {
            SocketType::Pub => &[b"SUB", b"XSUB"],
            SocketType::Sub => &[b"PUB", b"XPUB"],
            SocketType::Dealer => &[b"ROUTER", b"DEALER", b"REP"],
            SocketType::Router => &[b"DEALER", b"ROUTER", b"REQ"],
        };
        ok.contains(&peer)
    }
}

/// Why a connection ended or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// The TCP connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not finish its handshake in time.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer announced a frame above the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The peer sent a message with too many frames.
    #[error("message of more than {limit} frames")]
    TooManyFrames {
        /// The limit.
        limit: usize,
    },
    /// The peer's socket type cannot talk to ours.
    #[error("peer socket type {peer:?} cannot talk to {ours}")]
    Incompatible {
        /// What the peer said it is.
        peer: String,
        /// Ours.
        ours: &'static str,
    },
    /// The peer reported an error (an ERROR command).
    #[error("peer refused: {0}")]
    Refused(String),
}

fn protocol(msg: impl Into<String>) -> ZmtpError {
    ZmtpError::Protocol(msg.into())
}

/// One frame read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) more: bool,
    pub(crate) command: bool,
    pub(crate) body: Bytes,
}

/// What [`Reader::next`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A complete message (data frames).
    Message(Vec<Bytes>),
    /// A command other than PING (already answered) and READY.
    Command { name: Vec<u8>, data: Bytes },
}

/// Append one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, body: &[u8], more: bool, command: bool) {
    let mut flags = 0;
    if more {
        flags |= FLAG_MORE;
    }
    if command {
        flags |= FLAG_COMMAND;
    }
    if body.len() > 255 {
        out.push(flags | FLAG_LONG);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
}

/// A whole message (its frames) as bytes on the wire.
pub(crate) fn encode_message<B: AsRef<[u8]>>(frames: &[B]) -> Vec<u8> {
    let len: usize = frames.iter().map(|f| f.as_ref().len() + 9).sum();
    let mut out = Vec::with_capacity(len);
    for (i, f) in frames.iter().enumerate() {
        encode_frame(&mut out, f.as_ref(), i + 1 < frames.len(), false);
    }
    out
}

fn encode_command(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.extend_from_slice(data);
    let mut out = Vec::with_capacity(body.len() + 9);
    encode_frame(&mut out, &body, false, true);
    out
}

fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[8] = 0x01;
    g[9] = 0x7f;
    g[10] = 3; // ZMTP 3.0
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

fn ready(ours: SocketType) -> Vec<u8> {
    let mut props = Vec::new();
    let mut prop = |name: &[u8], value: &[u8]| {
        props.push(name.len() as u8);
        props.extend_from_slice(name);
        props.extend_from_slice(&(value.len() as u32).to_be_bytes());
        props.extend_from_slice(value);
    };
    prop(b"Socket-Type", ours.as_str().as_bytes());
    if matches!(ours, SocketType::Dealer | SocketType::Router) {
        prop(b"Identity", b"");
    }
    encode_command(b"READY", &props)
}

/// The value of property `want` in a READY command's property list.
fn property<'a>(mut data: &'a [u8], want: &[u8]) -> Result<Option<&'a [u8]>, ZmtpError> {
    while !data.is_empty() {
        let n = data[0] as usize;
        let name = data
            .get(1..1 + n)
            .ok_or_else(|| protocol("truncated READY property name"))?;
        let rest = &data[1 + n..];
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| protocol("truncated READY property length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let value = rest
            .get(4..4 + len)
            .ok_or_else(|| protocol("truncated READY property value"))?;
        if name.eq_ignore_ascii_case(want) {
            return Ok(Some(value));
        }
        data = &rest[4 + len..];
    }
    Ok(None)
}

/// Split a command frame's body into its name and data.
fn split_command(body: &Bytes) -> Result<(Vec<u8>, Bytes), ZmtpError> {
    let n = *body.first().ok_or_else(|| protocol("empty command"))? as usize;
    if body.len() < 1 + n {
        return Err(protocol("truncated command name"));
    }
    Ok((body[1..1 + n].to_vec(), body.slice(1 + n..)))
}

/// The read side of a connection, with the limits applied.
pub(crate) struct Reader<R> {
    io: R,
    limits: Limits,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(crate) fn new(io: R, limits: Limits) -> Self {
        Reader { io, limits }
    }

    /// Read one frame, refusing sizes above the limit before allocating.
    pub(crate) async fn frame(&mut self) -> Result<Frame, ZmtpError> {
        let flags = self.io.read_u8().await?;
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            return Err(protocol(format!(
                "reserved frame flag bits set: {flags:#04x}"
            )));
        }
        let size = if flags & FLAG_LONG != 0 {
            self.io.read_u64().await?
        } else {
            u64::from(self.io.read_u8().await?)
        };
        if size > self.limits.max_frame_bytes as u64 {
            return Err(ZmtpError::FrameTooLarge {
                size,
                limit: self.limits.max_frame_bytes,
            });
        }
        let mut body = BytesMut::zeroed(size as usize);
        self.io.read_exact(&mut body).await?;
        let command = flags & FLAG_COMMAND != 0;
        let more = flags & FLAG_MORE != 0;
        if command && more {
            return Err(protocol("a command frame with the MORE flag"));
        }
        Ok(Frame {
            more,
            command,
            body: body.freeze(),
        })
    }

    /// The next message or command. PINGs are answered on `w` and skipped.
    pub(crate) async fn next<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
    ) -> Result<Inbound, ZmtpError> {
        let mut frames: Vec<Bytes> = Vec::new();
        loop {
            let f = self.frame().await?;
            if f.command {
                if !frames.is_empty() {
                    return Err(protocol("a command inside a multipart message"));
                }
                let (name, data) = split_command(&f.body)?;
                match name.as_slice() {
                    b"PING" => {
                        // PING: ttl (2 bytes) then a context echoed in PONG.
                        let ctx = data.get(2..).unwrap_or_default();
                        w.write_all(&encode_command(b"PONG", ctx)).await?;
                    }
                    b"PONG" => {}
                    b"ERROR" => {
                        let reason = data.get(1..).unwrap_or_default();
                        return Err(ZmtpError::Refused(
                            String::from_utf8_lossy(reason).into_owned(),
                        ));
                    }
                    _ => return Ok(Inbound::Command { name, data }),
                }
                continue;
            }
            if frames.len() == self.limits.max_frames {
                return Err(ZmtpError::TooManyFrames {
                    limit: self.limits.max_frames,
                });
            }
            let more = f.more;
            frames.push(f.body);
            if !more {
                return Ok(Inbound::Message(frames));
            }
        }
    }
}

/// Greet the peer and exchange READY as socket type `ours`; fails if the
/// peer does not finish within the handshake timeout, speaks another
/// mechanism or version, or is of an incompatible type.
pub(crate) async fn handshake<R, W>(
    r: &mut Reader<R>,
    w: &mut W,
    ours: SocketType,
) -> Result<(), ZmtpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = r.limits.handshake_timeout;
    tokio::time::timeout(limit, handshake_inner(r, w, ours))
        .await
        .map_err(|_| ZmtpError::HandshakeTimeout(limit))?
}

async fn handshake_inner<R, W>(
    r: &mut Reader<R>,
    w: &mut W,
    ours: SocketType,
) -> Result<(), ZmtpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(&greeting()).await?;
    let mut g = [0u8; 64];
    // The signature first: a ZMTP 1.0/2.0 peer would wait for ours.
    r.io.read_exact(&mut g[..10]).await?;
    if g[0] != 0xff || g[9] & 0x01 == 0 {
        return Err(protocol("not a ZMTP 3 greeting"));
    }
    r.io.read_exact(&mut g[10..]).await?;
    if g[10] < 3 {
        return Err(protocol(format!(
            "ZMTP version {}.{} is too old",
            g[10], g[11]
        )));
    }
    let mechanism = &g[12..32];
    if &mechanism[..4] != b"NULL" || mechanism[4..].iter().any(|&b| b != 0) {
        let name = String::from_utf8_lossy(mechanism);
        return Err(protocol(format!(
            "security mechanism {:?} is not supported (only NULL)",
            name.trim_end_matches('\0')
        )));
    }
    w.write_all(&ready(ours)).await?;
    w.flush().await?;
    let f = r.frame().await?;
    if !f.command {
        return Err(protocol("expected READY, got a data frame"));
    }
    let (name, data) = split_command(&f.body)?;
    match name.as_slice() {
        b"READY" => {}
        b"ERROR" => {
            let reason = data.get(1..).unwrap_or_default();
            return Err(ZmtpError::Refused(
                String::from_utf8_lossy(reason).into_owned(),
            ));
        }
        other => {
            return Err(protocol(format!(
                "expected READY, got {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    }
    let peer =
        property(&data, b"Socket-Type")?.ok_or_else(|| protocol("READY without Socket-Type"))?;
    if !ours.accepts(peer) {
        return Err(ZmtpError::Incompatible {
            peer: String::from_utf8_lossy(peer).into_owned(),
            ours: ours.as_str(),
        });
    }
    Ok(())
}

/// A SUB's subscription to `topic`, as ZMTP 3.0 sends it (a data message).
pub(crate) fn subscribe_message(topic: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + 1);
    body.push(0x01);
    body.extend_from_slice(topic);
    encode_message(&[body])
}

/// What a SUB peer asked a PUB for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subscription {
    Subscribe(Vec<u8>),
    Cancel(Vec<u8>),
}

impl Subscription {
    /// From a 3.0 subscription message or a 3.1 SUBSCRIBE/CANCEL command.
    pub(crate) fn from_inbound(i: &Inbound) -> Option<Subscription> {
        match i {
            Inbound::Message(frames) if frames.len() == 1 => {
                let f = &frames[0];
                match f.first() {
                    Some(0x01) => Some(Subscription::Subscribe(f[1..].to_vec())),
                    Some(0x00) => Some(Subscription::Cancel(f[1..].to_vec())),
                    _ => None,
                }
            }
            Inbound::Command { name, data } if name == b"SUBSCRIBE" => {
                Some(Subscription::Subscribe(data.to_vec()))
            }
            Inbound::Command { name, data } if name == b"CANCEL" => {
                Some(Subscription::Cancel(data.to_vec()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_frame_bytes: 1024,
            max_frames: 3,
            handshake_timeout: Duration::from_millis(200),
            max_connections: 4,
        }
    }

    async fn read_all(bytes: Vec<u8>, l: Limits) -> Result<Vec<Inbound>, ZmtpError> {
        let mut r = Reader::new(&bytes[..], l);
        let mut sink = Vec::new();
        let mut out = Vec::new();
        loop {
            match r.next(&mut sink).await {
                Ok(i) => out.push(i),
                Err(ZmtpError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(out)
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip_short_and_long() {
        let big = vec![7u8; 300];
        let wire = encode_message(&[b"topic".as_slice(), &big, b""]);
        let got = read_all(wire, limits()).await.unwrap();
        assert_eq!(
            got,
            vec![Inbound::Message(vec![
                Bytes::from_static(b"topic"),
                Bytes::from(big),
                Bytes::new()
            ])]
        );
    }

    #[tokio::test]
    async fn announced_size_above_the_limit_is_refused_before_reading() {
        // A LONG frame announcing 2^45 bytes, and nothing behind it.
        let mut wire = vec![FLAG_LONG];
        wire.extend_from_slice(&(1u64 << 45).to_be_bytes());
        match read_all(wire, limits()).await {
            Err(ZmtpError::FrameTooLarge { size, limit }) => {
                assert_eq!((size, limit), (1 << 45, 1024))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn too_many_frames_and_bad_flags_are_refused() {
        let wire = encode_message(&[b"a", b"b", b"c", b"d"]);
        assert!(matches!(
            read_all(wire, limits()).await,
            Err(ZmtpError::TooManyFrames { limit: 3 })
        ));
        assert!(matches!(
            read_all(vec![0x80, 0], limits()).await,
            Err(ZmtpError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn ping_is_answered_and_subscriptions_parsed() {
        let mut wire = encode_command(b"PING", b"\x00\x0aabc");
        wire.extend(subscribe_message(b"kv"));
        wire.extend(encode_command(b"CANCEL", b"kv"));
        let mut r = Reader::new(&wire[..], limits());
        let mut sink = Vec::new();
        let first = r.next(&mut sink).await.unwrap();
        assert_eq!(
            Subscription::from_inbound(&first),
            Some(Subscription::Subscribe(b"kv".to_vec()))
        );
        assert_eq!(sink, encode_command(b"PONG", b"abc"));
        let second = r.next(&mut sink).await.unwrap();
        assert_eq!(
            Subscription::from_inbound(&second),
            Some(Subscription::Cancel(b"kv".to_vec()))
        );
    }

    #[tokio::test]
    async fn handshake_between_pub_and_sub() {
        let (a, b) = tokio::io::duplex(4096);
        let (ar, mut aw) = tokio::io::split(a);
        let (br, mut bw) = tokio::io::split(b);
        let mut ra = Reader::new(ar, limits());
        let mut rb = Reader::new(br, limits());
        let (x, y) = tokio::join!(
            handshake(&mut ra, &mut aw, SocketType::Pub),
            handshake(&mut rb, &mut bw, SocketType::Sub)
        );
        x.unwrap();
        y.unwrap();
    }

    #[tokio::test]
    async fn incompatible_types_and_silent_peers_fail() {
        let (a, b) = tokio::io::duplex(4096);
        let (ar, mut aw) = tokio::io::split(a);
        let (br, mut bw) = tokio::io::split(b);
        let mut ra = Reader::new(ar, limits());
        let mut rb = Reader::new(br, limits());
        let (x, _) = tokio::join!(
            handshake(&mut ra, &mut aw, SocketType::Sub),
            handshake(&mut rb, &mut bw, SocketType::Sub)
        );
        assert!(matches!(x, Err(ZmtpError::Incompatible { .. })), "{x:?}");

        // A peer that connects and says nothing.
        let (a, _b) = tokio::io::duplex(4096);
        let (ar, mut aw) = tokio::io::split(a);
        let mut ra = Reader::new(ar, limits());
        let r = handshake(&mut ra, &mut aw, SocketType::Sub).await;
        assert!(matches!(r, Err(ZmtpError::HandshakeTimeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn the_reported_crash_frames_are_refused() {
        // The bytes of the report: a greeting with the NULL mechanism, then a
        // READY-sized command frame announcing 2^45 bytes.
        let mut wire = vec![0xff];
        wire.extend([0u8; 8]);
        wire.extend([0x7f, 0x03, 0x00]);
        let mut mech = b"NULL".to_vec();
        mech.resize(20, 0);
        wire.extend(mech);
        wire.extend([0u8; 32]);
        wire.push(0x06);
        wire.extend((1u64 << 45).to_be_bytes());
        let (a, mut b) = tokio::io::duplex(1 << 16);
        b.write_all(&wire).await.unwrap();
        let (ar, mut aw) = tokio::io::split(a);
        let mut ra = Reader::new(ar, limits());
        let r = handshake(&mut ra, &mut aw, SocketType::Sub).await;
        assert!(matches!(r, Err(ZmtpError::FrameTooLarge { .. })), "{r:?}");
    }

    #[test]
    fn ready_properties() {
        let r = ready(SocketType::Dealer);
        // flags, size, name-len, "READY", properties
        let props = &r[2 + 1 + 5..];
        assert_eq!(
            property(props, b"socket-type").unwrap(),
            Some(&b"DEALER"[..])
        );
        assert_eq!(property(props, b"Identity").unwrap(), Some(&b""[..]));
        assert!(property(&[5, b'a'], b"x").is_err());
    }
}
