//! [`WorkloadSpec`]: a workload as written in a config file, and
//! [`build_workload`], which turns a spec plus an [`ArrivalSpec`] into a
//! stream of sessions.
//!
//! Every field has a default, and the default paths point at the samples
//! shipped in the repository's `datasets/` (see [`datasets_dir`]), so
//! `{kind = "sharegpt"}` alone is a complete workload. Unknown fields are
//! rejected, so a typo fails loudly instead of silently using a default.

use crate::arrival::{ArrivalSpec, WithArrivals};
use crate::error::WorkloadError;
use crate::prompt::Prompter;
use crate::rag::{PassageOrder, RagCorpus, RagOptions, RagSessions, DEFAULT_RAG_SYSTEM_PROMPT};
use crate::request::Session;
use crate::rng::stream;
use crate::sharegpt::{ShareGptOptions, ShareGptSessions};
use crate::synthetic::{AgentOptions, RandomOptions, SharedPrefixOptions};
use crate::trace::{
    AzureOptions, AzureSessions, MooncakeOptions, MooncakeSessions, MOONCAKE_BLOCK_TOKENS,
};
use kvroute_core::{mix64, Nanos};
use kvroute_tokenize::{ChatTemplate, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The stream of sessions a workload produces.
pub type SessionIter = Box<dyn Iterator<Item = Result<Session, WorkloadError>> + Send>;

/// The repository's `datasets/` directory: `$KVROUTE_DATASETS` when set,
/// else the directory next to this crate's sources at build time.
pub fn datasets_dir() -> PathBuf {
    match std::env::var_os("KVROUTE_DATASETS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"),
    }
}

/// The shipped Qwen3 tokenizer (`datasets/tokenizers/qwen3/tokenizer.json.gz`).
pub fn embedded_qwen3_tokenizer() -> Result<Tokenizer, WorkloadError> {
    text_tools_tokenizer(None)
}

/// The shipped Qwen3 chat template (`datasets/tokenizers/qwen3/tokenizer_config.json`).
pub fn embedded_qwen3_template() -> Result<ChatTemplate, WorkloadError> {
    ChatTemplate::from_tokenizer_config(
        datasets_dir().join("tokenizers/qwen3/tokenizer_config.json"),
    )
}

/// The tokenizer (with its [piece cache](crate::SegmentCache) on) and chat
/// template in the given files, the shipped Qwen3 ones for those not given:
/// what a binary's `--tokenizer` / `--chat-template` flags load.
pub fn load_text_tools(
    tokenizer: Option<&Path>,
    chat_template: Option<&Path>,
) -> Result<(Tokenizer, ChatTemplate), WorkloadError> {
    let template = match chat_template {
        Some(p) => ChatTemplate::from_tokenizer_config(p)?,
        None => embedded_qwen3_template()?,
    };
    Ok((text_tools_tokenizer(tokenizer)?, template))
}

fn text_tools_tokenizer(path: Option<&Path>) -> Result<Tokenizer, WorkloadError> {
    let shipped;
    let path = match path {
        Some(p) => p,
        None => {
            shipped = datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz");
            &shipped
        }
    };
    Tokenizer::from_file(path).map(|t| t.with_segment_cache(crate::DEFAULT_SEGMENT_CACHE_TOKENS))
}

/// A workload, tagged by `kind`.
///
/// ```
/// use kvroute_workload::WorkloadSpec;
///
/// let spec: WorkloadSpec = serde_json::from_str(r#"{"kind": "rag", "zipf_s": 1.2, "num_requests": 50}"#)?;
/// let WorkloadSpec::Rag(rag) = spec else { unreachable!() };
/// assert_eq!((rag.zipf_s, rag.num_requests, rag.passages_per_request), (1.2, 50, 5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadSpec {
    /// Multi-turn ShareGPT replay.
    Sharegpt(ShareGptSpec),
    /// Synthetic RAG over a passage corpus.
    Rag(RagSpec),
    /// A Mooncake block-hash trace.
    Mooncake(MooncakeSpec),
    /// An Azure LLM inference CSV trace.
    Azure(AzureSpec),
    /// SGLang's `generated-shared-prefix`: groups of requests sharing a
    /// system prompt.
    #[serde(alias = "gsp", alias = "generated-shared-prefix")]
    GeneratedSharedPrefix(SharedPrefixOptions),
    /// `vllm bench serve`'s `random`: lengths around a mean, optional shared prefix.
    Random(RandomOptions),
    /// Long multi-turn agent sessions after a shared tool preamble.
    Agent(AgentOptions),
}

impl Default for WorkloadSpec {
    /// ShareGPT replay of the shipped sample with default options.
    fn default() -> Self {
        WorkloadSpec::Sharegpt(ShareGptSpec::default())
    }
}

/// `kind = "sharegpt"`: see [`ShareGptOptions`] for the meaning of each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShareGptSpec {
    /// JSONL (optionally gzipped) or JSON array. Default: the shipped sample.
    pub path: PathBuf,
    /// Stop after this many sessions.
    pub max_sessions: Option<usize>,
    /// Keep at most this many turns per conversation.
    pub max_turns: Option<usize>,
    /// Cap on `max_tokens`. Default 512.
    pub max_output_tokens: u32,
    /// End a session before a prompt longer than this. Default 3,584.
    pub max_prompt_tokens: Option<usize>,
    /// System message put before every conversation.
    pub system_prompt: Option<String>,
    /// Seconds between an answer and the next turn. Default 0.
    pub think_time_s: f64,
}

impl Default for ShareGptSpec {
    fn default() -> Self {
        let o = ShareGptOptions::default();
        ShareGptSpec {
            path: datasets_dir().join("sharegpt/sharegpt_sample.jsonl.gz"),
            max_sessions: o.max_sessions,
            max_turns: o.max_turns,
            max_output_tokens: o.max_output_tokens,
            max_prompt_tokens: o.max_prompt_tokens,
            system_prompt: o.system_prompt,
            think_time_s: 0.0,
        }
    }
}

impl ShareGptSpec {
    /// The loader options this spec describes.
    pub fn options(&self) -> Result<ShareGptOptions, WorkloadError> {
        if !(self.think_time_s >= 0.0 && self.think_time_s.is_finite()) {
            return Err(WorkloadError::setting(
                "think_time_s",
                format!("must be ≥ 0, got {}", self.think_time_s),
            ));
        }
        Ok(ShareGptOptions {
            max_sessions: self.max_sessions,
            max_turns: self.max_turns,
            max_output_tokens: self.max_output_tokens,
            max_prompt_tokens: self.max_prompt_tokens,
            system_prompt: self.system_prompt.clone(),
            think_time: Nanos::from_secs_f64(self.think_time_s),
        })
    }
}

/// `kind = "rag"`: see [`RagOptions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagSpec {
    /// RAG corpus: a JSON array or JSON Lines of questions with their
    /// passages, FiD/CacheBlend `ctxs`, MuSiQue `paragraphs`, or HotpotQA /
    /// 2WikiMultihopQA `context` (see [`RagCorpus::load`]). Default: the
    /// shipped sample.
    pub path: PathBuf,
    /// Number of requests. Default 1,000.
    pub num_requests: usize,
    /// Passages per request. Default 5.
    pub passages_per_request: usize,
    /// Zipf exponent of passage popularity (0 = uniform). Default 1.0.
    pub zipf_s: f64,
    /// Output tokens per request. Default 64.
    pub max_tokens: u32,
    /// Shared system prompt. Default [`DEFAULT_RAG_SYSTEM_PROMPT`].
    pub system_prompt: String,
    /// Passage order within a prompt. Default `popularity`.
    pub order: PassageOrder,
}

impl Default for RagSpec {
    fn default() -> Self {
        let o = RagOptions::default();
        RagSpec {
            path: datasets_dir().join("rag/musique_sample.json"),
            num_requests: o.num_requests,
            passages_per_request: o.passages_per_request,
            zipf_s: o.zipf_s,
            max_tokens: o.max_tokens,
            system_prompt: DEFAULT_RAG_SYSTEM_PROMPT.to_owned(),
            order: o.order,
        }
    }
}

impl RagSpec {
    /// The generator options this spec describes.
    pub fn options(&self) -> RagOptions {
        RagOptions {
            num_requests: self.num_requests,
            passages_per_request: self.passages_per_request,
            zipf_s: self.zipf_s,
            max_tokens: self.max_tokens,
            system_prompt: self.system_prompt.clone(),
            order: self.order,
        }
    }
}

/// `kind = "mooncake"`: see [`MooncakeOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MooncakeSpec {
    /// Mooncake JSONL trace. Default: the shipped sample.
    pub path: PathBuf,
    /// Tokens per hash block. Default 512.
    pub block_tokens: usize,
    /// Synthetic ids are drawn below this. Default: the tokenizer's base
    /// vocabulary (no special tokens).
    pub vocab_size: Option<u32>,
    /// Stop after this many requests.
    pub max_requests: Option<usize>,
}

impl Default for MooncakeSpec {
    fn default() -> Self {
        MooncakeSpec {
            path: datasets_dir().join("mooncake/trace_sample.jsonl"),
            block_tokens: MOONCAKE_BLOCK_TOKENS,
            vocab_size: None,
            max_requests: None,
        }
    }
}

/// `kind = "azure"`: see [`AzureOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureSpec {
    /// Azure CSV trace. Default: the shipped sample.
    pub path: PathBuf,
    /// Synthetic ids are drawn below this. Default: the tokenizer's base vocabulary.
    pub vocab_size: Option<u32>,
    /// Stop after this many requests.
    pub max_requests: Option<usize>,
}

impl Default for AzureSpec {
    fn default() -> Self {
        AzureSpec {
            path: datasets_dir().join("azure/code_sample.csv"),
            vocab_size: None,
            max_requests: None,
        }
    }
}

impl WorkloadSpec {
    /// The dataset file this workload reads (`None` for generated ones).
    pub fn dataset(&self) -> Option<&Path> {
        match self {
            WorkloadSpec::Sharegpt(s) => Some(&s.path),
            WorkloadSpec::Rag(s) => Some(&s.path),
            WorkloadSpec::Mooncake(s) => Some(&s.path),
            WorkloadSpec::Azure(s) => Some(&s.path),
            WorkloadSpec::GeneratedSharedPrefix(_)
            | WorkloadSpec::Random(_)
            | WorkloadSpec::Agent(_) => None,
        }
    }

    /// What to call it in messages: its dataset, or its kind.
    pub fn label(&self) -> String {
        match (self.dataset(), self) {
            (Some(p), _) => p.display().to_string(),
            (None, WorkloadSpec::GeneratedSharedPrefix(_)) => "generated_shared_prefix".into(),
            (None, WorkloadSpec::Random(_)) => "random".into(),
            (None, _) => "agent".into(),
        }
    }

    /// Resolve a relative dataset path against `base` (typically the
    /// directory of the config file it was read from).
    pub fn with_base_dir(mut self, base: &Path) -> WorkloadSpec {
        let path = match &mut self {
            WorkloadSpec::Sharegpt(s) => &mut s.path,
            WorkloadSpec::Rag(s) => &mut s.path,
            WorkloadSpec::Mooncake(s) => &mut s.path,
            WorkloadSpec::Azure(s) => &mut s.path,
            WorkloadSpec::GeneratedSharedPrefix(_)
            | WorkloadSpec::Random(_)
            | WorkloadSpec::Agent(_) => return self,
        };
        if path.is_relative() {
            *path = base.join(&*path);
        }
        self
    }

    /// Shorthand for [`build_workload`].
    pub fn build(
        &self,
        arrival: &ArrivalSpec,
        tokenizer: &Tokenizer,
        template: Option<&ChatTemplate>,
        seed: u64,
    ) -> Result<SessionIter, WorkloadError> {
        build_workload(self, arrival, tokenizer, template, seed)
    }
}

/// The sessions of `spec`, with arrivals assigned by `arrival`.
///
/// `tokenizer` and `template` render and tokenize text workloads (ShareGPT,
/// RAG; without a template they use [`render_flat`](crate::render_flat)); for
/// traces the tokenizer only bounds the synthetic ids (its base vocabulary,
/// unless the spec sets `vocab_size`). `seed` drives every random choice (RAG
/// draws, trace token contents, arrival gaps), each from its own stream, so
/// the same arguments always give the same sessions.
pub fn build_workload(
    spec: &WorkloadSpec,
    arrival: &ArrivalSpec,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    seed: u64,
) -> Result<SessionIter, WorkloadError> {
    let prompter = || Prompter::new(tokenizer.clone(), template.cloned());
    let vocab = |v: Option<u32>| {
        v.unwrap_or_else(|| u32::try_from(tokenizer.base_vocab_size()).unwrap_or(u32::MAX))
    };
    let sub_seed = |s: u64| mix64(seed ^ mix64(s));
    let arrival_seed = crate::arrival::workload_arrival_seed(seed);
    Ok(match spec {
        WorkloadSpec::Sharegpt(s) => {
            let inner = ShareGptSessions::open(&s.path, prompter(), s.options()?)?;
            Box::new(WithArrivals::new(inner, arrival, arrival_seed)?)
        }
        WorkloadSpec::Rag(s) => {
            let corpus = Arc::new(RagCorpus::load(&s.path)?);
            let inner = RagSessions::new(corpus, prompter(), s.options(), sub_seed(stream::RAG))?;
            Box::new(WithArrivals::new(inner, arrival, arrival_seed)?)
        }
        WorkloadSpec::Mooncake(s) => {
            let options = MooncakeOptions {
                block_tokens: s.block_tokens,
                vocab_size: vocab(s.vocab_size),
                seed: sub_seed(stream::MOONCAKE),
                max_requests: s.max_requests,
            };
            let inner = MooncakeSessions::open(&s.path, options)?;
            Box::new(WithArrivals::new(inner, arrival, arrival_seed)?)
        }
        WorkloadSpec::Azure(s) => {
            let options = AzureOptions {
                vocab_size: vocab(s.vocab_size),
                seed: sub_seed(stream::AZURE),
                max_requests: s.max_requests,
            };
            let inner = AzureSessions::open(&s.path, options)?;
            Box::new(WithArrivals::new(inner, arrival, arrival_seed)?)
        }
        WorkloadSpec::GeneratedSharedPrefix(o) => {
            let sessions = o.sessions(sub_seed(stream::SYNTHETIC))?;
            Box::new(WithArrivals::new(
                sessions.into_iter().map(Ok),
                arrival,
                arrival_seed,
            )?)
        }
        WorkloadSpec::Random(o) => {
            let sessions = o.sessions(sub_seed(stream::SYNTHETIC))?;
            Box::new(WithArrivals::new(
                sessions.into_iter().map(Ok),
                arrival,
                arrival_seed,
            )?)
        }
        WorkloadSpec::Agent(o) => {
            let sessions = o.sessions(sub_seed(stream::SYNTHETIC))?;
            Box::new(WithArrivals::new(
                sessions.into_iter().map(Ok),
                arrival,
                arrival_seed,
            )?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{qwen3, qwen3_template};

    fn sessions(spec: &WorkloadSpec, arrival: &ArrivalSpec, seed: u64) -> Vec<Session> {
        build_workload(spec, arrival, qwen3(), Some(qwen3_template()), seed)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_kind_builds_from_defaults() {
        let cases = [
            (
                r#"{"kind": "sharegpt", "max_sessions": 3, "think_time_s": 1.5}"#,
                3,
            ),
            (
                r#"{"kind": "rag", "num_requests": 4, "passages_per_request": 2}"#,
                4,
            ),
            (r#"{"kind": "mooncake", "max_requests": 5}"#, 5),
            (r#"{"kind": "azure", "max_requests": 6}"#, 6),
        ];
        for (json, n) in cases {
            let spec: WorkloadSpec = serde_json::from_str(json).unwrap();
            let poisson = ArrivalSpec::Poisson { rate: 2.0 };
            let got = sessions(&spec, &poisson, 1);
            assert_eq!(got.len(), n, "{json}");
            assert_eq!(got[0].arrival, Nanos::ZERO);
            assert!(
                got.windows(2).all(|w| w[0].arrival < w[1].arrival),
                "{json}"
            );
            assert_eq!(got, sessions(&spec, &poisson, 1), "deterministic: {json}");
            assert!(got
                .iter()
                .all(|s| !s.turns.is_empty() && s.turns.iter().all(|t| t.max_tokens >= 1)));
        }
        let spec: WorkloadSpec = serde_json::from_str(cases[0].0).unwrap();
        assert_eq!(
            sessions(&spec, &ArrivalSpec::default(), 0)[0].think_time,
            Nanos(1_500_000_000)
        );
    }

    #[test]
    fn retimed_through_for_workload_equals_built_with_the_arrivals() {
        let spec: WorkloadSpec = serde_json::from_str(
            r#"{"kind": "rag", "num_requests": 6, "passages_per_request": 2}"#,
        )
        .unwrap();
        for arrival in [
            ArrivalSpec::Poisson { rate: 3.0 },
            ArrivalSpec::Gamma { rate: 2.0, cv: 4.0 },
            ArrivalSpec::Trace { time_scale: 0.5 },
        ] {
            for seed in [0, 9] {
                let mut retimed = sessions(&spec, &ArrivalSpec::default(), seed);
                let mut a = crate::Arrivals::for_workload(&arrival, seed).unwrap();
                for s in &mut retimed {
                    s.arrival = a.next_arrival(s.arrival);
                }
                assert_eq!(
                    retimed,
                    sessions(&spec, &arrival, seed),
                    "{arrival:?} {seed}"
                );
            }
        }
    }

    #[test]
    fn trace_arrivals_and_vocab_follow_the_tokenizer() {
        let spec = WorkloadSpec::Azure(AzureSpec {
            max_requests: Some(3),
            ..AzureSpec::default()
        });
        let got = sessions(&spec, &ArrivalSpec::Trace { time_scale: 2.0 }, 0);
        assert_eq!(
            got[1].arrival,
            Nanos(104_000_000),
            "52 ms recorded, scaled by 2"
        );
        let spec = WorkloadSpec::Mooncake(MooncakeSpec {
            max_requests: Some(20),
            vocab_size: Some(50),
            ..MooncakeSpec::default()
        });
        let got = sessions(&spec, &ArrivalSpec::default(), 0);
        assert!(got
            .iter()
            .flat_map(|s| &s.turns[0].prompt_tokens)
            .all(|&t| t < 50));
        assert!(
            got.iter()
                .map(|s| s.turns[0].prompt_tokens.iter().max().copied().unwrap_or(0))
                .max()
                > Some(40)
        );
        let spec = WorkloadSpec::Mooncake(MooncakeSpec {
            max_requests: Some(2),
            ..MooncakeSpec::default()
        });
        let max_id = sessions(&spec, &ArrivalSpec::default(), 0)
            .iter()
            .flat_map(|s| s.turns[0].prompt_tokens.clone())
            .max()
            .unwrap();
        assert!(max_id < 151_643 && max_id > 150_000, "{max_id}");
    }

    #[test]
    fn seeds_change_random_workloads_only() {
        let rag = WorkloadSpec::Rag(RagSpec {
            num_requests: 3,
            passages_per_request: 1,
            ..RagSpec::default()
        });
        let a = sessions(&rag, &ArrivalSpec::default(), 1);
        let b = sessions(&rag, &ArrivalSpec::default(), 2);
        assert_ne!(a, b);
        let sg = WorkloadSpec::Sharegpt(ShareGptSpec {
            max_sessions: Some(2),
            ..ShareGptSpec::default()
        });
        assert_eq!(
            sessions(&sg, &ArrivalSpec::default(), 1),
            sessions(&sg, &ArrivalSpec::default(), 2)
        );
    }

    #[test]
    fn config_errors() {
        let typo =
            serde_json::from_str::<WorkloadSpec>(r#"{"kind": "sharegpt", "max_session": 3}"#);
        assert!(typo
            .unwrap_err()
            .to_string()
            .contains("unknown field `max_session`"));
        assert!(serde_json::from_str::<WorkloadSpec>(r#"{"kind": "sharegpt4"}"#).is_err());
        let bad = WorkloadSpec::Sharegpt(ShareGptSpec {
            think_time_s: -1.0,
            ..ShareGptSpec::default()
        });
        assert!(matches!(
            build_workload(&bad, &ArrivalSpec::default(), qwen3(), None, 0).err(),
            Some(WorkloadError::InvalidSetting {
                setting: "think_time_s",
                ..
            })
        ));
        let missing = WorkloadSpec::Azure(AzureSpec {
            path: "no/such.csv".into(),
            ..AzureSpec::default()
        });
        let err = build_workload(&missing, &ArrivalSpec::default(), qwen3(), None, 0)
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("no/such.csv: "), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_a_base() {
        let spec = WorkloadSpec::Rag(RagSpec {
            path: "rag/x.json".into(),
            ..RagSpec::default()
        });
        assert_eq!(
            spec.with_base_dir(Path::new("/data")).dataset(),
            Some(Path::new("/data/rag/x.json"))
        );
        let abs = WorkloadSpec::default();
        assert_eq!(abs.clone().with_base_dir(Path::new("/elsewhere")), abs);
    }

    #[test]
    fn generated_workloads_parse_from_flags_and_build_with_arrivals() {
        let spec = crate::workload_from_flags(
            "gsp:groups=2,prompts_per_group=3,system_tokens=50,question_tokens=5,output_tokens=4",
            None,
        )
        .unwrap();
        assert_eq!(spec.label(), "generated_shared_prefix");
        assert!(spec.dataset().is_none());
        let s = sessions(&spec, &ArrivalSpec::Poisson { rate: 10.0 }, 1);
        assert_eq!(s.len(), 6);
        assert!(s.windows(2).all(|w| w[1].arrival >= w[0].arrival));
        assert!(s.iter().all(|x| x.turns[0].prompt_tokens.len() == 56));
        // --sessions cuts the number of groups, keeping their size.
        let cut = crate::workload_from_flags("generated_shared_prefix", Some(40)).unwrap();
        let WorkloadSpec::GeneratedSharedPrefix(o) = cut else {
            panic!()
        };
        assert_eq!((o.groups, o.prompts_per_group), (3, 16));
        let r =
            crate::workload_from_flags("random:input_tokens=10,output_tokens=3", Some(7)).unwrap();
        assert_eq!(sessions(&r, &ArrivalSpec::default(), 0).len(), 7);
        let a = crate::workload_from_flags("agent:turns=2,preamble_tokens=8", Some(2)).unwrap();
        let a = sessions(&a, &ArrivalSpec::default(), 0);
        assert_eq!((a.len(), a[0].turns.len()), (2, 2));
        let e = crate::workload_from_flags("random:range_ratio=2", None).unwrap();
        assert!(build_workload(&e, &ArrivalSpec::default(), qwen3(), None, 0).is_err());
    }
}
