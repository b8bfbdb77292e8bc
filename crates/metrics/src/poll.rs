//! Fetching an engine's `/metrics` over HTTP (feature `poll`): [`fetch`]
//! one page with a shared keep-alive [`HttpClient`], bounded in time and size.
//! The router's poll loop (which instances, how often, what to do with a
//! page) lives with the router; this is the part every caller shares.
//!
//! `http://` and `https://` engines alike ([`kvroute_http`]'s client).

use crate::error::MetricsError;
use crate::scrape::Scrape;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use kvroute_http::FetchError;
use std::time::Duration;

/// The HTTP client type [`fetch`] uses (cheap to clone; clones share the
/// connection pool).
pub type HttpClient = kvroute_http::Client<Empty<Bytes>>;

/// A new [`HttpClient`] with keep-alive connection pooling (`options`: the
/// CA file trusted for `https://` engines, timeouts).
pub fn http_client(
    options: &kvroute_http::ClientOptions,
) -> Result<HttpClient, kvroute_http::TlsError> {
    kvroute_http::client(options)
}

/// Largest `/metrics` body accepted (a vLLM page is ~50 KiB).
pub const MAX_BODY_BYTES: usize = 16 << 20;

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
    let (status, body) = kvroute_http::send_bounded(client, req, MAX_BODY_BYTES, timeout)
        .await
        .map_err(|e| match e {
            FetchError::Send(reason) => MetricsError::Http {
                url: url.clone(),
                reason,
            },
            FetchError::Body(reason) => MetricsError::Body {
                url: url.clone(),
                reason,
            },
            FetchError::Timeout(after) => MetricsError::Timeout {
                url: url.clone(),
                after,
            },
        })?;
    if !status.is_success() {
        return Err(MetricsError::HttpStatus {
            url,
            status: status.as_u16(),
        });
    }
    let text = std::str::from_utf8(&body).map_err(|e| MetricsError::Body {
        url: url.clone(),
        reason: format!("not UTF-8: {e}"),
    })?;
    Scrape::parse(text)
}

fn parse_http_url(url: &str) -> Result<Uri, MetricsError> {
    let invalid = |reason: &str| MetricsError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("only http:// and https:// URLs are supported"));
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    Ok(uri)
}
