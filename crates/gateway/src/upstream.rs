//! [`Upstream`]: what the router keeps per engine besides its routing state —
//! its address, KV-event endpoints and statistics, the engine's mirrored
//! counters, probe and failure bookkeeping. It lives inside the dispatcher's
//! one instance registry, as the `X` of [`Instance<X>`](kvroute_routing::Instance)
//! ([`Engine`]); the instance's state (healthy, unhealthy, ejected,
//! draining, removed) is the dispatcher's alone.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use kvroute_core::InstanceId;
use kvroute_directory::Mode;
use kvroute_kvevents::Endpoint;
use kvroute_routing::Dispatcher;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use tokio::task::AbortHandle;

/// An engine's base URL: `http[s]://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// A path prefix (`http://h/engine-1` → `/engine-1`), without the trailing `/`.
    prefix: String,
}

/// A URL the router cannot forward to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance URL {url:?}: {reason}")]
pub struct BadUrl {
    url: String,
    reason: &'static str,
}

impl BaseUrl {
    /// Parse `http[s]://host:port[/prefix]`.
    pub fn parse(url: &str) -> Result<BaseUrl, BadUrl> {
        let bad = |reason| BadUrl {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            _ => return Err(bad("only http:// and https:// are supported")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// `host:port`, with the scheme's default port when the URL names none
    /// (how a data plane addresses the instance).
    pub fn host_port(&self) -> String {
        match self.authority.port_u16() {
            Some(_) => self.authority.as_str().to_string(),
            None if self.scheme == Scheme::HTTPS => format!("{}:443", self.authority.host()),
            None => format!("{}:80", self.authority.host()),
        }
    }

    /// The URI of `path_and_query` on this instance.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let pq: PathAndQuery = if self.prefix.is_empty() {
            path_and_query.parse()?
        } else {
            format!("{}{}", self.prefix, path_and_query).parse()?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// Why an exact-mode instance's entries are predicted for now (bits of
/// [`KvStats::fallback_reasons`]). The instance is in exact mode when none is set.
#[derive(Debug, Clone, Copy)]
pub struct FeedFallback;

impl FeedFallback {
    /// Batches were lost and could not be replayed.
    pub const GAP: u8 = 1;
    /// A second publisher spoke on the instance's endpoint.
    pub const CONFLICT: u8 = 2;
    /// The engine computed prompt blocks but published no events.
    pub const SILENT: u8 = 4;
    /// The engine's block hashes never match the router's (tokenizer,
    /// template, block size, hash algorithm or seed differ).
    pub const MISMATCH: u8 = 8;
    /// Resets came faster than `directory.min_reset_interval_secs`.
    pub const RESETS: u8 = 16;

    /// Labels of the bits set in `reasons`.
    pub fn labels(reasons: u8) -> Vec<&'static str> {
        [
            (Self::GAP, "gap"),
            (Self::CONFLICT, "conflict"),
            (Self::SILENT, "silent"),
            (Self::MISMATCH, "mismatch"),
            (Self::RESETS, "resets"),
        ]
        .into_iter()
        .filter(|(b, _)| reasons & b != 0)
        .map(|(_, l)| l)
        .collect()
    }
}

/// KV-event stream statistics (monotonic unless noted).
#[derive(Debug, Default)]
pub struct KvStats {
    /// Batches received and applied.
    pub batches: AtomicU64,
    /// Events applied.
    pub events: AtomicU64,
    /// Blocks stored by events.
    pub blocks_stored: AtomicU64,
    /// Blocks removed by events.
    pub blocks_removed: AtomicU64,
    /// Sequence gaps seen.
    pub gaps: AtomicU64,
    /// Batches lost in gaps (not recovered by replay).
    pub lost_batches: AtomicU64,
    /// Batches recovered through the replay socket.
    pub replayed_batches: AtomicU64,
    /// Publisher restarts seen (sequence went backwards).
    pub restarts: AtomicU64,
    /// Directory resets done (restarts and `AllBlocksCleared`).
    pub resets: AtomicU64,
    /// Resets refused for coming too soon after the previous one.
    pub resets_suppressed: AtomicU64,
    /// Messages that were not KV-event batches.
    pub decode_errors: AtomicU64,
    /// Batches ignored because another connection owned the stream.
    pub foreign_batches: AtomicU64,
    /// Connections refused (address not allowed, too many).
    pub refused: AtomicU64,
    /// Connections dropped for breaking the protocol or a limit.
    pub violations: AtomicU64,
    /// Times the instance fell back from exact to predicted entries.
    pub fallbacks: AtomicU64,
    /// Times the feed was found silent while the engine computed prompts.
    pub silences: AtomicU64,
    /// Times the router's hashes were found not to match the engine's.
    pub mismatches: AtomicU64,
    /// Publisher connections made.
    pub connects: AtomicU64,
    /// Publishers connected now (gauge).
    pub publishers: AtomicU32,
    /// Last batch's lag (now − batch timestamp), in microseconds (gauge).
    pub last_lag_us: AtomicU64,
    /// Wall-clock time of the last applied batch, ms since the epoch (0: none yet).
    pub last_event_unix_ms: AtomicU64,
    fallback: AtomicU8,
}

impl KvStats {
    /// Whether a publisher is connected.
    pub fn connected(&self) -> bool {
        self.publishers.load(Ordering::Relaxed) > 0
    }

    /// The [`FeedFallback`] bits set now.
    pub fn fallback_reasons(&self) -> u8 {
        self.fallback.load(Ordering::Acquire)
    }

    /// Seconds since the last applied batch (`None`: none yet).
    pub fn secs_since_last_event(&self) -> Option<f64> {
        let last = self.last_event_unix_ms.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Some(now.saturating_sub(last) as f64 / 1e3)
    }

    /// Set fallback reason(s) `bits` and put the instance in predicted mode.
    pub(crate) fn set_fallback<X>(&self, bits: u8, d: &Dispatcher<X>, id: InstanceId) {
        let before = self.fallback.fetch_or(bits, Ordering::AcqRel);
        if before == 0 {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        if d.directory().mode(id) == Mode::Exact {
            d.set_directory_mode(id, Mode::Predicted);
        }
    }

    /// Clear fallback reason(s) `bits`; back to exact mode if none is left.
    pub(crate) fn clear_fallback<X>(&self, bits: u8, d: &Dispatcher<X>, id: InstanceId) {
        let after = self.fallback.fetch_and(!bits, Ordering::AcqRel) & !bits;
        if after == 0 && d.directory().mode(id) != Mode::Exact {
            d.set_directory_mode(id, Mode::Exact);
        }
    }
}

/// The engine's own numbers, mirrored from its last `/metrics` poll.
#[derive(Debug, Default)]
pub struct EngineMirror {
    /// `vllm:prefix_cache_queries_total` (tokens).
    pub prefix_cache_queries: AtomicU64,
    /// `vllm:prefix_cache_hits_total` (tokens).
    pub prefix_cache_hits: AtomicU64,
    /// `block_size` of `vllm:cache_config_info` (0: unknown).
    pub block_size: AtomicU32,
    /// `num_gpu_blocks` of `vllm:cache_config_info` (0: unknown).
    pub num_gpu_blocks: AtomicU64,
    /// Successful polls.
    pub polls_ok: AtomicU64,
    /// Failed polls.
    pub polls_failed: AtomicU64,
}

/// One engine in the router's registry: its routing state and load (the
/// dispatcher's) and its [`Upstream`] (`entry.ext()`).
pub type Engine = kvroute_routing::Instance<Upstream>;

/// What the router keeps per engine besides its routing state.
pub struct Upstream {
    id: InstanceId,
    url: BaseUrl,
    name: Arc<str>,
    header: HeaderValue,
    kv_events: Option<Endpoint>,
    replay: Option<String>,
    /// Consecutive failures (probes and connection errors).
    pub(crate) failures: AtomicU32,
    /// Probes sent / failed.
    pub(crate) probes: AtomicU64,
    pub(crate) probe_failures: AtomicU64,
    /// Outlier ejection: out until this instant and a successful probe.
    ejected_until: Mutex<Option<std::time::Instant>>,
    /// Ejections so far (each doubles the next one's length).
    pub(crate) ejections: AtomicU32,
    /// Consecutive failed requests.
    pub(crate) request_failures: AtomicU32,
    /// KV events.
    pub kv: KvStats,
    /// Engine metrics.
    pub engine: EngineMirror,
    /// Background tasks owned by this instance (KV subscriber).
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
    /// Warned about a block-size mismatch already.
    pub(crate) warned_block_size: AtomicBool,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("id", &self.id)
            .field("url", &self.name)
            .field("kv_events", &self.kv_events)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub(crate) fn new(
        id: InstanceId,
        url: BaseUrl,
        kv_events: Option<Endpoint>,
        replay: Option<String>,
    ) -> Upstream {
        let name: Arc<str> = Arc::from(url.to_string());
        let header =
            HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Upstream {
            id,
            url,
            name,
            header,
            kv_events,
            replay,
            failures: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
            ejections: AtomicU32::new(0),
            request_failures: AtomicU32::new(0),
            kv: KvStats::default(),
            engine: EngineMirror::default(),
            tasks: Mutex::new(Vec::new()),
            warned_block_size: AtomicBool::new(false),
        }
    }

    /// Its id (the dispatcher's).
    pub fn id(&self) -> InstanceId {
        self.id
    }

    /// Its base URL.
    pub fn url(&self) -> &BaseUrl {
        &self.url
    }

    /// Its name: the base URL as text.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The name as a header value (`x-kvroute-instance`).
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// The KV-event endpoint, if any.
    pub fn kv_events(&self) -> Option<&Endpoint> {
        self.kv_events.as_ref()
    }

    /// The replay endpoint, if any.
    pub fn replay(&self) -> Option<&str> {
        self.replay.as_deref()
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Acquire)
    }

    /// Health probes sent to it.
    pub fn probes_sent(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Times it was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Acquire)
    }

    pub(crate) fn eject_for(&self, d: std::time::Duration) {
        *self.ejected_until.lock() = Some(std::time::Instant::now() + d);
    }

    /// Whether its ejection (if any) has run its time.
    pub(crate) fn ejection_over(&self) -> bool {
        self.ejected_until
            .lock()
            .is_none_or(|t| std::time::Instant::now() >= t)
    }

    pub(crate) fn abort_tasks(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://127.0.0.1:8001/").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8001");
        assert_eq!(
            u.join("/v1/completions?x=1").unwrap().to_string(),
            "http://127.0.0.1:8001/v1/completions?x=1"
        );
        let p = BaseUrl::parse("http://h:1/engine/").unwrap();
        assert_eq!(
            p.join("/health").unwrap().to_string(),
            "http://h:1/engine/health"
        );
        assert!(BaseUrl::parse("h:1").is_err());
        assert!(BaseUrl::parse("http://h:1/?q").is_err());
        assert!(BaseUrl::parse("ftp://h:1").is_err());
        let s = BaseUrl::parse("https://engine-0.vllm:8443/").unwrap();
        assert_eq!(
            s.join("/v1/models").unwrap().to_string(),
            "https://engine-0.vllm:8443/v1/models"
        );
        assert!(BaseUrl::parse("").is_err());
    }
}
