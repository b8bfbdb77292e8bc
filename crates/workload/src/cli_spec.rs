//! Specs written on a command line: `kind` or `kind:key=value,key=value`
//! (values are JSON scalars or bare strings), or the path of a `.toml` /
//! `.json` file — turned into any serde type tagged by `kind`, such as
//! [`WorkloadSpec`](crate::WorkloadSpec) and [`ArrivalSpec`](crate::ArrivalSpec).
//! `loadgen` and `sim` share this syntax.

use crate::arrival::ArrivalSpec;
use crate::error::WorkloadError;
use crate::spec::WorkloadSpec;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The workload of a `--workload SPEC` flag: a spec file's relative dataset
/// paths resolve against the file's directory, and `sessions` (a
/// `--sessions N` flag, at least 1) limits it to that many sessions
/// (requests for single-turn workloads).
pub fn workload_from_flags(
    spec: &str,
    sessions: Option<usize>,
) -> Result<WorkloadSpec, WorkloadError> {
    let mut s: WorkloadSpec = parse_spec("workload", spec)?;
    if is_file_spec(spec) {
        let dir = Path::new(spec)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        s = s.with_base_dir(dir);
    }
    if let Some(n) = sessions {
        if n == 0 {
            return Err(WorkloadError::setting("sessions", "must be at least 1"));
        }
        match &mut s {
            WorkloadSpec::Sharegpt(x) => x.max_sessions = Some(n),
            WorkloadSpec::Rag(x) => x.num_requests = n,
            WorkloadSpec::Mooncake(x) => x.max_requests = Some(n),
            WorkloadSpec::Azure(x) => x.max_requests = Some(n),
            WorkloadSpec::GeneratedSharedPrefix(x) => {
                // SGLang's count is groups × prompts per group: keep the
                // groups' size, cut their number (at least one group).
                x.groups = n.div_ceil(x.prompts_per_group.max(1)).max(1)
            }
            WorkloadSpec::Random(x) => x.num_requests = n,
            WorkloadSpec::Agent(x) => x.sessions = n,
        }
    }
    Ok(s)
}

/// The arrival process of `--arrival SPEC` or its shorthand `--rate R`
/// (Poisson); neither gives the workload's own times.
pub fn arrival_from_flags(
    arrival: Option<&str>,
    rate: Option<f64>,
) -> Result<ArrivalSpec, WorkloadError> {
    match (arrival, rate) {
        (Some(_), Some(_)) => Err(WorkloadError::setting(
            "arrival",
            "give either --arrival or --rate, not both",
        )),
        (Some(s), None) => parse_spec("arrival", s),
        (None, Some(r)) => Ok(ArrivalSpec::Poisson { rate: r }),
        (None, None) => Ok(ArrivalSpec::default()),
    }
}

/// Whether `spec` names a TOML/JSON spec file rather than being an inline
/// `kind` or `kind:key=value,...` spec.
///
/// An inline spec wins whenever the string has that shape, so
/// `rag:path=corpus/x.json` is a RAG spec whose corpus is a JSON file, not a
/// file called `rag:path=corpus/x.json`. Only a string that is itself the
/// path of a `.toml` / `.json` file (`specs/rag.toml`, `C:\specs\x.json`) is
/// a file spec.
pub fn is_file_spec(spec: &str) -> bool {
    !is_inline_spec(spec)
        && Path::new(spec)
            .extension()
            .is_some_and(|e| e == "toml" || e == "json")
}

/// `kind` (an identifier: letters, digits, `_`, `-`) alone or followed by
/// `:` and nothing or a first `key=value` parameter.
fn is_inline_spec(spec: &str) -> bool {
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    let kind = kind.trim();
    let identifier = !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let params = params.trim();
    identifier
        && (params.is_empty()
            || params
                .split(',')
                .next()
                .is_some_and(|first| first.contains('=')))
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

    #[test]
    fn inline_specs_with_file_values_are_not_file_specs() {
        for inline in [
            "rag:path=DIR/x.json",
            "rag:path=corpus.json,zipf_s=1.2",
            "rag: path = /data/hotpot_dev_distractor_v1.json",
            "sharegpt:path=conv.toml",
            "rag",
            "generated-shared-prefix:groups=2",
        ] {
            assert!(!is_file_spec(inline), "{inline}");
        }
        for file in [
            "spec.toml",
            "specs/rag.json",
            "/abs/dir/w.toml",
            "./w.json",
            "C:\\specs\\w.json",
            "dir.with:colon/w.toml",
        ] {
            assert!(is_file_spec(file), "{file}");
        }
        // The corpus path reaches the spec untouched, and is not resolved
        // against a spec file's directory.
        let s = workload_from_flags("rag:path=DIR/x.json,zipf_s=1.5", None).unwrap();
        let WorkloadSpec::Rag(r) = s else { panic!() };
        assert_eq!(r.path, Path::new("DIR/x.json"));
        assert_eq!(r.zipf_s, 1.5);
        // A spec file whose own name ends in .json is still read as a file.
        let path = crate::testutil::temp_file(
            "inline-vs-file.json",
            br#"{"kind": "rag", "path": "corpus.json", "num_requests": 3}"#,
        );
        let s = workload_from_flags(path.to_str().unwrap(), None).unwrap();
        let WorkloadSpec::Rag(r) = s else { panic!() };
        assert_eq!(
            (r.path.as_path(), r.num_requests),
            (path.with_file_name("corpus.json").as_path(), 3)
        );
    }

    #[test]
    fn flags() {
        let s = workload_from_flags("rag:num_requests=9", Some(4)).unwrap();
        let WorkloadSpec::Rag(r) = s else { panic!() };
        assert_eq!(r.num_requests, 4);
        let err = workload_from_flags("sharegpt", Some(0)).unwrap_err();
        assert!(err.to_string().contains("sessions"), "{err}");
        let path =
            crate::testutil::temp_file("flags.toml", b"kind = \"rag\"\npath = \"corpus.json\"\n");
        let s = workload_from_flags(path.to_str().unwrap(), None).unwrap();
        assert_eq!(
            s.dataset(),
            Some(path.with_file_name("corpus.json").as_path())
        );
        assert_eq!(
            arrival_from_flags(None, Some(2.0)).unwrap(),
            ArrivalSpec::Poisson { rate: 2.0 }
        );
        assert_eq!(
            arrival_from_flags(None, None).unwrap(),
            ArrivalSpec::default()
        );
        let err = arrival_from_flags(Some("poisson:rate=1"), Some(1.0)).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }
}
