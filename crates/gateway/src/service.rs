//! The router as a tower [`Service`] ([`RouterService`]) and one
//! [`Layer`] around it ([`AccessLogLayer`]), so it composes with tower
//! middleware (`ServiceBuilder`) and runs under hyper through
//! `hyper_util::service::TowerToHyperService`.

use crate::body::ProxyBody;
use crate::gateway::Gateway;
use crate::proxy::{RouteInfo, Surface};
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
        Box::pin(async move {
            let method = req.method().clone();
            let route = route_label(req.uri().path());
            let resp = Arc::clone(&gw).handle_on(surface, req).await;
            gw.metrics()
                .http(method.as_str(), route, resp.status().as_u16());
            Ok(resp)
        })
    }
}

/// A bounded label for a request path (the router's routes, or "other").
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/completions" => "/v1/completions",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/models" => "/v1/models",
        "/health" => "/health",
        "/metrics" => "/metrics",
        p if p == "/admin" || p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}

/// The access log: every routed completion at `info` (method, path, status,
/// time to response headers, the client's `x-request-id`, the engine chosen
/// and the prompt tokens predicted cached there); other requests at `debug`
/// (5xx at `info`). Costs nothing but the boxing when neither level is on.
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
        if !tracing::enabled!(tracing::Level::INFO) {
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
                match resp.extensions().get::<RouteInfo>() {
                    Some(route) => {
                        let request_id = route.request_id.to_str().unwrap_or("?");
                        tracing::info!(%method, %path, status, micros, request_id, engine = %route.engine, cached_tokens = route.cached_tokens, "request");
                    }
                    None if status >= 500 => {
                        tracing::info!(%method, %path, status, micros, "request");
                    }
                    None => tracing::debug!(%method, %path, status, micros, "request"),
                }
            }
            r
        })
    }
}
