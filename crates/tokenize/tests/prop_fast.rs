//! The fast path gives HF's ids on random text: special tokens and their
//! near-misses inside text, whitespace runs (`\r\n`, Unicode spaces), CJK,
//! emoji with ZWJ sequences, digits, contractions in any case, combining
//! marks (composed by NFC), U+FFFD and control characters — with the
//! shipped Qwen3 tokenizer and with a synthetic Llama-3-style one.

mod common;

use common::{llama3_like_json, qwen3, qwen3_hf};
use kvroute_tokenize::Tokenizer;
use proptest::prelude::*;
use std::sync::OnceLock;

pub fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        // Added tokens and near-misses.
        prop::sample::select(vec![
            "<|im_start|>",
            "<|im_end|>",
            "<|endoftext|>",
            "<think>",
            "</think>",
            "<tool_call>",
            "<|im_",
            "end|>",
            "<|",
            "|>",
            "<|begin_of_text|>",
            "<|eot_id|>",
            "<|strip|>",
            " <|strip|>  ",
            "cat",
            " cat ",
            "cats",
            "_cat",
            "\u{e9}cat",
        ])
        .prop_map(str::to_owned),
        // Whitespace runs.
        prop::collection::vec(
            prop::sample::select(vec![
                " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u{a0}", "\u{3000}", "\u{2009}",
                "\u{85}", "\u{2028}", "\u{200b}", "\u{feff}", "\u{b}", "\u{c}",
            ]),
            1..6
        )
        .prop_map(|v| v.concat()),
        // Contractions and apostrophes.
        prop::sample::select(vec![
            "'s",
            "'S",
            "'t",
            "'re",
            "'RE",
            "'rE",
            "'ve",
            "'m",
            "'ll",
            "'LL",
            "'lL",
            "'d",
            "'\u{17f}",
            "'",
            "''",
            "'x",
            "don't",
            "I'M",
            "we'Ve",
            "\u{2019}s",
            "'\u{212a}",
        ])
        .prop_map(str::to_owned),
        // Digits and numbers of other scripts.
        "[0-9]{1,9}",
        prop::sample::select(vec![
            "\u{661}\u{662}\u{663}",
            "\u{2167}",
            "\u{bd}",
            "\u{ff11}\u{ff12}",
            "1,234.5"
        ])
        .prop_map(str::to_owned),
        // CJK, emoji, ZWJ sequences, flags, skin tones.
        prop::sample::select(vec![
            "\u{6771}\u{4eac}\u{30bf}\u{30ef}\u{30fc}",
            "\u{d55c}\u{ad6d}\u{c5b4}",
            "\u{4f60}\u{597d}\u{ff0c}\u{4e16}\u{754c}\u{3002}",
            "\u{1f680}",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
            "\u{1f44d}\u{1f3fd}",
            "\u{1f1eb}\u{1f1f7}",
            "\u{2764}\u{fe0f}",
            "\u{1f9d1}\u{200d}\u{1f4bb}",
        ])
        .prop_map(str::to_owned),
        // Combining marks and decomposed text (NFC composes them).
        prop::sample::select(vec![
            "e\u{301}",
            "a\u{323}\u{302}",
            "\u{1100}\u{1161}\u{11a8}",
            "\u{301}",
            "o\u{308}\u{304}",
            "\u{5d0}\u{5b8}",
            "\u{915}\u{94d}\u{937}",
            "A\u{30a}",
            "\u{212b}",
            "\u{f900}",
            "\u{2126}",
        ])
        .prop_map(str::to_owned),
        // Replacement character and controls.
        prop::sample::select(vec![
            "\u{fffd}",
            "\u{0}",
            "\u{7}",
            "\u{1b}[0m",
            "\u{7f}",
            "\u{9f}"
        ])
        .prop_map(str::to_owned),
        // ASCII prose and code.
        "[a-zA-Z0-9 ,.!?;:'\"()\\[\\]{}<>/\\\\_=+*&^%$#@~`|-]{0,40}",
        // Anything printable, and any scalar value at all.
        "\\PC{0,12}",
        prop::collection::vec(any::<char>(), 0..6).prop_map(|v| v.into_iter().collect()),
    ]
}

pub fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|v| v.concat())
}

fn training_text() -> String {
    let base = "The quick brown fox jumps over the lazy dog. It's 2024, and we've \
        counted 1234567 sheep; they're fine. Don't panic!\n\n    fn main() { println!(\"hi\"); }\r\n\
        \u{6771}\u{4eac} caf\u{e9} na\u{ef}ve \u{1f680} --- *** ";
    base.repeat(3)
}

fn llama3(ignore_merges: bool) -> &'static (Tokenizer, Tokenizer) {
    static T: [OnceLock<(Tokenizer, Tokenizer)>; 2] = [OnceLock::new(), OnceLock::new()];
    T[usize::from(ignore_merges)].get_or_init(|| {
        let json = llama3_like_json(&training_text(), 300, ignore_merges);
        let fast = Tokenizer::from_json_bytes(json.as_bytes(), "llama3-like").unwrap();
        assert!(fast.uses_fast_path(), "{:?}", fast.fast_path_note());
        let hf = fast.clone().without_fast_path();
        (fast, hf)
    })
}

#[test]
fn the_synthetic_llama3_tokenizer_adds_bos_and_groups_digits() {
    let (fast, hf) = llama3(true);
    let text = "It's 1234567 sheep.<|eot_id|>";
    let ids = fast.encode(text).unwrap();
    assert_eq!(ids, hf.encode(text).unwrap());
    assert_eq!(Some(ids[0]), fast.token_to_id("<|begin_of_text|>"));
    assert_eq!(Some(*ids.last().unwrap()), fast.token_to_id("<|eot_id|>"));
    assert_eq!(fast.encode_with(text, false).unwrap(), ids[1..]);
    assert_eq!(fast.decode(&ids[1..]), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn qwen3_fast_equals_hf(text in text()) {
        for add in [true, false] {
            prop_assert_eq!(
                qwen3().encode_with(&text, add).unwrap(),
                qwen3_hf().encode_with(&text, add).unwrap(),
                "add_special_tokens = {}", add
            );
        }
    }

    #[test]
    fn llama3_like_fast_equals_hf(text in text(), ignore_merges in any::<bool>()) {
        let (fast, hf) = llama3(ignore_merges);
        for add in [true, false] {
            prop_assert_eq!(
                fast.encode_with(&text, add).unwrap(),
                hf.encode_with(&text, add).unwrap(),
                "add_special_tokens = {}", add
            );
        }
    }

    /// `encode_prefix` with the BOS-adding post-processor: the head of the
    /// full encoding, the BOS counted.
    #[test]
    fn llama3_like_prefix_is_the_head(text in text(), cap in 0..40usize, ignore_merges in any::<bool>()) {
        let (fast, hf) = llama3(ignore_merges);
        let full = hf.encode_with(&text, true).unwrap();
        for tok in [fast, hf] {
            let p = tok.encode_prefix(&text, true, cap).unwrap();
            prop_assert_eq!(&p.ids[..], &full[..p.ids.len()]);
            prop_assert_eq!(p.complete, p.ids.len() == full.len());
            if tok.uses_fast_path() {
                prop_assert_eq!(p.ids.len(), cap.min(full.len()));
            }
        }
    }
}
