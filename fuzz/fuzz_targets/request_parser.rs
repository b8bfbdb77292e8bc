//! Any bytes as a completions or chat-completions body: parsed or refused
//! with a 4xx error, never a panic.
#![no_main]

use kvroute_gateway::{parse_request, ApiKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [ApiKind::Completions, ApiKind::ChatCompletions] {
        if let Err(e) = parse_request(kind, data) {
            assert!(e.status().is_client_error(), "{e}");
        }
    }
});
