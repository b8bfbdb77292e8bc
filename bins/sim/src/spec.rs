//! Comma-separated lists on the command line (`--rates 1,2,4`). Tagged
//! specs (`rag:zipf_s=1.2`) are parsed by `kvroute_workload::parse_spec`.

use anyhow::Result;

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
