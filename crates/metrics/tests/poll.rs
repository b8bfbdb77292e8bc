//! Poller integration test (placeholder, being written).
