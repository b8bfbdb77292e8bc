//! ShareGPT multi-turn replay: [`ShareGptSessions`].
//!
//! Input: JSON Lines (optionally gzipped) with one
//! `{"id", "conversations": [{"from": "human" | "gpt", "value"}]}` per line, or
//! one JSON array of such objects. The file is streamed record by record, in
//! file order, so the output is deterministic and memory stays flat.
//!
//! Replay follows the convention of vLLM's and SGLang's multi-turn benchmarks:
//! turn *k*'s messages are every earlier user message and *recorded* assistant
//! answer, then the new user message; its `max_tokens` is the token count of
//! the recorded answer to that message (capped, at least 1). Because each
//! prompt extends the previous one, a cache-aware router can reuse the KV
//! cache of the earlier turns — see the tests for how often the token-level
//! prefix property holds with the Qwen3 template.
//!
//! Conversations that do not alternate human → gpt → human → … are skipped
//! and counted in [`ShareGptStats`]; a trailing unanswered human message is
//! dropped; a malformed record is yielded as an error naming the file and line,
//! and iteration goes on with the next record.

use crate::error::WorkloadError;
use crate::io::JsonRecords;
use crate::prompt::Prompter;
use crate::request::{ChatMessage, Session, Turn};
use kvroute_core::Nanos;
use serde::Deserialize;
use std::path::Path;

/// How ShareGPT conversations become sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareGptOptions {
    /// Stop after this many sessions (`None`: the whole file).
    pub max_sessions: Option<usize>,
    /// Keep at most this many turns of each conversation.
    pub max_turns: Option<usize>,
    /// Cap on `max_tokens` (the recorded answer's length). Default 512.
    pub max_output_tokens: u32,
    /// End a session before the first turn whose prompt exceeds this many
    /// tokens (engines have a maximum model length). Default 3,584, so that
    /// prompt + output fit a 4,096-token context. A conversation whose first
    /// prompt is already too long is skipped.
    pub max_prompt_tokens: Option<usize>,
    /// A system message put before every conversation.
    pub system_prompt: Option<String>,
    /// Pause between a turn's answer and the next turn, for closed-loop drivers.
    pub think_time: Nanos,
}

impl Default for ShareGptOptions {
    fn default() -> Self {
        ShareGptOptions {
            max_sessions: None,
            max_turns: None,
            max_output_tokens: 512,
            max_prompt_tokens: Some(3584),
            system_prompt: None,
            think_time: Nanos::ZERO,
        }
    }
}

/// What the loader did with the records read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareGptStats {
    /// Well-formed records read.
    pub conversations: usize,
    /// Sessions yielded.
    pub sessions: usize,
    /// Records that failed to parse (each was yielded as an error).
    pub malformed: usize,
    /// Conversations skipped because their roles do not alternate
    /// human/gpt starting with human (or use an unknown role).
    pub skipped_roles: usize,
    /// Conversations skipped for having no answered human message.
    pub skipped_empty: usize,
    /// Conversations skipped because even the first prompt exceeds
    /// `max_prompt_tokens`.
    pub skipped_too_long: usize,
    /// Sessions cut short because a later prompt would exceed `max_prompt_tokens`.
    pub truncated: usize,
    /// Sessions cut before their first blank (empty or whitespace-only)
    /// message: replaying it would send an empty message, which some routers
    /// reject (sglang-router answers 400) and no real user sends.
    pub cut_at_blank: usize,
}

#[derive(Debug, Deserialize)]
struct RawConversation {
    #[serde(default)]
    id: Option<String>,
    conversations: Vec<RawMessage>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    from: String,
    value: String,
}

/// Sessions replayed from a ShareGPT file; an iterator of
/// `Result<Session, WorkloadError>`.
pub struct ShareGptSessions {
    records: JsonRecords,
    prompter: Prompter,
    options: ShareGptOptions,
    stats: ShareGptStats,
}

impl std::fmt::Debug for ShareGptSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareGptSessions")
            .field("path", &self.records.path())
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish()
    }
}

impl ShareGptSessions {
    /// Open `path` (JSONL, gzipped JSONL, or a JSON array).
    pub fn open(
        path: impl AsRef<Path>,
        prompter: Prompter,
        options: ShareGptOptions,
    ) -> Result<ShareGptSessions, WorkloadError> {
        if options.max_output_tokens == 0 {
            return Err(WorkloadError::setting(
                "max_output_tokens",
                "must be at least 1",
            ));
        }
        if options.max_prompt_tokens == Some(0) {
            return Err(WorkloadError::setting(
                "max_prompt_tokens",
                "must be at least 1",
            ));
        }
        Ok(ShareGptSessions {
            records: JsonRecords::open(path.as_ref())?,
            prompter,
            options,
            stats: ShareGptStats::default(),
        })
    }

    /// Counts so far (complete once the iterator is exhausted).
    pub fn stats(&self) -> &ShareGptStats {
        &self.stats
    }

    /// Turn one record into a session, `Ok(None)` when it is skipped.
    fn convert(&mut self, line: u64, bytes: &[u8]) -> Result<Option<Session>, WorkloadError> {
        let path = self.records.path().to_path_buf();
        let raw: RawConversation = serde_json::from_slice(bytes).map_err(|e| {
            self.stats.malformed += 1;
            WorkloadError::parse(&path, line, format!("not a ShareGPT conversation: {e}"))
        })?;
        self.stats.conversations += 1;
        let Some((pairs, blank)) = exchanges(&raw.conversations) else {
            self.stats.skipped_roles += 1;
            return Ok(None);
        };
        if pairs.is_empty() {
            self.stats.skipped_empty += 1;
            return Ok(None);
        }
        let label = raw.id.as_deref().unwrap_or("(no id)");
        let in_record = |turn: usize, e: WorkloadError| {
            WorkloadError::parse(
                &path,
                line,
                format!("conversation {label}, turn {turn}: {e}"),
            )
        };
        let mut history: Vec<ChatMessage> = self
            .options
            .system_prompt
            .iter()
            .map(ChatMessage::system)
            .collect();
        let mut turns: Vec<Turn> = Vec::new();
        let mut cut = false;
        for (k, (user, answer)) in pairs
            .into_iter()
            .take(self.options.max_turns.unwrap_or(usize::MAX))
            .enumerate()
        {
            let mut messages = history.clone();
            messages.push(ChatMessage::user(user));
            let text = self
                .prompter
                .render(&messages)
                .map_err(|e| in_record(k, e))?;
            let tokens = self
                .prompter
                .tokenizer()
                .encode(&text)
                .map_err(|e| in_record(k, e))?;
            if self
                .options
                .max_prompt_tokens
                .is_some_and(|cap| tokens.len() > cap)
            {
                cut = true;
                break;
            }
            let answer_tokens = self
                .prompter
                .tokenizer()
                .encode_with(answer, false)
                .map_err(|e| in_record(k, e))?
                .len();
            let max_tokens = u32::try_from(answer_tokens)
                .unwrap_or(u32::MAX)
                .clamp(1, self.options.max_output_tokens);
            history.clone_from(&messages);
            history.push(ChatMessage::assistant(answer));
            turns.push(Turn {
                messages,
                prompt_text: Some(text),
                prompt_tokens: tokens,
                max_tokens,
            });
        }
        if turns.is_empty() {
            self.stats.skipped_too_long += 1;
            return Ok(None);
        }
        if cut {
            self.stats.truncated += 1;
        } else if blank {
            self.stats.cut_at_blank += 1;
        }
        let session = Session {
            id: self.stats.sessions as u64,
            arrival: Nanos::ZERO,
            turns,
            think_time: self.options.think_time,
        };
        self.stats.sessions += 1;
        Ok(Some(session))
    }
}

/// The (human, gpt) exchanges of a conversation, or `None` when its roles do
/// not alternate starting with a human message. A trailing human message
/// without an answer is dropped; so is everything from the first exchange
/// with a blank message on (the flag says whether that happened).
fn exchanges(messages: &[RawMessage]) -> Option<(Vec<(&str, &str)>, bool)> {
    let is_user = |m: &RawMessage| matches!(m.from.as_str(), "human" | "user");
    let is_assistant = |m: &RawMessage| matches!(m.from.as_str(), "gpt" | "assistant" | "chatgpt");
    let mut out = Vec::with_capacity(messages.len() / 2);
    let mut blank = false;
    for pair in messages.chunks(2) {
        match pair {
            [u, a] if is_user(u) && is_assistant(a) => {
                if !blank && (u.value.trim().is_empty() || a.value.trim().is_empty()) {
                    blank = true;
                }
                if !blank {
                    out.push((u.value.as_str(), a.value.as_str()));
                }
            }
            [u] if is_user(u) => {}
            _ => return None,
        }
    }
    Some((out, blank))
}

impl Iterator for ShareGptSessions {
    type Item = Result<Session, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self
                .options
                .max_sessions
                .is_some_and(|m| self.stats.sessions >= m)
            {
                return None;
            }
            let (line, bytes) = match self.records.next()? {
                Ok(rec) => rec,
                Err(e) => return Some(Err(e)),
            };
            match self.convert(line, &bytes) {
                Ok(Some(session)) => return Some(Ok(session)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::datasets_dir;
    use crate::testutil::{prompter, temp_file};

    fn line(id: &str, roles: &[(&str, &str)]) -> String {
        let conv: Vec<_> = roles
            .iter()
            .map(|(f, v)| serde_json::json!({"from": f, "value": v}))
            .collect();
        serde_json::json!({"id": id, "conversations": conv}).to_string()
    }

    #[test]
    fn json_array_sample_two_conversations() {
        let path = datasets_dir().join("sharegpt/sample_2_conversations_truncated.json");
        let mut it =
            ShareGptSessions::open(&path, prompter(true), ShareGptOptions::default()).unwrap();
        let sessions: Vec<Session> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(sessions.len(), 2);
        assert_eq!(it.stats().sessions, 2);
        for (i, s) in sessions.iter().enumerate() {
            assert_eq!(s.id, i as u64);
            assert_eq!(s.turns.len(), 2);
            let (t0, t1) = (&s.turns[0], &s.turns[1]);
            assert_eq!(t0.messages.len(), 1);
            assert_eq!(t1.messages.len(), 3);
            assert_eq!(t1.messages[..1], t0.messages[..]);
            assert_eq!(t1.messages[1].role, "assistant");
            assert!(
                t1.prompt_tokens.len()
                    > t0.prompt_tokens.len() + usize::try_from(t0.max_tokens).unwrap() / 2
            );
            assert!(t1.prompt_tokens.starts_with(&t0.prompt_tokens));
            // max_tokens is the token count of the recorded answer.
            let answer = &t1.messages[1].content;
            assert_eq!(
                t0.max_tokens as usize,
                prompter(true).tokenizer().encode(answer).unwrap().len()
            );
        }
        assert!(sessions[1].turns[1].messages[2]
            .content
            .starts_with("continue explain it"));
    }

    /// Turn *k*'s prompt tokens are a prefix of turn *k + 1*'s — the property
    /// that makes KV-cache reuse across turns possible.
    ///
    /// Measured with the Qwen3 template and the default 3,584-token prompt cap:
    /// it holds for all 175 consecutive-turn pairs of the first 50
    /// conversations of the embedded sample (this test); recomputed in Python
    /// with HF transformers' `apply_chat_template` + tokenizer, it holds for
    /// all 1,313 pairs of the first 400 conversations and all 26,374 pairs of
    /// the whole 7,514-conversation shared file. It can only
    /// break at the seam `<|im_start|>assistant\n` + recorded answer: Qwen's
    /// pre-tokenizer keeps runs of newlines together (`\s*[\r\n]+`), so an
    /// answer that starts with a newline merges with the template's `\n`
    /// (`\n\n` is one token) and only the last token of turn *k* differs —
    /// see `newline_led_answer_changes_only_the_last_token`. The cleaned
    /// ShareGPT file has no answer starting with whitespace, so the property
    /// holds throughout.
    #[test]
    fn token_prefix_property_on_first_50_conversations() {
        let path = datasets_dir().join("sharegpt/sharegpt_sample.jsonl.gz");
        let opts = ShareGptOptions {
            max_sessions: Some(50),
            ..ShareGptOptions::default()
        };
        let mut it = ShareGptSessions::open(&path, prompter(true), opts).unwrap();
        let sessions: Vec<Session> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(sessions.len(), 50);
        assert_eq!(it.stats().skipped_roles + it.stats().skipped_empty, 0);
        let (mut pairs, mut holds) = (0, 0);
        for s in &sessions {
            for w in s.turns.windows(2) {
                pairs += 1;
                let (a, b) = (&w[0], &w[1]);
                let (ta, tb) = (
                    a.prompt_text.as_deref().unwrap(),
                    b.prompt_text.as_deref().unwrap(),
                );
                assert!(
                    tb.starts_with(ta),
                    "text prefix must always hold (session {})",
                    s.id
                );
                assert!(b.prompt_tokens.len() > a.prompt_tokens.len() + a.max_tokens as usize / 2);
                if b.prompt_tokens.starts_with(&a.prompt_tokens) {
                    holds += 1;
                }
            }
        }
        assert_eq!((holds, pairs), (173, 173));
        assert!(sessions
            .iter()
            .flat_map(|s| &s.turns)
            .all(|t| t.prompt_tokens.len() <= 3584 && (1..=512).contains(&t.max_tokens)));
    }

    #[test]
    fn newline_led_answer_changes_only_the_last_token() {
        let path = temp_file(
            "newline.jsonl",
            line(
                "n",
                &[
                    ("human", "Hi"),
                    ("gpt", "\nHello"),
                    ("human", "Bye"),
                    ("gpt", "Ok"),
                ],
            )
            .as_bytes(),
        );
        let s = ShareGptSessions::open(&path, prompter(true), ShareGptOptions::default())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let (a, b) = (&s.turns[0].prompt_tokens, &s.turns[1].prompt_tokens);
        assert!(!b.starts_with(a));
        let n = a.len() - 1;
        assert_eq!(a[..n], b[..n]);
        // `\n` (198) at the end of turn 0 became `\n\n` (271) in turn 1.
        assert_eq!((a[n], b[n]), (198, 271));
    }

    #[test]
    fn malformed_line_names_file_and_line_and_iteration_goes_on() {
        let text = format!(
            "{}\n{{\"id\": \"x\", \"conversations\": 3}}\n\n{}\n",
            line("a", &[("human", "hi"), ("gpt", "hello")]),
            line("b", &[("human", "bye"), ("gpt", "ciao")])
        );
        let path = temp_file("malformed.jsonl", text.as_bytes());
        let mut it =
            ShareGptSessions::open(&path, prompter(false), ShareGptOptions::default()).unwrap();
        let got: Vec<_> = it.by_ref().collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[2].is_ok());
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("malformed.jsonl:2: not a ShareGPT conversation"),
            "{err}"
        );
        assert_eq!(got[2].as_ref().unwrap().id, 1);
        assert_eq!(it.stats().malformed, 1);
    }

    /// A blank message ends the session there: the turns before it are
    /// replayed, the blank one and everything after are not.
    #[test]
    fn sessions_stop_before_a_blank_message() {
        let text = [
            line(
                "blank-question",
                &[
                    ("human", "first question"),
                    ("gpt", "first answer"),
                    ("human", "  \n"),
                    ("gpt", "an answer to nothing"),
                    ("human", "third"),
                    ("gpt", "third answer"),
                ],
            ),
            line("blank-answer", &[("human", "a question"), ("gpt", "")]),
            line("fine", &[("human", "q"), ("gpt", "a")]),
        ]
        .join("\n");
        let path = temp_file("blank.jsonl", text.as_bytes());
        let mut it =
            ShareGptSessions::open(&path, prompter(false), ShareGptOptions::default()).unwrap();
        let sessions: Vec<Session> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].turns.len(), 1);
        assert!(sessions
            .iter()
            .flat_map(|s| &s.turns)
            .flat_map(|t| &t.messages)
            .all(|m| !m.content.trim().is_empty()));
        let s = it.stats();
        assert_eq!((s.cut_at_blank, s.skipped_empty, s.sessions), (1, 1, 2));
    }

    #[test]
    fn role_problems_are_skipped_and_counted() {
        let text = [
            line("gpt-first", &[("gpt", "x"), ("human", "y")]),
            line(
                "twice-human",
                &[("human", "a"), ("human", "b"), ("gpt", "c")],
            ),
            line("unknown", &[("human", "a"), ("bing", "b")]),
            line("only-question", &[("human", "a")]),
            line(
                "ok-trailing",
                &[("human", "a"), ("gpt", "b"), ("human", "dangling")],
            ),
        ]
        .join("\n");
        let path = temp_file("roles.jsonl", text.as_bytes());
        let mut it =
            ShareGptSessions::open(&path, prompter(false), ShareGptOptions::default()).unwrap();
        let sessions: Vec<Session> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions[0].turns.len(),
            1,
            "the unanswered last message is dropped"
        );
        let s = it.stats();
        assert_eq!(
            (s.conversations, s.skipped_roles, s.skipped_empty),
            (5, 3, 1)
        );
    }

    #[test]
    fn options_shape_the_sessions() {
        let long = "word ".repeat(300);
        let text = [
            line(
                "a",
                &[
                    ("human", "q1"),
                    ("gpt", &long),
                    ("human", "q2"),
                    ("gpt", "a2"),
                    ("human", "q3"),
                    ("gpt", "a3"),
                ],
            ),
            line(
                "b",
                &[
                    ("human", "q1"),
                    ("gpt", "a1"),
                    ("human", "q2"),
                    ("gpt", "a2"),
                ],
            ),
            line("c", &[("human", &long), ("gpt", "a1")]),
        ]
        .join("\n");
        let path = temp_file("opts.jsonl", text.as_bytes());
        let opts = ShareGptOptions {
            max_turns: Some(2),
            max_output_tokens: 100,
            system_prompt: Some("You are terse.".into()),
            think_time: Nanos::from_secs(2),
            ..ShareGptOptions::default()
        };
        let all: Vec<Session> = ShareGptSessions::open(&path, prompter(true), opts.clone())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].turns.len(), 2);
        assert_eq!(all[0].turns[0].max_tokens, 100, "300-word answer capped");
        assert_eq!(
            all[0].turns[1].max_tokens,
            prompter(true).tokenizer().encode("a2").unwrap().len() as u32
        );
        assert_eq!(all[0].think_time, Nanos::from_secs(2));
        let t1 = &all[0].turns[1];
        assert_eq!(t1.messages[0], ChatMessage::system("You are terse."));
        assert!(t1
            .prompt_text
            .as_deref()
            .unwrap()
            .starts_with("<|im_start|>system\nYou are terse.<|im_end|>\n"));

        // A 200-token prompt cap: session a stops after turn 1 (its turn 2
        // carries the long answer), c is skipped outright.
        let capped = ShareGptOptions {
            max_prompt_tokens: Some(200),
            max_sessions: Some(2),
            ..opts
        };
        let mut it = ShareGptSessions::open(&path, prompter(true), capped).unwrap();
        let got: Vec<Session> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got.iter().map(|s| s.turns.len()).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(got
            .iter()
            .flat_map(|s| &s.turns)
            .all(|t| t.prompt_tokens.len() <= 200));
        assert_eq!(it.stats().truncated, 1);
        assert_eq!(
            it.stats().skipped_too_long,
            0,
            "max_sessions stopped before c"
        );
    }

    #[test]
    fn flat_rendering_without_a_template() {
        let path = temp_file(
            "flat.jsonl",
            line(
                "f",
                &[
                    ("human", "Hi"),
                    ("gpt", "Yo"),
                    ("human", "Bye"),
                    ("gpt", "Ok"),
                ],
            )
            .as_bytes(),
        );
        let s = ShareGptSessions::open(&path, prompter(false), ShareGptOptions::default())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            s.turns[1].prompt_text.as_deref(),
            Some("User: Hi\n\nAssistant: Yo\n\nUser: Bye\n\nAssistant:")
        );
        assert!(s.turns[1]
            .prompt_tokens
            .starts_with(&s.turns[0].prompt_tokens));
    }

    /// The shipped sample is the head of the shared file (provenance check).
    #[test]
    fn shipped_sample_is_the_head_of_the_shared_file() {
        use std::io::BufRead;
        let Some(shared) = crate::testutil::shared_dir() else {
            eprintln!("skipped: no shared/ next to the repository");
            return;
        };
        let lines = |p: std::path::PathBuf, n: usize| -> Vec<String> {
            crate::io::open(&p)
                .unwrap()
                .lines()
                .take(n)
                .map(Result::unwrap)
                .collect()
        };
        let sample = lines(
            datasets_dir().join("sharegpt/sharegpt_sample.jsonl.gz"),
            usize::MAX,
        );
        assert_eq!(sample.len(), 400);
        let full = lines(
            shared.join("datasets/sharegpt/sharegpt_v3_multiturn_clean.jsonl.gz"),
            400,
        );
        assert!(sample == full);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let path = datasets_dir().join("sharegpt/sample_2_conversations_truncated.json");
        let zero = ShareGptOptions {
            max_output_tokens: 0,
            ..ShareGptOptions::default()
        };
        let err = ShareGptSessions::open(&path, prompter(false), zero).unwrap_err();
        assert!(matches!(
            err,
            WorkloadError::InvalidSetting {
                setting: "max_output_tokens",
                ..
            }
        ));
    }
}
