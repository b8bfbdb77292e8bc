//! `encode_prefix` returns exactly the head of the full encoding, on the
//! fast path and through HF, and is complete exactly when the cap covers
//! the whole encoding.

mod common;

use common::{qwen3, qwen3_hf, sharegpt_conversations};
use kvroute_tokenize::Tokenizer;
use proptest::prelude::*;
use std::sync::OnceLock;

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            " ",
            "   ",
            "\n",
            "\r\n\r\n",
            "\u{3000}",
            "'s",
            "'LL",
            "12345",
            "e\u{301}",
            "\u{1100}\u{1161}",
            "\u{6771}\u{4eac}",
            "\u{1f468}\u{200d}\u{1f469}",
            "\u{fffd}",
            "\u{0}",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9 ,.!?'()-]{0,30}",
        "\\PC{0,8}",
    ]
}

/// Real text with random fragments spliced in, long enough that small caps
/// cut it.
fn text() -> impl Strategy<Value = String> {
    (
        0..400usize,
        prop::collection::vec(fragment(), 0..40),
        0..2000usize,
    )
        .prop_map(|(which, parts, len)| {
            let base = sample_texts()[which % sample_texts().len()].as_str();
            let mut cut = len.min(base.len());
            while !base.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                out.push_str(p);
                if i == parts.len() / 2 {
                    out.push_str(&base[..cut]);
                }
            }
            if parts.is_empty() {
                out.push_str(&base[..cut]);
            }
            out
        })
}

fn sample_texts() -> &'static Vec<String> {
    static T: OnceLock<Vec<String>> = OnceLock::new();
    T.get_or_init(|| {
        sharegpt_conversations()
            .into_iter()
            .take(400)
            .filter_map(|c| c.into_iter().map(|(_, v)| v).max_by_key(String::len))
            .collect()
    })
}

fn check(tok: &Tokenizer, text: &str, add: bool, cap: usize) -> Result<(), TestCaseError> {
    let full = tok.encode_with(text, add).unwrap();
    let p = tok.encode_prefix(text, add, cap).unwrap();
    prop_assert!(p.ids.len() <= cap);
    prop_assert_eq!(&p.ids[..], &full[..p.ids.len()]);
    prop_assert_eq!(p.complete, full.len() <= cap && p.ids.len() == full.len());
    if p.complete {
        prop_assert_eq!(p.estimated_total as usize, full.len());
    } else {
        prop_assert!(p.estimated_total as usize > p.ids.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The fast path fills the cap exactly when the encoding is longer.
    #[test]
    fn fast_prefix_is_the_head(text in text(), add in any::<bool>(), cap in 0..600usize) {
        check(qwen3(), &text, add, cap)?;
        let full = qwen3().encode_with(&text, add).unwrap();
        let p = qwen3().encode_prefix(&text, add, cap).unwrap();
        prop_assert_eq!(p.ids.len(), cap.min(full.len()));
    }

    /// Through HF, the kept ids are the head too.
    #[test]
    fn hf_prefix_is_the_head(text in text(), add in any::<bool>(), cap in 0..600usize) {
        check(qwen3_hf(), &text, add, cap)?;
    }

    /// A larger cap extends a smaller one's ids.
    #[test]
    fn prefixes_nest(text in text(), a in 0..300usize, b in 0..300usize) {
        let (lo, hi) = (a.min(b), a.max(b));
        let small = qwen3().encode_prefix(&text, true, lo).unwrap();
        let large = qwen3().encode_prefix(&text, true, hi).unwrap();
        prop_assert_eq!(&small.ids[..], &large.ids[..small.ids.len()]);
    }
}

/// The estimate of a truncated encoding is near the real length on real text.
#[test]
fn estimates_are_close_on_long_text() {
    let text: String = sample_texts()
        .iter()
        .take(40)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n\n");
    let full = qwen3().encode(&text).unwrap().len() as f64;
    for tok in [qwen3(), qwen3_hf()] {
        let p = tok.encode_prefix(&text, true, 256).unwrap();
        assert!(!p.complete);
        let ratio = f64::from(p.estimated_total) / full;
        assert!(
            (0.5..2.0).contains(&ratio),
            "estimate {} vs {full} (fast path: {}, {} ids)",
            p.estimated_total,
            tok.uses_fast_path(),
            p.ids.len()
        );
    }
}
