//! Specs written on a command line: `kind` or `kind:key=value,key=value`
//! (values are JSON scalars or bare strings), or the path of a `.toml` /
//! `.json` file — turned into any serde type tagged by `kind`, such as
//! [`WorkloadSpec`](crate::WorkloadSpec) and [`ArrivalSpec`](crate::ArrivalSpec).
//! `loadgen` and `sim` share this syntax.

use crate::error::WorkloadError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Whether `spec` names a TOML/JSON file rather than `kind:k=v`.
pub fn is_file_spec(spec: &str) -> bool {
    Path::new(spec)
        .extension()
        .is_some_and(|e| e == "toml" || e == "json")
}

/// Parse `spec`; `what` names the setting in errors (`"workload"`).
pub fn parse_spec<T: DeserializeOwned>(what: &'static str, spec: &str) -> Result<T, WorkloadError> {
    if is_file_spec(spec) {
        let p = Path::new(spec);
        let text = std::fs::read_to_string(p).map_err(|e| WorkloadError::io(p, e))?;
        let parsed = if p.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        return parsed.map_err(|e| WorkloadError::setting(what, format!("{spec}: {e}")));
    }
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), kind.trim().into());
    for item in params.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(WorkloadError::setting(
                what,
                format!("parameter {item:?} is not of the form key=value"),
            ));
        };
        let value = serde_json::from_str(v.trim())
            .unwrap_or_else(|_| serde_json::Value::String(v.trim().into()));
        map.insert(k.trim().into(), value);
    }
    serde_json::from_value(map.into())
        .map_err(|e| WorkloadError::setting(what, format!("{spec:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArrivalSpec, WorkloadSpec};

    #[test]
    fn inline_specs() {
        let w: WorkloadSpec = parse_spec("workload", "rag:zipf_s=1.2,num_requests=7").unwrap();
        let WorkloadSpec::Rag(r) = w else { panic!() };
        assert_eq!((r.zipf_s, r.num_requests), (1.2, 7));
        let a: ArrivalSpec = parse_spec("arrival", "gamma:rate=2,cv=3").unwrap();
        assert_eq!(a, ArrivalSpec::Gamma { rate: 2.0, cv: 3.0 });
        let err = parse_spec::<WorkloadSpec>("workload", "sharegpt:max_session=3").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_session`"),
            "{err}"
        );
        let err = parse_spec::<WorkloadSpec>("workload", "rag:zipf_s").unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
        let err = parse_spec::<WorkloadSpec>("workload", "/no/such/spec.toml").unwrap_err();
        assert!(err.to_string().contains("/no/such/spec.toml"), "{err}");
    }
}
