//! What the endpoint picker's tests share: Envoy header maps.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};

/// An Envoy header map, values as `raw_value` (as Envoy sends them).
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}
