//! Invariants of arrival processes and synthetic trace prompts.

use kvroute_core::Nanos;
use kvroute_workload::{
    mooncake_block, ArrivalSpec, Arrivals, MooncakeOptions, MooncakeSessions, Session,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

fn temp_file(bytes: &[u8]) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("kvroute-prop-arrival-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.jsonl", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn spec() -> impl Strategy<Value = ArrivalSpec> {
    prop_oneof![
        (0.01f64..1000.0).prop_map(|rate| ArrivalSpec::Poisson { rate }),
        (0.01f64..1000.0, 0.0f64..6.0).prop_map(|(rate, cv)| ArrivalSpec::Gamma { rate, cv }),
    ]
}

proptest! {
    #[test]
    fn generated_arrivals_start_at_zero_and_never_go_back(spec in spec(), seed: u64) {
        let mut a = Arrivals::new(&spec, seed).unwrap();
        let times: Vec<Nanos> = (0..200).map(|_| a.next_arrival(Nanos::from_secs(99))).collect();
        prop_assert_eq!(times[0], Nanos::ZERO);
        prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let mut b = Arrivals::new(&spec, seed).unwrap();
        prop_assert!(times.iter().all(|&t| b.next_arrival(Nanos::ZERO) == t), "seeded");
    }

    #[test]
    fn trace_arrivals_are_scaled_recorded_times(scale in 0.0f64..10.0, recorded in proptest::collection::vec(0u64..10_000_000_000, 1..50)) {
        let mut a = Arrivals::new(&ArrivalSpec::Trace { time_scale: scale }, 0).unwrap();
        for r in recorded {
            let got = a.next_arrival(Nanos(r)).0 as f64;
            prop_assert!((got - r as f64 * scale).abs() <= 1e-6 * r as f64 * scale + 2.0);
        }
    }

    #[test]
    fn mooncake_blocks_are_prefix_stable_and_in_vocab(id: u64, seed: u64, vocab in 1u32..200_000, n in 0usize..600, m in 0usize..600) {
        let (n, m) = (n.min(m), n.max(m));
        let (mut short, mut long) = (Vec::new(), Vec::new());
        mooncake_block(id, n, seed, vocab, &mut short);
        mooncake_block(id, m, seed, vocab, &mut long);
        prop_assert_eq!(&long[..n], &short[..]);
        prop_assert!(long.iter().all(|&t| t < vocab));
    }

    /// Any trace whose `input_length` matches its `hash_ids`: prompts have
    /// exactly `input_length` tokens, and two full blocks are equal exactly
    /// when their hash ids are.
    #[test]
    fn mooncake_prompts_follow_hash_ids(
        reqs in proptest::collection::vec((proptest::collection::vec(0u64..12, 1..6), 0usize..64, 0u64..5), 1..12),
        seed: u64,
    ) {
        let block = 64;
        let mut text = String::new();
        let mut ts = 0;
        for (ids, cut, out) in &reqs {
            let input = ids.len() * block - cut.min(&(block - 1));
            ts += 7;
            text.push_str(&format!(
                "{{\"timestamp\": {ts}, \"input_length\": {input}, \"output_length\": {out}, \"hash_ids\": {ids:?}}}\n"
            ));
        }
        let opts = MooncakeOptions { block_tokens: block, vocab_size: 1000, seed, max_requests: None };
        let sessions: Vec<Session> = MooncakeSessions::open(temp_file(text.as_bytes()), opts)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(sessions.len(), reqs.len());
        let mut id_of: HashMap<&[u32], u64> = HashMap::new();
        let mut block_of: HashMap<u64, &[u32]> = HashMap::new();
        for (s, (ids, cut, out)) in sessions.iter().zip(&reqs) {
            let t = &s.turns[0];
            prop_assert_eq!(t.prompt_tokens.len(), ids.len() * block - cut.min(&(block - 1)));
            prop_assert_eq!(u64::from(t.max_tokens), (*out).max(1));
            for (h, chunk) in ids.iter().zip(t.prompt_tokens.chunks(block)) {
                if chunk.len() == block {
                    prop_assert_eq!(*id_of.entry(chunk).or_insert(*h), *h, "equal blocks come from equal ids");
                }
                let prev = *block_of.entry(*h).or_insert(chunk);
                let n = prev.len().min(chunk.len());
                prop_assert_eq!(&prev[..n], &chunk[..n], "equal ids give equal tokens");
            }
        }
    }
}
