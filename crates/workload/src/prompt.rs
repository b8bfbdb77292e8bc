//! [`Prompter`]: messages → the [`Turn`] an engine will see.
//!
//! It pairs a [`Tokenizer`] with an optional [`ChatTemplate`]. With a template,
//! `prompt_text` is exactly what vLLM renders for the chat request, so sending
//! it to `/v1/completions` is token-for-token the same request. Without one it
//! falls back to [`render_flat`].

use crate::error::WorkloadError;
use crate::request::{ChatMessage, Turn};
use crate::tokenize::{ChatTemplate, Tokenizer};

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
/// use kvroute_workload::{render_flat, ChatMessage};
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
}
