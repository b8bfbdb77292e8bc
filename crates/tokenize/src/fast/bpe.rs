//! Byte-level BPE by merge rank: the pieces' bytes start as one token each
//! and the adjacent pair with the lowest merge rank (the leftmost of equals)
//! is merged until no pair has a merge — the order HF's `BPE` model applies
//! its merges in, so the result is the same.
//!
//! Most pieces are common words that encode to one token: a table of the
//! tokens whose own bytes merge back into them answers those with one
//! lookup (the merges would take a dozen lookups into a large table, most
//! of them cache misses). Other short pieces are merged in place in fixed
//! arrays with a linear scan for the best pair; long ones (runs of spaces in
//! code, long words without spaces) use a linked list and a heap, as HF
//! does. Each thread remembers the pieces it merged, and the ids of its
//! recent short pieces in a table small enough to stay in its core's cache.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Pieces up to this many bytes are merged in stack arrays.
const SMALL: usize = 64;

/// No merge for this pair.
const NONE: u64 = u64::MAX;

/// Pieces up to this many bytes that are not one token are remembered per
/// thread (their merges are the slow part); at most this many of them,
/// about 1.5 MB a thread.
const CACHED_PIECE_BYTES: usize = 256;
const CACHED_PIECES: usize = 1 << 14;

/// Numbers the models, so a thread's piece cache knows whose ids it holds.
static NEXT_MODEL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The merged pieces of the model this thread used last.
    static PIECES: RefCell<PieceCache> = RefCell::new(PieceCache::default());
}

/// A merged piece: its bytes and ids.
type Merged = (Box<[u8]>, Box<[u32]>);

/// Slots of the per-thread table of recent short pieces (48 bytes each).
const HOT_SLOTS: usize = 4096;
/// Pieces up to this many bytes, of up to `HOT_IDS` ids, go in that table.
const HOT_BYTES: usize = 16;
const HOT_IDS: usize = 4;

/// A recent short piece and its ids, stored inline.
#[derive(Clone, Copy, Default)]
struct Hot {
    hash: u64,
    bytes: [u8; HOT_BYTES],
    len: u8,
    count: u8,
    ids: [u32; HOT_IDS],
}

/// A thread's recent pieces: a small direct-mapped table of short ones (it
/// stays in the core's own cache, where the model's tables do not), and
/// merged pieces by hash, emptied when full. Both are emptied when another
/// model is used.
#[derive(Default)]
struct PieceCache {
    model: u64,
    hot: Vec<Hot>,
    map: HashMap<u64, Merged, BuildHasherDefault<PairHasher>>,
}

/// A hasher for the `u64` pair keys: one multiply, well mixed in the high
/// bits, which is where `HashMap` looks.
#[derive(Default, Clone, Copy)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline(always)]
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PairMap = HashMap<u64, u64, BuildHasherDefault<PairHasher>>;

/// A byte-level BPE model.
pub(crate) struct Bpe {
    /// Id of each single-byte token.
    byte_ids: [u32; 256],
    /// `left << 32 | right` → `rank << 32 | merged id`.
    merges: PairMap,
    /// Pieces that encode to one token, by their bytes.
    whole: TokenTable,
    /// This model's number in the per-thread piece caches.
    model: u64,
}

/// An open-addressing table from byte strings to ids. A slot holds what a
/// lookup compares (the first 8 bytes, the length) and the id, so a lookup
/// touches one cache line; the bytes past the eighth are kept back to back
/// in one buffer.
struct TokenTable {
    /// A power of two long; `len == 0` marks an empty slot.
    slots: Vec<Slot>,
    /// Where each slot's string starts in `bytes`.
    starts: Vec<u32>,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The first 8 bytes, zero-padded.
    head: u64,
    id: u32,
    len: u32,
}

// The helpers below read short byte strings a word at a time with plain
// loops: pieces are a few bytes long, too short for `memcpy`/`memcmp` calls
// to pay.

/// Up to 8 bytes as a little-endian word, zero-padded.
#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(w) => u64::from_le_bytes(w),
        Err(_) => bytes
            .iter()
            .take(8)
            .enumerate()
            .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
    }
}

/// The first 8 bytes of `bytes`, zero-padded, as a little-endian word.
#[inline(always)]
fn head(bytes: &[u8]) -> u64 {
    word(bytes.get(..8).unwrap_or(bytes))
}

#[inline(always)]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = PairHasher(bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = h.0 ^ word(c);
        h.write_u64(v);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let v = h.0 ^ word(rest);
        h.write_u64(v);
    }
    h.finish()
}

/// `a == b`, a word at a time.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if word(p) != word(q) {
            return false;
        }
    }
    word(x.remainder()) == word(y.remainder())
}

impl TokenTable {
    fn new(tokens: Vec<(Box<[u8]>, u32)>) -> TokenTable {
        let slots_len = (tokens.len() + tokens.len() / 2)
            .next_power_of_two()
            .max(16);
        let mut table = TokenTable {
            slots: vec![Slot::default(); slots_len],
            starts: vec![0; slots_len],
            bytes: Vec::new(),
        };
        let mask = slots_len - 1;
        for (bytes, id) in tokens {
            let (Ok(start), Ok(len)) =
                (u32::try_from(table.bytes.len()), u32::try_from(bytes.len()))
            else {
                continue;
            };
            if len == 0 || table.get(&bytes).is_some() {
                continue;
            }
            let mut slot = (hash_bytes(&bytes) >> 32) as usize & mask;
            while table.slots[slot].len != 0 {
                slot = (slot + 1) & mask;
            }
            table.slots[slot] = Slot {
                head: head(&bytes),
                id,
                len,
            };
            table.starts[slot] = start;
            table.bytes.extend_from_slice(&bytes);
        }
        table
    }

    #[inline]
    fn get(&self, piece: &[u8]) -> Option<u32> {
        self.get_hashed(piece, hash_bytes(piece))
    }

    #[inline]
    fn get_hashed(&self, piece: &[u8], hash: u64) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut slot = (hash >> 32) as usize & mask;
        let piece_head = head(piece);
        loop {
            let s = self.slots.get(slot)?;
            if s.len == 0 {
                return None;
            }
            if s.head == piece_head && s.len as usize == piece.len() {
                if piece.len() <= 8 {
                    return Some(s.id);
                }
                let start = *self.starts.get(slot)? as usize;
                let stored = self
                    .bytes
                    .get(start..start + piece.len())
                    .unwrap_or_default();
                if same_bytes(stored, piece) {
                    return Some(s.id);
                }
            }
            slot = (slot + 1) & mask;
        }
    }
}

#[inline(always)]
fn key(left: u32, right: u32) -> u64 {
    u64::from(left) << 32 | u64::from(right)
}

impl Bpe {
    /// A model from the id of each byte, the merges in rank order as
    /// `(left id, right id, merged id)`, and the vocabulary as bytes. With
    /// `ignore_merges` a piece that is a token is that token, as in HF;
    /// otherwise the tokens whose bytes merge back into them are looked up
    /// first, which gives the same ids sooner.
    pub(crate) fn new(
        byte_ids: [u32; 256],
        merges: impl IntoIterator<Item = (u32, u32, u32)>,
        vocab: Vec<(Box<[u8]>, u32)>,
        ignore_merges: bool,
    ) -> Bpe {
        let mut map = PairMap::default();
        for (rank, (left, right, merged)) in merges.into_iter().enumerate() {
            let rank = u64::try_from(rank).unwrap_or(u64::from(u32::MAX));
            // A pair listed twice keeps its last rank, as in HF's map.
            map.insert(key(left, right), rank << 32 | u64::from(merged));
        }
        let mut bpe = Bpe {
            byte_ids,
            merges: map,
            whole: TokenTable::new(Vec::new()),
            model: NEXT_MODEL.fetch_add(1, Ordering::Relaxed),
        };
        let whole = if ignore_merges {
            vocab
        } else {
            let mut ids = Vec::new();
            vocab
                .into_iter()
                .filter(|(bytes, id)| {
                    ids.clear();
                    bpe.merge(bytes, &mut ids);
                    ids == [*id]
                })
                .collect()
        };
        bpe.whole = TokenTable::new(whole);
        bpe
    }

    #[inline(always)]
    fn merge_of(&self, left: u32, right: u32) -> u64 {
        self.merges.get(&key(left, right)).copied().unwrap_or(NONE)
    }

    /// Append the ids of `piece` to `out`.
    #[inline]
    pub(crate) fn encode(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n > CACHED_PIECE_BYTES => {
                let hash = hash_bytes(piece);
                match self.whole.get_hashed(piece, hash) {
                    Some(id) => out.push(id),
                    None => self.merge(piece, out),
                }
            }
            _ => {
                let hash = hash_bytes(piece);
                PIECES.with(|cache| match cache.try_borrow_mut() {
                    Ok(mut cache) => self.encode_cached(piece, hash, &mut cache, out),
                    Err(_) => match self.whole.get_hashed(piece, hash) {
                        Some(id) => out.push(id),
                        None => self.merge(piece, out),
                    },
                })
            }
        }
    }

    /// [`encode`](Self::encode) through a thread's piece cache.
    fn encode_cached(&self, piece: &[u8], hash: u64, cache: &mut PieceCache, out: &mut Vec<u32>) {
        if cache.model != self.model || cache.hot.len() != HOT_SLOTS {
            cache.map.clear();
            cache.hot.clear();
            cache.hot.resize(HOT_SLOTS, Hot::default());
            cache.model = self.model;
        }
        let short = piece.len() <= HOT_BYTES;
        let slot = (hash >> 40) as usize % HOT_SLOTS;
        if short {
            if let Some(h) = cache.hot.get(slot) {
                if h.hash == hash
                    && usize::from(h.len) == piece.len()
                    && same_bytes(h.bytes.get(..piece.len()).unwrap_or_default(), piece)
                {
                    for &id in h.ids.iter().take(usize::from(h.count)) {
                        out.push(id);
                    }
                    return;
                }
            }
        }
        let start = out.len();
        match self.whole.get_hashed(piece, hash) {
            Some(id) => out.push(id),
            None => match cache.map.get(&hash) {
                Some((bytes, ids)) if same_bytes(bytes, piece) => {
                    for &id in ids.iter() {
                        out.push(id);
                    }
                }
                _ => {
                    self.merge(piece, out);
                    if cache.map.len() >= CACHED_PIECES {
                        cache.map.clear();
                    }
                    let ids = out.get(start..).unwrap_or_default();
                    cache.map.insert(hash, (piece.into(), ids.into()));
                }
            },
        }
        let ids = out.get(start..).unwrap_or_default();
        if short && ids.len() <= HOT_IDS {
            if let Some(h) = cache.hot.get_mut(slot) {
                h.hash = hash;
                h.len = piece.len() as u8;
                h.count = ids.len() as u8;
                for (dst, &b) in h.bytes.iter_mut().zip(piece) {
                    *dst = b;
                }
                for (dst, &id) in h.ids.iter_mut().zip(ids) {
                    *dst = id;
                }
            }
        }
    }

    /// Append the ids of `piece` by merging.
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= SMALL => self.encode_small(piece, out),
            _ => self.encode_long(piece, out),
        }
    }

    fn encode_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n0 = piece.len();
        let mut ids = [0u32; SMALL];
        // merges[i]: the merge of ids[i] and ids[i + 1] (rank << 32 | id).
        let mut merges = [NONE; SMALL];
        for (slot, &b) in ids.iter_mut().zip(piece) {
            *slot = self.byte_ids[b as usize];
        }
        for i in 0..n0 - 1 {
            merges[i] = self.merge_of(ids[i], ids[i + 1]);
        }
        let mut n = n0;
        while n > 1 {
            // Leftmost lowest rank: ranks are the high bits, so the minimum
            // value is the lowest rank, and `min` keeps the first minimum.
            let mut best = 0;
            let mut best_merge = merges[0];
            for (i, &m) in merges.iter().enumerate().take(n - 1).skip(1) {
                if m >> 32 < best_merge >> 32 {
                    best = i;
                    best_merge = m;
                }
            }
            if best_merge == NONE {
                break;
            }
            ids[best] = best_merge as u32;
            // Close the gap by hand: the runs are a few elements long, too
            // short for a `memmove` call to pay.
            for j in best + 1..n - 1 {
                ids[j] = ids[j + 1];
                merges[j] = merges[j + 1];
            }
            n -= 1;
            if best + 1 < n {
                merges[best] = self.merge_of(ids[best], ids[best + 1]);
            } else {
                merges[best] = NONE;
            }
            if best > 0 {
                merges[best - 1] = self.merge_of(ids[best - 1], ids[best]);
            }
        }
        out.extend_from_slice(&ids[..n]);
    }

    /// HF's algorithm: a doubly linked list of symbols and a heap of
    /// candidate merges ordered by (rank, position); stale entries are
    /// skipped when popped.
    fn encode_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut alive = vec![true; n];
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let m = self.merge_of(ids[i], ids[i + 1]);
            if m != NONE {
                heap.push(Reverse((m >> 32, i, m as u32)));
            }
        }
        while let Some(Reverse((_, pos, merged))) = heap.pop() {
            if !alive[pos] || next[pos] >= n {
                continue;
            }
            let right = next[pos];
            let current = self.merge_of(ids[pos], ids[right]);
            if current == NONE || current as u32 != merged {
                continue;
            }
            ids[pos] = merged;
            alive[right] = false;
            next[pos] = next[right];
            if next[pos] < n {
                prev[next[pos]] = pos;
            }
            if prev[pos] < n {
                let left = prev[pos];
                let m = self.merge_of(ids[left], ids[pos]);
                if m != NONE {
                    heap.push(Reverse((m >> 32, left, m as u32)));
                }
            }
            if next[pos] < n {
                let m = self.merge_of(ids[pos], ids[next[pos]]);
                if m != NONE {
                    heap.push(Reverse((m >> 32, pos, m as u32)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(ids[i]);
            i = next[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes are their own ids; merges: a+a → 300 (rank 0), b+b → 301,
    /// 300+300 → 302, a+b → 303.
    fn toy() -> Bpe {
        let mut byte_ids = [0u32; 256];
        for (i, id) in byte_ids.iter_mut().enumerate() {
            *id = i as u32;
        }
        let (a, b) = (u32::from(b'a'), u32::from(b'b'));
        Bpe::new(
            byte_ids,
            [(a, a, 300), (b, b, 301), (300, 300, 302), (a, b, 303)],
            vec![
                (b"aa".to_vec().into_boxed_slice(), 300),
                (b"aaaa".to_vec().into_boxed_slice(), 302),
                // Not what "ba" merges to: must not be taken whole.
                (b"ba".to_vec().into_boxed_slice(), 304),
            ],
            false,
        )
    }

    fn both(bpe: &Bpe, piece: &[u8]) -> Vec<u32> {
        let (mut small, mut long) = (Vec::new(), Vec::new());
        bpe.encode_small(piece, &mut small);
        bpe.encode_long(piece, &mut long);
        assert_eq!(small, long, "{:?}", String::from_utf8_lossy(piece));
        small
    }

    #[test]
    fn lowest_rank_first_leftmost_on_ties() {
        let bpe = toy();
        assert_eq!(both(&bpe, b"aaa"), [300, 97]);
        assert_eq!(both(&bpe, b"aaaa"), [302]);
        assert_eq!(both(&bpe, b"aab"), [300, 98]);
        assert_eq!(both(&bpe, b"abb"), [97, 301]);
        assert_eq!(both(&bpe, b"xab"), [120, 303]);
        assert_eq!(both(&bpe, b"aaaaab"), [302, 303]);
        let mut out = Vec::new();
        bpe.encode(b"ba", &mut out);
        bpe.encode(b"aaaa", &mut out);
        assert_eq!(out, [98, 97, 302]);
    }

    #[test]
    fn long_pieces_take_the_heap_path() {
        let bpe = toy();
        let piece = vec![b'a'; 4 * SMALL + 1];
        let mut out = Vec::new();
        bpe.encode(&piece, &mut out);
        let mut expected = vec![302; SMALL];
        expected.push(97);
        assert_eq!(out, expected);
        let short = &piece[..SMALL];
        assert_eq!(both(&bpe, short).len(), SMALL / 4);
    }

    #[test]
    fn whole_tokens_win_with_ignore_merges() {
        let mut byte_ids = [0u32; 256];
        for (i, id) in byte_ids.iter_mut().enumerate() {
            *id = i as u32;
        }
        let whole = vec![(b"abc".to_vec().into_boxed_slice(), 500)];
        let bpe = Bpe::new(byte_ids, [], whole, true);
        let mut out = Vec::new();
        bpe.encode(b"abc", &mut out);
        bpe.encode(b"abd", &mut out);
        assert_eq!(out, [500, 97, 98, 100]);
    }
}
