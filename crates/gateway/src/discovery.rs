//! Engines found rather than listed: DNS names re-resolved (a Kubernetes
//! headless Service's records are its ready pods) and a watched file of
//! instance lines, reconciled with the gateway's instances every interval.
//!
//! The task owns the instances it added, and only those: an instance listed
//! in the configuration or added through the admin API at the same URL is
//! left alone. A name that fails to resolve, or a file that cannot be read,
//! keeps what it found last (a DNS hiccup must not empty the fleet) and is
//! logged at warn level once per failure streak; a bad line in the file is
//! skipped with its line number. Removing an instance lets its in-flight
//! requests finish.

use crate::config::{DiscoveryConfig, InstanceConfig};
use crate::gateway::Gateway;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `HOST:PORT` split at its last colon (`[::1]:8000` keeps its brackets off).
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port > 0).then_some((host, port))
}

/// The instances a file describes: `URL [KV_EVENTS [REPLAY]]` per line.
/// Bad lines are returned as `(line number, why)`.
pub fn parse_instance_file(text: &str) -> (Vec<InstanceConfig>, Vec<(usize, String)>) {
    let (mut found, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let mut c = InstanceConfig::new(parts.next().unwrap_or_default());
        c.kv_events = parts.next().map(str::to_string);
        c.replay = parts.next().map(str::to_string);
        if parts.next().is_some() {
            bad.push((i + 1, "more than URL, KV_EVENTS and REPLAY".into()));
            continue;
        }
        match c.validate() {
            Ok(()) => found.push(c),
            Err(e) => bad.push((i + 1, e)),
        }
    }
    (found, bad)
}

/// What one source found last; kept when a later look fails.
#[derive(Default)]
struct Source {
    found: Vec<InstanceConfig>,
    failing: bool,
}

/// Resolve `name` (`HOST:PORT`) into instances.
async fn resolve(name: &str, kv_template: Option<&str>) -> std::io::Result<Vec<InstanceConfig>> {
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(name).await?.collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs
        .into_iter()
        .map(|a| {
            let host = match a {
                std::net::SocketAddr::V4(v4) => v4.ip().to_string(),
                std::net::SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            let mut c = InstanceConfig::new(format!("http://{host}:{}", a.port()));
            c.kv_events = kv_template.map(|t| t.replace("{host}", &host));
            c
        })
        .collect())
}

/// Note a source's outcome: keep the last good result on failure, warn once
/// per failure streak, count every failure (`kvroute_errors_total{kind="discovery"}`).
fn update<E: std::fmt::Display>(
    gw: &Gateway,
    s: &mut Source,
    what: &str,
    r: Result<Vec<InstanceConfig>, E>,
) {
    match r {
        Ok(found) => {
            if s.failing {
                tracing::info!(
                    source = what,
                    instances = found.len(),
                    "discovery source answers again"
                );
            }
            s.failing = false;
            s.found = found;
        }
        Err(e) => {
            gw.metrics.error("discovery");
            if !s.failing {
                tracing::warn!(source = what, error = %e, kept = s.found.len(), "discovery source failed; keeping what it found last");
            }
            s.failing = true;
        }
    }
}

/// Make the instances the task owns equal `want` (by URL; an instance whose
/// KV-event or replay endpoint changed is replaced).
fn reconcile(
    gw: &Arc<Gateway>,
    owned: &mut BTreeMap<String, InstanceConfig>,
    want: &BTreeMap<String, InstanceConfig>,
) {
    let stale: Vec<String> = owned
        .iter()
        .filter(|(url, c)| want.get(*url) != Some(*c))
        .map(|(url, _)| url.clone())
        .collect();
    for url in stale {
        owned.remove(&url);
        if let Some(id) = gw.find(&url) {
            gw.remove(id);
            tracing::info!(instance = %url, "discovered instance gone: removed");
        }
    }
    for (url, c) in want {
        if owned.contains_key(url) || gw.find(url).is_some() {
            continue;
        }
        match gw.add_instance(c) {
            Ok(_) => {
                tracing::info!(instance = %url, "instance discovered: added");
                owned.insert(url.clone(), c.clone());
            }
            Err(e) => tracing::warn!(instance = %url, error = %e, "discovered instance refused"),
        }
    }
}

/// The discovery loop; ends when `stop` turns true.
pub(crate) async fn run(gw: Arc<Gateway>, cfg: DiscoveryConfig, mut stop: watch::Receiver<bool>) {
    let mut dns: Vec<Source> = cfg.dns.iter().map(|_| Source::default()).collect();
    let mut file = Source::default();
    let mut last_text: Option<String> = None;
    let mut owned: BTreeMap<String, InstanceConfig> = BTreeMap::new();
    let interval = Duration::from_secs_f64(cfg.interval_secs);
    loop {
        for (name, s) in cfg.dns.iter().zip(dns.iter_mut()) {
            let r = resolve(name, cfg.dns_kv_events.as_deref()).await;
            update(&gw, s, name, r);
        }
        if let Some(path) = &cfg.file {
            let what = path.display().to_string();
            match tokio::fs::read_to_string(path).await {
                // Parsed (and its bad lines logged) once per content.
                Ok(text) if last_text.as_deref() != Some(text.as_str()) => {
                    let (found, bad) = parse_instance_file(&text);
                    for (line, why) in bad {
                        tracing::warn!(file = %what, line, %why, "instance file: line skipped");
                    }
                    update(&gw, &mut file, &what, Ok::<_, String>(found));
                    last_text = Some(text);
                }
                Ok(_) => {
                    let same = std::mem::take(&mut file.found);
                    update(&gw, &mut file, &what, Ok::<_, String>(same));
                }
                Err(e) => update(&gw, &mut file, &what, Err(e)),
            }
        }
        let want: BTreeMap<String, InstanceConfig> = dns
            .iter()
            .chain(std::iter::once(&file))
            .flat_map(|s| s.found.iter())
            .filter_map(|c| {
                let url = crate::upstream::BaseUrl::parse(&c.url).ok()?.to_string();
                Some((url, c.clone()))
            })
            .collect();
        reconcile(&gw, &mut owned, &want);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("vllm.ns.svc:8000"),
            Some(("vllm.ns.svc", 8000))
        );
        assert_eq!(split_host_port("[::1]:8000"), Some(("::1", 8000)));
        assert_eq!(split_host_port("vllm"), None);
        assert_eq!(split_host_port(":8000"), None);
        assert_eq!(split_host_port("h:0"), None);
    }

    #[test]
    fn instance_file_lines() {
        let (found, bad) = parse_instance_file(
            "# engines\nhttp://10.0.0.1:8000\n\n  http://10.0.0.2:8000 connect:tcp://10.0.0.2:5557 # kv\n\
             ftp://nope\nhttp://10.0.0.3:8000 connect:tcp://10.0.0.3:5557 tcp://10.0.0.3:5558 extra\n\
             http://10.0.0.4:8000 nonsense\n",
        );
        assert_eq!(
            found,
            vec![
                InstanceConfig::new("http://10.0.0.1:8000"),
                InstanceConfig::new("http://10.0.0.2:8000")
                    .with_kv_events("connect:tcp://10.0.0.2:5557"),
            ]
        );
        let lines: Vec<usize> = bad.iter().map(|b| b.0).collect();
        assert_eq!(lines, vec![5, 6, 7], "{bad:?}");
    }
}
