//! The vLLM emulation's page against the real one: same bucket layouts, same
//! lines for the same numbers, and a lossless render → parse round trip.

use kvroute_core::Nanos;
use kvroute_metrics::{
    CacheConfig, EngineKind, EngineReading, EngineReport, FinishedReason, FinishedRequest, Scrape,
    VllmHistogram, VllmMetrics, CACHE_CONFIG_INFO, VLLM_NAMES,
};

const PAGE: &str = include_str!("fixtures/vllm-0.32-metrics.txt");
/// The served model's `max_model_len` (its token buckets end at 2000).
const MAX_MODEL_LEN: u64 = 2048;

/// The emulation loaded with the real page's numbers.
fn from_real_page() -> VllmMetrics {
    let real = Scrape::parse(PAGE).unwrap();
    let mut m = VllmMetrics::new(MAX_MODEL_LEN);
    m.num_requests_running = real.gauge("vllm:num_requests_running").unwrap();
    m.num_requests_waiting = real.gauge("vllm:num_requests_waiting").unwrap();
    m.kv_cache_usage_perc = real.gauge("vllm:kv_cache_usage_perc").unwrap();
    m.prefix_cache_queries = real.counter("vllm:prefix_cache_queries").unwrap();
    m.prefix_cache_hits = real.counter("vllm:prefix_cache_hits").unwrap();
    m.num_preemptions = real.counter("vllm:num_preemptions").unwrap();
    m.prompt_tokens = real.counter("vllm:prompt_tokens").unwrap();
    m.generation_tokens = real.counter("vllm:generation_tokens").unwrap();
    for reason in FinishedReason::ALL {
        let v = real
            .counter_where("vllm:request_success", "finished_reason", reason.as_str())
            .unwrap();
        m.request_success.insert(reason, v);
    }
    for which in VllmHistogram::ALL {
        *m.histogram_mut(which) = real.histogram(which.name()).unwrap();
    }
    m.cache_config = Some(CacheConfig::from_scrape(&real).unwrap());
    m
}

#[test]
fn bucket_layouts_are_the_real_ones() {
    let real = Scrape::parse(PAGE).unwrap();
    let m = VllmMetrics::new(MAX_MODEL_LEN);
    for which in VllmHistogram::ALL {
        let want: Vec<f64> = real.histogram(which.name()).unwrap().bounds().collect();
        let got: Vec<f64> = m.histogram(which).bounds().collect();
        assert_eq!(got, want, "{}", which.name());
    }
}

#[test]
fn rendered_lines_occur_verbatim_in_the_real_page() {
    let page = from_real_page().render("tiny");
    let real: std::collections::HashSet<&str> = PAGE.lines().collect();
    let mut checked = 0;
    for line in page.lines() {
        if line.starts_with(CACHE_CONFIG_INFO) {
            // vLLM lists ~35 config labels; the emulation renders five.
            continue;
        }
        assert!(real.contains(line), "not on the real page: {line}");
        checked += 1;
    }
    // 3 gauges + 5 counters + 5 reasons, 11 histograms' buckets/count/sum,
    // and a HELP + TYPE per family.
    assert!(checked > 200, "{checked}");
}

#[test]
fn render_parse_round_trip() {
    let m = from_real_page();
    let page = m.render("my/model");
    let s = Scrape::parse(&page).unwrap();
    assert!(s.skipped_lines().is_empty());
    assert_eq!(
        s.label_values("vllm:num_requests_running", "model_name"),
        vec!["my/model"]
    );
    assert_eq!(
        s.label_values("vllm:num_requests_running", "engine"),
        vec!["0"]
    );
    for which in VllmHistogram::ALL {
        assert_eq!(
            &s.histogram(which.name()).unwrap(),
            m.histogram(which),
            "{}",
            which.name()
        );
    }
    assert_eq!(
        CacheConfig::from_scrape(&s).unwrap(),
        m.cache_config.clone().unwrap()
    );
    // Reports from the real page and from the emulation's page agree.
    let real = EngineReport::since_start(&Scrape::parse(PAGE).unwrap());
    let emulated = EngineReport::since_start(&s);
    assert_eq!(emulated, real);
}

#[test]
fn every_metric_the_router_and_loadgen_read_is_present() {
    let mut m = VllmMetrics::new(MAX_MODEL_LEN);
    m.cache_config = Some(CacheConfig {
        block_size: 32,
        num_gpu_blocks: Some(1000),
        hash_algo: Some("sha256_cbor".to_string()),
        enable_prefix_caching: Some(true),
    });
    let s = Scrape::parse(&m.render("tiny")).unwrap();
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
        assert!(s.contains(list[0]), "{} missing", list[0]);
    }
    assert!(EngineReading::from_scrape(&s).is_ok());
    let c = CacheConfig::from_scrape(&s).unwrap();
    assert_eq!((c.block_size, c.capacity_tokens()), (32, Some(32_000)));
    assert_eq!(
        c.kvroute_hash_algo(),
        Some(kvroute_core::HashAlgo::Sha256Cbor)
    );
}

#[test]
fn a_simulated_run_reads_back_as_a_report() {
    let ms = Nanos::from_millis;
    let mut m = VllmMetrics::new(MAX_MODEL_LEN);
    let before = Scrape::parse(&m.render("tiny")).unwrap();
    for i in 0..4u64 {
        let start = ms(1000 * i);
        let tokens: Vec<Nanos> = (0..8).map(|k| ms(1000 * i + 200 + 20 * k)).collect();
        m.record_scheduled(1000, if i == 0 { 0 } else { 768 });
        m.record_finished(&FinishedRequest {
            arrival: start,
            queued: start,
            scheduled: ms(1000 * i + 10),
            token_times: &tokens,
            finished: *tokens.last().unwrap(),
            prompt_tokens: 1000,
            cached_tokens: if i == 0 { 0 } else { 768 },
            reason: FinishedReason::Length,
        });
    }
    m.num_requests_running = 2.0;
    m.kv_cache_usage_perc = 0.5;
    let after = Scrape::parse(&m.render("tiny")).unwrap();
    let g = EngineReading::from_scrape(&after).unwrap();
    assert_eq!(
        (g.kind, g.gauges.running, g.gauges.kv_usage),
        (EngineKind::Vllm, 2, 0.5)
    );
    let r = EngineReport::from_scrapes(&before, &after);
    let ttft = r.ttft_seconds.as_ref().unwrap();
    assert_eq!(ttft.count, 4.0);
    assert!((ttft.mean.unwrap() - 0.2).abs() < 1e-9);
    // All four TTFTs (0.2 s) sit in the (0.1, 0.25] bucket.
    let p50 = ttft.p50.unwrap();
    assert!(p50 > 0.1 && p50 <= 0.25, "{p50}");
    assert_eq!(r.inter_token_seconds.as_ref().unwrap().count, 28.0);
    assert_eq!(r.prefix_cache_hit_rate(), Some(3.0 * 768.0 / 4000.0));
    assert_eq!(r.generation_tokens, Some(32.0));
    assert_eq!(r.finished_by_reason.get("length"), Some(&4.0));
    assert_eq!(r.finished_by_reason.get("stop"), Some(&0.0));
}
