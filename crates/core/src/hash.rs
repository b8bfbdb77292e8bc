//! Block hashing: the chain of per-block hashes that names a prompt prefix.
//!
//! Prefix caching works on full blocks of `block_size` tokens. Block `i`'s hash
//! covers block `i`'s tokens *and* the hash of block `i-1`, so equal hashes mean
//! equal prefixes. Two algorithms are provided:
//!
//! * [`HashAlgo::Sha256Cbor`] reproduces vLLM's `--prefix-caching-hash-algo
//!   sha256_cbor` bit for bit:
//!   `h_i = SHA-256(canonical CBOR of [h_{i-1} (32-byte bstr), [token ids], null])`,
//!   `h_-1 = SHA-256(canonical CBOR of the seed text)`, the seed being
//!   `$PYTHONHASHSEED` when vLLM runs with it set, else `"vllm-none-hash"`.
//!   The published [`BlockHash`] is the digest's last 8 bytes, big-endian.
//!   Requests with LoRA adapters, multimodal inputs or a `cache_salt` carry
//!   "extra keys" in place of `null`; they are not reproduced here.
//! * [`HashAlgo::Xxh3`] is a fast chain (`xxh3_64` over the parent hash and the
//!   token ids) for the simulator and for engines whose hashes are unknown.
//!
//! Only full blocks are hashed: a 70-token prompt with block size 32 has two
//! block hashes.

use crate::ids::BlockHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// vLLM's default seed for the root of the hash chain.
pub const VLLM_DEFAULT_SEED: &str = "vllm-none-hash";

/// Which hash chain to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgo {
    /// vLLM's `sha256_cbor` (exact).
    Sha256Cbor,
    /// kvroute's own fast xxh3 chain (not an engine's).
    Xxh3,
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashAlgo::Sha256Cbor => "sha256_cbor",
            HashAlgo::Xxh3 => "xxh3",
        })
    }
}

/// An unknown algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown block hash algorithm {0:?} (expected \"sha256_cbor\" or \"xxh3\")")]
pub struct UnknownHashAlgo(pub String);

impl FromStr for HashAlgo {
    type Err = UnknownHashAlgo;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256_cbor" => Ok(HashAlgo::Sha256Cbor),
            "xxh3" => Ok(HashAlgo::Xxh3),
            other => Err(UnknownHashAlgo(other.to_string())),
        }
    }
}

/// The full 32-byte digest of a block, needed to continue a chain.
///
/// For [`HashAlgo::Xxh3`] only the last 8 bytes are used.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainDigest(pub [u8; 32]);

impl ChainDigest {
    /// The published 64-bit block hash: the last 8 bytes, big-endian.
    pub fn block_hash(&self) -> BlockHash {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&self.0[24..]);
        BlockHash(u64::from_be_bytes(tail))
    }

    fn from_u64(v: u64) -> ChainDigest {
        let mut d = [0u8; 32];
        d[24..].copy_from_slice(&v.to_be_bytes());
        ChainDigest(d)
    }
}

impl fmt::Debug for ChainDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Computes block hashes for one engine configuration.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    algo: HashAlgo,
    block_size: usize,
    root: ChainDigest,
    xxh_seed: u64,
}

/// A block size of zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block size must be at least 1 token")]
pub struct ZeroBlockSize;

impl BlockHasher {
    /// A hasher with vLLM's default seed.
    pub fn new(algo: HashAlgo, block_size: usize) -> Result<BlockHasher, ZeroBlockSize> {
        BlockHasher::with_seed(algo, block_size, VLLM_DEFAULT_SEED)
    }

    /// A hasher whose chain root is derived from `seed` (vLLM: `$PYTHONHASHSEED`).
    pub fn with_seed(
        algo: HashAlgo,
        block_size: usize,
        seed: &str,
    ) -> Result<BlockHasher, ZeroBlockSize> {
        if block_size == 0 {
            return Err(ZeroBlockSize);
        }
        let root = match algo {
            HashAlgo::Sha256Cbor => {
                let mut buf = Vec::with_capacity(seed.len() + 9);
                cbor_head(&mut buf, 3, seed.len() as u64);
                buf.extend_from_slice(seed.as_bytes());
                ChainDigest(Sha256::digest(&buf).into())
            }
            HashAlgo::Xxh3 => ChainDigest::from_u64(xxhash_rust::xxh3::xxh3_64(seed.as_bytes())),
        };
        let xxh_seed = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
        Ok(BlockHasher {
            algo,
            block_size,
            root,
            xxh_seed,
        })
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The digest the chain starts from (vLLM's `NONE_HASH`).
    pub fn root(&self) -> ChainDigest {
        self.root
    }

    /// Hashes of every full block of `tokens`.
    pub fn hash_blocks(&self, tokens: &[u32]) -> Vec<BlockHash> {
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        self.for_each_block(None, tokens, |_, d| out.push(d.block_hash()));
        out
    }

    /// Hashes of the full blocks of `tokens`, continuing the chain from
    /// `parent` (the digest of the block before `tokens[0]`, `None` for the
    /// start of a prompt). Returns the digests so the caller can chain again.
    pub fn chain_blocks(&self, parent: Option<ChainDigest>, tokens: &[u32]) -> Vec<ChainDigest> {
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        self.for_each_block(parent, tokens, |_, d| out.push(d));
        out
    }

    /// The digest of one block given its parent.
    pub fn hash_one(&self, parent: &ChainDigest, block: &[u32]) -> ChainDigest {
        match self.algo {
            HashAlgo::Sha256Cbor => {
                let mut buf = Vec::with_capacity(48 + block.len() * 5);
                sha256_cbor_input(&mut buf, parent, block);
                ChainDigest(Sha256::digest(&buf).into())
            }
            HashAlgo::Xxh3 => {
                let mut buf = Vec::with_capacity(8 + block.len() * 4);
                buf.extend_from_slice(&parent.0[24..]);
                for t in block {
                    buf.extend_from_slice(&t.to_le_bytes());
                }
                ChainDigest::from_u64(xxhash_rust::xxh3::xxh3_64_with_seed(&buf, self.xxh_seed))
            }
        }
    }

    fn for_each_block(
        &self,
        parent: Option<ChainDigest>,
        tokens: &[u32],
        mut f: impl FnMut(usize, ChainDigest),
    ) {
        let mut prev = parent.unwrap_or(self.root);
        match self.algo {
            HashAlgo::Sha256Cbor => {
                // The CBOR of every block has the same layout up to the token
                // ids: write the constant part once, then only the parent
                // digest and the ids, each in place.
                let mut enc = CborBlock::new(self.block_size);
                for (i, block) in tokens.chunks_exact(self.block_size).enumerate() {
                    let d = ChainDigest(Sha256::digest(enc.encode(&prev, block)).into());
                    f(i, d);
                    prev = d;
                }
            }
            HashAlgo::Xxh3 => {
                for (i, block) in tokens.chunks_exact(self.block_size).enumerate() {
                    let d = self.hash_one(&prev, block);
                    f(i, d);
                    prev = d;
                }
            }
        }
    }
}

/// A reusable encoder of `[parent (bstr), [tokens...], null]` for blocks of
/// one size: the tuple, byte-string and array heads are written once; each
/// block then overwrites the parent digest and appends its ids.
struct CborBlock {
    buf: Vec<u8>,
    /// Where the token ids start.
    ids_at: usize,
}

impl CborBlock {
    fn new(block_size: usize) -> CborBlock {
        let mut buf = Vec::with_capacity(48 + block_size * 5);
        cbor_head(&mut buf, 4, 3);
        cbor_head(&mut buf, 2, 32);
        buf.extend_from_slice(&[0; 32]);
        cbor_head(&mut buf, 4, block_size as u64);
        let ids_at = buf.len();
        CborBlock { buf, ids_at }
    }

    fn encode(&mut self, parent: &ChainDigest, block: &[u32]) -> &[u8] {
        self.buf.truncate(self.ids_at);
        self.buf[self.ids_at - 32 - cbor_len(block.len() as u64)..][..32]
            .copy_from_slice(&parent.0);
        for &t in block {
            // Token ids are below 2^32: at most a 5-byte head.
            match t {
                0..=23 => self.buf.push(t as u8),
                24..=0xff => self.buf.extend_from_slice(&[0x18, t as u8]),
                0x100..=0xffff => {
                    let b = (t as u16).to_be_bytes();
                    self.buf.extend_from_slice(&[0x19, b[0], b[1]]);
                }
                _ => {
                    let b = t.to_be_bytes();
                    self.buf.extend_from_slice(&[0x1a, b[0], b[1], b[2], b[3]]);
                }
            }
        }
        self.buf.push(0xf6);
        &self.buf
    }
}

/// Bytes of a CBOR head for `arg`.
fn cbor_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Canonical CBOR of `[parent (bstr), [tokens...], null]`, as `cbor2.dumps(...,
/// canonical=True)` writes the tuple vLLM hashes.
fn sha256_cbor_input(buf: &mut Vec<u8>, parent: &ChainDigest, block: &[u32]) {
    cbor_head(buf, 4, 3);
    cbor_head(buf, 2, 32);
    buf.extend_from_slice(&parent.0);
    cbor_head(buf, 4, block.len() as u64);
    for &t in block {
        cbor_head(buf, 0, u64::from(t));
    }
    buf.push(0xf6);
}

/// A CBOR item head: major type and the shortest encoding of `arg`.
fn cbor_head(buf: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        buf.push(m | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        buf.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        buf.push(m | 25);
        buf.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        buf.push(m | 26);
        buf.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        buf.push(m | 27);
        buf.extend_from_slice(&arg.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_case_from_vllm() {
        // tokens 5..36, block size 32, parent NONE_HASH (shared/README.md).
        let h = BlockHasher::new(HashAlgo::Sha256Cbor, 32).unwrap();
        let toks: Vec<u32> = (5..37).collect();
        assert_eq!(h.hash_blocks(&toks), vec![BlockHash(15778777955027974201)]);
    }

    #[test]
    fn only_full_blocks_are_hashed() {
        let h = BlockHasher::new(HashAlgo::Xxh3, 32).unwrap();
        assert_eq!(h.hash_blocks(&[1; 31]).len(), 0);
        assert_eq!(h.hash_blocks(&[1; 70]).len(), 2);
    }

    #[test]
    fn chain_continues_where_it_left_off() {
        for algo in [HashAlgo::Sha256Cbor, HashAlgo::Xxh3] {
            let h = BlockHasher::new(algo, 4).unwrap();
            let toks: Vec<u32> = (0..20).collect();
            let whole = h.hash_blocks(&toks);
            let first = h.chain_blocks(None, &toks[..8]);
            let rest = h.chain_blocks(first.last().copied(), &toks[8..]);
            let joined: Vec<BlockHash> =
                first.iter().chain(&rest).map(|d| d.block_hash()).collect();
            assert_eq!(whole, joined, "{algo}");
        }
    }

    #[test]
    fn prefix_property_and_divergence() {
        let h = BlockHasher::new(HashAlgo::Xxh3, 4).unwrap();
        let a: Vec<u32> = (0..16).collect();
        let mut b = a.clone();
        b[9] = 999;
        let (ha, hb) = (h.hash_blocks(&a), h.hash_blocks(&b));
        assert_eq!(ha[..2], hb[..2]);
        assert_ne!(ha[2], hb[2]);
        assert_ne!(ha[3], hb[3], "a change propagates down the chain");
    }

    #[test]
    fn seed_changes_every_hash() {
        let a = BlockHasher::new(HashAlgo::Sha256Cbor, 4).unwrap();
        let b = BlockHasher::with_seed(HashAlgo::Sha256Cbor, 4, "42").unwrap();
        assert_ne!(a.hash_blocks(&[1, 2, 3, 4]), b.hash_blocks(&[1, 2, 3, 4]));
    }

    #[test]
    fn cbor_heads_are_minimal() {
        let mut b = Vec::new();
        for (v, want) in [
            (0u64, vec![0x00]),
            (23, vec![0x17]),
            (24, vec![0x18, 24]),
            (255, vec![0x18, 255]),
            (256, vec![0x19, 1, 0]),
            (65536, vec![0x1a, 0, 1, 0, 0]),
            (1 << 32, vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            b.clear();
            cbor_head(&mut b, 0, v);
            assert_eq!(b, want, "{v}");
        }
    }

    #[test]
    fn the_reusable_encoder_writes_what_the_plain_one_does() {
        for bs in [1usize, 4, 16, 24, 32] {
            let mut enc = CborBlock::new(bs);
            for (k, parent) in [ChainDigest([7; 32]), ChainDigest([0xab; 32])]
                .iter()
                .enumerate()
            {
                let block: Vec<u32> = (0..bs as u32)
                    .map(|i| {
                        [0, 23, 24, 255, 256, 65535, 65536, 151_668, u32::MAX][(i as usize + k) % 9]
                    })
                    .collect();
                let mut plain = Vec::new();
                sha256_cbor_input(&mut plain, parent, &block);
                assert_eq!(enc.encode(parent, &block), &plain[..], "block size {bs}");
            }
        }
    }

    #[test]
    fn zero_block_size_is_an_error() {
        assert_eq!(
            BlockHasher::new(HashAlgo::Xxh3, 0).unwrap_err(),
            ZeroBlockSize
        );
        assert_eq!(
            "md5".parse::<HashAlgo>().unwrap_err().to_string(),
            "unknown block hash algorithm \"md5\" (expected \"sha256_cbor\" or \"xxh3\")"
        );
    }
}
