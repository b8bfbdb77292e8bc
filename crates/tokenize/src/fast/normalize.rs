//! NFC the way HF's `NFC` normalizer computes it (same crate, same Unicode
//! tables), applied window by window.
//!
//! NFC of a concatenation is the concatenation of the NFCs when the second
//! part starts with a character that has a normalization boundary before
//! it: a starter (combining class 0) that is `NFC_Quick_Check = Yes`, so
//! that nothing before it can combine with it or be reordered across it.
//! Cutting text only there lets a prefix be normalized without the rest.

use unicode_normalization_alignments::char::canonical_combining_class;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Whether `c` has a normalization boundary before it.
#[inline]
fn boundary_before(c: char) -> bool {
    c.is_ascii()
        || (canonical_combining_class(c) == 0
            && is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes)
}

/// The first position at or after byte `at` where `text` may be cut for
/// normalization (its length if there is none).
pub(crate) fn boundary_at_or_after(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let mut start = at;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..]
        .char_indices()
        .find(|&(_, c)| boundary_before(c))
        .map_or(text.len(), |(i, _)| start + i)
}

/// Whether `text` is already in NFC (as the quick check can tell; a
/// "maybe" counts as no and is normalized).
pub(crate) fn is_nfc(text: &str) -> bool {
    text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes
}

/// Append the NFC of `text` to `out`.
pub(crate) fn push_nfc(out: &mut String, text: &str) {
    if is_nfc(text) {
        out.push_str(text);
    } else {
        out.extend(text.nfc().map(|(c, _)| c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nfc(s: &str) -> String {
        let mut out = String::new();
        push_nfc(&mut out, s);
        out
    }

    #[test]
    fn composes_and_reorders() {
        assert_eq!(nfc("e\u{301}"), "\u{e9}");
        assert_eq!(nfc("a\u{323}\u{302}"), "\u{1ead}");
        assert_eq!(nfc("\u{1100}\u{1161}"), "\u{ac00}");
        assert!(is_nfc("plain"));
        assert!(!is_nfc("e\u{301}"));
    }

    #[test]
    fn cuts_are_where_nfc_splits() {
        let text = "ab\u{301}\u{301}c\u{1100}\u{1161}d";
        for at in 0..=text.len() {
            let cut = boundary_at_or_after(text, at);
            assert!(cut >= at && text.is_char_boundary(cut));
            assert_eq!(
                nfc(&text[..cut]) + &nfc(&text[cut..]),
                nfc(text),
                "cut {cut}"
            );
        }
        assert_eq!(boundary_at_or_after("ab\u{301}c", 2), 4);
    }
}
