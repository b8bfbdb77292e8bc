//! Fetching and polling engines' `/metrics` over HTTP (feature `poll`):
//! [`fetch`], [`Poller`], [`PollerHandle`].
//!
//! A [`Poller`] holds N instance URLs and an HTTP/1 client. Each round it
//! fetches every instance concurrently (one Tokio task per fetch, each bounded
//! by the timeout) and hands each `(index, Result<Scrape>)` to the caller as it
//! arrives; rounds start every `interval` (a slow round delays the next one
//! rather than overlapping it). Nothing runs until the caller asks:
//!
//! * [`Poller::poll_once`]: one round, results in index order (before/after
//!   snapshots for an [`EngineReport`](crate::EngineReport));
//! * [`Poller::run`] / [`Poller::run_async`]: rounds until the `shutdown`
//!   future completes or the callback returns `ControlFlow::Break`;
//! * [`Poller::spawn`]: the same on a Tokio task, sending on a channel; the
//!   returned [`PollerHandle`] aborts the task when dropped, and the task also
//!   ends when the receiver is dropped.
//!
//! Only plain `http://` is supported (engines sit on a private network).

use crate::error::MetricsError;
use crate::scrape::Scrape;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// The HTTP client type [`fetch`] uses (cheap to clone; clones share the
/// connection pool).
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A new [`HttpClient`] with keep-alive connection pooling.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Largest `/metrics` body accepted (a vLLM page is ~50 KiB).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// One polled result: the instance's index and its scrape or error.
pub type PollResult = (usize, Result<Scrape, MetricsError>);

/// GET `url` and parse the body as a `/metrics` page, all within `timeout`.
///
/// Errors: [`MetricsError::InvalidUrl`], [`MetricsError::Http`] (connection
/// failed), [`MetricsError::HttpStatus`] (non-2xx), [`MetricsError::Body`],
/// [`MetricsError::Timeout`], or a parse error from [`Scrape::parse`].
pub async fn fetch(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<Scrape, MetricsError> {
    let uri = parse_http_url(url)?;
    fetch_uri(client, &uri, timeout).await
}

async fn fetch_uri(
    client: &HttpClient,
    uri: &Uri,
    timeout: Duration,
) -> Result<Scrape, MetricsError> {
    let url = uri.to_string();
    let work = async {
        let req = hyper::Request::get(uri.clone())
            // Ask for the classic text format (Python's client would
            // otherwise answer an OpenMetrics Accept with OpenMetrics).
            .header(
                hyper::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| MetricsError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let resp = client.request(req).await.map_err(|e| MetricsError::Http {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MetricsError::HttpStatus {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| MetricsError::Body {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|e| MetricsError::Body {
            url: url.clone(),
            reason: format!("not UTF-8: {e}"),
        })?;
        Scrape::parse(text)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(MetricsError::Timeout {
            url,
            after: timeout,
        }),
    }
}

/// An error and its sources, joined with `: ` (hyper-util's top-level
/// message alone is just "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn parse_http_url(url: &str) -> Result<Uri, MetricsError> {
    let invalid = |reason: &str| MetricsError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// URLs are supported"));
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// The `/metrics` URL of an instance: `base` with `path` appended, unless
/// `base` already ends with it.
fn metrics_url(base: &str, path: &str) -> Result<Uri, MetricsError> {
    let base = base.trim_end_matches('/');
    let path = format!("/{}", path.trim_start_matches('/'));
    if base.ends_with(&path) {
        parse_http_url(base)
    } else {
        parse_http_url(&format!("{base}{path}"))
    }
}

/// How often and how patiently to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// Limit for one fetch (connect + response + body).
    pub timeout: Duration,
    /// Path appended to each base URL.
    pub path: String,
}

impl Default for PollerConfig {
    /// Every 500 ms, 2 s timeout, `/metrics`.
    fn default() -> Self {
        PollerConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            path: "/metrics".to_string(),
        }
    }
}

/// Polls the `/metrics` pages of N instances (see the module docs).
#[derive(Debug, Clone)]
pub struct Poller {
    urls: Vec<Uri>,
    config: PollerConfig,
    client: HttpClient,
}

impl Poller {
    /// A poller for instances at `base_urls` (`http://host:port`; the
    /// configured path is appended). Index `i` in results is `base_urls[i]`.
    ///
    /// Errors: [`MetricsError::InvalidUrl`] for the first bad URL.
    pub fn new<I, S>(base_urls: I, config: PollerConfig) -> Result<Poller, MetricsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Poller::with_client(base_urls, config, http_client())
    }

    /// Like [`new`](Poller::new), sharing an existing client.
    pub fn with_client<I, S>(
        base_urls: I,
        config: PollerConfig,
        client: HttpClient,
    ) -> Result<Poller, MetricsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls = base_urls
            .into_iter()
            .map(|u| metrics_url(u.as_ref(), &config.path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Poller {
            urls,
            config,
            client,
        })
    }

    /// The full URLs polled, by index.
    pub fn urls(&self) -> Vec<String> {
        self.urls.iter().map(Uri::to_string).collect()
    }

    /// Fetch every instance once, concurrently; results in index order.
    pub async fn poll_once(&self) -> Vec<Result<Scrape, MetricsError>> {
        let mut slots: Vec<Option<Result<Scrape, MetricsError>>> =
            (0..self.urls.len()).map(|_| None).collect();
        let mut set = self.start_round();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                slots[i] = Some(r);
            }
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(MetricsError::Http {
                        url: self.urls[i].to_string(),
                        reason: "fetch task failed".to_string(),
                    })
                })
            })
            .collect()
    }

    fn start_round(&self) -> JoinSet<PollResult> {
        let mut set = JoinSet::new();
        for (i, uri) in self.urls.iter().enumerate() {
            let client = self.client.clone();
            let uri = uri.clone();
            let timeout = self.config.timeout;
            set.spawn(async move { (i, fetch_uri(&client, &uri, timeout).await) });
        }
        set
    }

    /// Poll every `interval` until `shutdown` completes or `on_scrape`
    /// returns `ControlFlow::Break`. Fetches still in flight are cancelled
    /// when this returns.
    pub async fn run<F>(&self, shutdown: impl Future<Output = ()>, mut on_scrape: F)
    where
        F: FnMut(usize, Result<Scrape, MetricsError>) -> ControlFlow<()>,
    {
        self.run_async(shutdown, |i, r| std::future::ready(on_scrape(i, r)))
            .await;
    }

    /// Like [`run`](Poller::run) with an async callback (e.g. a channel send).
    pub async fn run_async<F, Fut>(&self, shutdown: impl Future<Output = ()>, on_scrape: F)
    where
        F: FnMut(usize, Result<Scrape, MetricsError>) -> Fut,
        Fut: Future<Output = ControlFlow<()>>,
    {
        tokio::select! {
            _ = shutdown => {}
            _ = self.poll_loop(on_scrape) => {}
        }
    }

    async fn poll_loop<F, Fut>(&self, mut on_scrape: F)
    where
        F: FnMut(usize, Result<Scrape, MetricsError>) -> Fut,
        Fut: Future<Output = ControlFlow<()>>,
    {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Dropping the set (on break or cancellation) aborts its fetches.
            let mut set = self.start_round();
            while let Some(joined) = set.join_next().await {
                // A fetch task only fails to join if it panicked; the others
                // of the round are still delivered.
                let Ok((i, r)) = joined else { continue };
                if on_scrape(i, r).await.is_break() {
                    return;
                }
            }
        }
    }

    /// Run [`run_async`](Poller::run_async) on a new Tokio task, sending each
    /// result on `tx`. The task ends when the returned handle is dropped or
    /// stopped, or when the receiver is dropped.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime (like `tokio::spawn`).
    pub fn spawn(self, tx: mpsc::Sender<PollResult>) -> PollerHandle {
        let task = tokio::spawn(async move {
            self.run_async(std::future::pending(), |i, r| {
                let tx = tx.clone();
                async move {
                    if tx.send((i, r)).await.is_err() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }
            })
            .await;
        });
        PollerHandle { task: Some(task) }
    }
}

/// Owns a spawned poller task; dropping it stops the task.
#[derive(Debug)]
pub struct PollerHandle {
    /// Always `Some` until [`shutdown`](PollerHandle::shutdown) takes it.
    task: Option<JoinHandle<()>>,
}

impl PollerHandle {
    /// Stop polling (in-flight fetches are cancelled).
    pub fn stop(&self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }

    /// True once the task has ended (stopped, or its receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop and wait until the task has ended.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // The only possible error is the cancellation just requested.
            let _ = t.await;
        }
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_urls_are_built_from_bases() {
        let u = |b: &str| metrics_url(b, "/metrics").map(|u| u.to_string());
        assert_eq!(
            u("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000/metrics"
        );
        assert_eq!(
            u("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000/metrics"
        );
        assert_eq!(u("http://h:1/metrics").unwrap(), "http://h:1/metrics");
        assert_eq!(u("http://h:1/v1").unwrap(), "http://h:1/v1/metrics");
        assert!(matches!(
            u("https://h:1"),
            Err(MetricsError::InvalidUrl { .. })
        ));
        assert!(matches!(
            u("not a url"),
            Err(MetricsError::InvalidUrl { .. })
        ));
        assert!(matches!(
            u("/just/a/path"),
            Err(MetricsError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn error_chain_joins_sources() {
        let e = Wrapper(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connect: refused");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
