//! Integration tests of `kvroute-loadgen`, each starting its own servers on
//! 127.0.0.1.

// Emulated engines, ShareGPT slices, and a scripted OpenAI server.
mod util;

// Multi-turn ShareGPT replay against emulated engines: open and closed loop,
// probe mode.
mod e2e;

// Unreachable targets, error statuses, broken streams, timeouts, limits,
// interruption.
mod failures;
