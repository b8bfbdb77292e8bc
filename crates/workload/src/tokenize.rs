//! Text → tokens the way the engines do it: [`Tokenizer`] (a HF
//! `tokenizer.json`) and [`ChatTemplate`] (a HF `chat_template`, rendered with
//! minijinja).
//!
//! # Matching vLLM and HF transformers
//!
//! * A text prompt is encoded with `add_special_tokens = true`, as vLLM does
//!   for `/v1/completions`. The tokenizer's post-processor decides what that
//!   adds: nothing for Qwen3 (no BOS), `<s>`/`<|begin_of_text|>` for Llama.
//!   Special-token strings inside the text (`<|im_start|>`) are matched as
//!   special tokens, as with HF's default `split_special_tokens = False`.
//! * A chat template is rendered like `tokenizer.apply_chat_template(messages,
//!   tokenize=False, add_generation_prompt=True)`: `trim_blocks` and
//!   `lstrip_blocks` on, Python string/dict methods (`startswith`, `split`,
//!   `strip`, `items`, …) via `minijinja-contrib`'s pycompat layer, a
//!   `raise_exception(msg)` function, `tools`/`documents` defined as `none`,
//!   and the special tokens (`bos_token`, `eos_token`, `pad_token`,
//!   `unk_token`) from `tokenizer_config.json` in the context.
//!   Not provided: HF's `strftime_now` (templates that call it fail with a
//!   clear error) and HF's own `tojson` (minijinja's is used; it differs only
//!   in whitespace and HTML escaping, which matters only for tool
//!   definitions, never passed by this crate).

use crate::error::WorkloadError;
use crate::io;
use crate::request::ChatMessage;
use crate::segment_cache::SegmentCache;
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A HF tokenizer, cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    source: PathBuf,
    cache: Option<Arc<SegmentCache>>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("cache", &self.cache)
            .finish()
    }
}

impl Tokenizer {
    /// Load a `tokenizer.json`, gzipped or not (sniffed from the content, so
    /// `tokenizer.json.gz` works).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, WorkloadError> {
        let path = path.as_ref();
        let bytes = io::read_all(path)?;
        Tokenizer::from_json_bytes(&bytes, path)
    }

    /// Load from the bytes of a `tokenizer.json`; `source` is only used in
    /// messages.
    pub fn from_json_bytes(
        json: &[u8],
        source: impl Into<PathBuf>,
    ) -> Result<Tokenizer, WorkloadError> {
        let source = source.into();
        let inner =
            tokenizers::Tokenizer::from_bytes(json).map_err(|e| WorkloadError::TokenizerLoad {
                path: source.clone(),
                message: e.to_string(),
            })?;
        Ok(Tokenizer {
            inner: Arc::new(inner),
            source,
            cache: None,
        })
    }

    /// This tokenizer, remembering the token ids of up to about
    /// `budget_tokens` tokens' worth of prompt pieces between special tokens
    /// (see [`SegmentCache`]): a chat turn then only tokenizes its new
    /// messages. The ids are the same as without the cache; a tokenizer
    /// whose configuration would make them differ is returned uncached
    /// ([`segment_cache`](Self::segment_cache) is then `None`). Clones share
    /// the cache.
    pub fn with_segment_cache(mut self, budget_tokens: usize) -> Tokenizer {
        self.cache = SegmentCache::for_tokenizer(&self.inner, budget_tokens).map(Arc::new);
        self
    }

    /// The piece cache, when one is on.
    pub fn segment_cache(&self) -> Option<&SegmentCache> {
        self.cache.as_deref()
    }

    /// Token ids of a text prompt, with the special tokens vLLM adds to a text
    /// prompt (`add_special_tokens = true`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, WorkloadError> {
        self.encode_with(text, true)
    }

    /// Token ids of `text`, choosing whether the post-processor may add
    /// special tokens (BOS/EOS).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, WorkloadError> {
        match &self.cache {
            Some(c) if c.applies(add_special_tokens) => c.encode(text, |piece| {
                self.encode_uncached(piece, add_special_tokens)
            }),
            _ => self.encode_uncached(text, add_special_tokens),
        }
    }

    fn encode_uncached(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, WorkloadError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| WorkloadError::Encode {
                chars: text.chars().count(),
                message: e.to_string(),
            })
    }

    /// The text of `ids`, special tokens included. Ids outside the vocabulary
    /// are skipped; should the decoder itself fail (the byte-level decoders of
    /// current models cannot), the result is empty — use
    /// [`try_decode`](Self::try_decode) to see the error.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).unwrap_or_default()
    }

    /// [`decode`](Self::decode), reporting decoder failures.
    pub fn try_decode(&self, ids: &[u32]) -> Result<String, WorkloadError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| WorkloadError::Encode {
                chars: 0,
                message: format!("decoding {} ids: {e}", ids.len()),
            })
    }

    /// Number of ids, added (special) tokens included: 151,669 for Qwen3.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Number of ids of the base vocabulary, without added tokens: 151,643 for
    /// Qwen3. Ids below this are ordinary text tokens, which makes it the
    /// natural bound for synthetic prompts.
    pub fn base_vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }

    /// The id of a token string (`"<|im_start|>"`), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Where the tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
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
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<ChatTemplate, WorkloadError> {
        let path = path.as_ref();
        let load_err = |message: String| WorkloadError::TemplateLoad {
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
    pub fn from_source(source: impl Into<String>) -> Result<ChatTemplate, WorkloadError> {
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
    ) -> Result<ChatTemplate, WorkloadError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| WorkloadError::TemplateLoad {
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
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, WorkloadError> {
        self.render_with(messages, true)
    }

    /// Render `messages`, choosing whether to append the generation prompt.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, WorkloadError> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        for (k, v) in self.special_tokens.iter() {
            ctx.insert(k.as_str(), Value::from(v.as_str()));
        }
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        let render_err = |e: minijinja::Error| WorkloadError::TemplateRender {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(err, WorkloadError::TemplateLoad { .. }), "{err}");
    }

    mod qwen3 {
        use crate::request::ChatMessage;
        use crate::testutil::{qwen3, qwen3_template};

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

        /// Ids printed by Python `tokenizers` 0.23.3
        /// (`Tokenizer.from_file(...).encode(s, add_special_tokens=True).ids`)
        /// and, identically, by transformers' `AutoTokenizer` `tok(s)["input_ids"]`.
        #[test]
        fn ids_match_python_tokenizers() {
            let cases: [(&str, &[u32]); 4] = [
                ("Hello, world!", &[9707, 11, 1879, 0]),
                (
                    "na\u{ef}ve caf\u{e9} \u{2014} \u{6771}\u{4eac}\u{30bf}\u{30ef}\u{30fc} \u{1f680}\n\n  indented\tcode();",
                    &[3376, 37572, 586, 51950, 1959, 60596, 109, 46553, 46207, 125980, 11162, 248, 222, 271, 220, 1257, 15864, 43343, 2129],
                ),
                ("<|im_start|>user\nhi<|im_end|>\n", &[151644, 872, 198, 6023, 151645, 198]),
                ("1234567 + 89 = 1234656", &[16, 17, 18, 19, 20, 21, 22, 488, 220, 23, 24, 284, 220, 16, 17, 18, 19, 21, 20, 21]),
            ];
            let tok = qwen3();
            for (text, ids) in cases {
                assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
                assert_eq!(tok.decode(ids), text);
            }
            assert_eq!(
                (tok.vocab_size(), tok.base_vocab_size()),
                (151_669, 151_643)
            );
            assert_eq!(tok.token_to_id("<|im_end|>"), Some(151_645));
        }

        /// The shipped `tokenizer.json.gz` is the shared `tokenizer.json`, byte for byte.
        #[test]
        fn shipped_tokenizer_is_the_shared_one() {
            let Some(shared) = crate::testutil::shared_dir() else {
                eprintln!("skipped: no shared/ next to the repository");
                return;
            };
            let plain =
                std::fs::read(shared.join("datasets/tokenizers/qwen3/tokenizer.json")).unwrap();
            let gz = crate::spec::datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz");
            assert!(crate::io::read_all(&gz).unwrap() == plain);
        }
    }
}
