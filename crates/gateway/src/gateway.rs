//! [`Gateway`]: the router's shared state — configuration, dispatcher,
//! upstream list, HTTP client, prompt encoder, metrics — and the operations
//! on instances (add, drain, undrain, remove, health transitions).
//!
//! One `Arc<Gateway>` is shared by every connection task and by the
//! background tasks (health probes, `/metrics` polls, KV-event subscribers).
//! [`Gateway::start`] spawns the background tasks; [`Gateway::stop`] ends
//! them (mini-redis's drop-guard idea, made explicit so `serve` controls the
//! order: stop accepting, drain connections, then stop the tasks).

use crate::body::ProxyBody;
use crate::config::{InstanceConfig, RouterConfig};
use crate::encode::PromptEncoder;
use crate::error::{AddInstanceError, ServeError};
use crate::metrics::RouterMetrics;
use crate::upstream::{BaseUrl, Engine, Upstream};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use kvroute_core::{InstanceId, SystemClock};
use kvroute_directory::{Directory, Freshness, Mode};
use kvroute_kvevents::Endpoint;
use kvroute_routing::{Dispatcher, Health, Transition};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The HTTP client the router forwards with (pooled keep-alive connections).
pub type UpstreamClient = kvroute_http::Client<Full<Bytes>>;

/// The router.
pub struct Gateway {
    pub(crate) config: RouterConfig,
    pub(crate) dispatcher: Arc<Dispatcher<Upstream>>,
    pub(crate) client: UpstreamClient,
    pub(crate) encoder: PromptEncoder,
    pub(crate) metrics: Arc<RouterMetrics>,
    pub(crate) next_request: AtomicU64,
    pub(crate) round_robin: AtomicUsize,
    pub(crate) policy_header: HeaderValue,
    pub(crate) timeouts: Timeouts,
    /// What the KV-event feed tasks share.
    feed: crate::kv::FeedContext,
    /// Admission control of the public port.
    admission: crate::admit::AdmitLayer,
    /// Serialises adding instances (the duplicate check and the add).
    admin_lock: Mutex<()>,
    /// Wakes the health task to probe suspects now.
    pub(crate) probe_now: Notify,
    /// Request bytes all requests may hold at once, in KiB permits.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    /// Set once every instance present at start has been probed once.
    pub(crate) probed: watch::Sender<bool>,
    /// The last sampled decision explanations (`GET /admin/decisions`).
    pub(crate) explained: Mutex<std::collections::VecDeque<serde_json::Value>>,
    background: Mutex<Option<Background>>,
}

/// The configured durations, converted once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) request: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) body_read: Duration,
    pub(crate) stream_idle: Duration,
    pub(crate) health: Duration,
    pub(crate) health_interval: Option<Duration>,
    pub(crate) metrics_interval: Option<Duration>,
    pub(crate) exact_resume: Duration,
    pub(crate) shutdown_grace: Duration,
}

struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("policy", &self.config.policy.name())
            .field("instances", &self.dispatcher.with_table(|t| t.all().len()))
            .finish_non_exhaustive()
    }
}

fn opt_secs(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| RouterConfig::secs(v))
}

impl Gateway {
    /// Build the router from `config` (validated here): load the tokenizer
    /// and template, build the policy, directory and dispatcher, and add the
    /// configured instances. Background tasks start with [`Gateway::start`].
    pub fn new(config: RouterConfig) -> Result<Arc<Gateway>, ServeError> {
        config.validate()?;
        let encoder = PromptEncoder::from_config(&config.hashing)?;
        let policy = config.policy.build();
        let policy_name = policy.name();
        let directory = Arc::new(Directory::new(Freshness::periodic_secs(
            config.directory.sync_interval_secs,
        )));
        let dispatcher = Arc::new(Dispatcher::with_ext(
            policy,
            directory,
            Arc::new(SystemClock::new()),
        ));
        let metrics = Arc::new(RouterMetrics::new(policy_name, Arc::clone(&dispatcher)));
        let client = kvroute_http::client(&kvroute_http::ClientOptions {
            connect_timeout: RouterConfig::secs(config.proxy.connect_timeout_secs),
            tcp_keepalive: Some(Duration::from_secs(60)),
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            ca_file: config.proxy.ca_file.clone(),
            http2_over_tls: config.proxy.http2,
        })?;
        let timeouts = Timeouts {
            request: RouterConfig::secs(config.proxy.request_timeout_secs),
            first_byte: RouterConfig::secs(config.proxy.first_byte_timeout_secs),
            body_read: RouterConfig::secs(config.proxy.body_read_timeout_secs),
            stream_idle: RouterConfig::secs(config.proxy.stream_idle_timeout_secs),
            health: RouterConfig::secs(config.health.timeout_secs),
            health_interval: opt_secs(config.health.interval_secs),
            metrics_interval: opt_secs(config.metrics_interval_secs),
            exact_resume: RouterConfig::secs(config.directory.exact_resume_secs),
            shutdown_grace: RouterConfig::secs(config.shutdown_grace_secs),
        };
        let instances = config.instances.clone();
        let config_budget_kib = config.proxy.max_buffered_body_bytes.div_ceil(1024);
        let feed = crate::kv::FeedContext {
            dispatcher: Arc::clone(&dispatcher),
            metrics: Arc::clone(&metrics),
            topic: config.directory.kv_topic.clone(),
            limits: kvroute_kvevents::Limits {
                max_frame_bytes: config.directory.kv_max_frame_bytes,
                ..Default::default()
            },
            allow: config.directory.allow_ranges()?,
            exact_resume: timeouts.exact_resume,
            min_reset_interval: RouterConfig::secs(config.directory.min_reset_interval_secs),
        };
        let adm = &config.admission;
        let admission = crate::admit::AdmitLayer::build(
            match adm.max_inflight {
                0 => tokio::sync::Semaphore::MAX_PERMITS,
                n => n,
            },
            adm.max_queued,
            RouterConfig::secs(adm.queue_timeout_secs),
            Some(Arc::clone(&metrics)),
        );
        let gw = Arc::new(Gateway {
            feed,
            admission,
            policy_header: HeaderValue::from_static(policy_name),
            config,
            dispatcher,
            client,
            encoder,
            metrics,
            next_request: AtomicU64::new(1),
            round_robin: AtomicUsize::new(0),
            timeouts,
            admin_lock: Mutex::new(()),
            probe_now: Notify::new(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                (config_budget_kib).min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            probed: watch::channel(false).0,
            explained: Mutex::new(std::collections::VecDeque::new()),
            background: Mutex::new(None),
        });
        for inst in &instances {
            gw.add_instance(inst)?;
        }
        Ok(gw)
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The dispatcher: the one registry of instances (state, load, and
    /// each one's [`Upstream`]), the directory, the policy.
    pub fn dispatcher(&self) -> &Arc<Dispatcher<Upstream>> {
        &self.dispatcher
    }

    /// The router's metrics.
    pub fn metrics(&self) -> &Arc<RouterMetrics> {
        &self.metrics
    }

    /// KiB of request bodies that may still be buffered now.
    pub fn body_budget_available(&self) -> usize {
        self.body_budget.available_permits()
    }

    /// Admission control of the public port (slots, queue).
    pub fn admission(&self) -> &crate::admit::AdmitLayer {
        &self.admission
    }

    /// The prompt encoder.
    pub fn encoder(&self) -> &PromptEncoder {
        &self.encoder
    }

    /// Every instance ever added, indexed by id (removed ones included).
    pub fn engines(&self) -> Vec<Arc<Engine>> {
        self.dispatcher.instances()
    }

    /// One instance.
    pub fn engine(&self, id: InstanceId) -> Option<Arc<Engine>> {
        self.dispatcher.instance(id)
    }

    /// The instance routed to at `url`, if any (not removed).
    pub fn find(&self, url: &str) -> Option<InstanceId> {
        let url = BaseUrl::parse(url).ok()?.to_string();
        self.dispatcher.with_table(|t| {
            t.all()
                .iter()
                .find(|e| !e.is_removed() && e.name() == url)
                .map(|e| e.id())
        })
    }

    /// Add an instance. With health probing on it takes requests once a
    /// probe has succeeded (at once otherwise). With `directory.mode =
    /// "exact"` and a KV-event endpoint its directory entries come from the
    /// engine's events.
    pub fn add_instance(
        self: &Arc<Self>,
        c: &InstanceConfig,
    ) -> Result<InstanceId, AddInstanceError> {
        c.validate().map_err(AddInstanceError::Invalid)?;
        let url = BaseUrl::parse(&c.url).map_err(|e| AddInstanceError::Invalid(e.to_string()))?;
        let kv: Option<Endpoint> = c
            .kv_events
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| AddInstanceError::Invalid(format!("kv_events: {e}")))?;
        let _g = self.admin_lock.lock();
        let name = url.to_string();
        if self.find(&name).is_some() {
            return Err(AddInstanceError::Duplicate(name));
        }
        // With probes on, not admitted before one says it answers.
        let probing = self.timeouts.health_interval.is_some();
        let health = if probing {
            Health::with(Health::FAILING)
        } else {
            Health::OK
        };
        let replay = c.replay.clone();
        let id = self.dispatcher.add(name.clone(), health, |id| {
            Upstream::new(id, url, kv, replay)
        });
        let Some(entry) = self.dispatcher.instance(id) else {
            return Err(AddInstanceError::Invalid("the instance vanished".into()));
        };
        let kv = entry.ext().kv_events();
        let exact = self.config.directory.mode == Mode::Exact && kv.is_some();
        if self.config.directory.mode == Mode::Exact && kv.is_none() {
            tracing::warn!(instance = %name, "directory mode is exact but the instance has no KV-event endpoint: its entries are predicted");
        }
        if let (true, Some(ep)) = (exact, &kv) {
            if let Some(w) = exposure_warning(ep, &self.feed.allow) {
                tracing::warn!(instance = %name, endpoint = %ep, "{w}");
            }
        }
        self.dispatcher
            .set_directory_mode(id, if exact { Mode::Exact } else { Mode::Predicted });
        let cap = self.config.directory.default_capacity_blocks;
        if cap > 0 {
            self.dispatcher.directory().set_capacity(id, cap);
        }
        if probing {
            self.probe_now.notify_one();
        }
        if let Some(bg) = self.background.lock().as_mut() {
            if exact {
                spawn_kv_task(self, &entry, bg);
            }
        }
        tracing::info!(instance = %name, id = id.0, exact, "instance added");
        Ok(id)
    }

    /// Take `id` out of rotation until [`undrain`](Self::undrain); its
    /// in-flight requests finish. False if unknown or removed.
    pub fn drain(&self, id: InstanceId) -> bool {
        self.log(id, self.dispatcher.set_draining(id, true))
    }

    /// Put a drained instance back.
    pub fn undrain(&self, id: InstanceId) -> bool {
        self.log(id, self.dispatcher.set_draining(id, false))
    }

    /// Remove `id` for good: no new requests, its directory entries and
    /// background tasks are dropped. In-flight requests finish.
    pub fn remove(&self, id: InstanceId) -> bool {
        let ok = self.log(id, self.dispatcher.remove(id));
        if let (true, Some(e)) = (ok, self.engine(id)) {
            e.ext().abort_tasks();
        }
        ok
    }

    /// Log a state change; whether the instance was there to change.
    fn log(&self, id: InstanceId, t: Option<Transition>) -> bool {
        let Some(t) = t else { return false };
        if t.changed() {
            let name = self
                .engine(id)
                .map(|e| e.name().to_string())
                .unwrap_or_default();
            tracing::info!(instance = %name, from = t.from.as_str(), to = t.to.as_str(), "instance state");
        }
        true
    }

    /// A health probe succeeded. An ejected instance stays out until its
    /// ejection ends.
    pub(crate) fn mark_healthy(&self, e: &Engine) {
        let up = e.ext();
        up.failures.store(0, Ordering::Release);
        let h = e.health();
        if h.has(Health::FAILING) {
            self.log(
                e.id(),
                self.dispatcher.set_health(e.id(), Health::FAILING, false),
            );
        }
        if h.has(Health::EJECTED) && up.ejection_over() {
            tracing::info!(instance = %up.name(), "ejection over and the probe succeeded: back in rotation");
            self.log(
                e.id(),
                self.dispatcher.set_health(e.id(), Health::EJECTED, false),
            );
        }
    }

    /// A request to the instance failed (connection error, 5xx, no first
    /// token in time). Enough in a row eject it for a while.
    pub(crate) fn request_failed(&self, e: &Engine) {
        let up = e.ext();
        let n = up.request_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let o = &self.config.outlier;
        if o.consecutive_failures == 0
            || n < o.consecutive_failures
            || e.health().has(Health::EJECTED)
        {
            return;
        }
        let k = up.ejections.fetch_add(1, Ordering::AcqRel);
        let secs = (o.base_ejection_secs * 2f64.powi(k.min(16) as i32)).min(o.max_ejection_secs);
        up.eject_for(RouterConfig::secs(secs));
        up.request_failures.store(0, Ordering::Release);
        self.log(
            e.id(),
            self.dispatcher.set_health(e.id(), Health::EJECTED, true),
        );
        self.metrics.error("ejection");
        tracing::warn!(instance = %up.name(), consecutive_failures = n, ejection_secs = secs, "instance ejected: its requests keep failing");
    }

    /// A request to the instance got an answer (any status below 500).
    pub(crate) fn request_succeeded(&self, e: &Engine) {
        e.ext().request_failures.store(0, Ordering::Release);
    }

    /// A health probe or a connection to the instance failed. With probing
    /// disabled nothing could bring an instance back, so only counts.
    pub(crate) fn mark_failure(&self, e: &Engine) {
        let n = e.ext().failures.fetch_add(1, Ordering::AcqRel) + 1;
        if self.timeouts.health_interval.is_none() {
            return;
        }
        if n >= self.config.health.unhealthy_threshold && !e.health().has(Health::FAILING) {
            self.log(
                e.id(),
                self.dispatcher.set_health(e.id(), Health::FAILING, true),
            );
        }
    }

    /// A request could not connect to the instance: count a failure and
    /// probe it now.
    pub(crate) fn suspect(&self, e: &Engine) {
        self.mark_failure(e);
        self.probe_now.notify_one();
    }

    /// Wait until every instance present at start has been probed once
    /// (at once with probing off).
    pub async fn ready(&self) {
        if self.timeouts.health_interval.is_none() {
            return;
        }
        let mut rx = self.probed.subscribe();
        let _ = rx.wait_for(|p| *p).await;
    }

    /// Instances taking requests now.
    pub fn healthy_count(&self) -> usize {
        self.dispatcher.with_table(|t| t.eligible().len())
    }

    /// Start the background tasks: health probes, `/metrics` polls, and a
    /// KV-event subscriber per exact-mode instance. Must run inside a Tokio
    /// runtime. Calling it twice does nothing.
    pub fn start(self: &Arc<Self>) {
        let mut bg = self.background.lock();
        if bg.is_some() {
            return;
        }
        let (stop, _) = watch::channel(false);
        let mut b = Background {
            stop,
            tasks: Vec::new(),
        };
        if self.timeouts.health_interval.is_some() {
            b.tasks.push(tokio::spawn(crate::health::run(
                Arc::clone(self),
                b.stop.subscribe(),
            )));
        }
        if self.timeouts.metrics_interval.is_some() {
            b.tasks.push(tokio::spawn(crate::poll::run(
                Arc::clone(self),
                b.stop.subscribe(),
            )));
        }
        for e in self.engines() {
            if !e.is_removed() && self.dispatcher.directory().mode(e.id()) == Mode::Exact {
                spawn_kv_task(self, &e, &mut b);
            }
        }
        if self.config.discovery.enabled() {
            b.tasks.push(tokio::spawn(crate::discovery::run(
                Arc::clone(self),
                self.config.discovery.clone(),
                b.stop.subscribe(),
            )));
        }
        *bg = Some(b);
    }

    /// Stop the background tasks and wait for them (at most a second each).
    pub async fn stop(&self) {
        let bg = self.background.lock().take();
        let Some(bg) = bg else { return };
        let _ = bg.stop.send(true);
        for e in self.engines() {
            e.ext().abort_tasks();
        }
        for t in bg.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// A response for routes the gateway answers itself.
    pub(crate) fn text(
        &self,
        status: http::StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> http::Response<ProxyBody> {
        let mut r = http::Response::new(ProxyBody::full(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        r
    }
}

fn spawn_kv_task(gw: &Arc<Gateway>, e: &Arc<Engine>, bg: &mut Background) {
    let Some(ep) = e.ext().kv_events().cloned() else {
        return;
    };
    let task = tokio::spawn(crate::kv::run(
        gw.feed.clone(),
        Arc::clone(e),
        ep,
        bg.stop.subscribe(),
    ));
    e.ext().tasks.lock().push(task.abort_handle());
}

/// A warning when a KV-event port the router binds is reachable from
/// outside a private network and no allow-list guards it.
fn exposure_warning(ep: &Endpoint, allow: &[kvroute_kvevents::AddrRange]) -> Option<String> {
    if !allow.is_empty() {
        return None;
    }
    let Endpoint::Bind(addr) = ep else {
        return None;
    };
    let private = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    match ep.bind_ip() {
        Some(ip) if ip.is_unspecified() => Some(format!(
            "the KV-event port {addr} listens on every interface and anyone who reaches it decides this instance's directory entries: bind a loopback or private address, or set directory.kv_events_allow"
        )),
        Some(ip) if !private(ip) => Some(format!(
            "the KV-event port {addr} is on a public address: set directory.kv_events_allow to the engines' addresses"
        )),
        Some(_) => None,
        None => Some(format!(
            "the KV-event port {addr} binds a host name, which may resolve to a public address: consider directory.kv_events_allow"
        )),
    }
}
