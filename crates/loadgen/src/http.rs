//! The HTTP side: one pooled hyper-util client, base URLs, the pre-flight
//! probe of the target, and `/metrics` scrapes.
//!
//! Every request of a run (completions, probes, scrapes) goes through one
//! `hyper_util::client::legacy::Client` with a keep-alive pool, so a run
//! opens one connection per concurrent request and reuses it afterwards.
//! Only plain `http://` is supported: targets and engines sit on a private
//! network (or 127.0.0.1).

use crate::error::LoadgenError;
use crate::sse::{error_message, truncate};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kvroute_metrics::Scrape;
use std::time::Duration;

/// The client type: bodies are whole byte strings (requests are small).
pub(crate) type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// Largest non-streamed body read (error pages, `/v1/models`, `/metrics`).
const MAX_BODY: usize = 16 << 20;

/// A client with keep-alive pooling, `TCP_NODELAY`, and a connect timeout.
pub(crate) fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// A validated base URL: `http://host:port[/prefix]`, no trailing slash and
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
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported; use http://")),
            Some(_) => return Err(invalid("only http:// URLs are supported")),
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

/// An error and its sources, joined with `: ` (hyper-util's own message is
/// just "client error (Connect)").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

/// GET `uri` and read the whole body, within `timeout`. Errors as text.
pub(crate) async fn get(
    client: &Client,
    uri: &Uri,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let work = async {
        let req = hyper::Request::get(uri.clone())
            .header(
                hyper::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,application/json;q=0.9,*/*;q=0.1",
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let body = read_body(resp.into_body()).await?;
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
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
    let models = get(client, &models_uri, timeout)
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
            match get(client, &health_uri, timeout).await {
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
    let (status, body) = get(client, &uri, timeout).await?;
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
        for bad in [
            "https://h:1",
            "h:1",
            "/path",
            "http://h:1/?x=1",
            "not a url",
        ] {
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
