//! The studies' workloads and regimes: the field's prefix-heavy traffic
//! (SGLang's generated shared prefix, long agent sessions, the Mooncake
//! trace at its real lengths, RAG over a Zipf-popular corpus in a stable
//! order), the no-sharing control (`vllm bench serve`'s random) and
//! multi-turn ShareGPT — each built from the one-line spec loadgen and
//! `sim run --workload` accept, so any row can be replayed by hand.

use crate::regime::Regime;
use crate::{StudyError, Workload};
use kvroute_sim::Profile;
use kvroute_workload::{load_text_tools, parse_spec, ArrivalSpec, WorkloadSpec};
use std::sync::Arc;

/// The context length the GPU regimes are studied with: Llama-3.1's (the
/// same layers as Llama-3 with RoPE scaling), so the long-context workloads
/// run whole rather than being cut at Llama-3's 8,192 tokens.
pub const LONG_CONTEXT: u32 = 131_072;

/// A workload of the studies: its name, its one-line spec, whether sessions
/// have several turns.
#[derive(Debug, Clone)]
pub struct WorkloadDef {
    /// Short name used in tables (`gsp`, `agent`…).
    pub name: &'static str,
    /// The spec (`--workload` syntax).
    pub spec: String,
    /// Tenants replaying it at once (token ids shifted per copy, so copies
    /// share nothing; see [`crate::sims::replica`]): a small sample made
    /// into enough independent sessions to load a large cluster.
    pub copies: usize,
    /// What it stands for, for the document.
    pub about: &'static str,
}

/// The workloads of a full (or `--quick`) study, for GPU-sized engines.
pub fn gpu_workloads(quick: bool) -> Vec<WorkloadDef> {
    let q = |full: usize, quick_n: usize| if quick { quick_n } else { full };
    vec![
        WorkloadDef {
            name: "gsp",
            spec: format!(
                "gsp:groups={},prompts_per_group=8,system_tokens=8192,question_tokens=256,output_tokens=128",
                q(128, 96)
            ),
            copies: 1,
            about: "SGLang's generated-shared-prefix: groups of 8 questions after a shared 8k-token system prompt; the system prompts together exceed one instance's KV cache",
        },
        WorkloadDef {
            name: "agent",
            spec: format!(
                "agent:sessions={},preamble_tokens=4096,turns=12,user_tokens=1024,output_tokens=256,think_time_s=1",
                q(300, 40)
            ),
            copies: 1,
            about: "agent sessions: a shared 4k-token tool preamble, 12 turns of ~1k-token tool results, contexts growing to ~20k tokens",
        },
        WorkloadDef {
            name: "mooncake",
            spec: format!("mooncake:max_requests={}", q(1000, 400)),
            copies: 1,
            about: "the shipped Mooncake trace sample at its real lengths (hash ids → token blocks of 512; mean prompt ~9k tokens, up to 128k)",
        },
        WorkloadDef {
            name: "rag",
            spec: format!(
                "rag:num_requests={},passages_per_request=5,zipf_s=1.0,max_tokens=64,order=popularity",
                q(1500, 600)
            ),
            copies: 1,
            about: "RAG over the MuSiQue sample, Zipf(1.0)-popular passages in popularity order (a stable order, so reuse exists)",
        },
        WorkloadDef {
            name: "sharegpt",
            spec: format!(
                "sharegpt:max_sessions={},max_output_tokens=256,max_prompt_tokens=16384,think_time_s=1",
                q(400, 400)
            ),
            copies: q(5, 2),
            about: "multi-turn ShareGPT conversations (the shipped sample of 400, replayed by independent tenants), each turn resending the whole history",
        },
        WorkloadDef {
            name: "random",
            spec: format!(
                "random:num_requests={},input_tokens=1024,output_tokens=128,range_ratio=0.5",
                q(1000, 400)
            ),
            copies: 1,
            about: "vLLM's random dataset: no prefix shared beyond chance (the control: routing by cache cannot help)",
        },
    ]
    .into_iter()
    .filter(|w| !quick || matches!(w.name, "gsp" | "rag" | "sharegpt"))
    .collect()
}

/// The workloads the seed's setup (two instances on one 16 GB GPU, 4k
/// context) can hold: the same kinds, sized to its context.
pub fn seed_workloads(quick: bool) -> Vec<WorkloadDef> {
    let q = |full: usize, quick_n: usize| if quick { quick_n } else { full };
    vec![
        WorkloadDef {
            name: "gsp",
            spec: format!(
                "gsp:groups={},prompts_per_group=8,system_tokens=2048,question_tokens=128,output_tokens=128",
                q(64, 32)
            ),
            copies: 1,
            about: "generated-shared-prefix sized for a 4k context: 2k-token system prompts",
        },
        WorkloadDef {
            name: "rag",
            spec: format!(
                "rag:num_requests={},passages_per_request=5,zipf_s=1.0,max_tokens=64,order=popularity",
                q(1500, 600)
            ),
            copies: 1,
            about: "as above",
        },
        WorkloadDef {
            name: "sharegpt",
            spec: format!(
                "sharegpt:max_sessions={},max_output_tokens=256,max_prompt_tokens=3584,think_time_s=1",
                q(400, 160)
            ),
            copies: 1,
            about: "multi-turn ShareGPT, conversations ended before a prompt longer than 3,584 tokens",
        },
    ]
    .into_iter()
    .filter(|w| !quick || w.name != "rag")
    .collect()
}

/// Build a workload from its definition (seeded).
pub fn build(def: &WorkloadDef, seed: u64) -> Result<Workload, StudyError> {
    let w = build_spec(def.name, &def.spec, seed)?;
    if def.copies <= 1 {
        return Ok(w);
    }
    Ok(Workload {
        spec: format!("{} ×{} copies", w.spec, def.copies),
        sessions: Arc::new(crate::sims::replicate(&w.sessions, def.copies, w.vocab)),
        ..w
    })
}

/// Build the workload of a one-line `spec` (seeded), called `name`.
pub fn build_spec(name: &str, spec_line: &str, seed: u64) -> Result<Workload, StudyError> {
    let (tok, tpl) = load_text_tools(None, None)
        .map_err(|e| StudyError::Config(format!("loading the shipped tokenizer: {e}")))?;
    let spec: WorkloadSpec = parse_spec("workload", spec_line)
        .map_err(|e| StudyError::Config(format!("workload {name}: {e}")))?;
    let sessions = spec
        .build(&ArrivalSpec::default(), &tok, Some(&tpl), seed)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StudyError::Config(format!("building {spec_line}: {e}")))?;
    let multi_turn = sessions.iter().any(|s| s.turns.len() > 1);
    Ok(Workload {
        name: name.to_string(),
        spec: spec_line.to_string(),
        multi_turn,
        sessions: Arc::new(sessions),
        vocab: u32::try_from(tok.base_vocab_size()).unwrap_or(u32::MAX),
    })
}

/// `profile` with Llama-3.1's context length (named `…@128k`), for the
/// long-context workloads; profiles with a longer context are unchanged.
pub fn long_context(profile: &Profile) -> Profile {
    let mut p = profile.clone();
    if p.limits.max_model_len < LONG_CONTEXT {
        p.limits.max_model_len = LONG_CONTEXT;
        p.name = format!("{}@128k", p.name);
    }
    p
}

/// Every (profile, workload) regime of a study: the GPU profiles (with a
/// 128k context) × the GPU workloads at `instances`, then the seed's setup
/// at its two instances × its workloads.
pub fn regimes(
    gpu_profiles: &[Profile],
    seed_profile: Option<&Profile>,
    instances: usize,
    quick: bool,
    seed: u64,
) -> Result<Vec<Arc<Regime>>, StudyError> {
    let mut out = Vec::new();
    let gpu: Vec<Arc<Workload>> = gpu_workloads(quick)
        .iter()
        .map(|d| build(d, seed).map(Arc::new))
        .collect::<Result<_, _>>()?;
    for p in gpu_profiles {
        let p = long_context(p);
        for w in &gpu {
            out.push(Arc::new(Regime::new(&p, w, instances)?));
        }
    }
    if let Some(p) = seed_profile {
        for d in seed_workloads(quick) {
            let w = Arc::new(build(&d, seed)?);
            out.push(Arc::new(Regime::new(p, &w, 2)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_parses() {
        for quick in [false, true] {
            for d in gpu_workloads(quick).iter().chain(&seed_workloads(quick)) {
                let s: Result<WorkloadSpec, _> = parse_spec("workload", &d.spec);
                assert!(s.is_ok(), "{}: {:?}", d.spec, s.err());
            }
        }
    }

    #[test]
    fn long_context_only_raises() {
        let p = Profile::load("llama3-8b-a100").unwrap();
        let l = long_context(&p);
        assert_eq!(l.limits.max_model_len, LONG_CONTEXT);
        assert_eq!(l.name, "llama3-8b-a100@128k");
        assert_eq!(l.latency, p.latency);
        assert_eq!(long_context(&l).name, l.name);
    }
}
