//! The shapes of RAG corpus files that [`RagCorpus::load`](crate::RagCorpus::load)
//! reads: one object per question, in a JSON array or JSON Lines (gzipped or
//! not), each naming its question and its passages in one of these layouts:
//!
//! * `ctxs` — retrieved passages as packaged for FiD and for CacheBlend's
//!   KV-reuse experiments (the shipped `musique_sample.json`):
//!   `{"question": "…", "ctxs": [{"title": "…", "text": "…"}]}`;
//! * `paragraphs` — MuSiQue as released:
//!   `{"question": "…", "paragraphs": [{"title": "…", "paragraph_text": "…"}]}`;
//! * `context` pairs — HotpotQA and 2WikiMultihopQA as released:
//!   `{"question": "…", "context": [["title", ["sentence", "sentence"]]]}`;
//! * `context` columns — the same two as exported from Hugging Face
//!   `datasets`: `{"question": "…", "context": {"title": ["…"], "sentences": [["…"]]}}`.
//!
//! A passage is its title and text, `"{title}\n{text}"` (the text alone when
//! untitled); sentences are joined with a space unless one of them already
//! brings its own (HotpotQA's sentences after the first start with one). A
//! paragraph with no text is skipped. Each element is matched on its own, so
//! a file may mix layouts. An element that fits none is an error naming its
//! line, what is wrong with it, and every accepted layout with an example.

use crate::error::WorkloadError;
use crate::io::{self, JsonRecords};
use serde_json::{Map, Value};
use std::path::Path;

/// The accepted layouts, one line each with an example, for error messages.
pub(crate) const ACCEPTED_FORMATS: &str = "accepted RAG corpus formats \
(a JSON array, or JSON Lines, of one object per question):
  ctxs (FiD, CacheBlend; the shipped sample): {\"question\": \"…\", \"ctxs\": [{\"title\": \"…\", \"text\": \"…\"}]}
  MuSiQue: {\"question\": \"…\", \"paragraphs\": [{\"title\": \"…\", \"paragraph_text\": \"…\"}]}
  HotpotQA, 2WikiMultihopQA: {\"question\": \"…\", \"context\": [[\"title\", [\"sentence\", \"sentence\"]]]}
  HotpotQA, 2WikiMultihopQA from Hugging Face datasets: {\"question\": \"…\", \"context\": {\"title\": [\"…\"], \"sentences\": [[\"sentence\"]]}}";

/// One question of a corpus with its passages, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RagItem {
    /// The question.
    pub question: String,
    /// Its passages (`"{title}\n{text}"`, or the text when untitled).
    pub passages: Vec<String>,
}

/// Every question of the corpus at `path`, with its passages.
pub(crate) fn read_items(path: &Path) -> Result<Vec<RagItem>, WorkloadError> {
    let mut items = Vec::new();
    for record in JsonRecords::open(path)? {
        let (line, bytes) = record?;
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) if items.is_empty() => return Err(first_record_error(path, line, &e)),
            Err(e) => {
                return Err(WorkloadError::parse(
                    path,
                    error_line(line, &e),
                    format!("invalid JSON: {e}"),
                ))
            }
        };
        items.push(item(&value).map_err(|m| not_a_corpus(path, line, &m))?);
    }
    Ok(items)
}

fn not_a_corpus(path: &Path, line: u64, why: &str) -> WorkloadError {
    WorkloadError::parse(
        path,
        line,
        format!("not a RAG corpus: {why}\n{ACCEPTED_FORMATS}"),
    )
}

/// The first record does not parse: say why in terms of the file's shape
/// (a whole-file object such as SQuAD's `{"data": …}` is read as JSON Lines
/// and fails on its first line).
fn first_record_error(path: &Path, line: u64, e: &serde_json::Error) -> WorkloadError {
    let whole = io::read_all(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let why = match whole {
        Some(Value::Object(o)) => format!(
            "the file is one JSON object ({}), not an array or JSON Lines of questions",
            keys(&o)
        ),
        _ => format!("invalid JSON: {e}"),
    };
    not_a_corpus(path, error_line(line, e), &why)
}

/// The file line of a JSON error in a record starting on `line` (the
/// record's own line when it ends early: its end may be past the record).
fn error_line(line: u64, e: &serde_json::Error) -> u64 {
    if e.is_eof() {
        line
    } else {
        line + (e.line() as u64).saturating_sub(1)
    }
}

/// One element: its question and passages, or what keeps it from any layout.
fn item(v: &Value) -> Result<RagItem, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "an element is {}, not an object with `question` and passages",
            kind(v)
        ));
    };
    let question = match o.get("question") {
        Some(Value::String(q)) => q.clone(),
        Some(other) => return Err(format!("`question` is {}, not a string", kind(other))),
        None => return Err(format!("an element has no `question` ({})", keys(o))),
    };
    let passages = if let Some(ctxs) = o.get("ctxs") {
        titled_texts(ctxs, "ctxs", "text")?
    } else if let Some(paragraphs) = o.get("paragraphs") {
        titled_texts(paragraphs, "paragraphs", "paragraph_text")?
    } else if let Some(context) = o.get("context") {
        match context {
            Value::Array(pairs) => context_pairs(pairs)?,
            Value::Object(columns) => context_columns(columns)?,
            other => {
                return Err(format!(
                    "`context` is {}, neither [[title, [sentences]]] nor {{title, sentences}}",
                    kind(other)
                ))
            }
        }
    } else {
        return Err(format!(
            "an element has none of `ctxs`, `paragraphs`, `context` ({})",
            keys(o)
        ));
    };
    Ok(RagItem { question, passages })
}

/// `[{"title": …, "<text_key>": …}]`.
fn titled_texts(v: &Value, field: &str, text_key: &str) -> Result<Vec<String>, String> {
    let Value::Array(list) = v else {
        return Err(format!("`{field}` is {}, not an array", kind(v)));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let Value::Object(o) = p else {
            return Err(format!("`{field}[{i}]` is {}, not an object", kind(p)));
        };
        let text = match o.get(text_key) {
            Some(Value::String(t)) => t,
            Some(other) => {
                return Err(format!(
                    "`{field}[{i}].{text_key}` is {}, not a string",
                    kind(other)
                ))
            }
            None => return Err(format!("`{field}[{i}]` has no `{text_key}` ({})", keys(o))),
        };
        out.extend(passage(
            title(o.get("title"), &format!("{field}[{i}]"))?,
            text,
        ));
    }
    Ok(out)
}

/// HotpotQA's `[[title, [sentence, …]], …]`.
fn context_pairs(pairs: &[Value]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        let at = format!("context[{i}]");
        let (title_v, sentences_v) = match pair.as_array().map(Vec::as_slice) {
            Some([t, s]) => (t, s),
            _ => {
                return Err(format!(
                    "`{at}` is {}, not a [title, [sentences]] pair",
                    kind(pair)
                ))
            }
        };
        let title = title(Some(title_v), &at)?;
        out.extend(passage(
            title,
            &sentences(sentences_v, &format!("{at}[1]"))?,
        ));
    }
    Ok(out)
}

/// Hugging Face's `{"title": [t, …], "sentences": [[sentence, …], …]}`.
fn context_columns(columns: &Map<String, Value>) -> Result<Vec<String>, String> {
    let (Some(Value::Array(titles)), Some(Value::Array(texts))) =
        (columns.get("title"), columns.get("sentences"))
    else {
        return Err(format!(
            "`context` is an object without the arrays `title` and `sentences` ({})",
            keys(columns)
        ));
    };
    if titles.len() != texts.len() {
        return Err(format!(
            "`context` has {} titles but {} sentence lists",
            titles.len(),
            texts.len()
        ));
    }
    let mut out = Vec::with_capacity(titles.len());
    for (i, (t, s)) in titles.iter().zip(texts).enumerate() {
        let title = title(Some(t), &format!("context.title[{i}]"))?;
        out.extend(passage(
            title,
            &sentences(s, &format!("context.sentences[{i}]"))?,
        ));
    }
    Ok(out)
}

/// A title: a string, or absent / null for none.
fn title<'a>(v: Option<&'a Value>, at: &str) -> Result<&'a str, String> {
    match v {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(t)) => Ok(t),
        Some(other) => Err(format!("`{at}` title is {}, not a string", kind(other))),
    }
}

/// A list of sentences joined into one text (a single string is taken as is).
fn sentences(v: &Value, at: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(list) => {
            let mut text = String::new();
            for (j, s) in list.iter().enumerate() {
                let Value::String(s) = s else {
                    return Err(format!("`{at}[{j}]` is {}, not a sentence", kind(s)));
                };
                if !text.is_empty()
                    && !text.ends_with(char::is_whitespace)
                    && !s.starts_with(char::is_whitespace)
                {
                    text.push(' ');
                }
                text.push_str(s);
            }
            Ok(text)
        }
        other => Err(format!(
            "`{at}` is {}, not a list of sentences",
            kind(other)
        )),
    }
}

/// `"{title}\n{text}"`, the text alone when untitled, nothing when empty.
fn passage(title: &str, text: &str) -> Option<String> {
    if text.trim().is_empty() {
        None
    } else if title.is_empty() {
        Some(text.to_owned())
    } else {
        Some(format!("{title}\n{text}"))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `keys: a, b, c` (the first few, sorted whatever the map's order).
fn keys(o: &Map<String, Value>) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.len() > SHOWN {
        names.truncate(SHOWN);
        names.push("…");
    }
    if names.is_empty() {
        "no keys".into()
    } else {
        format!("keys: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_file;

    fn read(name: &str, text: &str) -> Result<Vec<RagItem>, WorkloadError> {
        read_items(&temp_file(name, text.as_bytes()))
    }

    #[test]
    fn ctxs_layout() {
        let items = read(
            "formats-ctxs.json",
            r#"[{"question": "q1", "ctxs": [{"title": "T", "text": "a"}, {"text": "b"},
                {"title": null, "text": "c"}, {"title": "Empty", "text": " "}], "answers": ["x"]}]"#,
        )
        .unwrap();
        assert_eq!(
            items,
            vec![RagItem {
                question: "q1".into(),
                passages: vec!["T\na".into(), "b".into(), "c".into()],
            }]
        );
    }

    #[test]
    fn musique_paragraphs_as_json_lines() {
        let items = read(
            "formats-musique.jsonl",
            concat!(
                r#"{"id": "2hop_1", "question": "q1", "paragraphs": [{"idx": 0, "title": "A", "paragraph_text": "alpha", "is_supporting": true}]}"#,
                "\n",
                r#"{"id": "2hop_2", "question": "q2", "paragraphs": [{"idx": 0, "title": "B", "paragraph_text": "beta"}]}"#,
                "\n"
            ),
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].passages, vec!["B\nbeta".to_string()]);
    }

    #[test]
    fn hotpot_pairs_join_sentences() {
        // HotpotQA's sentences after the first bring their leading space;
        // 2WikiMultihopQA's do not.
        let items = read(
            "formats-hotpot.json",
            r#"[{"_id": "5a8b", "question": "Which magazine was started first?",
                 "context": [["Arthur's Magazine", ["Arthur's Magazine was a periodical.", " It was edited by T.S. Arthur."]],
                             ["First for Women", ["First for Women is a magazine.", "It started in 1989."]],
                             ["No text", []]],
                 "supporting_facts": [["Arthur's Magazine", 0]], "type": "comparison"}]"#,
        )
        .unwrap();
        assert_eq!(
            items[0].passages,
            vec![
                "Arthur's Magazine\nArthur's Magazine was a periodical. It was edited by T.S. Arthur."
                    .to_string(),
                "First for Women\nFirst for Women is a magazine. It started in 1989.".to_string(),
            ]
        );
    }

    #[test]
    fn hugging_face_columns() {
        let items = read(
            "formats-hf.jsonl",
            r#"{"id": "x", "question": "q", "context": {"title": ["A", "B"], "sentences": [["a1", " a2"], ["b1"]]}}"#,
        )
        .unwrap();
        assert_eq!(
            items[0].passages,
            vec!["A\na1 a2".to_string(), "B\nb1".to_string()]
        );
        let err = read(
            "formats-hf-bad.jsonl",
            r#"{"question": "q", "context": {"title": ["A", "B"], "sentences": [["a1"]]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 titles but 1 sentence lists"), "{err}");
    }

    #[test]
    fn unknown_shapes_name_every_accepted_format() {
        let cases = [
            (
                "formats-squad.json",
                "{\"version\": \"v2.0\",\n \"data\": []}",
                "formats-squad.json:1: not a RAG corpus: the file is one JSON object (keys: data, version)",
            ),
            (
                "formats-noq.json",
                "[\n{\"query\": \"q\", \"ctxs\": []}\n]",
                "formats-noq.json:2: not a RAG corpus: an element has no `question` (keys: ctxs, query)",
            ),
            (
                "formats-nopass.json",
                "[{\"question\": \"q\", \"passages\": []}]",
                "not a RAG corpus: an element has none of `ctxs`, `paragraphs`, `context` (keys: passages, question)",
            ),
            (
                "formats-pair.json",
                "[{\"question\": \"q\", \"context\": [[\"t\", [\"s\"], 3]]}]",
                "`context[0]` is an array, not a [title, [sentences]] pair",
            ),
            (
                "formats-ctx.json",
                "[{\"question\": \"q\", \"ctxs\": [{\"title\": \"t\", \"body\": \"b\"}]}]",
                "`ctxs[0]` has no `text` (keys: body, title)",
            ),
            (
                "formats-scalar.json",
                "[\"q\"]",
                "an element is a string, not an object",
            ),
        ];
        for (name, text, want) in cases {
            let err = read(name, text).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            for layout in [
                "\"ctxs\": [{\"title\"",
                "\"paragraphs\": [{\"title\"",
                "\"context\": [[\"title\", [\"sentence\"",
                "\"context\": {\"title\": [",
            ] {
                assert!(err.contains(layout), "{name}: {err}");
            }
        }
    }

    #[test]
    fn invalid_json_after_the_first_element_names_its_line() {
        let err = read(
            "formats-broken.jsonl",
            "{\"question\": \"q\", \"ctxs\": [{\"text\": \"a\"}]}\n{\"question\": \n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("formats-broken.jsonl:2: invalid JSON"),
            "{err}"
        );
    }
}
