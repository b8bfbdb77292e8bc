//! [`ChatTemplate`] (a HF `chat_template`, rendered with minijinja), the
//! [`ChatMessage`] it renders, and [`render_flat`], the plain rendering used
//! when no template is configured.
//!
//! # Matching HF transformers
//!
//! A chat template is rendered like `tokenizer.apply_chat_template(messages,
//! tokenize=False, add_generation_prompt=True)`: `trim_blocks` and
//! `lstrip_blocks` on, Python string/dict methods (`startswith`, `split`,
//! `strip`, `items`, …) via `minijinja-contrib`'s pycompat layer, a
//! `raise_exception(msg)` function, `tools`/`documents` defined as `none`,
//! and the special tokens (`bos_token`, `eos_token`, `pad_token`,
//! `unk_token`) from `tokenizer_config.json` in the context.
//! Not provided: HF's `strftime_now` (templates that call it fail with a
//! clear error) and HF's own `tojson` (minijinja's is used; it differs only
//! in whitespace and HTML escaping, which matters only for tool
//! definitions, never passed by this crate).

use crate::error::TokenizeError;
use crate::io;
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

/// One chat message, as in the OpenAI API (`{"role": "user", "content": "…"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// A HF chat template, compiled once; cheap to clone (shared).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    special_tokens: Arc<BTreeMap<String, String>>,
    origin: PathBuf,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("template_chars", &self.source.len())
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// The `chat_template` of a HF `tokenizer_config.json` (a string, or the
    /// list-of-`{name, template}` form, of which `default` is taken). When the
    /// config has none, a `chat_template.jinja` next to it is used, as newer
    /// transformers releases save it there. The config's `bos_token`,
    /// `eos_token`, `pad_token` and `unk_token` are made available to the
    /// template.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<ChatTemplate, TokenizeError> {
        let path = path.as_ref();
        let load_err = |message: String| TokenizeError::TemplateLoad {
            path: path.to_path_buf(),
            message,
        };
        let bytes = io::read_all(path)?;
        let config: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| load_err(format!("not JSON: {e}")))?;
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(named)) => {
                let pick = named
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| named.first());
                pick.and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        load_err("`chat_template` list has no `template` entry".into())
                    })?
            }
            Some(other) => {
                return Err(load_err(format!(
                    "`chat_template` is neither a string nor a list: {other}"
                )))
            }
            None => {
                let side = path.with_file_name("chat_template.jinja");
                match std::fs::read_to_string(&side) {
                    Ok(s) => s,
                    Err(_) => {
                        return Err(load_err(format!(
                            "no `chat_template` key, and no {} next to it",
                            side.display()
                        )))
                    }
                }
            }
        };
        let mut special = BTreeMap::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            // Either "<s>" or an AddedToken object {"content": "<s>", ...}.
            let value = match config.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
                }
                _ => None,
            };
            if let Some(v) = value {
                special.insert(key.to_owned(), v);
            }
        }
        ChatTemplate::build(source, special, path.to_path_buf())
    }

    /// A template given as Jinja source, with no special tokens in its context.
    pub fn from_source(source: impl Into<String>) -> Result<ChatTemplate, TokenizeError> {
        ChatTemplate::build(source.into(), BTreeMap::new(), PathBuf::from("<inline>"))
    }

    /// The same template with `name` (e.g. `bos_token`) set to `value` in its
    /// rendering context.
    pub fn with_special_token(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> ChatTemplate {
        Arc::make_mut(&mut self.special_tokens).insert(name.into(), value.into());
        self
    }

    fn build(
        source: String,
        special: BTreeMap<String, String>,
        origin: PathBuf,
    ) -> Result<ChatTemplate, TokenizeError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TokenizeError::TemplateLoad {
                path: origin.clone(),
                message: describe(&e),
            })?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.into(),
            special_tokens: Arc::new(special),
            origin,
        })
    }

    /// Render `messages` with the generation prompt (`add_generation_prompt =
    /// True`): the exact text vLLM tokenizes for a chat completion.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, TokenizeError> {
        self.render_with(messages, true)
    }

    /// Render `messages`, choosing whether to append the generation prompt.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizeError> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        for (k, v) in self.special_tokens.iter() {
            ctx.insert(k.as_str(), Value::from(v.as_str()));
        }
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        let render_err = |e: minijinja::Error| TokenizeError::TemplateRender {
            message: describe(&e),
        };
        self.env
            .get_template(TEMPLATE_NAME)
            .map_err(render_err)?
            .render(ctx)
            .map_err(render_err)
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// HF's `raise_exception(message)`: abort rendering with the template's message.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// A minijinja error with its cause chain on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The plain rendering used when no chat template is configured:
///
/// ```text
/// {system content}\n\n            (a system message: its content alone)
/// User: {content}\n\n             (a user message)
/// Assistant: {content}\n\n        (an assistant message)
/// {role}: {content}\n\n           (any other role, as spelled)
/// Assistant:                      (the generation prompt, always last)
/// ```
///
/// Like a chat template, it renders a conversation's turn *k* as a text prefix
/// of turn *k + 1*.
///
/// ```
/// use kvroute_tokenize::{render_flat, ChatMessage};
///
/// let text = render_flat(&[ChatMessage::user("Hi"), ChatMessage::assistant("Hello!"), ChatMessage::user("Bye")]);
/// assert_eq!(text, "User: Hi\n\nAssistant: Hello!\n\nUser: Bye\n\nAssistant:");
/// ```
pub fn render_flat(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        match m.role.as_str() {
            "system" => {}
            "user" => out.push_str("User: "),
            "assistant" => out.push_str("Assistant: "),
            other => {
                out.push_str(other);
                out.push_str(": ");
            }
        }
        out.push_str(&m.content);
        out.push_str("\n\n");
    }
    out.push_str("Assistant:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_rendering_is_prefix_stable() {
        let a = vec![ChatMessage::system("Be brief."), ChatMessage::user("Q1")];
        let mut b = a.clone();
        b.push(ChatMessage::assistant("A1"));
        b.push(ChatMessage::new("tool", "T"));
        let (ra, rb) = (render_flat(&a), render_flat(&b));
        assert_eq!(ra, "Be brief.\n\nUser: Q1\n\nAssistant:");
        assert_eq!(
            rb,
            "Be brief.\n\nUser: Q1\n\nAssistant: A1\n\ntool: T\n\nAssistant:"
        );
        assert!(rb.starts_with(&ra));
    }

    // The expected string is what Python jinja2 3.1.6 renders with HF's
    // settings (trim_blocks, lstrip_blocks) for the same template and input.
    #[test]
    fn pycompat_methods_and_trim_blocks() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}\n  {{ m.role.upper() }}:{{ m.content.strip().split(',')[-1].lstrip() }}|\n{% endfor %}\n{% if add_generation_prompt %}>{% endif %}",
        )
        .unwrap();
        let got = t
            .render(&[
                ChatMessage::user("  a, b "),
                ChatMessage::assistant("x,  y"),
            ])
            .unwrap();
        assert_eq!(got, "  USER:b|\n  ASSISTANT:y|\n>");
    }

    #[test]
    fn raise_exception_surfaces_the_message() {
        let t = ChatTemplate::from_source(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok",
        )
        .unwrap();
        assert_eq!(t.render(&[ChatMessage::user("hi")]).unwrap(), "ok");
        let err = t
            .render(&[ChatMessage::assistant("hi")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Conversation must start with user"), "{err}");
    }

    #[test]
    fn special_tokens_and_none_tools_are_in_context() {
        let t = ChatTemplate::from_source(
            "{{ bos_token }}{% if tools is defined and tools is none %}T{% endif %}",
        )
        .unwrap()
        .with_special_token("bos_token", "<s>");
        assert_eq!(t.render(&[]).unwrap(), "<s>T");
    }

    #[test]
    fn a_broken_template_is_a_load_error() {
        let err = ChatTemplate::from_source("{% for %}").unwrap_err();
        assert!(matches!(err, TokenizeError::TemplateLoad { .. }), "{err}");
    }

    mod qwen3 {
        use crate::template::ChatMessage;
        use crate::testutil::qwen3_template;

        /// Written out by hand from the template (no system message, so the
        /// first branch emits nothing; every user turn is
        /// `<|im_start|>user\n{content}<|im_end|>\n`; the assistant turn sits
        /// before the last user query, so no `<think>` block is added; then the
        /// generation prompt). Byte-identical to HF transformers 5.24.0
        /// `apply_chat_template(messages, tokenize=False,
        /// add_generation_prompt=True)` and to a bare jinja2 3.1.6
        /// `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
        /// extensions=[loopcontrols])` render.
        #[test]
        fn renders_three_messages_like_transformers() {
            let messages = [
                ChatMessage::user("What is the capital of France?"),
                ChatMessage::assistant("The capital of France is Paris."),
                ChatMessage::user("And of Italy?"),
            ];
            let expected = concat!(
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
                "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n",
                "<|im_start|>user\nAnd of Italy?<|im_end|>\n",
                "<|im_start|>assistant\n",
            );
            assert_eq!(qwen3_template().render(&messages).unwrap(), expected);
        }

        /// System message, whitespace kept verbatim, and a `<think>` block in
        /// a history turn stripped (the `split('</think>')` / `lstrip` path).
        /// Expected value printed by HF transformers 5.24.0.
        #[test]
        fn strips_history_reasoning_like_transformers() {
            let messages = [
                ChatMessage::system("You are a helpful assistant.\nBe brief."),
                ChatMessage::user("  Add 2 and 3.  "),
                ChatMessage::assistant("<think>\nsimple arithmetic\n</think>\n\n5"),
                ChatMessage::user("Times 4?"),
            ];
            let expected = "<|im_start|>system\nYou are a helpful assistant.\nBe brief.<|im_end|>\n<|im_start|>user\n  Add 2 and 3.  <|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n<|im_start|>user\nTimes 4?<|im_end|>\n<|im_start|>assistant\n";
            assert_eq!(qwen3_template().render(&messages).unwrap(), expected);
        }

        /// An assistant turn after the last query keeps its reasoning (the
        /// `loop.index0 > ns.last_query_index` branch); no generation prompt.
        /// Expected value printed by HF transformers 5.24.0.
        #[test]
        fn final_assistant_turn_keeps_reasoning() {
            let messages = [
                ChatMessage::user("Why?"),
                ChatMessage::assistant("<think>\nbecause\n</think>\n\nBecause."),
            ];
            let expected = "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n<think>\nbecause\n</think>\n\nBecause.<|im_end|>\n";
            assert_eq!(
                qwen3_template().render_with(&messages, false).unwrap(),
                expected
            );
        }
    }
}
