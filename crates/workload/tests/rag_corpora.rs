//! RAG corpora in the layouts of the common multi-hop QA datasets, loaded and
//! replayed through a `--workload rag:path=….json` flag as the binaries take
//! it. The fixtures under `tests/fixtures/` are two questions each in the
//! released shapes of HotpotQA (distractor setting) and 2WikiMultihopQA, with
//! shortened text, and a SQuAD-shaped file that is not a RAG corpus.

use kvroute_workload::{
    embedded_qwen3_template, embedded_qwen3_tokenizer, is_file_spec, workload_from_flags,
    ArrivalSpec, RagCorpus, Session, WorkloadSpec,
};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn hotpotqa_corpus_loads() {
    let c = RagCorpus::load(fixture("hotpotqa_sample.json")).unwrap();
    assert_eq!(
        c.questions(),
        [
            "Were Scott Derrickson and Ed Wood of the same nationality?",
            "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?",
        ]
    );
    // Six paragraphs, "Ed Wood" in both questions' distractors: five distinct.
    assert_eq!(c.passages().len(), 5);
    assert_eq!(
        c.passages()[1],
        "Scott Derrickson\nScott Derrickson (born July 16, 1966) is an American director, \
         screenwriter and producer. He lives in Los Angeles, California."
    );
}

#[test]
fn two_wiki_multihop_corpus_loads() {
    let c = RagCorpus::load(fixture("2wikimultihopqa_sample.json")).unwrap();
    assert_eq!(c.questions().len(), 2);
    assert_eq!(c.passages().len(), 4);
    // 2WikiMultihopQA's sentences carry no leading space: one is put between.
    assert_eq!(
        c.passages()[2],
        "Blind Shaft\nBlind Shaft is a 2003 film about a pair of brutal con artists. \
         It was directed by Li Yang."
    );
}

#[test]
fn a_corpus_in_no_accepted_layout_lists_the_layouts() {
    let err = RagCorpus::load(fixture("squad_like.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("squad_like.json:1: not a RAG corpus: the file is one JSON object (keys: data, version)"),
        "{err}"
    );
    for name in [
        "ctxs (FiD, CacheBlend",
        "MuSiQue: {\"question\"",
        "HotpotQA, 2WikiMultihopQA: {\"question\": \"…\", \"context\": [[",
        "from Hugging Face datasets: {\"question\"",
    ] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn rag_flag_with_a_json_corpus_replays_it() {
    let (tok, tpl) = (
        embedded_qwen3_tokenizer().unwrap(),
        embedded_qwen3_template().unwrap(),
    );
    for name in ["hotpotqa_sample.json", "2wikimultihopqa_sample.json"] {
        let path = fixture(name);
        let flag = format!("rag:path={},passages_per_request=2", path.display());
        assert!(!is_file_spec(&flag), "{flag}");
        let spec = workload_from_flags(&flag, Some(3)).unwrap();
        let WorkloadSpec::Rag(r) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!((r.path.as_path(), r.num_requests), (path.as_path(), 3));
        let sessions: Vec<Session> = spec
            .build(&ArrivalSpec::Poisson { rate: 1.0 }, &tok, Some(&tpl), 4)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sessions.len(), 3, "{name}");
        let user = &sessions[0].turns[0].messages[1].content;
        assert!(user.contains("\n\nQuestion: "), "{user}");
    }
}
