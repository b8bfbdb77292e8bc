//! Any text as an engine's /metrics page: parsed or refused, never a panic;
//! the gauges the router reads are looked up on whatever parsed.
#![no_main]

use kvroute_metrics::{CacheConfig, EngineReading, Scrape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scrape) = Scrape::parse(text) {
        let _ = EngineReading::from_scrape(&scrape);
        let _ = CacheConfig::from_scrape(&scrape);
    }
});
