//! One live run end to end, as the studies make it: two emulated engines,
//! kvroute's router binding their KV-event ports, the load generator
//! replaying a shared-prefix workload; and the set-up errors a user can hit.

use kvroute_live::validate::{validate, validation_table};
use kvroute_live::{Engines, Live, LiveError};
use kvroute_sim::Profile;
use kvroute_study::workloads::build_spec;
use kvroute_study::{LiveRunner, RouterChoice};

fn live(engines: Engines) -> Result<Live, LiveError> {
    Ok(Live::new(engines, Profile::load("vllm-cpu-tiny").unwrap(), None)?.with_limits(4, 8))
}

#[test]
fn a_live_run_is_clean_and_hits_the_cache() {
    let live = live(Engines::Emulated { speedup: 16.0 }).unwrap();
    let w = build_spec(
        "gsp",
        "gsp:groups=2,prompts_per_group=4,system_tokens=512,question_tokens=32,output_tokens=8",
        0,
    )
    .unwrap();
    let w = live.subset(&w);
    let row = LiveRunner::run(
        &live,
        &w,
        &RouterChoice::Kvroute("cache_affinity".into()),
        2,
        1.0,
        0.5,
        0,
    )
    .unwrap();
    assert_eq!(
        (row.offered, row.requests, row.failed),
        (8, 8, 0),
        "{row:?}"
    );
    assert!(row.clean, "{row:?}");
    assert!(row.ttft_mean.is_finite() && row.ttft_mean > 0.0, "{row:?}");
    // Two groups of four questions after a 512-token system prompt: every
    // question after a group's first finds the prompt cached.
    assert!(row.hit_rate > 0.3, "prefix-cache hit rate {}", row.hit_rate);
    assert_eq!(row.router, "cache_affinity");
}

#[test]
fn set_up_errors_say_what_to_change() {
    let e = live(Engines::Real {
        urls: vec!["http://127.0.0.1:1".into()],
        kv: vec![],
    })
    .err()
    .expect("mismatched --real-url and --real-kv are refused");
    assert!(e.to_string().contains("--real-url and --real-kv"), "{e}");

    let live = live(Engines::Emulated { speedup: 16.0 }).unwrap();
    let w = build_spec(
        "gsp",
        "gsp:groups=1,prompts_per_group=2,system_tokens=64,question_tokens=8,output_tokens=2",
        0,
    )
    .unwrap();
    let e = LiveRunner::run(
        &live,
        &w,
        &RouterChoice::Peer("no-such-router".into()),
        2,
        1.0,
        0.5,
        0,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no peer router no-such-router"),
        "{e}"
    );
}

#[test]
fn validation_compares_a_live_replay_with_the_simulator() {
    let profile = Profile::load("vllm-cpu-tiny").unwrap();
    let live = live(Engines::Emulated { speedup: 16.0 }).unwrap();
    let rows = validate(
        &live,
        &profile,
        &[
            "gsp:groups=1,prompts_per_group=6,system_tokens=256,question_tokens=16,output_tokens=4"
                .into(),
        ],
        &["round_robin".into()],
        &[0.5],
        2,
        0,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    // The same six requests ran live and simulated.
    assert_eq!((r.requests_live, r.requests_sim), (6, 6), "{r:?}");
    for v in [
        r.ttft_mean_live,
        r.ttft_mean_sim,
        r.e2e_mean_live,
        r.e2e_mean_sim,
    ] {
        assert!(v.is_finite() && v > 0.0, "{r:?}");
    }
    let md = validation_table(&rows, "heading");
    assert!(md.starts_with("heading\n"));
    assert!(md.contains("| gsp | round_robin | 50% | 6 / 6 |"), "{md}");
    assert!(md.contains("Mean |error| over 1 runs: TTFT mean "), "{md}");
}
