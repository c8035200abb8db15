//! GET /metrics over HTTP/1 (axum's router, hyper's HTTP/1 connections on
//! the caller's tokio runtime).
//!
//! The port is open to every local user, so what one client can hold is
//! bounded ([`Limits`]): a few connections at a time (the ones after wait
//! in the kernel's backlog, holding no descriptor of the daemon), a header
//! that must arrive within seconds (also on an idle keep-alive
//! connection), and a lifetime after which a connection is closed once its
//! answer is out. A client that connects and sends nothing, sends a byte a
//! second, or never reads its answer is gone after at most the lifetime
//! and the header timeout. Without these, one user exhausted the daemon's
//! file descriptors, and with them its control socket and iSCSI sessions.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mpio_throttle::AcceptBackoff;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::Served;

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
/// reload), each a [`Device`](mpio_mpath::Device) or a [`Served`] (with its frontends), and
/// renders them.
pub fn router<F, S>(source: F) -> Router
where
    F: Fn() -> Vec<S> + Send + Sync + 'static,
    S: Into<Served> + Send + 'static,
{
    let source = Arc::new(source);
    Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                let body = crate::render(source()).await;
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
            }
        }),
    )
}

/// What one client can hold of the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    /// Default 16 (Prometheus uses one per scrape target).
    pub max_connections: usize,
    /// A request's header must arrive within this long, counted from the
    /// connection or from the end of the previous answer (hyper's
    /// `header_read_timeout`). Default 10 s.
    pub header_timeout: Duration,
    /// A connection is closed after this long, once the answer under way
    /// is out (keep-alive clients connect again). Default 60 s.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 16, header_timeout: Duration::from_secs(10), lifetime: Duration::from_secs(60) }
    }
}

/// Serves [`router`] on `listener` with the default [`Limits`] until
/// `shutdown` completes (then finishes the scrapes under way).
pub async fn serve<F, S>(
    listener: TcpListener,
    source: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Vec<S> + Send + Sync + 'static,
    S: Into<Served> + Send + 'static,
{
    serve_with(listener, source, Limits::default(), shutdown).await
}

/// Serves [`router`] on `listener` within `limits` until `shutdown`
/// completes, then finishes the scrapes under way (each within the header
/// timeout).
pub async fn serve_with<F, S>(
    listener: TcpListener,
    source: F,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Vec<S> + Send + Sync + 'static,
    S: Into<Served> + Send + 'static,
{
    let router = router(source);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut backoff = AcceptBackoff::new("metrics");
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot first: while every slot is taken, new clients wait in the
        // kernel's backlog and cost the daemon no descriptor.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    backoff.accepted();
                    stream
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(stream, router.clone(), limits, slot, stopping.clone()));
    }
    stop.send_replace(true);
    // Every slot back: the scrapes under way are done.
    let _ = slots.acquire_many(limits.max_connections.max(1) as u32).await;
    Ok(())
}

/// One HTTP/1 connection, within `limits`; `slot` is given back when it
/// ends.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let _slot = slot;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router)));
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(limits.lifetime) => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
    // Finish the answer under way, then close; a client that does not read
    // it is closed anyway.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.header_timeout, conn).await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves no devices within `limits`; returns the address.
    async fn start(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, Vec::<Served>::new, limits, std::future::pending()));
        addr
    }

    /// Reads until the server closes (bounded only to fail a broken build
    /// instead of hanging); returns what came.
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
            .await
            .expect("the server must close the connection")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_a_byte_at_a_time_is_closed_after_the_header_timeout() {
        let limits = Limits { header_timeout: Duration::from_millis(300), ..Limits::default() };
        let addr = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        assert_eq!(until_closed(&mut silent).await, "");
        assert!(t0.elapsed() >= limits.header_timeout);

        // Slowloris: every byte in time for a per-byte timeout, the header
        // never complete.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        let writer = async {
            for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if slow.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        writer.await;
        let sent_for = t0.elapsed();
        let answer = until_closed(&mut slow).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(sent_for >= limits.header_timeout, "the writer was cut off only after the timeout");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_free_slot() {
        let limits = Limits { max_connections: 2, header_timeout: Duration::from_secs(30), ..Limits::default() };
        let addr = start(limits).await;
        let hog1 = TcpStream::connect(addr).await.unwrap();
        let _hog2 = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
        assert!(early.is_err(), "a third connection must not be served while two hold every slot");
        drop(hog1);
        let n = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_after_its_lifetime_once_its_answer_is_out() {
        let limits = Limits { lifetime: Duration::from_millis(300), ..Limits::default() };
        let addr = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GET).await.unwrap();
        let answer = until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
