//! [`PolicyConfig`]: every policy's configuration under one serde enum, and
//! the factory that builds a policy from it (or from a `name:key=value,...`
//! spec on a command line).
//!
//! One table drives everything: the `policies!` invocation at the bottom
//! of this file lists each registry name with its enum variant and config
//! type, and generates [`POLICY_NAMES`], the enum, [`PolicyConfig::name`]
//! and the dispatch behind [`build`](PolicyConfig::build),
//! [`with_seed`](PolicyConfig::with_seed) and
//! [`with_engine_estimates`](PolicyConfig::with_engine_estimates). What a
//! config does for those lives beside the policy, in its [`PolicySpec`]
//! impl; whether a policy reads the cache directory is asked of the built
//! policy ([`Policy::uses_directory`]). Adding a policy therefore takes its
//! file (policy, config, `PolicySpec`), a `mod`/`pub use` pair in `lib.rs`
//! and one line in the table.

use crate::{
    CacheAffinityConfig, DualMapConfig, DynamoKvConfig, LeastRequestConfig, LlmdEppConfig,
    PowerOfTwoConfig, PrebleE2Config, PrefixHashConfig, RoundRobinConfig, SglangCacheAwareConfig,
    WeightedConfig,
};
use kvroute_core::Policy;
use serde::{Deserialize, Serialize};

/// What the registry needs from a policy's configuration; implemented in
/// each policy's file.
pub trait PolicySpec {
    /// Build the policy.
    fn build(&self) -> Box<dyn Policy>;

    /// Replace the RNG seed, for policies that draw random numbers.
    fn set_seed(&mut self, _seed: u64) {}

    /// Fill the parameters that estimate engine timings (prefill time per
    /// token, time per output token) from `e`, where the configuration left
    /// them unset. Parameters set explicitly are kept.
    fn set_engine_estimates(&mut self, _e: &EngineEstimates) {}
}

/// Engine timings some policies need to estimate latency, as the simulator
/// derives them from its engine profile (or an operator measures them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineEstimates {
    /// Seconds to prefill one uncached prompt token.
    pub prefill_secs_per_token: f64,
    /// Seconds per output token of one decoding request (TPOT).
    pub tpot_secs: f64,
}

/// A policy spec that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The name is not in the registry.
    #[error("unknown policy {0:?}; known policies: {known}", known = POLICY_NAMES.join(", "))]
    UnknownPolicy(String),
    /// A `key=value` item without `=`.
    #[error("policy parameter {0:?} is not of the form key=value")]
    BadParameter(String),
    /// The parameters do not fit the policy.
    #[error("invalid parameters for policy {name:?}: {source}")]
    Invalid {
        /// The policy.
        name: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// Generates the registry from `"name" => Variant(Config)` lines.
macro_rules! policies {
    ($($name:literal => $variant:ident($config:ty),)+) => {
        /// The registry names, load-only first, then cache-aware, then the
        /// rows to beat.
        pub const POLICY_NAMES: &[&str] = &[$($name),+];

        /// A policy and its parameters. In TOML:
        ///
        /// ```toml
        /// [policy]
        /// name = "weighted"
        /// alpha = 1.0
        /// beta = 0.5
        /// ```
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name")]
        #[allow(missing_docs)]
        pub enum PolicyConfig {
            $(#[serde(rename = $name)] $variant($config),)+
        }

        impl PolicyConfig {
            /// The registry name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(PolicyConfig::$variant(_) => $name,)+
                }
            }

            fn spec(&self) -> &dyn PolicySpec {
                match self {
                    $(PolicyConfig::$variant(c) => c,)+
                }
            }

            fn spec_mut(&mut self) -> &mut dyn PolicySpec {
                match self {
                    $(PolicyConfig::$variant(c) => c,)+
                }
            }
        }
    };
}

policies! {
    "round_robin" => RoundRobin(RoundRobinConfig),
    "least_request" => LeastRequest(LeastRequestConfig),
    "power_of_two" => PowerOfTwo(PowerOfTwoConfig),
    "prefix_hash" => PrefixHash(PrefixHashConfig),
    "cache_affinity" => CacheAffinity(CacheAffinityConfig),
    "weighted" => Weighted(WeightedConfig),
    "sglang_cache_aware" => SglangCacheAware(SglangCacheAwareConfig),
    "dualmap" => DualMap(DualMapConfig),
    "preble_e2" => PrebleE2(PrebleE2Config),
    "dynamo_kv" => DynamoKv(DynamoKvConfig),
    "llmd_epp" => LlmdEpp(LlmdEppConfig),
}

impl PolicyConfig {
    /// Whether the built policy reads the cache directory
    /// ([`Policy::uses_directory`]). `sglang_cache_aware` and `preble_e2`
    /// keep structures of their own and do not.
    pub fn is_cache_aware(&self) -> bool {
        self.build().uses_directory()
    }

    /// Parse `name` or `name:key=value,key=value` (values are JSON scalars or
    /// bare strings), e.g. `weighted:alpha=1,beta=0.25,temperature=0.1`.
    /// Aliases: `rr`, `p2c`, `sglang`, `cache_aware`, `dynamo`, `llmd`.
    pub fn parse(spec: &str) -> Result<PolicyConfig, ConfigError> {
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let name = match name.trim() {
            "rr" | "roundrobin" => "round_robin",
            "p2c" => "power_of_two",
            "sglang" | "cache_aware" => "sglang_cache_aware",
            "dynamo" => "dynamo_kv",
            "llmd" | "llm-d" | "epp" => "llmd_epp",
            n => n,
        };
        if !POLICY_NAMES.contains(&name) {
            return Err(ConfigError::UnknownPolicy(name.to_string()));
        }
        let mut map = serde_json::Map::new();
        map.insert("name".into(), name.into());
        for item in params.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::BadParameter(item.to_string()))?;
            let value = serde_json::from_str(v.trim())
                .unwrap_or_else(|_| serde_json::Value::String(v.trim().to_string()));
            map.insert(k.trim().to_string(), value);
        }
        serde_json::from_value(map.into()).map_err(|source| ConfigError::Invalid {
            name: name.to_string(),
            source,
        })
    }

    /// Defaults for a registry name.
    pub fn by_name(name: &str) -> Result<PolicyConfig, ConfigError> {
        PolicyConfig::parse(name)
    }

    /// Replace the RNG seed of policies that draw random numbers.
    pub fn with_seed(mut self, seed: u64) -> PolicyConfig {
        self.spec_mut().set_seed(seed);
        self
    }

    /// Fill the engine-timing parameters the configuration left unset
    /// (`dualmap`'s and `preble_e2`'s prefill time per token, `preble_e2`'s
    /// TPOT) from `e`; the simulator passes its engine profile's figures.
    pub fn with_engine_estimates(mut self, e: &EngineEstimates) -> PolicyConfig {
        self.spec_mut().set_engine_estimates(e);
        self
    }

    /// Build the policy.
    pub fn build(&self) -> Box<dyn Policy> {
        self.spec().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_and_round_trips() {
        for &n in POLICY_NAMES {
            let c = PolicyConfig::by_name(n).unwrap();
            assert_eq!(c.name(), n);
            let p = c.build();
            assert_eq!(p.name(), n);
            assert_eq!(c.is_cache_aware(), p.uses_directory(), "{n}");
            // JSON and TOML give back the same configuration.
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json["name"], n);
            assert_eq!(serde_json::from_value::<PolicyConfig>(json).unwrap(), c);
            let toml = toml::to_string(&c).unwrap();
            assert_eq!(toml::from_str::<PolicyConfig>(&toml).unwrap(), c, "{toml}");
            // Seeds and estimates keep the policy what it was.
            let e = EngineEstimates {
                prefill_secs_per_token: 2e-4,
                tpot_secs: 0.02,
            };
            let c2 = c.clone().with_seed(9).with_engine_estimates(&e);
            assert_eq!(c2.name(), n);
            assert_eq!(c2.build().name(), n);
        }
    }

    #[test]
    fn load_only_policies_do_not_read_the_directory() {
        let cache_aware: Vec<&str> = POLICY_NAMES
            .iter()
            .copied()
            .filter(|n| PolicyConfig::by_name(n).unwrap().is_cache_aware())
            .collect();
        assert_eq!(
            cache_aware,
            [
                "prefix_hash",
                "cache_affinity",
                "weighted",
                "dualmap",
                "dynamo_kv",
                "llmd_epp"
            ]
        );
    }

    #[test]
    fn seeds_reach_the_policies_that_draw() {
        let c = PolicyConfig::parse("weighted").unwrap().with_seed(42);
        let PolicyConfig::Weighted(w) = c else {
            panic!("{c:?}")
        };
        assert_eq!(w.seed, 42);
        let c = PolicyConfig::parse("dynamo_kv").unwrap().with_seed(43);
        let PolicyConfig::DynamoKv(d) = c else {
            panic!("{c:?}")
        };
        assert_eq!(d.seed, 43);
    }

    #[test]
    fn estimates_fill_only_what_is_unset() {
        let e = EngineEstimates {
            prefill_secs_per_token: 2e-4,
            tpot_secs: 0.02,
        };
        let c = PolicyConfig::parse("dualmap")
            .unwrap()
            .with_engine_estimates(&e);
        let PolicyConfig::DualMap(d) = c else {
            panic!("{c:?}")
        };
        assert_eq!(d.prefill_secs_per_token, Some(2e-4));
        let c = PolicyConfig::parse("dualmap:prefill_secs_per_token=1e-3")
            .unwrap()
            .with_engine_estimates(&e);
        let PolicyConfig::DualMap(d) = c else {
            panic!("{c:?}")
        };
        assert_eq!(d.prefill_secs_per_token, Some(1e-3));
    }

    #[test]
    fn spec_parameters() {
        let c = PolicyConfig::parse("weighted:alpha=2,beta=0.25, temperature=0.1").unwrap();
        let PolicyConfig::Weighted(w) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (w.alpha, w.beta, w.gamma, w.temperature),
            (2.0, 0.25, 0.1, 0.1)
        );
        assert!(matches!(
            PolicyConfig::parse("p2c"),
            Ok(PolicyConfig::PowerOfTwo(_))
        ));
        assert!(matches!(
            PolicyConfig::parse("dynamo"),
            Ok(PolicyConfig::DynamoKv(_))
        ));
        assert!(matches!(
            PolicyConfig::parse("llmd"),
            Ok(PolicyConfig::LlmdEpp(_))
        ));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = PolicyConfig::parse("fastest").unwrap_err().to_string();
        assert!(
            e.contains("unknown policy \"fastest\"") && e.contains("weighted"),
            "{e}"
        );
        let e = PolicyConfig::parse("weighted:alpha")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key=value"), "{e}");
        let e = PolicyConfig::parse("weighted:alhpa=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("alhpa"), "{e}");
        let e = PolicyConfig::parse("weighted:alpha=high")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid parameters"), "{e}");
    }

    #[test]
    fn toml_table() {
        let c: PolicyConfig = toml::from_str("name = \"dualmap\"\nttft_slo_secs = 0.5\n").unwrap();
        let PolicyConfig::DualMap(d) = c else {
            panic!()
        };
        assert_eq!(d.ttft_slo_secs, 0.5);
        assert_eq!(d.prefix_blocks, 4);
    }
}
