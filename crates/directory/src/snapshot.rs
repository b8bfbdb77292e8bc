//! [`Snapshot`]: every instance's blocks in recency order, encoded with
//! bincode, so a new router replica starts from a running one's directory
//! instead of an empty one (and a restarted router from its own).
//!
//! ```text
//!   "KVRDIR\0" + format u8 ‖ bincode(Snapshot { hashing, taken_at, instances: [{name, blocks LRU→MRU}] })
//! ```
//!
//! Block hashes only mean something to a directory that hashes prompts the
//! same way, so a snapshot names its hashing (`hashing`, chosen by the
//! caller, e.g. "sha256_cbor/32/seed 0") and [`Snapshot::check_hashing`]
//! refuses one made differently. Instances are named by the caller too (the
//! router uses the engine's URL): ids are dense indices local to one
//! process. [`Directory::import`] replays an instance's blocks from least to
//! most recently used, so eviction order survives the trip.

use crate::Directory;
use kvroute_core::{BlockHash, InstanceId};
use serde::{Deserialize, Serialize};

/// The first bytes of every snapshot.
const MAGIC: &[u8; 7] = b"KVRDIR\0";
/// The encoding's version (the byte after the magic).
const FORMAT: u8 = 1;
/// Largest snapshot decoded (a 1 M-block directory is ~8 MB).
const MAX_BYTES: usize = 1 << 30;

/// One instance's blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSnapshot {
    /// The caller's name for the instance (the router: its URL).
    pub name: String,
    /// Its blocks from least to most recently used.
    pub blocks: Vec<u64>,
}

/// A directory's contents (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// How the block hashes were computed.
    pub hashing: String,
    /// When it was taken, Unix seconds.
    pub taken_at_unix_secs: f64,
    /// Per instance.
    pub instances: Vec<InstanceSnapshot>,
}

/// Why a snapshot could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, or one in a format this build does not read.
    #[error("not a kvroute directory snapshot ({0})")]
    Format(String),
    /// The bytes after the header do not decode.
    #[error("corrupt directory snapshot: {0}")]
    Decode(String),
    /// Made with another hashing: its block hashes would never match.
    #[error("directory snapshot hashed with {found:?}, this router hashes with {expected:?}")]
    Hashing {
        /// The snapshot's.
        found: String,
        /// Ours.
        expected: String,
    },
}

impl Snapshot {
    /// Encode (header, then bincode's standard configuration).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self
                .instances
                .iter()
                .map(|i| i.name.len() + 9 * i.blocks.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        // Encoding into a Vec cannot fail for these types.
        if let Ok(body) = bincode::serde::encode_to_vec(self, bincode::config::standard()) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Decode, checking the header; at most 1 GiB.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        if bytes.len() > MAX_BYTES {
            return Err(SnapshotError::Format(format!(
                "{} bytes, more than the {MAX_BYTES} accepted",
                bytes.len()
            )));
        }
        let Some(rest) = bytes.strip_prefix(&MAGIC[..]) else {
            return Err(SnapshotError::Format("no KVRDIR header".into()));
        };
        match rest.split_first() {
            Some((&FORMAT, body)) => {
                let config = bincode::config::standard().with_limit::<MAX_BYTES>();
                let (s, used): (Snapshot, usize) = bincode::serde::decode_from_slice(body, config)
                    .map_err(|e| SnapshotError::Decode(e.to_string()))?;
                if used != body.len() {
                    return Err(SnapshotError::Decode(format!(
                        "{} trailing bytes",
                        body.len() - used
                    )));
                }
                Ok(s)
            }
            Some((v, _)) => Err(SnapshotError::Format(format!(
                "format {v}; this build reads format {FORMAT}"
            ))),
            None => Err(SnapshotError::Format("header only".into())),
        }
    }

    /// Refuse a snapshot hashed differently from `expected`.
    pub fn check_hashing(&self, expected: &str) -> Result<(), SnapshotError> {
        if self.hashing == expected {
            Ok(())
        } else {
            Err(SnapshotError::Hashing {
                found: self.hashing.clone(),
                expected: expected.to_string(),
            })
        }
    }

    /// Blocks in all instances.
    pub fn blocks(&self) -> usize {
        self.instances.iter().map(|i| i.blocks.len()).sum()
    }
}

impl Directory {
    /// `id`'s blocks from least to most recently used.
    pub fn export(&self, id: InstanceId) -> Vec<u64> {
        self.with_index(|ix| ix.lru_order(id).into_iter().map(|h| h.0).collect())
    }

    /// Give `id` these blocks (least recently used first), after what it
    /// holds, within its capacity; visible at once whatever the freshness.
    /// Returns how many it holds afterwards.
    pub fn import(&self, id: InstanceId, blocks: &[u64]) -> u64 {
        let hashes: Vec<BlockHash> = blocks.iter().map(|&h| BlockHash(h)).collect();
        self.insert_in_order(id, &hashes);
        self.instance_blocks(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Freshness;
    use kvroute_core::Nanos;

    fn sample() -> Snapshot {
        Snapshot {
            hashing: "sha256_cbor/32/seed 0".into(),
            taken_at_unix_secs: 1.5e9,
            instances: vec![
                InstanceSnapshot {
                    name: "http://a:1".into(),
                    blocks: vec![3, u64::MAX, 7],
                },
                InstanceSnapshot {
                    name: "http://b:1".into(),
                    blocks: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), s);
        assert_eq!(s.blocks(), 3);
        assert!(matches!(
            Snapshot::decode(b"{\"json\": true}"),
            Err(SnapshotError::Format(_))
        ));
        let mut newer = bytes.clone();
        newer[7] = 9;
        let e = Snapshot::decode(&newer).unwrap_err();
        assert!(e.to_string().contains("format 9"), "{e}");
        let e = Snapshot::decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(e, SnapshotError::Decode(_)), "{e}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Snapshot::decode(&longer),
            Err(SnapshotError::Decode(_))
        ));
        assert!(s.check_hashing("sha256_cbor/32/seed 0").is_ok());
        let e = s.check_hashing("xxh3/16/seed 0").unwrap_err();
        assert!(e.to_string().contains("xxh3/16"), "{e}");
    }

    #[test]
    fn export_then_import_keeps_blocks_and_eviction_order() {
        let a = Directory::new(Freshness::Live);
        let id = InstanceId(0);
        a.set_capacity(id, 4);
        for chain in [[1u64, 2], [3, 4], [5, 6]] {
            let hashes: Vec<BlockHash> = chain.iter().map(|&h| BlockHash(h)).collect();
            a.record_routed(Nanos::ZERO, id, &hashes, None);
        }
        let order = a.export(id);
        assert_eq!(order.len(), 4);

        let b = Directory::new(Freshness::Live);
        b.set_capacity(id, 4);
        assert_eq!(b.import(id, &order), 4);
        assert_eq!(b.export(id), order, "same blocks, same recency");
        // Visible at once, even with a periodic directory.
        let c = Directory::new(Freshness::periodic_secs(5.0));
        c.import(id, &order);
        let probe: Vec<BlockHash> = [5u64, 6].iter().map(|&h| BlockHash(h)).collect();
        assert_eq!(c.overlap(Nanos::ZERO, &probe).get(id), 2);
        // The next insert evicts what was least recent before the trip.
        b.record_routed(Nanos::ZERO, id, &[BlockHash(9)], None);
        let after = b.export(id);
        assert!(!after.contains(&order[0]) && after.contains(&9));
    }
}
