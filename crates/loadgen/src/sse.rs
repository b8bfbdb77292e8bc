//! Server-sent events as the OpenAI streaming API sends them: [`SseParser`]
//! splits a byte stream into [`SseEvent`]s, and [`Chunk::parse`] reads one
//! event's `data` as an OpenAI stream chunk.
//!
//! The parser is incremental: bytes arrive in whatever frames the transport
//! delivers, an event may be split across frames (even inside a multi-byte
//! UTF-8 character) and one frame may hold several events. Lines end with
//! `\n` or `\r\n`; an empty line ends an event; `data:` lines are joined with
//! `\n` (one optional space after the colon is dropped); `event:` names the
//! event; comments (`:` lines), `id:` and `retry:` are ignored. Only complete
//! lines are decoded, so a character split across frames is reassembled
//! before decoding.
//!
//! Chunks ([`Chunk`]): `[DONE]` ends the stream; `{"error": …}` (or an
//! `event: error`) is a server error; anything else is a completion chunk
//! whose generated text (`choices[].delta.content` for chat,
//! `choices[].text` for completions; reasoning deltas count too) and `usage`
//! are extracted.

use serde_json::Value;

/// One event: its `event:` name (if any) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` for the default `message` type.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental SSE parser (see the module docs).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes not yet forming a complete line.
    buf: Vec<u8>,
    /// The event being assembled.
    current: SseEvent,
    /// Whether `current` has seen a `data:` line (an event without one is
    /// not dispatched, as in the SSE spec).
    has_data: bool,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feed the next bytes; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        // Only the new bytes can hold a line end the buffer did not have.
        let mut scan_from = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let mut consumed = 0;
        while let Some(pos) = self.buf[scan_from..].iter().position(|&b| b == b'\n') {
            let end = scan_from + pos;
            let mut line = &self.buf[consumed..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.line(&line, out);
            consumed = end + 1;
            scan_from = consumed;
        }
        self.buf.drain(..consumed);
    }

    /// The stream ended: dispatch an event left without its closing empty
    /// line (lenient: the spec would drop it, but a server that omits the last
    /// blank line still meant it).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), out);
        }
        self.line("", out);
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.current));
            } else {
                self.current = SseEvent::default();
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_string()),
            _ => {}
        }
    }
}

/// Token usage reported by the server (the final chunk with
/// `stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u32>,
}

impl Usage {
    /// Read a `usage` object (`None` for `null` or a non-object).
    pub fn from_json(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).map(clamp_u32);
        Some(Usage {
            prompt_tokens: n(obj.get("prompt_tokens")),
            completion_tokens: n(obj.get("completion_tokens")),
            cached_tokens: n(obj
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))),
        })
    }
}

fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// One event of an OpenAI stream, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// `data: [DONE]`: the stream is complete.
    Done,
    /// The server reported an error inside the stream.
    Error(String),
    /// A completion chunk.
    Data {
        /// Generated text in this chunk, if non-empty (a chat stream's
        /// role-only first chunk and the empty finish chunk have none).
        text: Option<String>,
        /// `usage`, when the chunk carries one.
        usage: Option<Usage>,
    },
}

impl Chunk {
    /// Interpret one event. Errors (as text) if the data is not JSON.
    pub fn parse(ev: &SseEvent) -> Result<Chunk, String> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            return Ok(Chunk::Done);
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) if ev.event.as_deref() == Some("error") => {
                return Ok(Chunk::Error(data.to_string()))
            }
            Err(e) => return Err(format!("bad stream chunk ({e}): {}", truncate(data, 200))),
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Ok(Chunk::Error(error_message(err)));
        }
        if ev.event.as_deref() == Some("error") {
            return Ok(Chunk::Error(error_message(&v)));
        }
        let mut text = String::new();
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                let delta = c.get("delta");
                let parts = [
                    delta.and_then(|d| d.get("content")),
                    delta.and_then(|d| d.get("reasoning_content")),
                    delta.and_then(|d| d.get("reasoning")),
                    c.get("text"),
                ];
                for p in parts.into_iter().flatten() {
                    if let Some(s) = p.as_str() {
                        text.push_str(s);
                    }
                }
            }
        }
        Ok(Chunk::Data {
            text: (!text.is_empty()).then_some(text),
            usage: v.get("usage").and_then(Usage::from_json),
        })
    }
}

/// The human-readable part of an OpenAI-style error value: `message` if it
/// has one, the string itself, or the JSON.
pub fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(m) => m.to_string(),
            None => match o.get("error") {
                Some(inner) => error_message(inner),
                None => err.to_string(),
            },
        },
        other => other.to_string(),
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), with `…` if cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(frames: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for f in frames {
            p.push(f, &mut out);
        }
        p.finish(&mut out);
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn several_events_in_one_frame() {
        let ev = parse_all(&[b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n"]);
        assert_eq!(data(&ev), ["{\"a\":1}", "{\"a\":2}", "[DONE]"]);
    }

    #[test]
    fn events_split_across_frames_anywhere() {
        let whole = "data: {\"choices\":[{\"text\":\"héllo\"}]}\n\ndata: [DONE]\n\n".as_bytes();
        // Every split point, including inside the two-byte 'é'.
        for cut in 0..=whole.len() {
            let ev = parse_all(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(
                data(&ev),
                ["{\"choices\":[{\"text\":\"héllo\"}]}", "[DONE]"],
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let frames: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(parse_all(&frames).len(), 2);
    }

    #[test]
    fn crlf_comments_fields_and_multiline_data() {
        let ev = parse_all(&[
            b": keep-alive\r\n\r\nevent: error\r\ndata: line1\r\ndata:line2\r\nid: 7\r\nretry: 10\r\n\r\n",
        ]);
        assert_eq!(
            ev,
            [SseEvent {
                event: Some("error".into()),
                data: "line1\nline2".into()
            }]
        );
    }

    #[test]
    fn a_last_event_without_blank_line_is_kept() {
        assert_eq!(data(&parse_all(&[b"data: [DONE]"])), ["[DONE]"]);
        assert_eq!(data(&parse_all(&[b"data: [DONE]\n"])), ["[DONE]"]);
        assert!(parse_all(&[b"", b"\n\n: only a comment\n\n"]).is_empty());
    }

    fn chunk(data: &str) -> Chunk {
        Chunk::parse(&SseEvent {
            event: None,
            data: data.into(),
        })
        .unwrap()
    }

    #[test]
    fn chunks_chat_and_completions() {
        assert_eq!(chunk("[DONE]"), Chunk::Done);
        // vLLM's role-only first chat chunk carries no text.
        assert_eq!(
            chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
            Chunk::Data {
                text: None,
                usage: None
            }
        );
        assert_eq!(
            chunk(r#"{"choices":[{"delta":{"content":"Hi"}}],"usage":null}"#),
            Chunk::Data {
                text: Some("Hi".into()),
                usage: None
            }
        );
        assert_eq!(
            chunk(r#"{"choices":[{"text":" there","finish_reason":null}]}"#),
            Chunk::Data {
                text: Some(" there".into()),
                usage: None
            }
        );
        let usage = chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,
                "prompt_tokens_details":{"cached_tokens":8}}}"#,
        );
        assert_eq!(
            usage,
            Chunk::Data {
                text: None,
                usage: Some(Usage {
                    prompt_tokens: Some(12),
                    completion_tokens: Some(5),
                    cached_tokens: Some(8)
                })
            }
        );
        // No prompt_tokens_details: cached is unknown, not zero.
        let Chunk::Data { usage: Some(u), .. } =
            chunk(r#"{"usage":{"prompt_tokens":3,"completion_tokens":1}}"#)
        else {
            panic!()
        };
        assert_eq!(u.cached_tokens, None);
    }

    #[test]
    fn error_events() {
        assert_eq!(
            chunk(
                r#"{"error": {"message": "engine stopped", "type": "InternalServerError", "code": 500}}"#
            ),
            Chunk::Error("engine stopped".into())
        );
        assert_eq!(chunk(r#"{"error": "boom"}"#), Chunk::Error("boom".into()));
        let named = Chunk::parse(&SseEvent {
            event: Some("error".into()),
            data: "upstream went away".into(),
        });
        assert_eq!(named, Ok(Chunk::Error("upstream went away".into())));
        let bad = Chunk::parse(&SseEvent {
            event: None,
            data: "{not json".into(),
        });
        assert!(bad.unwrap_err().contains("bad stream chunk"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aé", 2), "a…");
    }
}
