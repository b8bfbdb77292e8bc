//! Any bytes as a KV-event payload, and as the frames of a message: decoded
//! or refused, never a panic; what decodes re-encodes and decodes the same.
#![no_main]

use kvroute_kvevents::{decode_frames, decode_payload, encode_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_payload(data) {
        let again = decode_payload(&encode_payload(&batch)).expect("our own encoding decodes");
        assert_eq!(again.events, batch.events);
    }
    // The same bytes cut into three frames at two points taken from the input.
    if data.len() >= 2 {
        let a = data[0] as usize % data.len();
        let b = a + (data[1] as usize % (data.len() - a + 1));
        let _ = decode_frames(&[&data[..a], &data[a..b], &data[b..]]);
    }
});
