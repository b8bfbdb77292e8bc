//! The router as a tower [`Service`] ([`RouterService`]) and one
//! [`Layer`] around it ([`AccessLogLayer`]), so it composes with tower
//! middleware (`ServiceBuilder`) and runs under hyper through
//! `hyper_util::service::TowerToHyperService`.

use crate::body::ProxyBody;
use crate::gateway::Gateway;
use crate::proxy::Surface;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// The boxed future of the router's services.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Every request, answered by a [`Gateway`]. Always ready, never fails
/// (errors are responses).
#[derive(Debug, Clone)]
pub struct RouterService {
    gateway: Arc<Gateway>,
    surface: Surface,
}

impl RouterService {
    /// A service over `gateway` answering what its public port answers.
    pub fn new(gateway: Arc<Gateway>) -> RouterService {
        let surface = if gateway.config().admin_listen.is_some() {
            Surface::Public
        } else {
            Surface::All
        };
        RouterService { gateway, surface }
    }

    /// A service answering the endpoints of `surface`.
    pub fn with_surface(gateway: Arc<Gateway>, surface: Surface) -> RouterService {
        RouterService { gateway, surface }
    }

    /// The gateway.
    pub fn get_ref(&self) -> &Arc<Gateway> {
        &self.gateway
    }
}

impl Service<Request<Incoming>> for RouterService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let gw = Arc::clone(&self.gateway);
        let surface = self.surface;
        Box::pin(async move { Ok(gw.handle_on(surface, req).await) })
    }
}

/// Logs each request (method, path, status, time to response headers) at
/// `debug` level (5xx at `info`) when `debug` is enabled; otherwise costs
/// nothing but the boxing. Failures are logged where they happen anyway.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl AccessLogLayer {
    /// The layer.
    pub const fn new() -> AccessLogLayer {
        AccessLogLayer
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> AccessLog<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Box::pin(self.inner.call(req));
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Ok(resp) = &r {
                let status = resp.status().as_u16();
                let micros = start.elapsed().as_micros() as u64;
                if status >= 500 {
                    tracing::info!(%method, %path, status, micros, "request");
                } else {
                    tracing::debug!(%method, %path, status, micros, "request");
                }
            }
            r
        })
    }
}
