//! The gRPC listener: [`serve_picker`] (ext_proc + gRPC health over an
//! existing gateway) and [`serve`] (router and picker together, one
//! shutdown for both).

use crate::processor::Picker;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use kvroute_gateway::{Gateway, RouterConfig, ServeError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

/// The gRPC health services a data plane may check.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "readiness",
    "envoy.service.ext_proc.v3.ExternalProcessor",
    "liveness",
];

/// Serve the picker on `listener` until `shutdown` resolves. The gateway's
/// background tasks (probes, polls, KV events) are the caller's: start it
/// with [`Gateway::start`], or serve it with `kvroute_gateway::serve_gateway`.
pub async fn serve_picker(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("liveness", ServingStatus::Serving)
        .await;
    let readiness = {
        let gateway = Arc::clone(&gateway);
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let ready = gateway.healthy_count() > 0;
                if last != Some(ready) {
                    let status = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for s in &HEALTH_SERVICES[..3] {
                        reporter.set_service_status(s, status).await;
                    }
                    last = Some(ready);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "endpoint picker (ext_proc) listening");
    // Streams in flight may finish for shutdown_grace_secs, then are cut
    // (their picks record Cancelled), as the HTTP side does.
    let grace = gateway.config().shutdown_grace();
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(ExternalProcessorServer::new(Picker::new(gateway)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            let _ = stopping.send(());
        });
    let served = tokio::select! {
        r = server => r.map_err(|e| ServeError::Io(std::io::Error::other(e))),
        _ = async move {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("grace period over: closing the remaining ext_proc streams");
            Ok(())
        }
    };
    readiness.abort();
    served
}

/// Build a [`Gateway`] from `config`, serve its HTTP side on `http` and the
/// picker on `grpc`, until `shutdown` resolves (both stop then).
pub async fn serve(
    http: TcpListener,
    grpc: TcpListener,
    config: RouterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let gateway = Gateway::new(config)?;
    gateway.warm_start().await?;
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let picker = tokio::spawn(serve_picker(
        grpc,
        Arc::clone(&gateway),
        wait(stopped.clone()),
    ));
    let router = kvroute_gateway::serve_gateway(http, gateway, async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let routed = router.await;
    let picked = picker
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    routed.and(picked)
}
