//! The OpenAI-compatible request and response shapes vLLM serves, reduced to
//! what the emulated engine needs: parse a completions or chat request into a
//! prompt and generation settings; render chunks, final responses and errors.

use kvroute_workload::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

/// The prompt as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text to tokenize.
    Text(String),
    /// Token ids, used as is.
    Tokens(Vec<u32>),
    /// Chat messages, rendered with the chat template.
    Messages(Vec<ChatMessage>),
}

/// A parsed generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// Endpoint.
    pub api: Api,
    /// Requested model, if named.
    pub model: Option<String>,
    /// Prompt.
    pub prompt: Prompt,
    /// Output tokens (`max_tokens`, or `max_completion_tokens` for chat).
    pub max_tokens: Option<u32>,
    /// Stream with SSE.
    pub stream: bool,
    /// Append a usage chunk to the stream.
    pub include_usage: bool,
}

/// An error answered to the client, vLLM style.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Message.
    pub message: String,
    /// OpenAI error type.
    pub kind: &'static str,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "BadRequestError",
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            message: message.into(),
            kind: "NotFoundError",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.status}})
            .to_string()
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Parse a request body for `api`.
pub fn parse(api: Api, body: &[u8]) -> Result<GenRequest, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("request body must be a JSON object"))?;
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("`model` must be a string")),
    };
    let prompt = match api {
        Api::Completions => match obj.get("prompt") {
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => {
                Prompt::Tokens(
                    a.iter()
                        .map(|t| {
                            t.as_u64()
                                .and_then(|x| u32::try_from(x).ok())
                                .ok_or_else(|| ApiError::bad_request("token id out of range"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::bad_request(
                    "`prompt` must be a string, a list of token ids, or a list with one string",
                ))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`prompt` must be a string or a list of token ids",
                ))
            }
            None => return Err(ApiError::bad_request("`prompt` is required")),
        },
        Api::Chat => {
            let msgs = obj
                .get("messages")
                .ok_or_else(|| ApiError::bad_request("`messages` is required"))?;
            let msgs: Vec<ChatMessage> = parse_messages(msgs)?;
            if msgs.is_empty() {
                return Err(ApiError::bad_request("`messages` must not be empty"));
            }
            Prompt::Messages(msgs)
        }
    };
    let max_key = match api {
        Api::Chat if obj.contains_key("max_completion_tokens") => "max_completion_tokens",
        _ => "max_tokens",
    };
    let max_tokens = match obj.get(max_key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .filter(|&x| x > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`{max_key}` must be a positive integer"))
                })?,
        ),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`stream` must be a boolean")),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| serde_json::from_value::<StreamOptions>(o.clone()).ok())
        .is_some_and(|o| o.include_usage);
    Ok(GenRequest {
        api,
        model,
        prompt,
        max_tokens,
        stream,
        include_usage,
    })
}

/// Messages whose `content` is a string or a list of `{"type": "text", "text": ...}` parts.
fn parse_messages(v: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request("`messages` must be a list"))?;
    arr.iter()
        .map(|m| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("each message needs a string `role`"))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                None | Some(Value::Null) => String::new(),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "message `content` must be a string or a list of parts",
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}

/// Identity of one response, shared by all its chunks.
#[derive(Debug, Clone)]
pub struct ResponseId {
    /// `cmpl-…` or `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Endpoint.
    pub api: Api,
}

/// Token usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: u32,
    /// Generated tokens.
    pub completion: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached: u32,
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached},
    })
}

impl ResponseId {
    /// One SSE `data:` line carrying `text` (first chunk of a chat also carries the role).
    pub fn chunk(&self, text: &str, first: bool, finish: Option<&str>) -> String {
        let v = match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null}],
            }),
            Api::Chat => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            }
        };
        format!("data: {v}\n\n")
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    pub fn usage_chunk(&self, u: Usage) -> String {
        let object = match self.api {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion.chunk",
        };
        let v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
                       "choices": [], "usage": usage_json(u)});
        format!("data: {v}\n\n")
    }

    /// A whole (non-streamed) response.
    pub fn full(&self, text: &str, u: Usage) -> String {
        match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length", "stop_reason": null}],
                "usage": usage_json(u),
            }),
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                             "finish_reason": "length"}],
                "usage": usage_json(u),
            }),
        }
        .to_string()
    }
}

/// The stream terminator.
pub const DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_prompts() {
        let r = parse(Api::Completions, br#"{"model":"m","prompt":"hi","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(
            (r.prompt, r.max_tokens, r.stream, r.include_usage),
            (Prompt::Text("hi".into()), Some(3), true, true)
        );
        let r = parse(Api::Completions, br#"{"prompt":[1,2,3]}"#).unwrap();
        assert_eq!((r.prompt, r.model), (Prompt::Tokens(vec![1, 2, 3]), None));
    }

    #[test]
    fn chat_messages_with_parts() {
        let r = parse(Api::Chat, br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_completion_tokens":2}"#).unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Messages(vec![ChatMessage {
                role: "user".into(),
                content: "ab".into()
            }])
        );
        assert_eq!(r.max_tokens, Some(2));
    }

    #[test]
    fn bad_requests_name_the_problem() {
        for (api, body, want) in [
            (Api::Completions, &b"{"[..], "not valid JSON"),
            (Api::Completions, b"[]", "JSON object"),
            (Api::Completions, b"{}", "`prompt` is required"),
            (Api::Completions, br#"{"prompt":5}"#, "`prompt` must be"),
            (
                Api::Completions,
                br#"{"prompt":"x","max_tokens":0}"#,
                "positive integer",
            ),
            (
                Api::Completions,
                br#"{"prompt":"x","stream":"yes"}"#,
                "boolean",
            ),
            (Api::Chat, br#"{"messages":[]}"#, "must not be empty"),
            (Api::Chat, br#"{"messages":[{"content":"x"}]}"#, "role"),
            (Api::Chat, br#"{"prompt":"x"}"#, "`messages` is required"),
        ] {
            let e = parse(api, body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{} !~ {want}", e.message);
        }
    }

    #[test]
    fn chunks_are_sse_json() {
        let id = ResponseId {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            api: Api::Chat,
        };
        let c = id.chunk("x", true, None);
        assert!(c.starts_with("data: {") && c.ends_with("}\n\n"));
        let v: Value = serde_json::from_str(c.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        let u: Value = serde_json::from_str(&id.full(
            "ab",
            Usage {
                prompt: 3,
                completion: 2,
                cached: 0,
            },
        ))
        .unwrap();
        assert_eq!(u["usage"]["total_tokens"], 5);
    }
}
