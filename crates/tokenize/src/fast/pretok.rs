//! The split pre-tokenizer of the GPT-4-style byte-level BPE tokenizers,
//! written out by hand:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! with `D = 1` (Qwen2, Qwen3) or `D = 3` (Llama-3, cl100k). HF matches it
//! with a backtracking engine, alternatives in order, the first that matches
//! winning, each match becoming one piece (`Isolated`). Every character is
//! matched by some alternative, so the pieces tile the text. What each
//! alternative does at a position `p`, with backtracking resolved:
//!
//! 1. `'` followed by `s`, `t`, `m`, `d`, `re`, `ve` or `ll` in any case
//!    (Unicode simple case folding, so also `ſ` for `s`);
//! 2. a letter run, optionally preceded by one character that is neither a
//!    line break, a letter nor a number;
//! 3. one to `D` numbers;
//! 4. an optional U+0020 space, then a run of characters that are neither
//!    space, letter nor number, then any `\r`/`\n`;
//! 5. within a whitespace run that contains a line break: up to and
//!    including its last line break;
//! 6. a whitespace run at the end of the text whole, else without its last
//!    character (which then starts the next piece) when it has two or more;
//! 7. a single whitespace character before a non-space.
//!
//! [`Lexer::piece`] also reports whether it looked at the end of the text:
//! a piece found without doing so is the same piece however the text goes
//! on, which is what lets a prefix be encoded exactly without the rest.

use super::classes::{
    Classes, FOLD_D, FOLD_E, FOLD_L, FOLD_M, FOLD_R, FOLD_S, FOLD_T, FOLD_V, LETTER, NUMBER, SPACE,
};

/// The split regex variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitRule {
    /// `D` of `\p{N}{1,D}`.
    pub(crate) max_digits: u8,
}

/// The Qwen2/Qwen3 split pattern (single digits).
pub(crate) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Llama-3 / cl100k split pattern (digits in threes).
pub(crate) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl SplitRule {
    /// The rule for a `Split` pre-tokenizer's regex, if it is one of the
    /// known patterns (compared exactly).
    pub(crate) fn for_pattern(pattern: &str) -> Option<SplitRule> {
        match pattern {
            QWEN2_PATTERN => Some(SplitRule { max_digits: 1 }),
            LLAMA3_PATTERN => Some(SplitRule { max_digits: 3 }),
            _ => None,
        }
    }
}

/// The pieces of one text.
pub(crate) struct Lexer<'t> {
    text: &'t str,
    classes: &'static Classes,
    rule: SplitRule,
}

/// A character at a byte position: the character, its UTF-8 length and its
/// class bits.
#[derive(Clone, Copy)]
struct At {
    c: char,
    len: usize,
    class: u8,
}

const NOT_SPACE_LETTER_NUMBER: u8 = SPACE | LETTER | NUMBER;

impl<'t> Lexer<'t> {
    pub(crate) fn new(text: &'t str, classes: &'static Classes, rule: SplitRule) -> Lexer<'t> {
        Lexer {
            text,
            classes,
            rule,
        }
    }

    /// The character at byte `i`, or `None` at the end (noted in `hit_end`).
    #[inline(always)]
    fn at(&self, i: usize, hit_end: &mut bool) -> Option<At> {
        let bytes = self.text.as_bytes();
        match bytes.get(i) {
            None => {
                *hit_end = true;
                None
            }
            Some(&b) if b < 0x80 => Some(At {
                c: b as char,
                len: 1,
                class: self.classes.of(b as char),
            }),
            Some(_) => {
                let c = self.text.get(i..)?.chars().next()?;
                Some(At {
                    c,
                    len: c.len_utf8(),
                    class: self.classes.of(c),
                })
            }
        }
    }

    /// The end of the run of characters whose class has some of `want` and
    /// none of `avoid`, from `i`.
    #[inline(always)]
    fn run(&self, mut i: usize, want: u8, avoid: u8, hit_end: &mut bool) -> usize {
        let bytes = self.text.as_bytes();
        loop {
            // ASCII inline; anything else through the table.
            match bytes.get(i) {
                None => {
                    *hit_end = true;
                    return i;
                }
                Some(&b) if b < 0x80 => {
                    let k = self.classes.of(b as char);
                    if k & want == 0 || k & avoid != 0 {
                        return i;
                    }
                    i += 1;
                }
                Some(_) => match self.at(i, hit_end) {
                    Some(a) if a.class & want != 0 && a.class & avoid == 0 => i += a.len,
                    _ => return i,
                },
            }
        }
    }

    /// The end of a run of characters that are neither space, letter nor
    /// number, from `i`.
    #[inline(always)]
    fn punct_run(&self, mut i: usize, hit_end: &mut bool) -> usize {
        while let Some(a) = self.at(i, hit_end) {
            if a.class & NOT_SPACE_LETTER_NUMBER != 0 {
                break;
            }
            i += a.len;
        }
        i
    }

    /// The end of a run of `\r`/`\n`, from `i`.
    #[inline(always)]
    fn newline_run(&self, mut i: usize, hit_end: &mut bool) -> usize {
        let bytes = self.text.as_bytes();
        loop {
            match bytes.get(i) {
                Some(b'\r' | b'\n') => i += 1,
                Some(_) => return i,
                None => {
                    *hit_end = true;
                    return i;
                }
            }
        }
    }

    /// The piece that starts at byte `p` (< the text's length): its end, and
    /// whether finding it looked at the end of the text.
    pub(crate) fn piece(&self, p: usize) -> (usize, bool) {
        let mut hit_end = false;
        let Some(a0) = self.at(p, &mut hit_end) else {
            return (p, true);
        };
        let after0 = p + a0.len;

        // 1. Contractions.
        if a0.c == '\'' {
            if let Some(a1) = self.at(after0, &mut hit_end) {
                let f1 = self.classes.fold(a1.c);
                let after1 = after0 + a1.len;
                if f1 & (FOLD_S | FOLD_T | FOLD_M | FOLD_D) != 0 {
                    return (after1, hit_end);
                }
                if f1 & (FOLD_R | FOLD_V | FOLD_L) != 0 {
                    if let Some(a2) = self.at(after1, &mut hit_end) {
                        let f2 = self.classes.fold(a2.c);
                        let second = if f1 & FOLD_L != 0 { FOLD_L } else { FOLD_E };
                        if f2 & second != 0 {
                            return (after1 + a2.len, hit_end);
                        }
                    }
                }
            }
        }

        // 2. Letters, optionally after one non-line-break, non-letter,
        // non-number character.
        if a0.class & LETTER != 0 {
            return (self.run(after0, LETTER, 0, &mut hit_end), hit_end);
        }
        if a0.c != '\r' && a0.c != '\n' && a0.class & NUMBER == 0 {
            if let Some(a1) = self.at(after0, &mut hit_end) {
                if a1.class & LETTER != 0 {
                    let end = self.run(after0 + a1.len, LETTER, 0, &mut hit_end);
                    return (end, hit_end);
                }
            }
        }

        // 3. Numbers, up to `max_digits` of them.
        if a0.class & NUMBER != 0 {
            let mut end = after0;
            for _ in 1..self.rule.max_digits {
                match self.at(end, &mut hit_end) {
                    Some(a) if a.class & NUMBER != 0 => end += a.len,
                    _ => break,
                }
            }
            return (end, hit_end);
        }

        // 4. Punctuation and symbols, after an optional space, with trailing
        // line breaks.
        let punct_start = if a0.class & NOT_SPACE_LETTER_NUMBER == 0 {
            Some(p)
        } else if a0.c == ' ' {
            match self.at(after0, &mut hit_end) {
                Some(a1) if a1.class & NOT_SPACE_LETTER_NUMBER == 0 => Some(after0),
                _ => None,
            }
        } else {
            None
        };
        if let Some(start) = punct_start {
            let end = self.punct_run(start, &mut hit_end);
            return (self.newline_run(end, &mut hit_end), hit_end);
        }

        // 5–7. Whitespace (every character not handled above is one).
        let mut i = p;
        let mut last = p;
        let mut chars = 0usize;
        let mut after_last_newline = None;
        while let Some(a) = self.at(i, &mut hit_end) {
            if a.class & SPACE == 0 {
                break;
            }
            last = i;
            i += a.len;
            chars += 1;
            if a.c == '\r' || a.c == '\n' {
                after_last_newline = Some(i);
            }
        }
        if let Some(end) = after_last_newline {
            return (end, hit_end);
        }
        if i == self.text.len() || chars < 2 {
            // At the end: `(?!\S)` holds after the whole run. One character
            // before a non-space: `\s+`.
            return (i.max(after0), hit_end);
        }
        (last, hit_end)
    }
}

/// Every piece of `text` (the whole text, for tests and the full encoder).
#[cfg(test)]
pub(crate) fn pieces(text: &str, rule: SplitRule) -> Vec<&str> {
    let classes = Classes::get().unwrap();
    let lexer = Lexer::new(text, classes, rule);
    let mut out = Vec::new();
    let mut p = 0;
    while p < text.len() {
        let (end, _) = lexer.piece(p);
        out.push(&text[p..end]);
        p = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN: SplitRule = SplitRule { max_digits: 1 };
    const LLAMA: SplitRule = SplitRule { max_digits: 3 };

    #[test]
    fn known_patterns_are_recognised_exactly() {
        assert_eq!(SplitRule::for_pattern(QWEN2_PATTERN), Some(QWEN));
        assert_eq!(SplitRule::for_pattern(LLAMA3_PATTERN), Some(LLAMA));
        assert_eq!(
            SplitRule::for_pattern(&QWEN2_PATTERN.replace("'d", "'D")),
            None
        );
    }

    #[test]
    fn words_contractions_numbers_and_punctuation() {
        assert_eq!(
            pieces("Hello, world! I'm fine's 'RE", QWEN),
            ["Hello", ",", " world", "!", " I", "'m", " fine", "'s", " '", "RE"]
        );
        assert_eq!(pieces("12345 x", QWEN), ["1", "2", "3", "4", "5", " x"]);
        assert_eq!(pieces("12345 x", LLAMA), ["123", "45", " x"]);
        assert_eq!(pieces(" ...\n\nx", QWEN), [" ...\n\n", "x"]);
        assert_eq!(pieces("'ſ", QWEN), ["'ſ"]);
    }

    #[test]
    fn whitespace_runs() {
        assert_eq!(pieces("a   b", QWEN), ["a", "  ", " b"]);
        assert_eq!(pieces("a \n  b", QWEN), ["a", " \n", " ", " b"]);
        assert_eq!(pieces("a  ", QWEN), ["a", "  "]);
        assert_eq!(pieces("a  1", QWEN), ["a", " ", " ", "1"]);
        assert_eq!(pieces("\r\n\r\n\tx", QWEN), ["\r\n\r\n", "\tx"]);
        assert_eq!(pieces("x\t\t", QWEN), ["x", "\t\t"]);
    }

    #[test]
    fn a_piece_that_saw_the_end_is_flagged() {
        let classes = Classes::get().unwrap();
        let lexer = Lexer::new("ab  cd  ", classes, QWEN);
        assert_eq!(lexer.piece(0), (2, false));
        assert_eq!(lexer.piece(2), (3, false));
        assert_eq!(lexer.piece(3), (6, false));
        assert_eq!(lexer.piece(6), (8, true));
        let lexer = Lexer::new("x'", classes, QWEN);
        assert_eq!(lexer.piece(1), (2, true));
    }
}
