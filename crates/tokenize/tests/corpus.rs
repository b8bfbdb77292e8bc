//! The fast path against HF `tokenizers` on every text shipped in
//! `datasets/sharegpt/` and `datasets/rag/`, with the shipped Qwen3
//! tokenizer: each message and passage alone with and without special
//! tokens, each ShareGPT conversation through the chat template, and each
//! RAG request as the workload builds it; `encode_prefix` on the long ones.

mod common;

use common::{chat, qwen3, qwen3_hf, qwen3_template, rag_entries, sharegpt_conversations};
use kvroute_tokenize::ChatMessage;

/// Compare both paths on `text`; returns the number of ids.
fn same_ids(text: &str, add_special_tokens: bool, what: &str) -> usize {
    let fast = qwen3().encode_with(text, add_special_tokens).unwrap();
    let hf = qwen3_hf().encode_with(text, add_special_tokens).unwrap();
    if fast != hf {
        let at = fast.iter().zip(&hf).take_while(|(a, b)| a == b).count();
        panic!(
            "{what} (add_special_tokens = {add_special_tokens}): ids differ at {at}: fast {:?} vs HF {:?}; text near there: {:?}",
            &fast[at..(at + 5).min(fast.len())],
            &hf[at..(at + 5).min(hf.len())],
            qwen3_hf().decode(&hf[at.saturating_sub(3)..(at + 5).min(hf.len())]),
        );
    }
    fast.len()
}

/// `encode_prefix` at a few caps equals the head of the full encoding.
fn prefixes_agree(text: &str, add_special_tokens: bool, full: &[u32]) {
    for cap in [1, 16, 100, 512] {
        let p = qwen3()
            .encode_prefix(text, add_special_tokens, cap)
            .unwrap();
        let n = cap.min(full.len());
        assert_eq!(p.ids, full[..n], "cap {cap}");
        assert_eq!(p.complete, full.len() <= cap, "cap {cap}");
        if p.complete {
            assert_eq!(p.estimated_total as usize, full.len());
        } else {
            assert!(p.estimated_total as usize > n);
        }
    }
}

#[test]
fn sharegpt_messages_and_chats_match_hf() {
    let conversations = sharegpt_conversations();
    assert!(
        conversations.len() >= 400,
        "{} conversations",
        conversations.len()
    );
    let (mut texts, mut chats, mut tokens) = (0, 0, 0);
    for (i, conv) in conversations.iter().enumerate() {
        for (k, (_, value)) in conv.iter().enumerate() {
            for add in [true, false] {
                tokens += same_ids(value, add, &format!("conversation {i} message {k}"));
            }
            texts += 1;
        }
        let messages = chat(conv);
        if messages.is_empty() {
            continue;
        }
        let rendered = qwen3_template().render(&messages).unwrap();
        tokens += same_ids(&rendered, false, &format!("conversation {i} rendered"));
        chats += 1;
        if i % 8 == 0 {
            let full = qwen3().encode_with(&rendered, false).unwrap();
            prefixes_agree(&rendered, false, &full);
        }
    }
    eprintln!(
        "ShareGPT: {texts} messages (x2) and {chats} rendered chats, {tokens} ids, identical"
    );
    assert!(texts > 2000 && chats >= 400);
}

#[test]
fn rag_passages_and_requests_match_hf() {
    let entries = rag_entries();
    assert!(entries.len() >= 60);
    let (mut texts, mut tokens) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let singles = std::iter::once(&e.question)
            .chain(e.passages.iter().flat_map(|(t, p)| [t, p]))
            .chain(&e.answers);
        for text in singles {
            for add in [true, false] {
                tokens += same_ids(text, add, &format!("entry {i}"));
            }
            texts += 1;
        }
        // The request as the RAG workload renders it.
        let passages: Vec<&str> = e.passages.iter().map(|(_, p)| p.as_str()).collect();
        let user = format!("{}\n\nQuestion: {}", passages.join("\n\n"), e.question);
        let messages = [
            ChatMessage::system("You are a helpful assistant. Answer the question using only the passages provided. Be concise."),
            ChatMessage::user(user.clone()),
        ];
        let rendered = qwen3_template().render(&messages).unwrap();
        tokens += same_ids(&rendered, false, &format!("entry {i} rendered"));
        tokens += same_ids(&user, true, &format!("entry {i} plain"));
        let full = qwen3().encode_with(&rendered, false).unwrap();
        prefixes_agree(&rendered, false, &full);
        texts += 2;
    }
    eprintln!("RAG: {texts} texts, {tokens} ids, identical");
}
