//! The payload format: one msgpack-encoded batch per ZMQ message.
//!
//! ```text
//! frames:  [ topic (bytes) | seq (8-byte big-endian i64) | payload (msgpack) ]
//! payload: [ ts: f64, events: [event, ...], data_parallel_rank: int | nil ]
//! event:   { "type": "BlockStored", "block_hashes": [u64 | bytes, ...],
//!            "parent_block_hash": u64 | bytes | nil, "token_ids": [int, ...],
//!            "block_size": int, "lora_id": int | nil, "medium": str | nil, ... }
//!        | { "type": "BlockRemoved", "block_hashes": [...], "medium": ... }
//!        | { "type": "AllBlocksCleared" }
//! ```
//!
//! This is vLLM 0.32's `KVEventBatch` as its ZMQ publisher sends it (batch as
//! an array, events as maps). Hashes are integers by default
//! (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1`); as bytes they are reduced to
//! their last 8 bytes, big-endian, which is the same number. Unknown keys are
//! ignored and unknown event types are skipped (counted), so newer engines do
//! not break the router.
//!
//! Decoding reads the msgpack bytes directly into events (no intermediate
//! value tree): nothing a payload announces is allocated beyond the bytes it
//! actually carries.

use kvroute_core::{BlockHash, KvEvent};
use rmpv::Value;

/// A decoded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// Engine timestamp (seconds since the epoch).
    pub ts: f64,
    /// The events, in order.
    pub events: Vec<KvEvent>,
    /// Data-parallel rank of the publishing engine, if any.
    pub dp_rank: Option<i64>,
    /// Events of types this decoder does not know (skipped).
    pub skipped: usize,
}

/// A payload or frame that is not a KV-event batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// Not valid msgpack.
    #[error("payload is not valid msgpack: {0}")]
    Msgpack(String),
    /// Valid msgpack, wrong shape.
    #[error("malformed KV-event batch: {0}")]
    Shape(String),
    /// Not three frames, or a bad sequence frame.
    #[error("malformed ZMQ message: {0}")]
    Frames(String),
}

fn shape(msg: impl Into<String>) -> WireError {
    WireError::Shape(msg.into())
}

/// A cursor over msgpack bytes. Every read is bounds-checked; lengths read
/// off the wire never size an allocation beyond the bytes left (each element
/// takes at least one byte), so a payload cannot make the decoder allocate
/// more than a small multiple of its own size.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> WireError {
    WireError::Msgpack("truncated".into())
}

/// What a marker announces.
enum Kind {
    Nil,
    Bool,
    Uint(u64),
    Int(i64),
    Float(f64),
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
    Ext(usize),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.left() {
            return Err(truncated());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize, WireError> {
        Ok(usize::from(self.be::<1>()?[0]))
    }
    fn len16(&mut self) -> Result<usize, WireError> {
        Ok(usize::from(u16::from_be_bytes(self.be()?)))
    }
    fn len32(&mut self) -> Result<usize, WireError> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    /// Read a marker (and any fixed-size payload: numbers) and say what follows.
    fn kind(&mut self) -> Result<Kind, WireError> {
        let m = self.be::<1>()?[0];
        Ok(match m {
            0x00..=0x7f => Kind::Uint(u64::from(m)),
            0x80..=0x8f => Kind::Map(usize::from(m & 0x0f)),
            0x90..=0x9f => Kind::Array(usize::from(m & 0x0f)),
            0xa0..=0xbf => Kind::Str(usize::from(m & 0x1f)),
            0xc0 => Kind::Nil,
            0xc2 | 0xc3 => Kind::Bool,
            0xc4 => Kind::Bin(self.len8()?),
            0xc5 => Kind::Bin(self.len16()?),
            0xc6 => Kind::Bin(self.len32()?),
            0xc7 => Kind::Ext(self.len8()? + 1),
            0xc8 => Kind::Ext(self.len16()? + 1),
            0xc9 => Kind::Ext(self.len32()?.saturating_add(1)),
            0xca => Kind::Float(f64::from(f32::from_be_bytes(self.be()?))),
            0xcb => Kind::Float(f64::from_be_bytes(self.be()?)),
            0xcc => Kind::Uint(u64::from(self.be::<1>()?[0])),
            0xcd => Kind::Uint(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Kind::Uint(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Kind::Uint(u64::from_be_bytes(self.be()?)),
            0xd0 => Kind::Int(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Kind::Int(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Kind::Int(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Kind::Int(i64::from_be_bytes(self.be()?)),
            0xd4 => Kind::Ext(2),
            0xd5 => Kind::Ext(3),
            0xd6 => Kind::Ext(5),
            0xd7 => Kind::Ext(9),
            0xd8 => Kind::Ext(17),
            0xd9 => Kind::Str(self.len8()?),
            0xda => Kind::Str(self.len16()?),
            0xdb => Kind::Str(self.len32()?),
            0xdc => Kind::Array(self.len16()?),
            0xdd => Kind::Array(self.len32()?),
            0xde => Kind::Map(self.len16()?),
            0xdf => Kind::Map(self.len32()?),
            0xe0..=0xff => Kind::Int(i64::from(m as i8)),
            0xc1 => return Err(WireError::Msgpack("reserved marker 0xc1".into())),
        })
    }

    /// Skip one value, nested ones included, without recursion: the count
    /// of values still to skip only grows by lengths read, and every value
    /// takes at least a byte, so this ends within the bytes left.
    fn skip(&mut self) -> Result<(), WireError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            match self.kind()? {
                Kind::Str(n) | Kind::Bin(n) | Kind::Ext(n) => {
                    self.take(n)?;
                }
                Kind::Array(n) => pending += n as u64,
                Kind::Map(n) => pending += 2 * n as u64,
                _ => {}
            }
            if pending > self.left() as u64 {
                return Err(truncated());
            }
        }
        Ok(())
    }

    /// A string, or `None` (the value, whatever it is, stepped over).
    fn str(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let at = self.pos;
        if let Kind::Str(n) = self.kind()? {
            return Ok(Some(self.take(n)?));
        }
        self.pos = at;
        self.skip()?;
        Ok(None)
    }

    /// An array's length, capped by the bytes left (each element ≥ 1 byte).
    fn array(&mut self, what: &str) -> Result<usize, WireError> {
        match self.kind()? {
            Kind::Array(n) if n <= self.left() => Ok(n),
            Kind::Array(_) => Err(truncated()),
            _ => Err(shape(format!("{what} must be an array"))),
        }
    }

    fn hash(&mut self) -> Result<BlockHash, WireError> {
        match self.kind()? {
            Kind::Uint(u) => Ok(BlockHash(u)),
            Kind::Int(i) => Ok(BlockHash(i as u64)),
            Kind::Bin(n) if n > 0 => {
                let b = self.take(n)?;
                let mut tail = [0u8; 8];
                let k = n.min(8);
                tail[8 - k..].copy_from_slice(&b[n - k..]);
                Ok(BlockHash(u64::from_be_bytes(tail)))
            }
            _ => Err(shape("block hash must be an integer or bytes")),
        }
    }

    fn hashes(&mut self, what: &str) -> Result<Vec<BlockHash>, WireError> {
        let n = self.array(what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.hash()?);
        }
        Ok(out)
    }

    fn opt_hash(&mut self) -> Result<Option<BlockHash>, WireError> {
        if self.buf.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Ok(None);
        }
        self.hash().map(Some)
    }

    fn tokens(&mut self) -> Result<Vec<u32>, WireError> {
        let n = self.array("token_ids")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.kind()? {
                Kind::Uint(u) => {
                    out.push(u32::try_from(u).map_err(|_| shape("token id out of range"))?)
                }
                _ => return Err(shape("token id is not an integer")),
            }
        }
        Ok(out)
    }

    /// An unsigned integer, or 0 (the value, whatever it is, stepped over).
    fn uint_or_zero(&mut self) -> Result<u64, WireError> {
        let at = self.pos;
        if let Kind::Uint(u) = self.kind()? {
            return Ok(u);
        }
        self.pos = at;
        self.skip()?;
        Ok(0)
    }

    /// A signed integer, or `None` (the value stepped over).
    fn opt_int(&mut self) -> Result<Option<i64>, WireError> {
        let at = self.pos;
        match self.kind()? {
            Kind::Uint(u) => return Ok(i64::try_from(u).ok()),
            Kind::Int(i) => return Ok(Some(i)),
            _ => {}
        }
        self.pos = at;
        self.skip()?;
        Ok(None)
    }
}

/// The fields of one event, whichever form it came in.
#[derive(Default)]
struct Fields<'a> {
    ty: Option<&'a [u8]>,
    hashes: Option<Vec<BlockHash>>,
    parent: Option<BlockHash>,
    tokens: Vec<u32>,
    block_size: u64,
}

impl Fields<'_> {
    fn into_event(self) -> Result<Option<KvEvent>, WireError> {
        let ty = self.ty.ok_or_else(|| shape("event without a type"))?;
        Ok(Some(match ty {
            b"BlockStored" => KvEvent::BlockStored {
                block_hashes: self
                    .hashes
                    .ok_or_else(|| shape("event without a block_hashes array"))?,
                parent_block_hash: self.parent,
                token_ids: self.tokens,
                block_size: u32::try_from(self.block_size).unwrap_or(0),
            },
            b"BlockRemoved" => KvEvent::BlockRemoved {
                block_hashes: self
                    .hashes
                    .ok_or_else(|| shape("event without a block_hashes array"))?,
            },
            b"AllBlocksCleared" => KvEvent::AllBlocksCleared,
            _ => return Ok(None),
        }))
    }
}

/// One event: a map with vLLM's keys, or msgspec's array form
/// `[tag, block_hashes, parent, token_ids, block_size, …]`.
fn decode_event(r: &mut Reader<'_>) -> Result<Option<KvEvent>, WireError> {
    let mut f = Fields::default();
    match r.kind()? {
        Kind::Map(n) => {
            for _ in 0..n {
                let key = r.str()?;
                match key {
                    Some(b"type") => f.ty = r.str()?,
                    Some(b"block_hashes") => f.hashes = Some(r.hashes("block_hashes")?),
                    Some(b"parent_block_hash") => f.parent = r.opt_hash()?,
                    Some(b"token_ids") => f.tokens = r.tokens()?,
                    Some(b"block_size") => f.block_size = r.uint_or_zero()?,
                    _ => r.skip()?,
                }
            }
        }
        Kind::Array(n) => {
            if n == 0 {
                return Err(shape("array event without a type tag"));
            }
            f.ty = Some(
                r.str()?
                    .ok_or_else(|| shape("array event without a type tag"))?,
            );
            for i in 1..n {
                match (f.ty, i) {
                    (Some(b"BlockStored" | b"BlockRemoved"), 1) => {
                        f.hashes = Some(r.hashes("block_hashes")?)
                    }
                    (Some(b"BlockStored"), 2) => f.parent = r.opt_hash()?,
                    (Some(b"BlockStored"), 3) => f.tokens = r.tokens()?,
                    (Some(b"BlockStored"), 4) => f.block_size = r.uint_or_zero()?,
                    _ => r.skip()?,
                }
            }
        }
        _ => return Err(shape("event must be a map")),
    }
    f.into_event()
}

/// Decode one payload.
pub fn decode_payload(bytes: &[u8]) -> Result<EventBatch, WireError> {
    let mut r = Reader::new(bytes);
    let n = match r.kind()? {
        Kind::Array(n) if n >= 2 => n,
        _ => return Err(shape("batch must be an array [ts, events, dp_rank]")),
    };
    let ts = match r.kind()? {
        Kind::Float(t) => t,
        Kind::Uint(u) => u as f64,
        Kind::Int(i) => i as f64,
        _ => return Err(shape("batch[0] must be the timestamp")),
    };
    let count = r.array("batch[1] (the event list)")?;
    let mut events = Vec::with_capacity(count);
    let mut skipped = 0;
    for _ in 0..count {
        match decode_event(&mut r)? {
            Some(e) => events.push(e),
            None => skipped += 1,
        }
    }
    let mut dp_rank = None;
    if n >= 3 {
        dp_rank = r.opt_int()?;
        for _ in 3..n {
            r.skip()?;
        }
    }
    Ok(EventBatch {
        ts,
        events,
        dp_rank,
        skipped,
    })
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn hash_list(hs: &[BlockHash]) -> Value {
    Value::Array(hs.iter().map(|h| Value::from(h.0)).collect())
}

/// Encode a batch exactly as vLLM 0.32 does (maps with vLLM's keys, GPU medium).
pub fn encode_payload(batch: &EventBatch) -> Vec<u8> {
    let events = batch
        .events
        .iter()
        .map(|ev| match ev {
            KvEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
            } => Value::Map(vec![
                (s("type"), s("BlockStored")),
                (s("block_hashes"), hash_list(block_hashes)),
                (
                    s("parent_block_hash"),
                    parent_block_hash.map_or(Value::Nil, |h| Value::from(h.0)),
                ),
                (
                    s("token_ids"),
                    Value::Array(token_ids.iter().map(|&t| Value::from(t)).collect()),
                ),
                (s("block_size"), Value::from(*block_size)),
                (s("lora_id"), Value::Nil),
                (s("medium"), s("GPU")),
                (s("lora_name"), Value::Nil),
                (
                    s("extra_keys"),
                    Value::Array(block_hashes.iter().map(|_| Value::Nil).collect()),
                ),
                (s("group_idx"), Value::from(0)),
                (s("kv_cache_spec_kind"), s("full_attention")),
            ]),
            KvEvent::BlockRemoved { block_hashes } => Value::Map(vec![
                (s("type"), s("BlockRemoved")),
                (s("block_hashes"), hash_list(block_hashes)),
                (s("medium"), s("GPU")),
                (s("group_idx"), Value::from(0)),
            ]),
            KvEvent::AllBlocksCleared => Value::Map(vec![(s("type"), s("AllBlocksCleared"))]),
        })
        .collect();
    let v = Value::Array(vec![
        Value::F64(batch.ts),
        Value::Array(events),
        batch.dp_rank.map_or(Value::Nil, Value::from),
    ]);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &v);
    out
}

/// Split a 3-frame message into topic, sequence number and batch.
pub fn decode_frames(frames: &[&[u8]]) -> Result<(Vec<u8>, i64, EventBatch), WireError> {
    let [topic, seq, payload] = frames else {
        return Err(WireError::Frames(format!(
            "expected 3 frames, got {}",
            frames.len()
        )));
    };
    let seq: [u8; 8] = (*seq).try_into().map_err(|_| {
        WireError::Frames(format!(
            "sequence frame has {} bytes, expected 8",
            seq.len()
        ))
    })?;
    Ok((
        topic.to_vec(),
        i64::from_be_bytes(seq),
        decode_payload(payload)?,
    ))
}

/// The three frames vLLM sends for a batch.
pub fn encode_frames(topic: &[u8], seq: i64, batch: &EventBatch) -> [Vec<u8>; 3] {
    [
        topic.to_vec(),
        seq.to_be_bytes().to_vec(),
        encode_payload(batch),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_event_kinds() {
        let b = EventBatch {
            ts: 12.5,
            events: vec![
                KvEvent::BlockStored {
                    block_hashes: vec![BlockHash(u64::MAX), BlockHash(3)],
                    parent_block_hash: Some(BlockHash(9)),
                    token_ids: vec![1, 2, 3, 4],
                    block_size: 2,
                },
                KvEvent::BlockRemoved {
                    block_hashes: vec![BlockHash(3)],
                },
                KvEvent::AllBlocksCleared,
            ],
            dp_rank: Some(0),
            skipped: 0,
        };
        assert_eq!(decode_payload(&encode_payload(&b)).unwrap(), b);
        let f = encode_frames(b"kv-events", 7, &b);
        let (topic, seq, back) = decode_frames(&[&f[0], &f[1], &f[2]]).unwrap();
        assert_eq!((topic.as_slice(), seq, back), (&b"kv-events"[..], 7, b));
    }

    #[test]
    fn byte_hashes_reduce_to_their_last_eight_bytes() {
        let mut digest = vec![0xaa; 24];
        digest.extend_from_slice(&42u64.to_be_bytes());
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &Value::Binary(digest)).unwrap();
        assert_eq!(Reader::new(&buf).hash().unwrap(), BlockHash(42));
    }

    #[test]
    fn announced_lengths_beyond_the_payload_are_refused_cheaply() {
        // [ts, array32 of 2^32-1 events] with nothing behind.
        let mut p = vec![0x93, 0xcb];
        p.extend(1.0f64.to_be_bytes());
        p.extend([0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decode_payload(&p), Err(WireError::Msgpack(_))));
        // An unknown key whose value is a map32 announcing 2^32-1 pairs.
        let mut p = vec![0x93, 0xcb];
        p.extend(1.0f64.to_be_bytes());
        p.extend([0x91, 0x81, 0xa1, b'x', 0xdf, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode_payload(&p).is_err());
    }

    #[test]
    fn the_array_form_of_events_is_read_too() {
        let v = Value::Array(vec![
            Value::F64(2.0),
            Value::Array(vec![
                Value::Array(vec![
                    s("BlockStored"),
                    Value::Array(vec![Value::from(5u64)]),
                    Value::Nil,
                    Value::Array(vec![Value::from(1u32), Value::from(2u32)]),
                    Value::from(2u32),
                    Value::Nil,
                ]),
                Value::Array(vec![
                    s("BlockRemoved"),
                    Value::Array(vec![Value::from(5u64)]),
                ]),
            ]),
            Value::from(1),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        let b = decode_payload(&buf).unwrap();
        assert_eq!(
            b.events,
            vec![
                KvEvent::BlockStored {
                    block_hashes: vec![BlockHash(5)],
                    parent_block_hash: None,
                    token_ids: vec![1, 2],
                    block_size: 2,
                },
                KvEvent::BlockRemoved {
                    block_hashes: vec![BlockHash(5)]
                },
            ]
        );
        assert_eq!(b.dp_rank, Some(1));
    }

    #[test]
    fn unknown_event_types_are_skipped_not_fatal() {
        let v = Value::Array(vec![
            Value::F64(0.0),
            Value::Array(vec![Value::Map(vec![(s("type"), s("SomethingNew"))])]),
            Value::Nil,
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        let b = decode_payload(&buf).unwrap();
        assert_eq!((b.events.len(), b.skipped, b.dp_rank), (0, 1, None));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(decode_payload(&[]), Err(WireError::Msgpack(_))));
        assert!(matches!(
            decode_payload(&[0x93, 0xcb, 0x40]),
            Err(WireError::Msgpack(_))
        ));
        assert!(matches!(
            decode_payload(&[0xc1]),
            Err(WireError::Msgpack(_))
        ));
        assert!(matches!(decode_payload(&[0x01]), Err(WireError::Shape(_))));
        assert!(matches!(
            decode_frames(&[b"t", b"123", b""]),
            Err(WireError::Frames(_))
        ));
        assert!(matches!(decode_frames(&[b"t"]), Err(WireError::Frames(_))));
    }
}
