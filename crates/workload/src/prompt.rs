//! [`Prompter`]: messages → the [`Turn`] an engine will see.
//!
//! It pairs a [`Tokenizer`] with an optional [`ChatTemplate`]. With a template,
//! `prompt_text` is exactly what vLLM renders for the chat request, so sending
//! it to `/v1/completions` is token-for-token the same request. Without one it
//! falls back to [`render_flat`].

use crate::error::WorkloadError;
use crate::request::{ChatMessage, Turn};
pub use kvroute_tokenize::render_flat;
use kvroute_tokenize::{ChatTemplate, Tokenizer};

/// Renders and tokenizes prompts; cheap to clone.
#[derive(Debug, Clone)]
pub struct Prompter {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
}

impl Prompter {
    /// A prompter using `template` when given, [`render_flat`] otherwise.
    pub fn new(tokenizer: Tokenizer, template: Option<ChatTemplate>) -> Prompter {
        Prompter {
            tokenizer,
            template,
        }
    }

    /// `messages` as prompt text, with the generation prompt.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, WorkloadError> {
        match &self.template {
            Some(t) => t.render(messages),
            None => Ok(render_flat(messages)),
        }
    }

    /// A complete turn: render `messages`, tokenize the text, and ask for
    /// `max_tokens` (raised to 1 if zero) output tokens.
    pub fn turn(&self, messages: Vec<ChatMessage>, max_tokens: u32) -> Result<Turn, WorkloadError> {
        let text = self.render(&messages)?;
        let prompt_tokens = self.tokenizer.encode(&text)?;
        Ok(Turn {
            messages,
            prompt_text: Some(text),
            prompt_tokens,
            max_tokens: max_tokens.max(1),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, if any.
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }
}
