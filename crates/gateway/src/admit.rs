//! [`AdmitLayer`]: at most N requests forwarded at once, a bounded queue in
//! front of them, and a clear answer beyond it — mini-redis's semaphore-bounded
//! accept loop, per request, as a tower layer.
//!
//! ```text
//! request ─▶ exempt path (/health, /metrics, /admin)? ─▶ inner
//!         ─▶ free slot? ─ yes ─────────────────────────────▶ inner ─▶ body ends ─▶ slot freed
//!            └─ no ─▶ queue full? ─ yes ─▶ 429 Retry-After
//!                     └─ no ─▶ wait ≤ queue_timeout ─ slot ─▶ inner …
//!                                                  └ timeout ─▶ 503 Retry-After
//! ```
//!
//! A slot is held until the response *body* ends (a token stream can run for
//! minutes), not until the headers go out: the permit travels in the body
//! ([`ProxyBody::Admitted`]).

use crate::body::ProxyBody;
use crate::error::overloaded_response;
use crate::metrics::RouterMetrics;
use crate::service::BoxFuture;
use http::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// Whether `path` bypasses admission (the router's own endpoints).
pub(crate) fn exempt(path: &str) -> bool {
    path == "/health" || path == "/metrics" || path == "/admin" || path.starts_with("/admin/")
}

#[derive(Debug)]
struct State {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
    metrics: Option<Arc<RouterMetrics>>,
}

/// The layer: `max_inflight` slots, `max_queued` waiters, `queue_timeout`.
#[derive(Debug, Clone)]
pub struct AdmitLayer {
    state: Arc<State>,
}

impl AdmitLayer {
    /// A layer admitting `max_inflight` requests at once (≥ 1) with a queue
    /// of `max_queued`, each waiting at most `queue_timeout`.
    pub fn new(max_inflight: usize, max_queued: usize, queue_timeout: Duration) -> AdmitLayer {
        AdmitLayer::build(max_inflight, max_queued, queue_timeout, None)
    }

    /// The same, counting refusals in the router's `errors_total{kind}`.
    pub(crate) fn build(
        max_inflight: usize,
        max_queued: usize,
        queue_timeout: Duration,
        metrics: Option<Arc<RouterMetrics>>,
    ) -> AdmitLayer {
        AdmitLayer {
            state: Arc::new(State {
                slots: Arc::new(Semaphore::new(
                    max_inflight.clamp(1, Semaphore::MAX_PERMITS),
                )),
                queued: AtomicUsize::new(0),
                max_queued,
                queue_timeout,
                metrics,
            }),
        }
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.state.queued.load(Ordering::Relaxed)
    }

    /// Free slots now.
    pub fn available(&self) -> usize {
        self.state.slots.available_permits()
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// The service of [`AdmitLayer`].
#[derive(Debug, Clone)]
pub struct Admit<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, B> Service<Request<B>> for Admit<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // The clone is ready (the inner service always is); keep the one that
        // was polled ready for this call (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let permit = match Arc::clone(&state.slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if state.queued.fetch_add(1, Ordering::AcqRel) >= state.max_queued {
                        state.queued.fetch_sub(1, Ordering::AcqRel);
                        if let Some(m) = &state.metrics {
                            m.error("queue_full");
                        }
                        return Ok(overloaded_response(
                            StatusCode::TOO_MANY_REQUESTS,
                            "the router's request queue is full; retry shortly",
                            "queue_full",
                            1,
                        ));
                    }
                    let waited = tokio::time::timeout(
                        state.queue_timeout,
                        Arc::clone(&state.slots).acquire_owned(),
                    )
                    .await;
                    state.queued.fetch_sub(1, Ordering::AcqRel);
                    match waited {
                        Ok(Ok(p)) => p,
                        _ => {
                            if let Some(m) = &state.metrics {
                                m.error("queue_timeout");
                            }
                            return Ok(overloaded_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "no capacity within the queue timeout; retry shortly",
                                "overloaded",
                                state.queue_timeout.as_secs().clamp(1, 30),
                            ));
                        }
                    }
                }
            };
            let resp = inner.call(req).await?;
            Ok(resp.map(|b| ProxyBody::Admitted(Box::new(b), permit)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A service answering 200 "ok".
    #[derive(Clone)]
    struct Held;

    impl Service<Request<()>> for Held {
        type Response = Response<ProxyBody>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            Box::pin(async { Ok(Response::new(ProxyBody::full("ok"))) })
        }
    }

    fn req(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn slots_then_queue_then_refusals() {
        let layer = AdmitLayer::new(1, 1, Duration::from_millis(100));
        let svc = layer.layer(Held);
        // One slot: the first response holds it while its body lives.
        let first = svc.clone().oneshot(req("/v1/completions")).await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(layer.available(), 0);
        // The second waits in the queue; the third finds it full (429).
        let second = tokio::spawn(svc.clone().oneshot(req("/v1/completions")));
        while layer.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let third = svc.clone().oneshot(req("/v1/completions")).await.unwrap();
        assert_eq!(third.status(), 429);
        assert_eq!(third.headers()["retry-after"], "1");
        // The queued one times out (503) while the first body is alive.
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.status(), 503);
        assert!(second.headers().contains_key("retry-after"));
        // Exempt paths pass regardless.
        let h = svc.clone().oneshot(req("/health")).await.unwrap();
        assert_eq!(h.status(), 200);
        // The first body ends: its slot is free again.
        let bytes = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
        assert_eq!(layer.available(), 1);
        let fourth = svc.clone().oneshot(req("/v1/completions")).await.unwrap();
        assert_eq!(fourth.status(), 200);
    }
}
