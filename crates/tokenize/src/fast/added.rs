//! Cutting text at added tokens the way HF's `AddedVocabulary` does before
//! anything else: a leftmost-longest search for the tokens' contents in the
//! raw text, each match becoming its id, then the `single_word`, `lstrip`
//! and `rstrip` flags applied to the match exactly as HF applies them.
//!
//! Added tokens marked `normalized` are searched for in normalized text by
//! HF; the fast path declines tokenizers that have any.

use super::classes::{Classes, SPACE, WORD};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// One added token's matching flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddedFlags {
    pub(crate) id: u32,
    pub(crate) single_word: bool,
    pub(crate) lstrip: bool,
    pub(crate) rstrip: bool,
}

/// The raw-text added tokens of a tokenizer.
pub(crate) struct AddedTokens {
    search: Option<AhoCorasick>,
    tokens: Vec<AddedFlags>,
    classes: &'static Classes,
}

/// A part of the text: a run to tokenize, or an added token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// Text between added tokens, with its byte offset in the whole text.
    Text(&'a str, usize),
    /// An added token's id, with the byte offset where its match ends.
    Token(u32, usize),
}

impl AddedTokens {
    /// A splitter for `(content, flags)` pairs; `None` if the search
    /// automaton cannot be built.
    pub(crate) fn new(
        tokens: Vec<(String, AddedFlags)>,
        classes: &'static Classes,
    ) -> Option<AddedTokens> {
        let tokens: Vec<_> = tokens.into_iter().filter(|(c, _)| !c.is_empty()).collect();
        let search = if tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(tokens.iter().map(|(c, _)| c.as_str()))
                    .ok()?,
            )
        };
        Some(AddedTokens {
            search,
            tokens: tokens.into_iter().map(|(_, f)| f).collect(),
            classes,
        })
    }

    /// The segments of `text`, lazily.
    pub(crate) fn split<'a>(&'a self, text: &'a str) -> impl Iterator<Item = Segment<'a>> + 'a {
        let mut matches = self.search.as_ref().map(|s| s.find_iter(text));
        let mut start_offset = 0;
        let mut pending: Option<Segment<'a>> = None;
        std::iter::from_fn(move || {
            if let Some(p) = pending.take() {
                return Some(p);
            }
            while let Some(m) = matches.as_mut().and_then(Iterator::next) {
                let Some(flags) = self.tokens.get(m.pattern().as_usize()).copied() else {
                    continue;
                };
                let (mut start, mut stop) = (m.start(), m.end());
                if flags.single_word {
                    let start_space = start == 0 || !self.ends_with_word(&text[..start]);
                    let stop_space = stop == text.len() || !self.starts_with_word(&text[stop..]);
                    if !start_space || !stop_space {
                        continue;
                    }
                }
                if flags.lstrip {
                    start = self.trailing_space_start(&text[..start]).max(start_offset);
                }
                if flags.rstrip {
                    stop += self.leading_space_len(&text[stop..]);
                }
                let before = (start_offset, start);
                start_offset = stop;
                let token = Segment::Token(flags.id, stop);
                if before.0 < before.1 {
                    pending = Some(token);
                    return Some(Segment::Text(&text[before.0..before.1], before.0));
                }
                return Some(token);
            }
            if start_offset < text.len() {
                let rest = Segment::Text(&text[start_offset..], start_offset);
                start_offset = text.len();
                return Some(rest);
            }
            None
        })
    }

    fn ends_with_word(&self, s: &str) -> bool {
        s.chars()
            .next_back()
            .is_some_and(|c| self.classes.of(c) & WORD != 0)
    }

    fn starts_with_word(&self, s: &str) -> bool {
        s.chars()
            .next()
            .is_some_and(|c| self.classes.of(c) & WORD != 0)
    }

    /// Where the whitespace at the end of `s` starts.
    fn trailing_space_start(&self, s: &str) -> usize {
        let mut start = s.len();
        for (i, c) in s.char_indices().rev() {
            if self.classes.of(c) & SPACE == 0 {
                break;
            }
            start = i;
        }
        start
    }

    /// The length of the whitespace at the start of `s`.
    fn leading_space_len(&self, s: &str) -> usize {
        s.char_indices()
            .find(|&(_, c)| self.classes.of(c) & SPACE == 0)
            .map_or(s.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(id: u32) -> AddedFlags {
        AddedFlags {
            id,
            single_word: false,
            lstrip: false,
            rstrip: false,
        }
    }

    fn split(tokens: Vec<(&str, AddedFlags)>, text: &str) -> Vec<String> {
        let t = AddedTokens::new(
            tokens.into_iter().map(|(c, f)| (c.to_owned(), f)).collect(),
            Classes::get().unwrap(),
        )
        .unwrap();
        t.split(text)
            .map(|s| match s {
                Segment::Text(t, at) => {
                    assert_eq!(&text[at..at + t.len()], t);
                    format!("{t:?}")
                }
                Segment::Token(id, _) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn leftmost_longest_matches() {
        let tokens = vec![("<a>", flags(1)), ("<a><b>", flags(2)), ("<b>", flags(3))];
        assert_eq!(
            split(tokens, "x<a><b>y<b><a>"),
            ["\"x\"", "#2", "\"y\"", "#3", "#1"]
        );
        assert_eq!(split(vec![], "plain"), ["\"plain\""]);
    }

    #[test]
    fn strip_and_single_word_flags() {
        let mut f = flags(7);
        f.lstrip = true;
        f.rstrip = true;
        assert_eq!(
            split(vec![("<m>", f)], "a  <m>  b"),
            ["\"a\"", "#7", "\"b\""]
        );
        let mut w = flags(8);
        w.single_word = true;
        assert_eq!(
            split(vec![("ab", w)], "ab xaby ab"),
            ["#8", "\" xaby \"", "#8"]
        );
    }
}
