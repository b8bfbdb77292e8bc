//! Client access to the public port, as tower layers: API keys
//! ([`ApiKeyLayer`], vLLM's `--api-key`: `Authorization: Bearer KEY` on
//! `/v1/…`, 401 otherwise) and CORS for browser clients ([`cors_layer`],
//! tower-http's, from `access.cors_allowed_origins`). Keys are compared in
//! constant time ([`same`], shared with the admin token).

use crate::body::ProxyBody;
use crate::config::AccessConfig;
use crate::error::error_response;
use crate::service::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// Whether `given` equals `secret`, in time independent of both (digests of
/// equal length compared with `subtle`, so neither the secret's content nor
/// its length leaks through timing).
pub(crate) fn same(given: &[u8], secret: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Requires one of the configured keys on `/v1/…` (as vLLM does; `/health`
/// and the internal endpoints are not its to guard). No keys: no layer.
#[derive(Debug, Clone)]
pub struct ApiKeyLayer {
    keys: Arc<Vec<String>>,
}

impl ApiKeyLayer {
    /// The layer for `access`, if it configures keys.
    pub fn from_config(access: &AccessConfig) -> Option<ApiKeyLayer> {
        (!access.api_keys.is_empty()).then(|| ApiKeyLayer {
            keys: Arc::new(access.api_keys.clone()),
        })
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKey<S>;

    fn layer(&self, inner: S) -> ApiKey<S> {
        ApiKey {
            inner,
            keys: Arc::clone(&self.keys),
        }
    }
}

/// The service of [`ApiKeyLayer`].
#[derive(Debug, Clone)]
pub struct ApiKey<S> {
    inner: S,
    keys: Arc<Vec<String>>,
}

impl<S> ApiKey<S> {
    fn allowed<B>(&self, req: &Request<B>) -> bool {
        if !req.uri().path().starts_with("/v1/") || req.method() == Method::OPTIONS {
            return true;
        }
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        // Every key compared, so the time does not say which one matched.
        self.keys
            .iter()
            .fold(false, |ok, k| same(given, k.as_bytes()) | ok)
    }
}

impl<S, B> Service<Request<B>> for ApiKey<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ProxyBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.allowed(&req) {
            return Box::pin(self.inner.call(req));
        }
        let mut r = error_response(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer KEY)",
            "invalid_request_error",
            "invalid_api_key",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::pin(async move { Ok(r) })
    }
}

/// CORS for `access.cors_allowed_origins` (`"*"`: any origin), answering
/// preflights itself; `None` when no origin is allowed (no CORS headers, as
/// vLLM without `--allowed-origins`). Origins are checked by
/// [`AccessConfig::validate`](crate::RouterConfig::validate).
pub fn cors_layer(access: &AccessConfig) -> Option<CorsLayer> {
    let origins = &access.cors_allowed_origins;
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers(Any),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_whole_secrets() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"));
        assert!(!same(b"", b"s3cret"));
    }
}
