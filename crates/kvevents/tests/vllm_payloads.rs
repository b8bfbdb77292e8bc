//! The encoder reproduces real vLLM payloads: for every batch a real vLLM
//! 0.32 published (recorded in the core crate's fixture), our encoding has the
//! same length and the same leading bytes, and decodes back to the same events.

use kvroute_core::{BlockHash, KvEvent};
use kvroute_kvevents::{decode_payload, encode_payload, EventBatch};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn encoding_matches_recorded_vllm_payloads() {
    let text = include_str!("../../core/tests/fixtures/kv-events-sha256_cbor.jsonl");
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let b = &rec["batch"];
        let events: Vec<KvEvent> = b[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let hs = |k: &str| -> Vec<BlockHash> {
                    e[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|h| BlockHash(h.as_u64().unwrap()))
                        .collect()
                };
                match e["type"].as_str().unwrap() {
                    "BlockStored" => KvEvent::BlockStored {
                        block_hashes: hs("block_hashes"),
                        parent_block_hash: e["parent_block_hash"].as_u64().map(BlockHash),
                        token_ids: e["token_ids"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| t.as_u64().unwrap() as u32)
                            .collect(),
                        block_size: e["block_size"].as_u64().unwrap() as u32,
                    },
                    "BlockRemoved" => KvEvent::BlockRemoved {
                        block_hashes: hs("block_hashes"),
                    },
                    _ => KvEvent::AllBlocksCleared,
                }
            })
            .collect();
        let batch = EventBatch {
            ts: b[0].as_f64().unwrap(),
            events,
            dp_rank: b[2].as_i64(),
            skipped: 0,
        };
        let bytes = encode_payload(&batch);
        assert_eq!(
            bytes.len() as u64,
            rec["payload_len"].as_u64().unwrap(),
            "line {n}: payload length"
        );
        // Bytes 2..10 are the f64 timestamp, which JSON may not have kept to the last bit.
        let head = rec["payload_head_hex"].as_str().unwrap();
        let ours = hex(&bytes[..head.len() / 2]);
        assert_eq!(
            (&ours[..4], &ours[20..]),
            (&head[..4], &head[20..]),
            "line {n}: leading bytes"
        );
        assert_eq!(decode_payload(&bytes).unwrap(), batch, "line {n}");
        checked += 1;
    }
    assert!(checked > 10);
}
