//! Errors: [`ServeError`] (the router could not start or run) and the
//! OpenAI-style error bodies it answers clients with,
//! `{"error": {"message", "type", "param", "code"}}`.

use crate::body::ProxyBody;
use crate::request::RequestError;
use http::{header, HeaderValue, Response, StatusCode};

/// The router could not be set up or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The tokenizer or chat template could not be loaded.
    #[error(transparent)]
    Encoder(#[from] crate::encode::EncoderError),
    /// An instance could not be added.
    #[error(transparent)]
    Instance(#[from] AddInstanceError),
    /// TLS towards the engines could not be set up (e.g. a bad CA file).
    #[error("upstream TLS: {0}")]
    Tls(#[from] kvroute_http::TlsError),
    /// A directory snapshot is unusable.
    #[error(transparent)]
    Snapshot(#[from] kvroute_directory::SnapshotError),
    /// The warm start could not read its snapshot.
    #[error("warm start: {0}")]
    WarmStart(String),
    /// Accepting connections failed for good.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// An instance could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddInstanceError {
    /// Bad URL or endpoint.
    #[error("{0}")]
    Invalid(String),
    /// An instance with this URL is already routed to.
    #[error("instance {0} already exists")]
    Duplicate(String),
}

/// The JSON of an OpenAI-style error.
pub(crate) fn error_json(message: &str, kind: &str, code: &str, param: Option<&str>) -> Vec<u8> {
    let v = serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
        }
    });
    serde_json::to_vec(&v).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An OpenAI-style error response.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response<ProxyBody> {
    json_response(status, error_json(message, kind, code, None))
}

/// The response for a refused request.
pub(crate) fn request_error_response(e: &RequestError) -> Response<ProxyBody> {
    let kind = match e {
        RequestError::Overloaded => "server_error",
        _ => "invalid_request_error",
    };
    let mut r = json_response(
        e.status(),
        error_json(&e.to_string(), kind, e.code(), e.param()),
    );
    if matches!(e, RequestError::Overloaded) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A 429 or 503 telling the client to come back after `retry_after_secs`.
pub(crate) fn overloaded_response(
    status: StatusCode,
    message: &str,
    code: &str,
    retry_after_secs: u64,
) -> Response<ProxyBody> {
    let mut r = error_response(status, message, "server_error", code);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    );
    r
}
