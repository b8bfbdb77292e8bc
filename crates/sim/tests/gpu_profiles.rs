//! The built-in GPU profiles against their derivation
//! (`scripts/gpu-profiles/derive.py`): a lone request's TTFT and TPOT, run
//! through the simulator's engine, agree with what the script computed and
//! wrote next to the profiles (`profiles/gpu-profiles.json`), so the Rust
//! model and the Python derivation cannot drift apart.

use std::collections::BTreeMap;

use kvroute_core::{HashAlgo, Nanos};
use kvroute_sim::{Engine, EngineRequest, Profile};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    ttft_prompt: u32,
    tpot_prompt: u32,
    tpot_output: u32,
    profiles: BTreeMap<String, Numbers>,
}

#[derive(Deserialize)]
struct Numbers {
    ttft_secs: f64,
    tpot_secs: f64,
}

fn expected() -> Expected {
    serde_json::from_str(include_str!("../profiles/gpu-profiles.json")).unwrap()
}

/// One request alone on a fresh engine: (TTFT, mean time between its
/// tokens), in seconds.
fn lone_request(profile: Profile, prompt: u32, max_tokens: u32) -> (f64, f64) {
    let mut e = Engine::new(profile, HashAlgo::Xxh3);
    let request = EngineRequest {
        id: 1,
        prompt: (0..prompt).collect(),
        max_tokens,
    };
    e.add(Nanos::ZERO, request).unwrap();
    let mut now = Nanos::ZERO;
    let mut done = Vec::new();
    while let Some(end) = e.start_step(now) {
        now = end;
        done.extend(e.finish_step().finished);
    }
    let f = &done[0];
    assert_eq!(f.output_tokens, max_tokens);
    let ttft = f.first_token.saturating_sub(f.arrival).as_secs_f64();
    let between = f.finish.saturating_sub(f.first_token).as_secs_f64()
        / f64::from(max_tokens.saturating_sub(1).max(1));
    (ttft, between)
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got / want - 1.0).abs() < 0.01,
        "{what}: simulator {:.3} ms, derivation {:.3} ms",
        got * 1e3,
        want * 1e3
    );
}

#[test]
fn every_gpu_profile_matches_its_derivation() {
    let x = expected();
    let gpu: Vec<&str> = Profile::builtin_names()
        .into_iter()
        .filter(|n| !Profile::load(n).unwrap().latency.forward.is_empty())
        .collect();
    let derived: Vec<&str> = x.profiles.keys().map(String::as_str).collect();
    let mut sorted = gpu.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, derived, "built-in GPU profiles vs derived ones");
    for name in gpu {
        let want = &x.profiles[name];
        let p = Profile::load(name).unwrap();
        let (ttft, _) = lone_request(p.clone(), x.ttft_prompt, 1);
        assert_close(&format!("{name} TTFT"), ttft, want.ttft_secs);
        let (_, tpot) = lone_request(p, x.tpot_prompt, x.tpot_output);
        assert_close(&format!("{name} TPOT"), tpot, want.tpot_secs);
    }
}

#[test]
fn gpu_profiles_are_slower_where_the_hardware_is() {
    // Sanity of the derivation's ordering: an H100 beats an A100 on the same
    // model, and a 70B model on 4 A100s is slower than an 8B one on one.
    let x = expected();
    let p = |n: &str| &x.profiles[n];
    for (fast, slow) in [
        ("llama3-8b-h100", "llama3-8b-a100"),
        ("llama2-7b-h100", "llama2-7b-a100"),
        ("llama3-8b-a100", "llama3-70b-a100-tp4"),
    ] {
        assert!(p(fast).ttft_secs < p(slow).ttft_secs, "{fast} vs {slow}");
        assert!(p(fast).tpot_secs < p(slow).tpot_secs, "{fast} vs {slow}");
    }
}
