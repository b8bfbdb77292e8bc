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

fn as_hash(v: &Value) -> Result<BlockHash, WireError> {
    match v {
        Value::Integer(i) => i
            .as_u64()
            .or_else(|| i.as_i64().map(|x| x as u64))
            .map(BlockHash)
            .ok_or_else(|| shape("block hash integer out of range")),
        Value::Binary(b) if !b.is_empty() => {
            let mut tail = [0u8; 8];
            let n = b.len().min(8);
            tail[8 - n..].copy_from_slice(&b[b.len() - n..]);
            Ok(BlockHash(u64::from_be_bytes(tail)))
        }
        other => Err(shape(format!(
            "block hash must be an integer or bytes, got {other}"
        ))),
    }
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn hashes(map: &[(Value, Value)]) -> Result<Vec<BlockHash>, WireError> {
    match field(map, "block_hashes") {
        Some(Value::Array(a)) => a.iter().map(as_hash).collect(),
        _ => Err(shape("event without a block_hashes array")),
    }
}

fn decode_event(v: &Value) -> Result<Option<KvEvent>, WireError> {
    let map = match v {
        Value::Map(m) => m.as_slice(),
        // msgspec array_like encoding: [tag, fields...] — accept the tag-first form too.
        Value::Array(a) => return decode_array_event(a),
        other => return Err(shape(format!("event must be a map, got {other}"))),
    };
    let ty = field(map, "type")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("event without a type"))?;
    Ok(Some(match ty {
        "BlockStored" => {
            let parent = match field(map, "parent_block_hash") {
                None | Some(Value::Nil) => None,
                Some(v) => Some(as_hash(v)?),
            };
            let token_ids = match field(map, "token_ids") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| {
                        t.as_u64()
                            .map(|x| x as u32)
                            .ok_or_else(|| shape("token id is not an integer"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => Vec::new(),
            };
            let block_size = field(map, "block_size")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32;
            KvEvent::BlockStored {
                block_hashes: hashes(map)?,
                parent_block_hash: parent,
                token_ids,
                block_size,
            }
        }
        "BlockRemoved" => KvEvent::BlockRemoved {
            block_hashes: hashes(map)?,
        },
        "AllBlocksCleared" => KvEvent::AllBlocksCleared,
        _ => return Ok(None),
    }))
}

/// `[type, block_hashes, parent, token_ids, block_size, ...]` (msgspec
/// `array_like`, `tag=True`), as some vLLM versions encode events.
fn decode_array_event(a: &[Value]) -> Result<Option<KvEvent>, WireError> {
    let ty = a
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| shape("array event without a type tag"))?;
    Ok(Some(match ty {
        "BlockStored" => {
            let hs = match a.get(1) {
                Some(Value::Array(h)) => h.iter().map(as_hash).collect::<Result<_, _>>()?,
                _ => return Err(shape("BlockStored without block_hashes")),
            };
            let parent = match a.get(2) {
                None | Some(Value::Nil) => None,
                Some(v) => Some(as_hash(v)?),
            };
            let token_ids = match a.get(3) {
                Some(Value::Array(t)) => t
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as u32)
                    .collect(),
                _ => Vec::new(),
            };
            let block_size = a.get(4).and_then(Value::as_u64).unwrap_or(0) as u32;
            KvEvent::BlockStored {
                block_hashes: hs,
                parent_block_hash: parent,
                token_ids,
                block_size,
            }
        }
        "BlockRemoved" => match a.get(1) {
            Some(Value::Array(h)) => KvEvent::BlockRemoved {
                block_hashes: h.iter().map(as_hash).collect::<Result<_, _>>()?,
            },
            _ => return Err(shape("BlockRemoved without block_hashes")),
        },
        "AllBlocksCleared" => KvEvent::AllBlocksCleared,
        _ => return Ok(None),
    }))
}

/// Decode one payload.
pub fn decode_payload(mut bytes: &[u8]) -> Result<EventBatch, WireError> {
    let v = rmpv::decode::read_value(&mut bytes).map_err(|e| WireError::Msgpack(e.to_string()))?;
    let Value::Array(parts) = v else {
        return Err(shape("batch must be an array [ts, events, dp_rank]"));
    };
    let ts = match parts.first() {
        Some(Value::F64(t)) => *t,
        Some(Value::F32(t)) => f64::from(*t),
        Some(Value::Integer(i)) => i.as_f64().unwrap_or(0.0),
        _ => return Err(shape("batch[0] must be the timestamp")),
    };
    let Some(Value::Array(raw)) = parts.get(1) else {
        return Err(shape("batch[1] must be the event list"));
    };
    let dp_rank = parts.get(2).and_then(Value::as_i64);
    let mut events = Vec::with_capacity(raw.len());
    let mut skipped = 0;
    for ev in raw {
        match decode_event(ev)? {
            Some(e) => events.push(e),
            None => skipped += 1,
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
        assert_eq!(as_hash(&Value::Binary(digest)).unwrap(), BlockHash(42));
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
        assert!(matches!(decode_payload(&[0x01]), Err(WireError::Shape(_))));
        assert!(matches!(
            decode_frames(&[b"t", b"123", b""]),
            Err(WireError::Frames(_))
        ));
        assert!(matches!(decode_frames(&[b"t"]), Err(WireError::Frames(_))));
    }
}
