//! What the router reads from an OpenAI request body: [`parse_request`] →
//! [`ParsedRequest`].
//!
//! The router needs four things — that the body is a JSON object with a
//! `model`, the prompt (`prompt` for `/v1/completions`, `messages` for
//! `/v1/chat/completions`), `stream`, and `max_tokens` as a load hint — and
//! forwards the original bytes untouched. So the body is parsed once into an
//! envelope of borrowed [`RawValue`]s (unknown fields are skipped without
//! being built), and only the prompt is decoded further. Strings without
//! escapes are borrowed from the body.
//!
//! Accepted prompt shapes, as vLLM accepts them:
//!
//! | `prompt` | routed on |
//! |---|---|
//! | `"text"` | the text |
//! | `[1, 2, 3]` | the token ids as given |
//! | `["a", "b"]` (a batch) | the first text |
//! | `[[1, 2], [3]]` (a batch) | the first id list |
//!
//! `messages` is a non-empty array of `{"role": string, "content": …}` where
//! `content` is a string, `null`/absent (an assistant tool call), or an array
//! of parts whose `text` parts are joined with `\n` (vLLM's "string" content
//! format); other parts (images, audio) are not part of the routing hash.
//!
//! Every malformed input is a [`RequestError`], which maps to an HTTP 4xx
//! ([`RequestError::status`]); nothing here panics (see the property tests in
//! `tests/prop_request.rs`).

use http::StatusCode;
use kvroute_tokenize::ChatMessage;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
}

impl ApiKind {
    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            ApiKind::Completions => "/v1/completions",
            ApiKind::ChatCompletions => "/v1/chat/completions",
        }
    }

    /// The endpoint served at `path` (a query is ignored), if any.
    pub fn from_path(path: &str) -> Option<ApiKind> {
        match path.split('?').next().unwrap_or_default() {
            "/v1/completions" => Some(ApiKind::Completions),
            "/v1/chat/completions" => Some(ApiKind::ChatCompletions),
            _ => None,
        }
    }
}

/// A request body, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest<'a> {
    /// The endpoint.
    pub kind: ApiKind,
    /// `model`; `None` when the body has none, which vLLM accepts (it then
    /// serves its one model), so the router forwards it unchanged.
    pub model: Option<Cow<'a, str>>,
    /// `stream` (absent: false).
    pub stream: bool,
    /// The prompt.
    pub prompt: PromptInput<'a>,
    /// `max_tokens` (or `max_completion_tokens`) when it is a valid count.
    pub max_tokens: Option<u32>,
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput<'a> {
    /// Text, to be tokenized.
    Text(Cow<'a, str>),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
    /// Chat messages, to be rendered with the chat template, then tokenized.
    Chat(Vec<ChatMessage>),
}

impl PromptInput<'_> {
    /// Bytes of text to tokenize (0 for token ids).
    pub fn text_len(&self) -> usize {
        match self {
            PromptInput::Text(t) => t.len(),
            PromptInput::Tokens(_) => 0,
            PromptInput::Chat(m) => m.iter().map(|m| m.role.len() + m.content.len()).sum(),
        }
    }

    /// An owned copy (to move into another task).
    pub fn into_owned(self) -> PromptInput<'static> {
        match self {
            PromptInput::Text(t) => PromptInput::Text(Cow::Owned(t.into_owned())),
            PromptInput::Tokens(t) => PromptInput::Tokens(t),
            PromptInput::Chat(m) => PromptInput::Chat(m),
        }
    }
}

/// A request the router refuses, with the HTTP status it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A required field is absent (or `null`).
    #[error("missing required field '{0}'")]
    MissingField(&'static str),
    /// A field has the wrong type.
    #[error("'{field}' must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field that must have content is empty.
    #[error("'{0}' must not be empty")]
    Empty(&'static str),
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    Body(String),
    /// The prompt could not be tokenized or the chat template failed.
    #[error("could not tokenize the prompt: {0}")]
    Tokenize(String),
    /// The body did not arrive within the body-read timeout.
    #[error("the request body did not arrive within {after:?}")]
    BodyTimeout {
        /// The timeout.
        after: std::time::Duration,
    },
    /// Accepting the body would go beyond the bytes all requests may hold.
    #[error("the router is holding too many request bytes; retry shortly")]
    Overloaded,
}

impl RequestError {
    /// The HTTP status to answer with: 413 for an oversize body, 408 for a
    /// body that did not arrive in time, 503 when the router holds too many
    /// request bytes, else 400.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RequestError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// OpenAI-style machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) | RequestError::NotAnObject => "invalid_json",
            RequestError::MissingField(_) => "missing_required_parameter",
            RequestError::WrongType { .. } | RequestError::Empty(_) => "invalid_type",
            RequestError::TooLarge { .. } => "request_too_large",
            RequestError::Body(_) => "invalid_body",
            RequestError::Tokenize(_) => "invalid_prompt",
            RequestError::BodyTimeout { .. } => "request_timeout",
            RequestError::Overloaded => "overloaded",
        }
    }

    /// The offending parameter, if one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            RequestError::MissingField(f) | RequestError::Empty(f) => Some(f),
            RequestError::WrongType { field, .. } => Some(field),
            _ => None,
        }
    }

    /// A short label for the router's `errors_total{kind}` metric.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            RequestError::TooLarge { .. } => "body_too_large",
            RequestError::Body(_) => "body_read",
            RequestError::Tokenize(_) => "tokenize",
            RequestError::BodyTimeout { .. } => "body_timeout",
            RequestError::Overloaded => "body_budget",
            _ => "bad_request",
        }
    }
}

/// The fields the router looks at; everything else is skipped unbuilt.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartIn<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Parse the body of a `kind` request.
pub fn parse_request(kind: ApiKind, body: &[u8]) -> Result<ParsedRequest<'_>, RequestError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            // Valid JSON that is not an object, or not JSON at all.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => RequestError::NotAnObject,
                    Err(e) => RequestError::InvalidJson(e.to_string()),
                },
            );
        }
        None => return Err(RequestError::InvalidJson("empty body".into())),
    }
    let env: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let model = env
        .model
        .map(|m| {
            json_str(m).ok_or(RequestError::WrongType {
                field: "model",
                expected: "a string",
            })
        })
        .transpose()?;
    let stream = match env.stream.map(RawValue::get) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(RequestError::WrongType {
                field: "stream",
                expected: "a boolean",
            })
        }
    };
    let max_tokens = env
        .max_tokens
        .or(env.max_completion_tokens)
        .and_then(|r| serde_json::from_str::<u32>(r.get()).ok());
    let prompt = match kind {
        ApiKind::Completions => {
            parse_prompt(env.prompt.ok_or(RequestError::MissingField("prompt"))?)?
        }
        ApiKind::ChatCompletions => {
            parse_messages(env.messages.ok_or(RequestError::MissingField("messages"))?)?
        }
    };
    Ok(ParsedRequest {
        kind,
        model,
        stream,
        prompt,
        max_tokens,
    })
}

/// A JSON string's value, borrowed when it has no escapes; `None` if `raw`
/// is not a string.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    if let Ok(b) = serde_json::from_str::<&str>(s) {
        return Some(Cow::Borrowed(b));
    }
    serde_json::from_str::<String>(s).ok().map(Cow::Owned)
}

const PROMPT_SHAPE: &str =
    "a string, an array of token ids, an array of strings or an array of token-id arrays";

fn parse_prompt(raw: &RawValue) -> Result<PromptInput<'_>, RequestError> {
    let wrong = RequestError::WrongType {
        field: "prompt",
        expected: PROMPT_SHAPE,
    };
    let s = raw.get();
    if s.starts_with('"') {
        return json_str(raw).map(PromptInput::Text).ok_or(wrong);
    }
    if !s.starts_with('[') {
        return Err(wrong);
    }
    let items: Vec<&RawValue> = serde_json::from_str(s).map_err(|_| wrong.clone())?;
    let Some(first) = items.first() else {
        return Err(RequestError::Empty("prompt"));
    };
    let first = first.get();
    if first.starts_with('"') {
        // A batch of texts: all must be strings; route on the first.
        if !items.iter().all(|i| i.get().starts_with('"')) {
            return Err(wrong);
        }
        json_str(items[0]).map(PromptInput::Text).ok_or(wrong)
    } else if first.starts_with('[') {
        // A batch of token-id lists.
        let mut lists = items
            .iter()
            .map(|i| serde_json::from_str::<Vec<u32>>(i.get()).map_err(|_| wrong.clone()));
        let head = lists.next().unwrap_or(Err(RequestError::Empty("prompt")))?;
        for l in lists {
            l?;
        }
        if head.is_empty() {
            return Err(RequestError::Empty("prompt"));
        }
        Ok(PromptInput::Tokens(head))
    } else {
        serde_json::from_str::<Vec<u32>>(s)
            .map(PromptInput::Tokens)
            .map_err(|_| wrong)
    }
}

fn parse_messages(raw: &RawValue) -> Result<PromptInput<'static>, RequestError> {
    let wrong = RequestError::WrongType {
        field: "messages",
        expected: "an array of {\"role\": string, \"content\": string or parts} objects",
    };
    if !raw.get().starts_with('[') {
        return Err(wrong);
    }
    let items: Vec<MessageIn<'_>> = serde_json::from_str(raw.get()).map_err(|_| wrong.clone())?;
    if items.is_empty() {
        return Err(RequestError::Empty("messages"));
    }
    let mut out = Vec::with_capacity(items.len());
    for m in items {
        let role = m
            .role
            .ok_or(RequestError::MissingField("messages[].role"))
            .and_then(|r| {
                json_str(r).ok_or(RequestError::WrongType {
                    field: "messages[].role",
                    expected: "a string",
                })
            })?;
        let content = match m.content {
            None => String::new(),
            Some(c) => content_text(c)?,
        };
        out.push(ChatMessage {
            role: role.into_owned(),
            content,
        });
    }
    Ok(PromptInput::Chat(out))
}

/// A message's `content` as text: a string, or the `text` parts of an array
/// joined with `\n`.
fn content_text(raw: &RawValue) -> Result<String, RequestError> {
    let wrong = RequestError::WrongType {
        field: "messages[].content",
        expected: "a string or an array of content parts",
    };
    let s = raw.get();
    if s.starts_with('"') {
        return json_str(raw).map(Cow::into_owned).ok_or(wrong);
    }
    if !s.starts_with('[') {
        return Err(wrong);
    }
    let parts: Vec<PartIn<'_>> = serde_json::from_str(s).map_err(|_| wrong.clone())?;
    let mut text = String::new();
    let mut first = true;
    for p in parts {
        let kind = p.kind.and_then(json_str);
        if kind.as_deref().is_some_and(|k| k != "text") {
            continue;
        }
        let Some(t) = p.text else {
            if kind.is_some() {
                return Err(RequestError::MissingField("messages[].content[].text"));
            }
            return Err(wrong);
        };
        let t = json_str(t).ok_or(RequestError::WrongType {
            field: "messages[].content[].text",
            expected: "a string",
        })?;
        if !first {
            text.push('\n');
        }
        first = false;
        text.push_str(&t);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completions(body: &str) -> Result<ParsedRequest<'_>, RequestError> {
        parse_request(ApiKind::Completions, body.as_bytes())
    }

    fn chat(body: &str) -> Result<ParsedRequest<'_>, RequestError> {
        parse_request(ApiKind::ChatCompletions, body.as_bytes())
    }

    #[test]
    fn text_prompt_is_borrowed() {
        let p = completions(
            r#"{"model":"m","prompt":"hello","stream":true,"max_tokens":7,"x":[1,{}]}"#,
        )
        .unwrap();
        assert!(matches!(
            p.prompt,
            PromptInput::Text(Cow::Borrowed("hello"))
        ));
        assert!(p.stream);
        assert_eq!(p.max_tokens, Some(7));
        assert_eq!(p.model.as_deref(), Some("m"));
        let p = completions(r#"{"model":"m","prompt":"a\nb"}"#).unwrap();
        assert_eq!(p.prompt, PromptInput::Text(Cow::Owned("a\nb".into())));
    }

    #[test]
    fn prompt_shapes() {
        let p = completions(r#"{"model":"m","prompt":[1,2,3]}"#).unwrap();
        assert_eq!(p.prompt, PromptInput::Tokens(vec![1, 2, 3]));
        let p = completions(r#"{"model":"m","prompt":["x","y"]}"#).unwrap();
        assert_eq!(p.prompt, PromptInput::Text("x".into()));
        let p = completions(r#"{"model":"m","prompt":[[4,5],[6]]}"#).unwrap();
        assert_eq!(p.prompt, PromptInput::Tokens(vec![4, 5]));
        for bad in [
            r#"{"model":"m","prompt":5}"#,
            r#"{"model":"m","prompt":[1,"x"]}"#,
            r#"{"model":"m","prompt":[-1]}"#,
            r#"{"model":"m","prompt":["x",1]}"#,
            r#"{"model":"m","prompt":[[1],["x"]]}"#,
            r#"{"model":"m","prompt":{}}"#,
        ] {
            assert!(
                matches!(
                    completions(bad),
                    Err(RequestError::WrongType {
                        field: "prompt",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            completions(r#"{"model":"m","prompt":[]}"#),
            Err(RequestError::Empty("prompt"))
        );
    }

    #[test]
    fn required_fields() {
        // vLLM serves its one model when `model` is absent or null.
        assert_eq!(completions(r#"{"prompt":"x"}"#).unwrap().model, None);
        assert_eq!(
            completions(r#"{"model":null,"prompt":"x"}"#).unwrap().model,
            None
        );
        assert_eq!(
            completions(r#"{"model":"m"}"#),
            Err(RequestError::MissingField("prompt"))
        );
        assert_eq!(
            chat(r#"{"model":"m","prompt":"x"}"#),
            Err(RequestError::MissingField("messages"))
        );
        assert!(matches!(
            completions(r#"{"model":3,"prompt":"x"}"#),
            Err(RequestError::WrongType { field: "model", .. })
        ));
        assert!(matches!(
            completions(r#"{"model":"m","prompt":"x","stream":"yes"}"#),
            Err(RequestError::WrongType {
                field: "stream",
                ..
            })
        ));
    }

    #[test]
    fn not_json_or_not_object() {
        assert!(matches!(
            completions("{"),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(
            completions("nope"),
            Err(RequestError::InvalidJson(_))
        ));
        assert!(matches!(completions(""), Err(RequestError::InvalidJson(_))));
        assert_eq!(completions("[1]"), Err(RequestError::NotAnObject));
        assert_eq!(completions(" 3 "), Err(RequestError::NotAnObject));
        assert!(matches!(
            completions(r#"{"model":"m","model":"n","prompt":"x"}"#),
            Err(RequestError::InvalidJson(_))
        ));
    }

    #[test]
    fn chat_messages() {
        let p = chat(
            r#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[]}
            ]}"#,
        )
        .unwrap();
        let PromptInput::Chat(m) = p.prompt else {
            panic!()
        };
        assert_eq!(
            m,
            vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("a\nb"),
                ChatMessage::assistant("")
            ]
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[]}"#),
            Err(RequestError::Empty("messages"))
        );
        assert!(chat(r#"{"model":"m","messages":"hi"}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[{"content":"x"}]}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[{"role":1,"content":"x"}]}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[1]}"#).is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            RequestError::TooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(RequestError::NotAnObject.status(), StatusCode::BAD_REQUEST);
    }
}
