//! Character classes of the split regexes (`\p{L}`, `\p{N}`, `\s`, `\w` and
//! the case-insensitive letters of the contractions), taken from
//! `regex-syntax`, the crate whose tables HF's regex engine uses, and packed
//! into a two-level lookup table.
//!
//! Deriving the classes from the very tables the HF pre-tokenizer matches
//! with keeps the two in agreement on every code point, whatever Unicode
//! version those tables follow.

use regex_syntax::hir::{Class, HirKind};
use std::collections::HashMap;
use std::sync::OnceLock;

/// `\p{L}`: a letter.
pub(crate) const LETTER: u8 = 1;
/// `\p{N}`: a number.
pub(crate) const NUMBER: u8 = 2;
/// `\s`: Unicode `White_Space`.
pub(crate) const SPACE: u8 = 4;
/// `\w`: a word character (HF's `single_word` test).
pub(crate) const WORD: u8 = 8;

/// Bits of `(?i:x)` for the letters of `'s|'t|'re|'ve|'m|'ll|'d`.
pub(crate) const FOLD_S: u8 = 1;
pub(crate) const FOLD_T: u8 = 2;
pub(crate) const FOLD_R: u8 = 4;
pub(crate) const FOLD_E: u8 = 8;
pub(crate) const FOLD_V: u8 = 16;
pub(crate) const FOLD_M: u8 = 32;
pub(crate) const FOLD_L: u8 = 64;
pub(crate) const FOLD_D: u8 = 128;

const BLOCK: usize = 256;
const CODE_POINTS: usize = 0x11_0000;

/// The class bits of every code point.
pub(crate) struct Classes {
    /// Block number of each 256-code-point block.
    index: Vec<u16>,
    /// The distinct blocks, back to back.
    blocks: Vec<u8>,
    /// Class bits of the ASCII range, for the common case.
    ascii: [u8; 128],
    /// Code points that some contraction letter matches, with their bits.
    folds: Vec<(char, u8)>,
}

impl Classes {
    /// The shared tables, built on first use; `None` if `regex-syntax`
    /// rejected one of the class expressions (it does not).
    pub(crate) fn get() -> Option<&'static Classes> {
        static CLASSES: OnceLock<Option<Classes>> = OnceLock::new();
        CLASSES.get_or_init(Classes::build).as_ref()
    }

    fn build() -> Option<Classes> {
        let mut flat = vec![0u8; CODE_POINTS];
        for (pattern, bit) in [
            (r"\p{L}", LETTER),
            (r"\p{N}", NUMBER),
            (r"\s", SPACE),
            (r"\w", WORD),
        ] {
            for (lo, hi) in ranges(pattern)? {
                let run = flat.get_mut(lo as usize..=hi as usize)?;
                run.iter_mut().for_each(|k| *k |= bit);
            }
        }
        let mut index = Vec::with_capacity(CODE_POINTS / BLOCK);
        let mut blocks = Vec::new();
        let mut seen: HashMap<&[u8], u16> = HashMap::new();
        for block in flat.chunks(BLOCK) {
            let next = u16::try_from(seen.len()).ok()?;
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.extend_from_slice(block);
                next
            });
            index.push(id);
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        let mut folds: Vec<(char, u8)> = Vec::new();
        for (letter, bit) in [
            ('s', FOLD_S),
            ('t', FOLD_T),
            ('r', FOLD_R),
            ('e', FOLD_E),
            ('v', FOLD_V),
            ('m', FOLD_M),
            ('l', FOLD_L),
            ('d', FOLD_D),
        ] {
            for (lo, hi) in ranges(&format!("(?i:{letter})"))? {
                for cp in lo as u32..=hi as u32 {
                    let c = char::from_u32(cp)?;
                    match folds.iter_mut().find(|(f, _)| *f == c) {
                        Some((_, bits)) => *bits |= bit,
                        None => folds.push((c, bit)),
                    }
                }
            }
        }
        Some(Classes {
            index,
            blocks,
            ascii,
            folds,
        })
    }

    /// The class bits of `c`.
    #[inline(always)]
    pub(crate) fn of(&self, c: char) -> u8 {
        let cp = c as usize;
        if cp < 128 {
            return self.ascii[cp];
        }
        let block = self.index.get(cp / BLOCK).copied().unwrap_or(0) as usize;
        self.blocks
            .get(block * BLOCK + cp % BLOCK)
            .copied()
            .unwrap_or(0)
    }

    /// The contraction letters `c` matches case-insensitively (`FOLD_*` bits).
    #[inline]
    pub(crate) fn fold(&self, c: char) -> u8 {
        self.folds
            .iter()
            .find(|(f, _)| *f == c)
            .map_or(0, |(_, bits)| *bits)
    }
}

/// The code point ranges a one-class regex matches.
fn ranges(pattern: &str) -> Option<Vec<(char, char)>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => Some(
            class
                .ranges()
                .iter()
                .map(|r| (r.start(), r.end()))
                .collect(),
        ),
        HirKind::Literal(lit) => {
            let s = std::str::from_utf8(&lit.0).ok()?;
            let mut chars = s.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(vec![(c, c)])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_agree_with_the_unicode_categories() {
        let c = Classes::get().unwrap();
        assert_eq!(c.of('a'), LETTER | WORD);
        assert_eq!(c.of('7'), NUMBER | WORD);
        assert_eq!(c.of(' ') & SPACE, SPACE);
        assert_eq!(c.of('\n') & SPACE, SPACE);
        assert_eq!(c.of('\u{3000}') & SPACE, SPACE);
        assert_eq!(c.of('\u{6771}') & LETTER, LETTER);
        assert_eq!(c.of('\u{2167}') & NUMBER, NUMBER, "Roman numeral (Nl)");
        assert_eq!(c.of('\u{00bd}') & NUMBER, NUMBER, "vulgar fraction (No)");
        assert_eq!(
            c.of('\u{0301}') & (LETTER | NUMBER | SPACE),
            0,
            "combining mark"
        );
        assert_eq!(c.of('\u{1f680}'), 0);
        assert_eq!(c.of('_'), WORD);
        assert_eq!(c.of('\u{10ffff}'), 0);
    }

    #[test]
    fn contraction_letters_fold_like_the_regex() {
        let c = Classes::get().unwrap();
        assert_eq!(c.fold('s'), FOLD_S);
        assert_eq!(c.fold('S'), FOLD_S);
        assert_eq!(c.fold('\u{017f}'), FOLD_S, "long s folds to s");
        assert_eq!(c.fold('L'), FOLD_L);
        assert_eq!(c.fold('x'), 0);
    }
}
