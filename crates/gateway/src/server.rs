//! [`serve`]: accept connections until the caller's shutdown future
//! resolves, then shut down gracefully.
//!
//! ```text
//! accept loop ──(shutdown resolves)──▶ stop accepting
//!   ─▶ hyper graceful shutdown: idle keep-alive connections close, in-flight
//!      responses (streams included) run to their end …
//!   ─▶ … for at most shutdown_grace_secs, then the rest are cut (their
//!      guards record Cancelled)
//!   ─▶ background tasks (probes, polls, KV subscribers) stop
//! ```
//!
//! The caller owns the listener and the shutdown signal (mini-redis style):
//! the binary passes Ctrl-C / SIGTERM, tests pass a oneshot.

use crate::config::RouterConfig;
use crate::error::ServeError;
use crate::gateway::Gateway;
use crate::proxy::Surface;
use crate::service::{AccessLogLayer, RouterService};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceBuilder;

/// Build a [`Gateway`] from `config` and serve it on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: RouterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let gateway = Gateway::new(config)?;
    gateway.warm_start().await?;
    serve_gateway(listener, gateway, shutdown).await
}

/// Serve an existing gateway (tests keep a handle on it to look inside).
pub async fn serve_gateway(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let admin_listener = match &gateway.config().admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    gateway.start();
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, admin_addr = ?admin_listener.as_ref().and_then(|l| l.local_addr().ok()), policy = gateway.config().policy.name(), instances = gateway.engines().len(), "router listening");
    let admit = gateway.admission().clone();
    let public = if admin_listener.is_some() {
        Surface::Public
    } else {
        Surface::All
    };
    let access = &gateway.config().access;
    let svc = ServiceBuilder::new()
        .layer(AccessLogLayer::new())
        .option_layer(crate::auth::cors_layer(access))
        .option_layer(crate::auth::ApiKeyLayer::from_config(access))
        .layer(admit)
        .service(RouterService::with_surface(Arc::clone(&gateway), public));
    let admin_svc =
        ServiceBuilder::new()
            .layer(AccessLogLayer::new())
            .service(RouterService::with_surface(
                Arc::clone(&gateway),
                Surface::Admin,
            ));
    // HTTP/1.1, and HTTP/2 over cleartext (h2c, prior knowledge) for
    // clients that speak it: told apart by the connection preface.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).keep_alive(true);
    http.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = http
                        .serve_connection(
                            TokioIo::new(stream),
                            TowerToHyperService::new(svc.clone()),
                        )
                        .into_owned();
                    let conn = graceful.watch(conn);
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_on(admin_listener.as_ref()) => {
                if let Ok((stream, peer)) = accepted {
                    let conn = http
                        .serve_connection(
                            TokioIo::new(stream),
                            TowerToHyperService::new(admin_svc.clone()),
                        )
                        .into_owned();
                    let conn = graceful.watch(conn);
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                        }
                    });
                }
            }
        }
    }
    drop(listener);
    drop(admin_listener);
    let grace = gateway.timeouts.shutdown_grace;
    tracing::info!(
        open_connections = conns.len(),
        ?grace,
        "shutting down: letting in-flight requests finish"
    );
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(open_connections = conns.len(), "grace period over: closing the remaining connections");
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    gateway.stop().await;
    tracing::info!("router stopped");
    Ok(())
}

/// Accept on `l`, or wait forever without one (accept is cancel-safe, so
/// this can be re-created on every turn of a `select!`).
async fn accept_on(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl RouterConfig {
    /// The grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        RouterConfig::secs(self.shutdown_grace_secs)
    }
}
