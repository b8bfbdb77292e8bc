//! One live run end to end, as the studies make it: two emulated engines,
//! kvroute's router binding their KV-event ports, the load generator
//! replaying a shared-prefix workload; and the set-up errors a user can hit.

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
