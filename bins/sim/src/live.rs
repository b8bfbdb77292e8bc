//! `sim study`'s live part: the command-line options of the real engines;
//! the testbed itself is the `kvroute-live` crate.

pub use kvroute_live::{Engines, Live};

/// Where real engines are (`--real`).
#[derive(Debug, Clone, clap::Args)]
pub struct RealArgs {
    /// Base URLs of the real instances (with --real).
    #[arg(long, default_values_t = ["http://127.0.0.1:8001".to_string(), "http://127.0.0.1:8002".to_string()])]
    pub real_url: Vec<String>,
    /// KV-event endpoints the router binds for the real instances (with --real).
    #[arg(long, default_values_t = ["bind:tcp://127.0.0.1:5557".to_string(), "bind:tcp://127.0.0.1:5558".to_string()])]
    pub real_kv: Vec<String>,
}

impl RealArgs {
    /// Real engines, or emulated ones at `speedup`.
    pub fn engines(&self, real: bool, speedup: f64) -> Engines {
        if real {
            Engines::Real {
                urls: self.real_url.clone(),
                kv: self.real_kv.clone(),
            }
        } else {
            Engines::Emulated { speedup }
        }
    }
}
