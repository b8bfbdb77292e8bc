//! Integration tests of the router against fake engines on 127.0.0.1 (each
//! test starts its own engines and router on port 0).

mod common;

// Which instance gets which request: round robin, multi-turn affinity,
// request and response passed through unchanged.
mod routing;
// Failures before the first byte: killed engines, 5xx/429 retries, health,
// and the in-flight accounting on every path.
mod failures;
// Streams: unbuffered pass-through, client disconnects, engine failures and
// idle timeouts mid-stream.
mod streaming;
// 4xx answers with OpenAI-style error bodies.
mod bad_requests;
// The admin API, /health, /v1/models, /metrics, graceful shutdown.
mod admin;
// Exact directory mode: KV events over ZMQ, sequence gaps, restarts.
mod exact;
// End to end against the emulated vLLM engine: real tokenizer and chat
// template, KV events in vLLM's wire format, /metrics polls.
mod emulator;
// The reliability suite (docs/reliability.md): killed and hung engines,
// overload, slow and large bodies, hostile KV-event peers, blind exact mode,
// exposure.
mod reliability;
// Engines found at run time: instance file, DNS.
mod discovery;
// API keys and CORS on the public port.
mod access;
