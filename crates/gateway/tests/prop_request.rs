//! Property tests of request parsing: arbitrary bytes and arbitrary JSON
//! never panic and always end in either a valid parse or a 4xx.

use kvroute_core::{BlockHasher, HashAlgo};
use kvroute_gateway::{parse_request, ApiKind, PromptEncoder, PromptInput};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn kind(chat: bool) -> ApiKind {
    if chat {
        ApiKind::ChatCompletions
    } else {
        ApiKind::Completions
    }
}

fn check(kind: ApiKind, body: &[u8]) {
    match parse_request(kind, body) {
        Ok(p) => {
            assert_eq!(p.kind, kind);
            match (&p.prompt, kind) {
                (PromptInput::Chat(m), ApiKind::ChatCompletions) => assert!(!m.is_empty()),
                (PromptInput::Text(_), ApiKind::Completions) => {}
                (PromptInput::Tokens(t), ApiKind::Completions) => assert!(!t.is_empty()),
                other => panic!("prompt shape {other:?}"),
            }
            // Encoding a parsed prompt never fails without a tokenizer.
            let enc = PromptEncoder::new(
                None,
                None,
                BlockHasher::new(HashAlgo::Sha256Cbor, 4).unwrap(),
            );
            let (n, hashes) = enc.encode(&p.prompt).unwrap();
            assert_eq!(hashes.len(), n as usize / 4);
        }
        Err(e) => {
            assert!(e.status().is_client_error(), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

const KEYS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "stream",
    "max_tokens",
    "role",
    "content",
    "type",
    "text",
    "x",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (0u32..200).prop_map(|i| json!(i)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["user", "text", "image_url", "m"]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// Objects that look like requests, with every field possibly wrong.
fn arb_request() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![Just(json!("m")), arb_json()]),
        prop::option::of(prop_oneof![
            ".{0,40}".prop_map(Value::String),
            prop::collection::vec(0u32..100_000, 0..40).prop_map(|v| json!(v)),
            prop::collection::vec(".{0,8}", 0..3).prop_map(|v| json!(v)),
            arb_json(),
        ]),
        prop::option::of(prop_oneof![
            prop::collection::vec(
                (
                    prop::sample::select(vec!["user", "assistant", "system"]),
                    ".{0,20}"
                )
                    .prop_map(|(r, c)| json!({"role": r, "content": c})),
                0..4
            )
            .prop_map(Value::Array),
            arb_json(),
        ]),
        prop::option::of(prop_oneof![any::<bool>().prop_map(Value::Bool), arb_json()]),
    )
        .prop_map(|(model, prompt, messages, stream)| {
            let mut m = Map::new();
            for (k, v) in [
                ("model", model),
                ("prompt", prompt),
                ("messages", messages),
                ("stream", stream),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), chat in any::<bool>()) {
        check(kind(chat), &bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json(), chat in any::<bool>()) {
        check(kind(chat), v.to_string().as_bytes());
    }

    #[test]
    fn request_shaped_json_parses_or_is_a_4xx(v in arb_request(), chat in any::<bool>()) {
        check(kind(chat), v.to_string().as_bytes());
    }

    #[test]
    fn truncated_requests_are_4xx(v in arb_request(), cut in 0usize..200) {
        let s = v.to_string();
        let cut = cut.min(s.len());
        check(ApiKind::Completions, &s.as_bytes()[..cut]);
    }

    #[test]
    fn valid_requests_round_trip(prompt in ".{0,60}", tokens in prop::collection::vec(any::<u32>(), 1..50), stream in any::<bool>()) {
        let body = json!({"model": "m", "prompt": prompt, "stream": stream}).to_string();
        let p = parse_request(ApiKind::Completions, body.as_bytes()).unwrap();
        prop_assert_eq!(p.prompt, PromptInput::Text(prompt.into()));
        prop_assert_eq!(p.stream, stream);
        let body = json!({"model": "m", "prompt": tokens}).to_string();
        let p = parse_request(ApiKind::Completions, body.as_bytes()).unwrap();
        prop_assert_eq!(p.prompt, PromptInput::Tokens(tokens));
    }
}
