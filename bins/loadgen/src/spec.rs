//! Command-line specs of the form `kind` or `kind:key=value,key=value`,
//! turned into serde-tagged config types (`{"kind": ..., key: value}`), or
//! read from a TOML/JSON file when the argument is a path — the same syntax
//! as `sim run --workload` / `--arrival`.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parse `kind[:k=v,...]` (values are JSON scalars or bare strings) or a
/// `.toml` / `.json` file.
pub fn parse<T: DeserializeOwned>(what: &str, spec: &str) -> Result<T> {
    let p = Path::new(spec);
    if is_file_spec(spec) {
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

/// Whether `spec` names a TOML/JSON file rather than `kind:k=v`.
pub fn is_file_spec(spec: &str) -> bool {
    Path::new(spec)
        .extension()
        .is_some_and(|e| e == "toml" || e == "json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvroute_workload::{ArrivalSpec, WorkloadSpec};

    #[test]
    fn inline_specs() {
        let w: WorkloadSpec = parse("workload", "rag:zipf_s=1.2,num_requests=7").unwrap();
        let WorkloadSpec::Rag(r) = w else { panic!() };
        assert_eq!((r.zipf_s, r.num_requests), (1.2, 7));
        let a: ArrivalSpec = parse("arrival", "gamma:rate=2,cv=3").unwrap();
        assert_eq!(a, ArrivalSpec::Gamma { rate: 2.0, cv: 3.0 });
        let err = parse::<WorkloadSpec>("workload", "sharegpt:max_session=3").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `max_session`"),
            "{err:#}"
        );
        assert!(parse::<WorkloadSpec>("workload", "rag:zipf_s").is_err());
        let err = parse::<WorkloadSpec>("workload", "/no/such/spec.toml").unwrap_err();
        assert!(format!("{err:#}").contains("reading workload file /no/such/spec.toml"));
    }
}
