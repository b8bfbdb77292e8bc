//! What a policy knows about a request: [`RouteRequest`].

use crate::ids::{BlockHash, RequestId, SessionId};
use serde::{Deserialize, Serialize};

/// A request to be routed, reduced to what routing needs.
///
/// The prompt is carried as its block hashes (computed once by the caller with
/// the engines' [`BlockHasher`](crate::BlockHasher)) and its length; token ids
/// are not: no policy needs them, and a router that only knows hashes (block
/// traces, a data plane that hashed for it) routes the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteRequest {
    /// Unique id.
    pub id: RequestId,
    /// Conversation it belongs to, if known.
    pub session: Option<SessionId>,
    /// Hashes of the prompt's full blocks, in order.
    pub block_hashes: Vec<BlockHash>,
    /// Tokens per block that `block_hashes` were computed with.
    pub block_size: u32,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Expected output length in tokens (`max_tokens`), if known.
    pub expected_output_tokens: Option<u32>,
}

impl RouteRequest {
    /// Tokens covered by the first `blocks` full blocks, capped at the prompt length.
    pub fn blocks_to_tokens(&self, blocks: u32) -> u32 {
        blocks
            .saturating_mul(self.block_size)
            .min(self.prompt_tokens)
    }

    /// Fraction of the prompt covered by `blocks` cached blocks, in `0..=1`.
    pub fn cached_fraction(&self, blocks: u32) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            f64::from(self.blocks_to_tokens(blocks)) / f64::from(self.prompt_tokens)
        }
    }

    /// A stable key naming the request's prefix: the hash of block `k-1` (which
    /// covers blocks `0..k` through the chain), else the last full block, else
    /// the session, else `None` (a prompt shorter than one block with no session).
    pub fn prefix_key(&self, k: usize) -> Option<u64> {
        let k = k.max(1);
        if let Some(h) = self.block_hashes.get(k - 1).or(self.block_hashes.last()) {
            Some(h.0)
        } else {
            self.session.map(|s| s.0 ^ 0x9e37_79b9_7f4a_7c15)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: u32, blocks: &[u64]) -> RouteRequest {
        RouteRequest {
            prompt_tokens: prompt,
            block_size: 16,
            block_hashes: blocks.iter().map(|&h| BlockHash(h)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn cached_fraction_is_capped() {
        let r = req(40, &[1, 2]);
        assert_eq!(r.blocks_to_tokens(2), 32);
        assert_eq!(r.blocks_to_tokens(5), 40);
        assert!((r.cached_fraction(2) - 0.8).abs() < 1e-12);
        assert_eq!(req(0, &[]).cached_fraction(3), 0.0);
    }

    #[test]
    fn prefix_key_falls_back() {
        assert_eq!(req(64, &[7, 8, 9]).prefix_key(2), Some(8));
        assert_eq!(req(64, &[7, 8, 9]).prefix_key(10), Some(9));
        assert_eq!(req(3, &[]).prefix_key(2), None);
        let mut r = req(3, &[]);
        r.session = Some(SessionId(1));
        assert!(r.prefix_key(2).is_some());
    }
}
