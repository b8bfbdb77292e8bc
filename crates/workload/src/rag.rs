//! Synthetic retrieval-augmented generation: [`RagSessions`].
//!
//! The corpus is a JSON array or JSON Lines of questions with their passages,
//! in any of the layouts of the `rag_formats` module: retrieved `ctxs` (FiD,
//! CacheBlend; the shipped `musique_sample.json`: 60 questions, 555 distinct
//! passages), MuSiQue's `paragraphs`, HotpotQA's and 2WikiMultihopQA's
//! `context` (as released or as exported from Hugging Face `datasets`). Every
//! request is one turn:
//!
//! ```text
//! system: <shared system prompt>
//! user:   <passage>\n\n<passage>\n\n … <passage>\n\nQuestion: <question>
//! ```
//!
//! The `k` passages are distinct and drawn from the corpus's distinct passages
//! with Zipf popularity: passage of popularity rank *r* (1-based) is drawn
//! with probability ∝ 1/*r*^`s`. `s = 0` is uniform; the larger `s`, the more
//! often the same few passages come back — and, with
//! [`PassageOrder::Popularity`], the longer the token prefix requests share.
//! Which passage gets which rank is a seeded shuffle, and the question is
//! drawn uniformly, so a workload is a pure function of (corpus, options, seed).

use crate::error::WorkloadError;
use crate::prompt::Prompter;
use crate::rag_formats;
use crate::request::{ChatMessage, Session};
use crate::rng::{stream, WorkloadRng};
use kvroute_core::Nanos;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// The default system prompt of RAG requests.
pub const DEFAULT_RAG_SYSTEM_PROMPT: &str =
    "You are a helpful assistant. Answer the question using only the passages provided. Be concise.";

/// The passages and questions of a RAG corpus, deduplicated.
#[derive(Debug, Clone, PartialEq)]
pub struct RagCorpus {
    passages: Vec<String>,
    questions: Vec<String>,
}

impl RagCorpus {
    /// Load a corpus (optionally gzipped) in one of the accepted layouts:
    /// `{"question", "ctxs": [{"title", "text"}]}` (FiD, CacheBlend),
    /// `{"question", "paragraphs": [{"title", "paragraph_text"}]}` (MuSiQue),
    /// `{"question", "context": [[title, [sentences]]]}` (HotpotQA,
    /// 2WikiMultihopQA) or `{"question", "context": {"title": […],
    /// "sentences": [[…]]}}` (the same from Hugging Face `datasets`), as a JSON
    /// array or JSON Lines. A passage with a title becomes
    /// `"{title}\n{text}"`. Passages are deduplicated by their full text,
    /// keeping first-seen order. A file in none of these layouts is an error
    /// that lists them, with an example of each.
    pub fn load(path: impl AsRef<Path>) -> Result<RagCorpus, WorkloadError> {
        let path = path.as_ref();
        let items = rag_formats::read_items(path)?;
        let mut seen = HashSet::new();
        let mut passages = Vec::new();
        let mut questions = Vec::with_capacity(items.len());
        for item in items {
            questions.push(item.question);
            for text in item.passages {
                if seen.insert(text.clone()) {
                    passages.push(text);
                }
            }
        }
        RagCorpus::new(passages, questions).map_err(|message| WorkloadError::Dataset {
            path: path.to_path_buf(),
            message,
        })
    }

    /// A corpus from its parts (deduplicate beforehand if needed).
    pub fn new(passages: Vec<String>, questions: Vec<String>) -> Result<RagCorpus, String> {
        if passages.is_empty() || questions.is_empty() {
            return Err(format!(
                "a RAG corpus needs passages and questions (got {} and {})",
                passages.len(),
                questions.len()
            ));
        }
        Ok(RagCorpus {
            passages,
            questions,
        })
    }

    /// The distinct passages.
    pub fn passages(&self) -> &[String] {
        &self.passages
    }

    /// The questions.
    pub fn questions(&self) -> &[String] {
        &self.questions
    }
}

/// Order of the passages inside a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassageOrder {
    /// Most popular first, as a retriever ranking by popularity would; popular
    /// passages then form shared prompt prefixes.
    #[default]
    Popularity,
    /// In the order drawn: passages are shared but rarely at the same position.
    Drawn,
}

/// How RAG requests are generated.
#[derive(Debug, Clone, PartialEq)]
pub struct RagOptions {
    /// Number of requests (sessions of one turn). Default 1,000.
    pub num_requests: usize,
    /// Passages per request, distinct within a request. Default 5.
    pub passages_per_request: usize,
    /// Zipf exponent of passage popularity (`0` = uniform). Default 1.0.
    pub zipf_s: f64,
    /// Output tokens per request. Default 64.
    pub max_tokens: u32,
    /// The shared system prompt. Default [`DEFAULT_RAG_SYSTEM_PROMPT`].
    pub system_prompt: String,
    /// Passage order within a prompt.
    pub order: PassageOrder,
}

impl Default for RagOptions {
    fn default() -> Self {
        RagOptions {
            num_requests: 1000,
            passages_per_request: 5,
            zipf_s: 1.0,
            max_tokens: 64,
            system_prompt: DEFAULT_RAG_SYSTEM_PROMPT.to_owned(),
            order: PassageOrder::Popularity,
        }
    }
}

/// One request's choice: indices into [`RagCorpus::passages`] (in prompt
/// order) and into [`RagCorpus::questions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RagDraw {
    /// Passage indices, distinct, in prompt order.
    pub passages: Vec<usize>,
    /// Question index.
    pub question: usize,
}

/// The random part of the RAG generator, without rendering or tokenizing.
#[derive(Debug, Clone)]
pub struct RagSampler {
    zipf: Zipf<f64>,
    /// Popularity rank (0-based) → passage index.
    by_rank: Vec<usize>,
    questions: usize,
    k: usize,
    order: PassageOrder,
    rng: WorkloadRng,
}

impl RagSampler {
    /// A sampler over `corpus` for `options` and `seed`.
    pub fn new(
        corpus: &RagCorpus,
        options: &RagOptions,
        seed: u64,
    ) -> Result<RagSampler, WorkloadError> {
        let n = corpus.passages.len();
        if options.passages_per_request == 0 || options.passages_per_request > n {
            return Err(WorkloadError::setting(
                "passages_per_request",
                format!(
                    "must be in 1..={n} (the corpus's distinct passages), got {}",
                    options.passages_per_request
                ),
            ));
        }
        // Checked before `Zipf::new`, which accepts an infinite exponent.
        if !(options.zipf_s >= 0.0 && options.zipf_s.is_finite()) {
            return Err(WorkloadError::setting(
                "zipf_s",
                format!("must be a finite number ≥ 0, got {}", options.zipf_s),
            ));
        }
        let zipf = Zipf::new(n as f64, options.zipf_s).map_err(|e| {
            WorkloadError::setting("zipf_s", format!("{e} (got {})", options.zipf_s))
        })?;
        let mut rng = WorkloadRng::new(seed, stream::RAG);
        let mut by_rank: Vec<usize> = (0..n).collect();
        by_rank.shuffle(&mut rng);
        Ok(RagSampler {
            zipf,
            by_rank,
            questions: corpus.questions.len(),
            k: options.passages_per_request,
            order: options.order,
            rng,
        })
    }

    /// The passage index of popularity rank `rank` (0 = most popular).
    pub fn passage_of_rank(&self, rank: usize) -> Option<usize> {
        self.by_rank.get(rank).copied()
    }

    /// The next request's passages and question.
    pub fn draw(&mut self) -> RagDraw {
        let n = self.by_rank.len();
        let mut ranks: Vec<usize> = Vec::with_capacity(self.k);
        // Rejection keeps passages distinct; with a very skewed Zipf and k close
        // to n it could take long, so after a bounded number of tries the
        // remaining slots take the most popular unused ranks.
        let mut tries = 0;
        while ranks.len() < self.k && tries < 64 * self.k {
            tries += 1;
            let r = (self.zipf.sample(&mut self.rng) as usize).clamp(1, n) - 1;
            if !ranks.contains(&r) {
                ranks.push(r);
            }
        }
        let mut fill = 0;
        while ranks.len() < self.k {
            if !ranks.contains(&fill) {
                ranks.push(fill);
            }
            fill += 1;
        }
        if self.order == PassageOrder::Popularity {
            ranks.sort_unstable();
        }
        RagDraw {
            passages: ranks.into_iter().map(|r| self.by_rank[r]).collect(),
            question: self.rng.below(self.questions),
        }
    }
}

/// Synthetic RAG requests; an iterator of `Result<Session, WorkloadError>`
/// (one turn each, arrival zero: assign arrivals with
/// [`WithArrivals`](crate::WithArrivals)).
#[derive(Debug, Clone)]
pub struct RagSessions {
    corpus: Arc<RagCorpus>,
    sampler: RagSampler,
    prompter: Prompter,
    options: RagOptions,
    next_id: u64,
}

impl RagSessions {
    /// A generator over `corpus`.
    pub fn new(
        corpus: Arc<RagCorpus>,
        prompter: Prompter,
        options: RagOptions,
        seed: u64,
    ) -> Result<RagSessions, WorkloadError> {
        let sampler = RagSampler::new(&corpus, &options, seed)?;
        Ok(RagSessions {
            corpus,
            sampler,
            prompter,
            options,
            next_id: 0,
        })
    }

    /// The chat messages of a draw.
    pub fn messages(&self, draw: &RagDraw) -> Vec<ChatMessage> {
        let mut user = String::new();
        for &p in &draw.passages {
            user.push_str(&self.corpus.passages[p]);
            user.push_str("\n\n");
        }
        user.push_str("Question: ");
        user.push_str(&self.corpus.questions[draw.question]);
        vec![
            ChatMessage::system(self.options.system_prompt.clone()),
            ChatMessage::user(user),
        ]
    }
}

impl Iterator for RagSessions {
    type Item = Result<Session, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_id >= self.options.num_requests as u64 {
            return None;
        }
        let draw = self.sampler.draw();
        let id = self.next_id;
        self.next_id += 1;
        Some(
            self.prompter
                .turn(self.messages(&draw), self.options.max_tokens)
                .map(|turn| Session::single(id, Nanos::ZERO, turn)),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .options
            .num_requests
            .saturating_sub(self.next_id as usize);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::datasets_dir;
    use crate::testutil::{prompter, temp_file};

    fn corpus() -> Arc<RagCorpus> {
        static C: std::sync::OnceLock<Arc<RagCorpus>> = std::sync::OnceLock::new();
        C.get_or_init(|| {
            Arc::new(RagCorpus::load(datasets_dir().join("rag/musique_sample.json")).unwrap())
        })
        .clone()
    }

    fn opts(s: f64) -> RagOptions {
        RagOptions {
            zipf_s: s,
            ..RagOptions::default()
        }
    }

    #[test]
    fn embedded_corpus_shape() {
        let c = corpus();
        assert_eq!(c.questions().len(), 60);
        assert_eq!(c.passages().len(), 555);
        assert_eq!(
            c.questions()[0],
            "Where was the author of Hannibal and Scipio educated at?"
        );
    }

    /// (fraction of passage uses that repeat an earlier use, mean number of
    /// leading passages shared with some earlier request)
    fn sharing(s: f64, requests: usize) -> (f64, f64) {
        let c = corpus();
        let mut sampler = RagSampler::new(&c, &opts(s), 7).unwrap();
        let draws: Vec<RagDraw> = (0..requests).map(|_| sampler.draw()).collect();
        let mut seen = HashSet::new();
        let mut prefixes: HashSet<&[usize]> = HashSet::new();
        let mut repeats = 0usize;
        let mut prefix_sum = 0usize;
        for d in &draws {
            assert_eq!(d.passages.len(), 5);
            assert_eq!(
                d.passages.iter().collect::<HashSet<_>>().len(),
                5,
                "distinct within a request"
            );
            repeats += d.passages.iter().filter(|&&p| !seen.insert(p)).count();
            prefix_sum += (1..=5)
                .take_while(|&j| prefixes.contains(&d.passages[..j]))
                .count();
            prefixes.extend((1..=5).map(|j| &d.passages[..j]));
        }
        (
            repeats as f64 / (5 * requests) as f64,
            prefix_sum as f64 / requests as f64,
        )
    }

    #[test]
    fn sharing_grows_with_skew() {
        let skews = [0.0, 0.6, 1.0, 1.5];
        let m: Vec<(f64, f64)> = skews.iter().map(|&s| sharing(s, 300)).collect();
        eprintln!("(repeat fraction, mean shared leading passages) for s = {skews:?}: {m:?}");
        for w in m.windows(2) {
            assert!(w[1].0 > w[0].0 && w[1].1 > w[0].1, "{m:?}");
        }
        // Measured (seed 7, 300 requests × 5 passages): repeat fraction
        // 0.66 / 0.69 / 0.77 / 0.89 and shared leading passages
        // 0.46 / 0.86 / 1.67 / 3.0 for s = 0 / 0.6 / 1 / 1.5.
        // Uniform over 555 passages with 1,500 uses: expected distinct
        // ≈ 555·(1 − e^(−1500/555)) ≈ 518, i.e. ≈ 65 % repeats; sorting by rank
        // still lines up the occasional first passage.
        assert!((0.62..0.70).contains(&m[0].0) && m[0].1 < 0.75, "{m:?}");
        // s = 1.5: the top passages are nearly always present, and first.
        assert!(m[3].0 > 0.85 && m[3].1 > 2.5, "{m:?}");
    }

    #[test]
    fn token_prefix_sharing_grows_with_skew() {
        let c = corpus();
        let shared = |s: f64| {
            let options = RagOptions {
                num_requests: 12,
                passages_per_request: 2,
                ..opts(s)
            };
            let sessions: Vec<Session> = RagSessions::new(c.clone(), prompter(true), options, 3)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let toks: Vec<&[u32]> = sessions
                .iter()
                .map(|s| s.turns[0].prompt_tokens.as_slice())
                .collect();
            (1..toks.len())
                .map(|i| {
                    (0..i)
                        .map(|j| {
                            toks[i]
                                .iter()
                                .zip(toks[j])
                                .take_while(|(a, b)| a == b)
                                .count()
                        })
                        .max()
                        .unwrap_or(0)
                })
                .sum::<usize>()
        };
        let (flat, skewed) = (shared(0.0), shared(2.0));
        assert!(
            skewed > 3 * flat,
            "shared prefix tokens: s=0 {flat}, s=2 {skewed}"
        );
    }

    #[test]
    fn deterministic_per_seed_and_well_formed() {
        let c = corpus();
        let options = RagOptions {
            num_requests: 3,
            passages_per_request: 2,
            max_tokens: 17,
            ..RagOptions::default()
        };
        let run = |seed| -> Vec<Session> {
            RagSessions::new(c.clone(), prompter(false), options.clone(), seed)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let (a, b, other) = (run(1), run(1), run(2));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.iter().map(|s| s.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        let t = &a[0].turns[0];
        assert_eq!(t.max_tokens, 17);
        assert_eq!(
            t.messages[0],
            ChatMessage::system(DEFAULT_RAG_SYSTEM_PROMPT)
        );
        let text = t.prompt_text.as_deref().unwrap();
        assert!(text.starts_with(DEFAULT_RAG_SYSTEM_PROMPT) && text.ends_with("Assistant:"));
        assert!(c.questions().iter().any(|q| t.messages[1]
            .content
            .ends_with(&format!("\n\nQuestion: {q}"))));
    }

    #[test]
    fn popularity_order_sorts_by_rank_and_uniform_spreads() {
        let c = corpus();
        let mut s = RagSampler::new(&c, &opts(1.2), 11).unwrap();
        let rank_of = |s: &RagSampler, p: usize| {
            (0..c.passages().len())
                .find(|&r| s.passage_of_rank(r) == Some(p))
                .unwrap()
        };
        for _ in 0..50 {
            let d = s.draw();
            let ranks: Vec<usize> = d.passages.iter().map(|&p| rank_of(&s, p)).collect();
            assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        }
        let mut u = RagSampler::new(&c, &opts(0.0), 11).unwrap();
        let mut counts = vec![0u32; c.passages().len()];
        for _ in 0..2000 {
            for p in u.draw().passages {
                counts[p] += 1;
            }
        }
        // 10,000 uses over 555 passages: mean 18; a uniform draw keeps every
        // passage within a generous band.
        assert!(
            counts.iter().all(|&n| (3..45).contains(&n)),
            "{:?}",
            counts.iter().max()
        );
    }

    #[test]
    fn extreme_skew_with_k_close_to_n_still_fills_distinct() {
        let c = Arc::new(
            RagCorpus::new((0..6).map(|i| format!("p{i}")).collect(), vec!["q".into()]).unwrap(),
        );
        let o = RagOptions {
            zipf_s: 50.0,
            passages_per_request: 6,
            ..RagOptions::default()
        };
        let d = RagSampler::new(&c, &o, 1).unwrap().draw();
        let mut sorted = d.passages.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn bad_inputs_are_reported() {
        let c = corpus();
        let too_many = RagOptions {
            passages_per_request: 556,
            ..RagOptions::default()
        };
        assert!(matches!(
            RagSampler::new(&c, &too_many, 0),
            Err(WorkloadError::InvalidSetting {
                setting: "passages_per_request",
                ..
            })
        ));
        for s in [f64::INFINITY, f64::NAN] {
            assert!(matches!(
                RagSampler::new(&c, &opts(s), 0),
                Err(WorkloadError::InvalidSetting {
                    setting: "zipf_s",
                    ..
                })
            ));
        }
        assert!(matches!(
            RagSampler::new(&c, &opts(-1.0), 0),
            Err(WorkloadError::InvalidSetting {
                setting: "zipf_s",
                ..
            })
        ));
        let bad = temp_file("rag-bad.json", b"[\n{\"question\": \"q\"}\n]");
        let err = RagCorpus::load(&bad).unwrap_err().to_string();
        assert!(err.contains("rag-bad.json:2: not a RAG corpus"), "{err}");
        let empty = temp_file("rag-empty.json", b"[]");
        assert!(matches!(
            RagCorpus::load(&empty),
            Err(WorkloadError::Dataset { .. })
        ));
    }
}
