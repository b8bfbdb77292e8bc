/*!
HTTP plumbing shared by kvroute's router, load generator and emulated engine.

* [`client`]: one pooled hyper client that speaks `http://` and `https://`
  (rustls with the *ring* provider; the system's trusted roots plus any
  CA file given, as `--ca-cert` in the binaries). Over TLS it offers HTTP/2
  and HTTP/1.1 by ALPN when asked to, so an engine behind an h2-capable
  TLS terminator is spoken to in HTTP/2; plain `http://` stays HTTP/1.1
  (vLLM and SGLang serve HTTP/1.1 only).
* [`server_tls`]: rustls server settings from a PEM certificate chain and
  key (vLLM's `--ssl-certfile` / `--ssl-keyfile`), for the emulated engine.
* [`send_bounded`]: one request and its whole answer, bounded in size and
  time (probes, `/metrics` scrapes, snapshot fetches).
* [`error_chain`]: an error and its sources on one line (hyper-util's own
  message is only "client error (Connect)").

```
let client = kvroute_http::client::<http_body_util::Empty<bytes::Bytes>>(
    &kvroute_http::ClientOptions::default(),
)?;
# drop(client);
# Ok::<(), kvroute_http::TlsError>(())
```
*/

#![deny(missing_docs)]

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use tokio_rustls::TlsAcceptor;

/// Server TLS settings, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls(TlsAcceptor);

impl ServerTls {
    /// The acceptor: `acceptor().accept(tcp_stream).await`.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.0
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(..)")
    }
}

/// The pooled client: `http://` and `https://` URIs alike.
pub type Client<B> = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, B>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the settings (e.g. a key that does not match).
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How to build a [`client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit on opening a connection (TCP, and not the TLS handshake).
    pub connect_timeout: Duration,
    /// TCP keep-alive probes on idle connections (None: off).
    pub tcp_keepalive: Option<Duration>,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Idle connections closed after this long.
    pub pool_idle_timeout: Duration,
    /// PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Offer HTTP/2 (then HTTP/1.1) by ALPN over TLS.
    pub http2_over_tls: bool,
}

impl Default for ClientOptions {
    /// 5 s connect timeout, no keep-alive probes, unlimited idle pool with a
    /// 90 s idle timeout, system roots only, HTTP/1.1 only.
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            tcp_keepalive: None,
            pool_max_idle_per_host: usize::MAX,
            pool_idle_timeout: Duration::from_secs(90),
            ca_file: None,
            http2_over_tls: false,
        }
    }
}

/// The rustls crypto provider every kvroute TLS setting uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The system's roots plus those in `ca_file`.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as every TLS client does.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|e| pem_error(path, e))?;
        }
    }
    Ok(roots)
}

/// A pooled client with `TCP_NODELAY` (see [`ClientOptions`]).
pub fn client<B>(options: &ClientOptions) -> Result<Client<B>, TlsError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    http.set_keepalive(options.tcp_keepalive);
    http.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(options.ca_file.as_deref())?)
        .with_no_client_auth();
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if options.http2_over_tls {
        builder.enable_all_versions().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .build(connector),
    )
}

/// Server settings from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), offering HTTP/1.1 by ALPN.
pub fn server_tls(cert_file: &Path, key_file: &Path) -> Result<ServerTls, TlsError> {
    let certs = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_error(key_file, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls(TlsAcceptor::from(Arc::new(config))))
}

/// Why [`send_bounded`] got no whole answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No response: connection refused or reset, TLS refused (the
    /// [`error_chain`] of the client's error).
    #[error("{0}")]
    Send(String),
    /// The body broke off or was longer than allowed.
    #[error("reading the body: {0}")]
    Body(String),
    /// No whole answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Send `req` and read its whole body, at most `max_body` bytes, all
/// within `timeout`. Any status is an answer: the caller judges it.
pub async fn send_bounded<B>(
    client: &Client<B>,
    req: hyper::Request<B>,
    max_body: usize,
    timeout: Duration,
) -> Result<(hyper::StatusCode, hyper::body::Bytes), FetchError>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchError::Send(error_chain(&e)))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)))
}

/// An error and its sources, joined with `: `, each source once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: inner")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Repeats(std::io::Error::other("inner"))),
            "wrapped: inner"
        );
    }

    #[test]
    fn bad_pem_files_name_the_file() {
        let missing = testdata("no-such.pem");
        let e = server_tls(&missing, &testdata("server.key")).unwrap_err();
        assert!(e.to_string().contains("no-such.pem"), "{e}");
        // A key file where the certificate belongs: no CERTIFICATE block.
        let e = server_tls(&testdata("server.key"), &testdata("server.key")).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");
        // A certificate that does not match the key.
        let e = server_tls(&testdata("ca.pem"), &testdata("server.key")).unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        let opts = ClientOptions {
            ca_file: Some(testdata("server.key")),
            ..ClientOptions::default()
        };
        assert!(client::<http_body_util::Empty<bytes::Bytes>>(&opts).is_err());
    }
}
