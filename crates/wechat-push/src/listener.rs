//! Accepting connections: how many at once, and how long each may take.
//!
//! Nothing here needs a signature, so everything here is bounded: a client
//! must send a request's header within `server.header_timeout` and its body
//! within `server.body_timeout` (in [`crate::server`]); a kept-alive
//! connection with no request for `server.idle_timeout` is closed; at most
//! `server.max_connections` are open at once, below the process's
//! descriptor limit, and a connection over it is answered 503 and closed at
//! once, so that silent or slow clients can starve neither WeChat's pushes
//! nor the store, the logs and WeChat's API of descriptors. On shutdown,
//! connections get `server.shutdown_grace` to finish, then are dropped.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::ServerConfig;
use crate::metrics::{self, Metrics};

/// Descriptors kept for everything but connections: the store's files, the
/// log, WeChat's API and forward targets.
const RESERVED_DESCRIPTORS: usize = 128;

/// The answer to a connection over the cap, written without reading it.
const OVER_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The process's soft limit on open file descriptors, from
/// `/proc/self/limits` (Linux); `None` elsewhere or when unlimited.
pub fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `configured`, or (0) the descriptor limit less a reserve; never above
/// what the limit allows.
pub fn connection_cap(configured: usize, descriptors: Option<usize>) -> usize {
    let allowed = descriptors.map(|d| d.saturating_sub(RESERVED_DESCRIPTORS).max(16));
    match (configured, allowed) {
        (0, Some(allowed)) => allowed,
        (0, None) => 4096,
        (n, Some(allowed)) => n.min(allowed),
        (n, None) => n,
    }
}

/// When the connection last finished a request, and how many it is serving.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the connection opened.
    last_ms: AtomicU64,
}

/// Serve `router` on `listener` until `shutdown` completes, within the
/// bounds of `config`; then let open connections finish for
/// `config.shutdown_grace` and drop the rest.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: &ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let cap = connection_cap(config.max_connections, descriptor_limit());
    tracing::info!(
        max_connections = cap,
        descriptor_limit = descriptor_limit(),
        header_timeout = ?config.header_timeout,
        idle_timeout = ?config.idle_timeout,
        "accepting connections"
    );
    let slots = Arc::new(Semaphore::new(cap));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished connections as they end, not at shutdown.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was
                // taken): say so, and wait a moment rather than spin.
                let kind = if matches!(e.raw_os_error(), Some(23 | 24)) {
                    "descriptors"
                } else {
                    "other"
                };
                metrics.inc(metrics::ACCEPT_ERRORS, &[("kind", kind)]);
                tracing::error!(error = %e, kind, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.inc(metrics::CONNECTIONS_REFUSED, &[]);
            tracing::warn!(max_connections = cap, "connection refused: too many open");
            let _ = stream.try_write(OVER_CAPACITY);
            continue;
        };
        let router = router.clone();
        let (header, idle) = (config.header_timeout, config.idle_timeout);
        let (metrics, stopping) = (metrics.clone(), stopping.clone());
        connections.spawn(async move {
            metrics.open_connections.fetch_add(1, Ordering::Relaxed);
            connection(stream, router, header, idle, stopping).await;
            metrics.open_connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            of = open,
            grace = ?config.shutdown_grace,
            "connections still open after the shutdown grace: dropped"
        );
        connections.shutdown().await;
    }
}

/// One connection: HTTP/1 with a header timeout, closed when idle too long
/// or when shutdown is asked for (after its request in flight, if any).
async fn connection(
    stream: TcpStream,
    router: axum::Router,
    header_timeout: Duration,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let activity = activity.clone();
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            async move {
                let response = router.call(request).await;
                let now = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
                activity.last_ms.store(now, Ordering::Relaxed);
                activity.in_flight.fetch_sub(1, Ordering::Relaxed);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_until =
            opened + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed)) + idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(idle_until), if !closing => {
                let last = opened + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                if activity.in_flight.load(Ordering::Relaxed) == 0 && last + idle_timeout <= Instant::now() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(0, Some(1024)), 896);
        assert_eq!(connection_cap(5000, Some(1024)), 896);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(0, Some(100)), 16);
        assert_eq!(connection_cap(0, None), 4096);
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }
}
