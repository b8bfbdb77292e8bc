//! The HTTP side: one pooled client, base URLs, the pre-flight probe of
//! the target, and `/metrics` scrapes.
//!
//! Every request of a run (completions, probes, scrapes) goes through one
//! [`kvroute_http`] client with a keep-alive pool, so a run opens one
//! connection per concurrent request and reuses it afterwards; `http://` and
//! `https://` alike (the system's roots plus `--ca-cert`). Requests to the
//! target carry the run's headers (`--header`, the API key); scrapes of the
//! engines' `/metrics` do not.

use crate::error::LoadgenError;
use crate::sse::{error_message, truncate};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use hyper::{StatusCode, Uri};
use kvroute_metrics::Scrape;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use kvroute_http::error_chain;

/// The pooled client and the headers every request to the target carries.
#[derive(Clone)]
pub(crate) struct Client {
    inner: kvroute_http::Client<Full<Bytes>>,
    target_headers: Arc<HeaderMap>,
}

impl std::fmt::Debug for Client {
    /// Header names only: values may hold an API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "target_headers",
                &self.target_headers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Largest non-streamed body read (error pages, `/v1/models`, `/metrics`).
const MAX_BODY: usize = 16 << 20;

impl Client {
    /// A client with keep-alive pooling, `TCP_NODELAY`, a connect timeout,
    /// `ca_file` trusted besides the system's roots, and `target_headers`
    /// put on requests to the target.
    pub(crate) fn new(
        connect_timeout: Duration,
        ca_file: Option<PathBuf>,
        target_headers: HeaderMap,
    ) -> Result<Client, LoadgenError> {
        let options = kvroute_http::ClientOptions {
            connect_timeout,
            ca_file,
            ..kvroute_http::ClientOptions::default()
        };
        Ok(Client {
            inner: kvroute_http::client(&options).map_err(|e| LoadgenError::Tls(e.to_string()))?,
            target_headers: Arc::new(target_headers),
        })
    }

    /// Send `req` to the target (see [`Client::for_target`]).
    pub(crate) fn request_target(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        self.inner.request(self.for_target(req))
    }

    /// `req` with the run's headers added, those it sets itself kept.
    fn for_target(&self, mut req: hyper::Request<Full<Bytes>>) -> hyper::Request<Full<Bytes>> {
        for (k, v) in self.target_headers.iter() {
            if !req.headers().contains_key(k) {
                req.headers_mut().insert(k.clone(), v.clone());
            }
        }
        req
    }
}

/// The headers of `--header KEY=VALUE` flags and an API key (sent as
/// `Authorization: Bearer KEY`, as the OpenAI clients do; a `--header
/// Authorization=…` wins over it).
pub(crate) fn target_headers(
    headers: &[(String, String)],
    api_key: Option<&str>,
) -> Result<HeaderMap, LoadgenError> {
    let mut map = HeaderMap::new();
    let bad = |name: &str, reason: String| LoadgenError::InvalidHeader {
        name: name.to_string(),
        reason,
    };
    if let Some(key) = api_key {
        let v = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|e| bad("api key", e.to_string()))?;
        map.insert(AUTHORIZATION, v);
    }
    for (k, v) in headers {
        let name =
            HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| bad(k, e.to_string()))?;
        let value = HeaderValue::from_str(v.trim()).map_err(|e| bad(k, e.to_string()))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// A validated base URL: `http[s]://host:port[/prefix]`, no trailing slash and
/// no trailing `/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl(String);

impl BaseUrl {
    /// Validate `url`.
    pub(crate) fn parse(url: &str) -> Result<BaseUrl, LoadgenError> {
        let invalid = |reason: &str| LoadgenError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err(invalid("only http:// and https:// URLs are supported")),
            None => return Err(invalid("no scheme; write http://host:port")),
        }
        if uri.authority().is_none() {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query string"));
        }
        let mut base = url.trim().trim_end_matches('/').to_string();
        if let Some(stripped) = base.strip_suffix("/v1") {
            base = stripped.to_string();
        }
        Ok(BaseUrl(base))
    }

    /// `base` + `path` as a URI.
    pub(crate) fn join(&self, path: &str) -> Result<Uri, LoadgenError> {
        let full = format!("{}{}", self.0, path);
        full.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| LoadgenError::InvalidUrl {
                url: full.clone(),
                reason: e.to_string(),
            })
    }

    /// The `/metrics` URI (the base itself if it already ends with it).
    pub(crate) fn metrics(&self) -> Result<Uri, LoadgenError> {
        if self.0.ends_with("/metrics") {
            self.join("")
        } else {
            self.join("/metrics")
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// GET `uri` and read the whole body, within `timeout`. Errors as text.
/// `to_target`: the run's headers go with it.
pub(crate) async fn get(
    client: &Client,
    uri: &Uri,
    timeout: Duration,
    to_target: bool,
) -> Result<(StatusCode, Bytes), String> {
    let req = hyper::Request::get(uri.clone())
        .header(
            hyper::header::ACCEPT,
            "text/plain;version=0.0.4;q=1,application/json;q=0.9,*/*;q=0.1",
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let req = if to_target {
        client.for_target(req)
    } else {
        req
    };
    kvroute_http::send_bounded(&client.inner, req, MAX_BODY, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Read a (non-streamed) body, at most [`MAX_BODY`] bytes.
pub(crate) async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("reading the body: {e}"))
}

/// The message of an error response: OpenAI's `error.message` if the body is
/// such JSON, else the body text (truncated).
pub(crate) fn error_body_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => match v
            .get("error")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
        {
            Some(e) => truncate(&error_message(e), 300),
            None => truncate(text.trim(), 300),
        },
        Err(_) => truncate(text.trim(), 300),
    }
}

/// Make sure the target answers and find the model to request.
///
/// `GET /v1/models` first: with no `model` given, its first `data[].id` is
/// the model. If a model is given and `/v1/models` is not available (some
/// routers do not serve it), `GET /health` answering 2xx is enough.
pub(crate) async fn probe_model(
    client: &Client,
    base: &BaseUrl,
    timeout: Duration,
    model: Option<&str>,
) -> Result<String, LoadgenError> {
    let models_uri = base.join("/v1/models")?;
    let unreachable = |uri: &Uri, reason: String| LoadgenError::Unreachable {
        url: uri.to_string(),
        reason,
    };
    let models = get(client, &models_uri, timeout, true)
        .await
        .map_err(|reason| unreachable(&models_uri, reason))?;
    match (models, model) {
        ((status, _), Some(m)) if status.is_success() => Ok(m.to_string()),
        ((status, body), None) if status.is_success() => {
            let no_model = |reason: String| LoadgenError::NoModel {
                url: models_uri.to_string(),
                reason,
            };
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| no_model(format!("the answer is not JSON ({e})")))?;
            v.get("data")
                .and_then(|d| d.as_array())
                .and_then(|d| d.first())
                .and_then(|m| m.get("id"))
                .and_then(|id| id.as_str())
                .map(str::to_string)
                .ok_or_else(|| no_model("no data[0].id in the answer".into()))
        }
        ((status, body), None) => Err(unreachable(
            &models_uri,
            format!("HTTP {}: {}", status.as_u16(), error_body_message(&body)),
        )),
        ((status, body), Some(m)) => {
            let health_uri = base.join("/health")?;
            match get(client, &health_uri, timeout, true).await {
                Ok((h, _)) if h.is_success() => {
                    tracing::warn!(
                        url = %models_uri,
                        status = status.as_u16(),
                        "/v1/models unavailable; /health answered, using model {m:?}"
                    );
                    Ok(m.to_string())
                }
                Ok((h, _)) => Err(unreachable(
                    &models_uri,
                    format!(
                        "HTTP {}: {} (and /health: HTTP {})",
                        status.as_u16(),
                        error_body_message(&body),
                        h.as_u16()
                    ),
                )),
                Err(reason) => Err(unreachable(&health_uri, reason)),
            }
        }
    }
}

/// Scrape one engine's `/metrics`.
pub(crate) async fn scrape(
    client: &Client,
    base: &BaseUrl,
    timeout: Duration,
) -> Result<Scrape, String> {
    let uri = base.metrics().map_err(|e| e.to_string())?;
    let (status, body) = get(client, &uri, timeout, false).await?;
    if !status.is_success() {
        return Err(format!("GET {uri}: HTTP {}", status.as_u16()));
    }
    let text = std::str::from_utf8(&body).map_err(|e| format!("GET {uri}: not UTF-8: {e}"))?;
    Scrape::parse(text).map_err(|e| format!("GET {uri}: {e}"))
}

/// Scrape every engine concurrently; results in order.
pub(crate) async fn scrape_all(
    client: &Client,
    engines: &[BaseUrl],
    timeout: Duration,
) -> Vec<Result<Scrape, String>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in engines.iter().enumerate() {
        let (client, e) = (client.clone(), e.clone());
        set.spawn(async move { (i, scrape(&client, &e, timeout).await) });
    }
    let mut out: Vec<Result<Scrape, String>> = engines
        .iter()
        .map(|_| Err("scrape task failed".to_string()))
        .collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = r;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = |u: &str| BaseUrl::parse(u).map(|b| b.0);
        assert_eq!(b("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(
            b("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(b("http://h:1/v1/").unwrap(), "http://h:1");
        assert_eq!(b("http://h:1/prefix").unwrap(), "http://h:1/prefix");
        assert_eq!(b("https://h:1/v1").unwrap(), "https://h:1");
        for bad in ["ftp://h:1", "h:1", "/path", "http://h:1/?x=1", "not a url"] {
            assert!(
                matches!(BaseUrl::parse(bad), Err(LoadgenError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let base = BaseUrl::parse("http://h:1").unwrap();
        assert_eq!(
            base.join("/v1/models").unwrap().to_string(),
            "http://h:1/v1/models"
        );
        assert_eq!(base.metrics().unwrap().to_string(), "http://h:1/metrics");
        let m = BaseUrl::parse("http://h:1/metrics").unwrap();
        assert_eq!(m.metrics().unwrap().to_string(), "http://h:1/metrics");
    }

    #[test]
    fn headers_from_flags() {
        let h = target_headers(&[("x-tenant".into(), " blue ".into())], Some("sk-1")).unwrap();
        assert_eq!(h["authorization"], "Bearer sk-1");
        assert_eq!(h["x-tenant"], "blue");
        let own = target_headers(&[("Authorization".into(), "Basic x".into())], Some("k")).unwrap();
        assert_eq!(own["authorization"], "Basic x", "an explicit header wins");
        for (k, v) in [("bad name", "v"), ("x-ok", "line\nbreak")] {
            let e = target_headers(&[(k.into(), v.into())], None).unwrap_err();
            assert!(matches!(e, LoadgenError::InvalidHeader { .. }), "{k}: {e}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body_message(br#"{"error": {"message": "model x does not exist", "code": 404}}"#),
            "model x does not exist"
        );
        assert_eq!(
            error_body_message(br#"{"detail": "Not Found"}"#),
            "Not Found"
        );
        assert_eq!(
            error_body_message(b"  Internal Server Error\n"),
            "Internal Server Error"
        );
    }
}
