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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::ServerConfig;
use crate::metrics::{self, descriptor_limit, Metrics};

/// Descriptors kept for everything but connections: the store's files, the
/// log, WeChat's API and forward targets.
const RESERVED_DESCRIPTORS: usize = 128;

/// The answer to a connection over the cap, written without reading it.
const OVER_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// `configured`, or (0) the descriptor limit less a reserve; never above
/// what the limit allows.
pub fn connection_cap(configured: usize, descriptors: Option<usize>) -> usize {
    // Under a tiny limit the reserve would leave nothing: a quarter of it then.
    let allowed = descriptors.map(|d| d.saturating_sub(RESERVED_DESCRIPTORS).max(d / 4).max(1));
    match (configured, allowed) {
        (0, Some(allowed)) => allowed,
        (0, None) => 4096,
        (n, Some(allowed)) => n.min(allowed),
        (n, None) => n,
    }
}

/// Logs a line at most once a second, saying how many it stood for: a flood
/// of refusals must not flood the log (and fill the disk the store is on).
#[derive(Default)]
struct Throttle {
    last_ms: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// `Some(n)` when a line is due now, `n` the events since the last one.
    fn due(&self, since: std::time::Instant) -> Option<u64> {
        let now = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms.store(now.max(1), Ordering::Relaxed);
        Some(self.skipped.swap(0, Ordering::Relaxed) + 1)
    }
}

/// Counts a connection open for as long as it lives (a panicking
/// connection task included).
struct Open(Arc<Metrics>);

impl Open {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        Open(metrics)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// The address a request's connection comes from (a proxy's, behind one):
/// an extension of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Why a request was refused, in the words of the refusal metric
/// (`msg_signature_mismatch`): an extension the server sets on a refusal's
/// response, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

/// The client's address as `X-Forwarded-For` gives it, believed only when
/// the request comes from a trusted proxy (`server.trusted_proxies`): the
/// last address in the header that is not a trusted proxy's (each proxy
/// appends the address it got the request from, so the ones before that
/// may be anything a client wrote). `None` when the peer is not trusted,
/// the header is absent, or an entry is not an address.
pub fn forwarded_for(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return None;
    }
    let mut earliest = None;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for item in value.to_str().ok()?.rsplit(',') {
            let item = item.trim();
            let ip = item
                .parse::<IpAddr>()
                .or_else(|_| item.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()?;
            if !is_trusted(&ip) {
                return Some(ip);
            }
            earliest = Some(ip);
        }
    }
    // Trusted all the way: the first proxy's own client.
    earliest
}

/// `server.access_log` and `server.trusted_proxies`, for each connection.
#[derive(Clone)]
struct AccessLog {
    enabled: bool,
    trusted: Arc<Vec<IpNet>>,
}

/// What the access line of a request in flight knows before its answer.
struct Request {
    method: axum::http::Method,
    path: String,
    forwarded: Option<IpAddr>,
    started: Instant,
}

/// Longest path written to the log: anyone can send a long one.
const MAX_LOGGED_PATH: usize = 200;

/// The longest start of `s` within `max` bytes that ends on a character's
/// boundary: what a log line shows of a client's text.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    let end = (0..=s.len().min(max))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

impl AccessLog {
    fn begin(&self, request: &hyper::Request<Incoming>, peer: SocketAddr) -> Option<Request> {
        if !self.enabled {
            return None;
        }
        Some(Request {
            method: request.method().clone(),
            path: truncated(request.uri().path(), MAX_LOGGED_PATH).to_owned(),
            forwarded: forwarded_for(request.headers(), peer.ip(), &self.trusted),
            started: Instant::now(),
        })
    }
}

impl Request {
    /// One line at `info`, target `wechat_push::access`.
    fn end(self, peer: SocketAddr, response: &axum::response::Response) {
        let appid = self
            .path
            .strip_prefix("/wechat/")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|appid| !appid.is_empty() && !appid.contains('/'));
        let reason = response.extensions().get::<Refusal>().map(|r| r.0);
        tracing::info!(
            target: "wechat_push::access",
            method = %self.method,
            path = %self.path,
            status = response.status().as_u16(),
            // To the microsecond: `1.517`, not `1.5165440000000001`.
            latency_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            peer = %peer,
            forwarded = self.forwarded.map(tracing::field::display),
            appid,
            reason,
            "request"
        );
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
    tls: Option<tokio_rustls::TlsAcceptor>,
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
    let started = std::time::Instant::now();
    let (refusals, accept_errors) = (Throttle::default(), Throttle::default());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let access = AccessLog {
        enabled: config.access_log,
        trusted: Arc::new(config.trusted_proxies.clone()),
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished connections as they end, not at shutdown.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was
                // taken): say so, and wait a moment rather than spin.
                let kind = if matches!(e.raw_os_error(), Some(23 | 24)) {
                    "descriptors"
                } else {
                    "other"
                };
                metrics.inc(metrics::ACCEPT_ERRORS, &[("kind", kind)]);
                if let Some(n) = accept_errors.due(started) {
                    tracing::error!(error = %e, kind, count = n, "cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.inc(metrics::CONNECTIONS_REFUSED, &[]);
            if let Some(n) = refusals.due(started) {
                tracing::warn!(
                    max_connections = cap,
                    count = n,
                    "connections refused: too many open"
                );
            }
            let _ = stream.try_write(OVER_CAPACITY);
            continue;
        };
        let router = router.clone();
        let (header, idle) = (config.header_timeout, config.idle_timeout);
        let (metrics, stopping) = (metrics.clone(), stopping.clone());
        let (tls, access) = (tls.clone(), access.clone());
        connections.spawn(async move {
            let _open = Open::new(metrics);
            let _ = stream.set_nodelay(true);
            match tls {
                // The handshake counts as reading the header: a client that
                // stalls in it is cut off as one that stalls in its header.
                Some(tls) => match tokio::time::timeout(header, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        connection(stream, peer, router, access, header, idle, stopping).await
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake not done within the header timeout"),
                },
                None => connection(stream, peer, router, access, header, idle, stopping).await,
            }
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
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: axum::Router,
    access: AccessLog,
    header_timeout: Duration,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let activity = activity.clone();
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let logged = access.begin(&request, peer);
            request.extensions_mut().insert(Peer(peer));
            async move {
                let response = router.call(request).await;
                if let (Some(logged), Ok(response)) = (logged, &response) {
                    logged.end(peer, response);
                }
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
    // Once closing, a connection that cannot finish (a client that stopped
    // reading its answers, so a write never completes) is dropped after
    // this long.
    let mut closing: Option<Instant> = None;
    loop {
        let last = opened + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        // While a request is being served the connection is not idle: look
        // again an idle period later (a deadline in the past would spin).
        let idle_until = if activity.in_flight.load(Ordering::Relaxed) > 0 {
            Instant::now() + idle_timeout
        } else {
            last + idle_timeout
        };
        let give_up = closing.unwrap_or_else(Instant::now);
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stopping.changed(), if closing.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + header_timeout);
                }
            }
            () = tokio::time::sleep_until(idle_until), if closing.is_none() => {
                let last = opened + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && last + idle_timeout <= Instant::now();
                if idle {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + header_timeout);
                }
            }
            () = tokio::time::sleep_until(give_up), if closing.is_some() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's text cut for the log never splits a character (a slice
    /// inside one would panic the request's task).
    #[test]
    fn text_cut_for_the_log_ends_on_a_character() {
        assert_eq!(truncated("wx12", 32), "wx12");
        assert_eq!(truncated("abcdef", 4), "abcd");
        // "微" is three bytes: 4 bytes hold "a" and one of them.
        assert_eq!(truncated("a微信", 4), "a微");
        assert_eq!(truncated("a微信", 3), "a");
        assert_eq!(truncated("微", 2), "");
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(0, Some(1024)), 896);
        assert_eq!(connection_cap(5000, Some(1024)), 896);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(0, Some(100)), 25);
        assert_eq!(connection_cap(0, Some(26)), 6);
        assert_eq!(connection_cap(0, None), 4096);
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }
}
