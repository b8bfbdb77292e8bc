//! Tokenizer throughput on the shipped corpora: HF `tokenizers` against the
//! exact fast path of `kvroute-tokenize`, on prompts of 2, 8 and 32 KB cut
//! from chat-rendered ShareGPT conversations and RAG requests, and
//! `encode_prefix` with a 512-token cap (what routing on the first blocks
//! of a long prompt costs).
//!
//! `cargo bench --bench tokenize`; throughput is reported in bytes/s of
//! prompt text.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvroute_tokenize::Tokenizer;
use kvroute_workload::{
    build_workload, datasets_dir, embedded_qwen3_template, ArrivalSpec, WorkloadSpec,
};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 3] = [2 << 10, 8 << 10, 32 << 10];
const PREFIX_CAP: usize = 512;

/// The shipped tokenizer (no piece cache: every byte is tokenized).
fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(datasets_dir().join("tokenizers/qwen3/tokenizer.json.gz"))
        .expect("shipped tokenizer")
}

/// Every rendered prompt of a workload, back to back.
fn corpus(spec: &str) -> String {
    let tok = tokenizer();
    let template = embedded_qwen3_template().expect("shipped template");
    let spec: WorkloadSpec = serde_json::from_str(spec).expect("spec");
    let arrival = ArrivalSpec::Poisson { rate: 1.0 };
    let mut out = String::new();
    for session in build_workload(&spec, &arrival, &tok, Some(&template), 7).expect("workload") {
        let session = session.expect("session");
        // The last turn holds the whole conversation.
        if let Some(text) = session.turns.last().and_then(|t| t.prompt_text.as_deref()) {
            out.push_str(text);
        }
    }
    out
}

/// Up to `count` consecutive prompts of `size` bytes (cut at characters).
fn chunks(corpus: &str, size: usize, count: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < count && at + size <= corpus.len() {
        let mut end = at + size;
        while !corpus.is_char_boundary(end) {
            end += 1;
        }
        out.push(&corpus[at..end]);
        at = end;
    }
    out
}

fn bench_corpus(c: &mut Criterion, name: &str, corpus: &str) {
    let fast = tokenizer();
    let hf = fast.clone().without_fast_path();
    assert!(fast.uses_fast_path(), "{:?}", fast.fast_path_note());
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    g.sample_size(20);
    for size in SIZES {
        let prompts = chunks(corpus, size, (256 << 10) / size);
        assert!(
            !prompts.is_empty(),
            "{name}: corpus shorter than {size} bytes"
        );
        for p in &prompts {
            assert_eq!(fast.encode(p).unwrap(), hf.encode(p).unwrap());
        }
        g.throughput(Throughput::Bytes(size as u64));
        for (label, tok) in [("hf", &hf), ("fast", &fast)] {
            let mut k = 0;
            g.bench_function(BenchmarkId::new(label, format!("{}KB", size >> 10)), |b| {
                b.iter(|| {
                    k += 1;
                    black_box(tok.encode(prompts[k % prompts.len()]).unwrap())
                })
            });
        }
        // Only the first blocks: a 512-token prefix of the same prompts.
        if size == SIZES[2] {
            for (label, tok) in [("hf_prefix512", &hf), ("fast_prefix512", &fast)] {
                let mut k = 0;
                g.bench_function(BenchmarkId::new(label, format!("{}KB", size >> 10)), |b| {
                    b.iter(|| {
                        k += 1;
                        let p = prompts[k % prompts.len()];
                        black_box(tok.encode_prefix(p, true, PREFIX_CAP).unwrap())
                    })
                });
            }
        }
    }
    g.finish();
}

fn bench_tokenize(c: &mut Criterion) {
    let sharegpt = corpus(r#"{"kind": "sharegpt"}"#);
    let rag = corpus(r#"{"kind": "rag", "num_requests": 200}"#);
    bench_corpus(c, "sharegpt", &sharegpt);
    bench_corpus(c, "rag", &rag);
}

criterion_group!(benches, bench_tokenize);
criterion_main!(benches);
