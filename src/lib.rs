//! kvroute: cache-aware request routing for multi-instance LLM serving.
//!
//! This facade re-exports the library crates; the workspace root also owns the
//! cross-crate integration tests (`tests/`) and the criterion benches
//! (`benches/`). See `docs/architecture.md` for how the crates fit together.

#![deny(missing_docs)]

pub use kvroute_core as core;
pub use kvroute_directory as directory;
pub use kvroute_policy as policy;
pub use kvroute_routing as routing;
