//! Command-line specs of the form `kind` or `kind:key=value,key=value`,
//! turned into serde-tagged config types (`{"kind": ..., key: value}`), or
//! read from a TOML/JSON file when the argument is a path.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parse `kind[:k=v,...]` (values are JSON scalars or bare strings) or a file.
pub fn parse<T: DeserializeOwned>(what: &str, spec: &str) -> Result<T> {
    let p = Path::new(spec);
    if p.extension().is_some_and(|e| e == "toml" || e == "json") {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {what} file {spec}"))?;
        return if p.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).with_context(|| format!("parsing {what} file {spec}"))
        } else {
            serde_json::from_str(&text).with_context(|| format!("parsing {what} file {spec}"))
        };
    }
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), kind.trim().into());
    for item in params.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{what} parameter {item:?} is not of the form key=value");
        };
        let value = serde_json::from_str(v.trim())
            .unwrap_or_else(|_| serde_json::Value::String(v.trim().into()));
        map.insert(k.trim().into(), value);
    }
    serde_json::from_value(map.into()).with_context(|| format!("invalid {what} {spec:?}"))
}

/// Parse a comma-separated list.
pub fn list<T: std::str::FromStr>(what: &str, s: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<T>()
                .map_err(|e| anyhow::anyhow!("{what}: {x:?}: {e}"))
        })
        .collect()
}
