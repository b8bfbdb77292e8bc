//! Every block hash a real vLLM 0.32 (CPU, `--prefix-caching-hash-algo
//! sha256_cbor`) published in its KV events is recomputed from the token ids.

use kvroute_core::{BlockHash, BlockHasher, ChainDigest, HashAlgo};
use std::collections::HashMap;

#[test]
fn every_fixture_hash_matches_vllm() {
    let text = include_str!("fixtures/kv-events-sha256_cbor.jsonl");
    let mut hashers: HashMap<usize, BlockHasher> = HashMap::new();
    // u64 hash -> full digest, so a stored run can chain from an earlier parent.
    let mut full: HashMap<u64, ChainDigest> = HashMap::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let rec: serde_json::Value = serde_json::from_str(line).expect("fixture line is JSON");
        let events = rec["batch"][1]
            .as_array()
            .expect("batch[1] is the event list");
        for ev in events {
            if ev["type"] != "BlockStored" {
                continue;
            }
            let bs = ev["block_size"].as_u64().expect("block_size") as usize;
            let hasher = hashers
                .entry(bs)
                .or_insert_with(|| BlockHasher::new(HashAlgo::Sha256Cbor, bs).expect("bs > 0"));
            let tokens: Vec<u32> = ev["token_ids"]
                .as_array()
                .expect("token_ids")
                .iter()
                .map(|t| t.as_u64().expect("token id") as u32)
                .collect();
            let parent = ev["parent_block_hash"].as_u64().map(|p| {
                *full
                    .get(&p)
                    .unwrap_or_else(|| panic!("line {n}: unknown parent {p}"))
            });
            let want: Vec<BlockHash> = ev["block_hashes"]
                .as_array()
                .expect("block_hashes")
                .iter()
                .map(|h| BlockHash(h.as_u64().expect("u64 hash")))
                .collect();
            let got = hasher.chain_blocks(parent, &tokens);
            assert_eq!(got.len(), want.len(), "line {n}: block count");
            for (d, w) in got.iter().zip(&want) {
                assert_eq!(d.block_hash(), *w, "line {n}");
                full.insert(w.0, *d);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 455, "the fixture holds 455 block hashes");
}
