//! Invariants of conversation replay: prompts grow by extension, and the JSON
//! array and JSON Lines forms of a dataset replay identically.

use kvroute_workload::{
    embedded_qwen3_template, embedded_qwen3_tokenizer, render_flat, ChatMessage, ChatTemplate,
    Prompter, Session, ShareGptOptions, ShareGptSessions, Tokenizer,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn qwen3() -> &'static (Tokenizer, ChatTemplate) {
    static T: OnceLock<(Tokenizer, ChatTemplate)> = OnceLock::new();
    T.get_or_init(|| {
        (
            embedded_qwen3_tokenizer().unwrap(),
            embedded_qwen3_template().unwrap(),
        )
    })
}

fn temp_file(ext: &str, bytes: &[u8]) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("kvroute-prop-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.{ext}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Message text: letters, digits, punctuation (JSON-hostile ones included),
/// newlines, accents, CJK and emoji; never starting with whitespace, as in the
/// cleaned ShareGPT data.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éü中文😀,.!?'\"\\\\{}\\[\\]<>|-][a-zA-Z0-9éü中文😀 ,.!?'\"\\\\{}\\[\\]\n\t<>|-]{0,30}"
}

fn conversation() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 1..5)
}

fn as_json(id: usize, conv: &[(String, String)]) -> serde_json::Value {
    let msgs: Vec<_> = conv
        .iter()
        .flat_map(|(u, a)| {
            [
                serde_json::json!({"from": "human", "value": u}),
                serde_json::json!({"from": "gpt", "value": a}),
            ]
        })
        .collect();
    serde_json::json!({"id": format!("c{id}"), "conversations": msgs})
}

fn replay(path: &std::path::Path, template: bool) -> Vec<Session> {
    let (tok, tpl) = qwen3();
    let prompter = Prompter::new(tok.clone(), template.then(|| tpl.clone()));
    let opts = ShareGptOptions {
        max_prompt_tokens: None,
        ..ShareGptOptions::default()
    };
    ShareGptSessions::open(path, prompter, opts)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn flat_rendering_extends_turn_by_turn(conv in conversation()) {
        let mut msgs = Vec::new();
        let mut prev = String::new();
        for (u, a) in &conv {
            msgs.push(ChatMessage::user(u.clone()));
            let text = render_flat(&msgs);
            prop_assert!(text.starts_with(&prev));
            prop_assert!(text.ends_with("\n\nAssistant:"));
            prev = text;
            msgs.push(ChatMessage::assistant(a.clone()));
        }
    }

    #[test]
    fn array_and_lines_forms_replay_identically_and_prompts_extend(
        convs in proptest::collection::vec(conversation(), 1..4),
        template: bool,
    ) {
        let values: Vec<_> = convs.iter().enumerate().map(|(i, c)| as_json(i, c)).collect();
        let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
        let array = serde_json::to_string_pretty(&values).unwrap();
        let from_lines = replay(&temp_file("jsonl", lines.as_bytes()), template);
        let from_array = replay(&temp_file("json", array.as_bytes()), template);
        prop_assert_eq!(&from_lines, &from_array);
        prop_assert_eq!(from_lines.len(), convs.len());
        for (s, conv) in from_lines.iter().zip(&convs) {
            prop_assert_eq!(s.turns.len(), conv.len());
            for (k, w) in s.turns.windows(2).enumerate() {
                let (a, b) = (&w[0], &w[1]);
                prop_assert!(b.prompt_text.as_deref().unwrap().starts_with(a.prompt_text.as_deref().unwrap()));
                prop_assert!(
                    b.prompt_tokens.starts_with(&a.prompt_tokens),
                    "turn {} → {}: answer {:?}", k, k + 1, conv[k].1
                );
                prop_assert_eq!(&b.messages[..a.messages.len()], &a.messages[..]);
            }
        }
    }
}
