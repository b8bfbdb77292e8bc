//! [`PolicyConfig`]: every policy's configuration under one serde enum, and
//! the factory that builds a policy from it (or from a `name:key=value,...`
//! spec on a command line).

use crate::{
    CacheAffinity, CacheAffinityConfig, DualMap, DualMapConfig, LeastRequest, LeastRequestConfig,
    PowerOfTwo, PowerOfTwoConfig, PrebleE2, PrebleE2Config, PrefixHash, PrefixHashConfig,
    RoundRobin, RoundRobinConfig, SglangCacheAware, SglangCacheAwareConfig, Weighted,
    WeightedConfig,
};
use kvroute_core::Policy;
use serde::{Deserialize, Serialize};

/// The registry names, load-only first, then cache-aware, then the rows to beat.
pub const POLICY_NAMES: &[&str] = &[
    "round_robin",
    "least_request",
    "power_of_two",
    "prefix_hash",
    "cache_affinity",
    "weighted",
    "sglang_cache_aware",
    "dualmap",
    "preble_e2",
];

/// A policy and its parameters. In TOML:
///
/// ```toml
/// [policy]
/// name = "weighted"
/// alpha = 1.0
/// beta = 0.5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PolicyConfig {
    RoundRobin(RoundRobinConfig),
    LeastRequest(LeastRequestConfig),
    PowerOfTwo(PowerOfTwoConfig),
    PrefixHash(PrefixHashConfig),
    CacheAffinity(CacheAffinityConfig),
    Weighted(WeightedConfig),
    SglangCacheAware(SglangCacheAwareConfig),
    #[serde(rename = "dualmap")]
    DualMap(DualMapConfig),
    PrebleE2(PrebleE2Config),
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

impl PolicyConfig {
    /// The registry name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::RoundRobin(_) => "round_robin",
            PolicyConfig::LeastRequest(_) => "least_request",
            PolicyConfig::PowerOfTwo(_) => "power_of_two",
            PolicyConfig::PrefixHash(_) => "prefix_hash",
            PolicyConfig::CacheAffinity(_) => "cache_affinity",
            PolicyConfig::Weighted(_) => "weighted",
            PolicyConfig::SglangCacheAware(_) => "sglang_cache_aware",
            PolicyConfig::DualMap(_) => "dualmap",
            PolicyConfig::PrebleE2(_) => "preble_e2",
        }
    }

    /// Whether the policy reads the cache directory.
    pub fn is_cache_aware(&self) -> bool {
        !matches!(
            self,
            PolicyConfig::RoundRobin(_)
                | PolicyConfig::LeastRequest(_)
                | PolicyConfig::PowerOfTwo(_)
        )
    }

    /// Parse `name` or `name:key=value,key=value` (values are JSON scalars or
    /// bare strings), e.g. `weighted:alpha=1,beta=0.25,temperature=0.1`.
    /// Aliases: `rr`, `p2c`, `sglang`.
    pub fn parse(spec: &str) -> Result<PolicyConfig, ConfigError> {
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let name = match name.trim() {
            "rr" | "roundrobin" => "round_robin",
            "p2c" => "power_of_two",
            "sglang" | "cache_aware" => "sglang_cache_aware",
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
        match &mut self {
            PolicyConfig::PowerOfTwo(c) => c.seed = seed,
            PolicyConfig::Weighted(c) => c.seed = seed,
            _ => {}
        }
        self
    }

    /// Build the policy.
    pub fn build(&self) -> Box<dyn Policy> {
        match self {
            PolicyConfig::RoundRobin(c) => Box::new(RoundRobin::new(c)),
            PolicyConfig::LeastRequest(c) => Box::new(LeastRequest::new(c)),
            PolicyConfig::PowerOfTwo(c) => Box::new(PowerOfTwo::new(c)),
            PolicyConfig::PrefixHash(c) => Box::new(PrefixHash::new(c)),
            PolicyConfig::CacheAffinity(c) => Box::new(CacheAffinity::new(c)),
            PolicyConfig::Weighted(c) => Box::new(Weighted::new(c)),
            PolicyConfig::SglangCacheAware(c) => Box::new(SglangCacheAware::new(c)),
            PolicyConfig::DualMap(c) => Box::new(DualMap::new(c)),
            PolicyConfig::PrebleE2(c) => Box::new(PrebleE2::new(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_a_policy_of_that_name() {
        for &n in POLICY_NAMES {
            let c = PolicyConfig::by_name(n).unwrap();
            assert_eq!(c.name(), n);
            assert_eq!(c.build().name(), n);
        }
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
