//! GET /metrics over HTTP/1 (axum on the caller's tokio runtime).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use mpio_mpath::Device;
use tokio::net::TcpListener;

/// Where the daemon serves metrics unless configured otherwise: loopback
/// only (the labels name targets, portals and paths), port 9464 (the
/// default of OpenTelemetry's Prometheus exporters; no well-known
/// exporter of storage hosts uses it).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The content type of the exposition. prometheus-client writes
/// OpenMetrics 1.0 text, which Prometheus asks for first in its default
/// Accept header (and which it parses since 2.5); Prometheus' classic
/// `text/plain; version=0.0.4` is not offered.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A router serving GET /metrics: each request calls `source` for the
/// devices configured now (the daemon's set changes on a configuration
/// reload) and renders them.
pub fn router<F>(source: F) -> Router
where
    F: Fn() -> Vec<Device> + Send + Sync + 'static,
{
    let source = Arc::new(source);
    Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                let body = crate::render(&source()).await;
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
            }
        }),
    )
}

/// Serves [`router`] on `listener` until `shutdown` completes (then
/// finishes the scrapes under way).
pub async fn serve<F>(
    listener: TcpListener,
    source: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Vec<Device> + Send + Sync + 'static,
{
    axum::serve(listener, router(source)).with_graceful_shutdown(shutdown).await
}
