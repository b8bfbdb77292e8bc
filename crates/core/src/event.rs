//! KV-cache events: how an engine tells the world which blocks it holds.
//!
//! These mirror vLLM's `BlockStored` / `BlockRemoved` / `AllBlocksCleared`
//! (`vllm/distributed/kv_events.py`). Decoding them from the ZMQ/msgpack wire
//! format is the router's business; the directory and the simulator speak
//! these types.

use crate::ids::BlockHash;
use serde::{Deserialize, Serialize};

/// One change to an instance's prefix cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum KvEvent {
    /// Blocks became cached (full blocks, in chain order).
    BlockStored {
        /// Hashes of the stored blocks.
        block_hashes: Vec<BlockHash>,
        /// Hash of the block before the first stored one (`None`: the prompt start).
        parent_block_hash: Option<BlockHash>,
        /// Token ids of the stored blocks, concatenated.
        token_ids: Vec<u32>,
        /// Tokens per block.
        block_size: u32,
    },
    /// Blocks were evicted.
    BlockRemoved {
        /// Hashes of the evicted blocks.
        block_hashes: Vec<BlockHash>,
    },
    /// The whole cache was dropped (engine reset).
    AllBlocksCleared,
}
