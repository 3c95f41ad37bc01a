//! Listeners: accept loop, optional TLS handshake ([`crate::tls`]), HTTP/1.1 and HTTP/2
//! (hyper-util's auto builder: h2c on plain TCP, ALPN `h2` over TLS), connection limits, idle
//! and slow-client timeouts, graceful drain; and the open-file limit those connections must fit
//! in ([`raise_open_file_limit`], [`fit_connections`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::Body;
use crate::telemetry::LogLimiter;
use crate::tls::{Acceptor, PeerCert};

/// Client connections the admin listener holds at once (probes and scrapes need few).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// File descriptors kept for everything but client and upstream connections: stdio, the
/// listeners, epoll and its wake-up, signal pipes, token state files, blocking threads.
pub const FD_BASE_RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a process may, unprivileged) and returns
/// the soft limit now in force; `None` where there is no such limit or it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => Some(limit),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                open_file_limit()
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// The soft `RLIMIT_NOFILE` in force; `None` where there is none or it cannot be read.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    None
}

/// `configured` client connections, or fewer (at least 1) so that they and `reserved` other
/// descriptors fit under the open-file `limit`: past it, `accept` fails with `EMFILE` and
/// upstream connections fail too.
pub fn fit_connections(configured: usize, limit: u64, reserved: u64) -> usize {
    let room = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// Per-listener settings.
#[derive(Clone, Copy, Debug)]
pub struct ListenerSettings {
    /// Deadline for a client to send its request headers once it started (slow-client
    /// protection).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed. A new connection must
    /// deliver its first request head within `header_read_timeout`, and an HTTP/1 connection
    /// each next one within `header_read_timeout` of the last response (as hyper's own
    /// header-read timer did), so for HTTP/1 the shorter of the two applies. Enforced by one
    /// sweeper per listener, within a quarter of the shorter timeout.
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections to finish their requests.
    pub drain_timeout: Duration,
    /// Open connections at most; the accept loop waits for a free slot (the kernel backlog
    /// holds further clients). See [`fit_connections`] for the open-file limit.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (RFC 9113 §6.5.2).
    pub http2_max_concurrent_streams: u32,
    /// Largest request head in bytes (hyper answers 431 beyond it); at least 8192.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request head (hyper answers 431 beyond it; HTTP/2 heads
    /// are bounded by `max_header_bytes` only). hyper's default is 100.
    pub max_headers: usize,
}

/// One open connection as the listener's sweeper sees it: when it last finished a request, how
/// many it has in flight and began, and what the sweeper asks of it. The connection's task reads
/// only atomics on each wake-up (no timer, no lock): the sweeper, one task per listener, does the
/// clock work for every connection at once.
struct Conn {
    started: Instant,
    last_ms: AtomicU64,
    active: AtomicUsize,
    requests: AtomicU64,
    /// Set by the first HTTP/2 request: hyper's HTTP/1 rule "the next head within
    /// `header_read_timeout`" does not apply, only `idle_timeout`.
    http2: AtomicBool,
    /// [`RUN`], [`CLOSE`] or [`DROP`]; only ever raised.
    command: AtomicU8,
    waker: AtomicWaker,
}

/// Keep serving.
const RUN: u8 = 0;
/// Finish the current request, then close (HTTP/1) or send GOAWAY (HTTP/2).
const CLOSE: u8 = 1;
/// Drop the connection now (its close grace is over).
const DROP: u8 = 2;

impl Conn {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection should be closed at `now`: no complete request head within
    /// `header_read_timeout` of connecting (this also covers clients that send nothing, or stop
    /// inside the HTTP/2 preface); for HTTP/1, no next request head within
    /// `header_read_timeout` of the last response (hyper's own header-read timer, which starts
    /// as soon as it waits for the next head; so it also ends slow heads on a kept-alive
    /// connection); nothing in flight for `idle_timeout`.
    fn expired(&self, now: Instant, settings: &ListenerSettings) -> bool {
        let since_start = now.saturating_duration_since(self.started);
        if self.requests.load(Ordering::Relaxed) == 0 {
            return since_start >= settings.header_read_timeout;
        }
        if self.active.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let idle = since_start.saturating_sub(last);
        let limit = if self.http2.load(Ordering::Relaxed) {
            settings.idle_timeout
        } else {
            settings.idle_timeout.min(settings.header_read_timeout)
        };
        idle >= limit
    }

    /// Asks the connection's task for `command` (never lowers an earlier one) and wakes it.
    fn order(&self, command: u8) {
        self.command.fetch_max(command, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Ends the request's activity when dropped (also when the client goes away mid-request).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections of one listener, and when each must be gone once asked to close.
#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, (Arc<Conn>, Option<Instant>)>,
}

type SharedRegistry = Arc<Mutex<Registry>>;

fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, Registry> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The listener's sweeper: every `min(idle_timeout, header_read_timeout) / 4` (at least 10 ms)
/// asks expired connections to close, and drops those still open `header_read_timeout` after
/// being asked. So a deadline is enforced within a quarter of it.
async fn sweep(registry: SharedRegistry, settings: ListenerSettings) {
    let every = settings.idle_timeout.min(settings.header_read_timeout) / 4;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (conn, close_by) in lock(&registry).open.values_mut() {
            match close_by {
                Some(at) if now >= *at => conn.order(DROP),
                Some(_) => {}
                None if conn.expired(now, &settings) => {
                    *close_by = Some(now + settings.header_read_timeout);
                    conn.order(CLOSE);
                }
                None => {}
            }
        }
    }
}

/// Orders every open connection to `command`; those not closing yet must be gone by `close_by`.
fn order_all(registry: &SharedRegistry, command: u8, close_by: Instant) {
    for (conn, by) in lock(registry).open.values_mut() {
        by.get_or_insert(close_by);
        conn.order(command);
    }
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then stops accepting, asks
/// every connection to finish (HTTP/1: close after the current response; HTTP/2: GOAWAY) and
/// waits at most `drain_timeout` for them. Plain TCP; [`serve_with_tls`] adds TLS.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    settings: ListenerSettings,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with_tls(listener, None, handler, settings, shutdown).await
}

/// [`serve`], with TLS when `tls` is set: each connection first completes a TLS handshake
/// within `header_read_timeout` (a failed or slow handshake closes it); the client
/// certificate, if any, is attached to every request of the connection as a [`PeerCert`]
/// extension.
pub async fn serve_with_tls<H, Fut>(
    listener: TcpListener,
    tls: Option<Acceptor>,
    handler: H,
    settings: ListenerSettings,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No HTTP/1 timer: hyper's header-read timeout arms a timer for every request head; the
    // sweeper enforces the same deadlines for all connections at once.
    let mut http1 = builder.http1();
    http1
        .header_read_timeout(None)
        .max_buf_size(settings.max_header_bytes.max(8192));
    // Only when it differs from hyper's own 100: setting it moves hyper's header index from
    // the stack to the heap for every request.
    if settings.max_headers != 100 {
        http1.max_headers(settings.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.http2_max_concurrent_streams);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let registry = SharedRegistry::default();
    let sweeper = tokio::spawn(sweep(registry.clone(), settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let accept_errors = LogLimiter::new(Duration::from_secs(5));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning, and log at most
                // once per 5 s.
                if let Some(suppressed) = accept_errors.allow() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            command: AtomicU8::new(RUN),
            waker: AtomicWaker::new(),
        });
        let id = {
            let mut r = lock(&registry);
            r.next_id += 1;
            let id = r.next_id;
            r.open.insert(id, (conn.clone(), None));
            id
        };
        let (builder, registry, handler, tls) = (
            builder.clone(),
            registry.clone(),
            handler.clone(),
            tls.clone(),
        );
        connections.spawn(async move {
            match tls {
                None => serve_connection(&builder, stream, None, handler, peer, conn).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok((stream, cert))) => {
                            serve_connection(&builder, stream, cert, handler, peer, conn).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            lock(&registry).open.remove(&id);
            drop(slot);
        });
    }
    // Ask every connection to finish (HTTP/1: close after the current response; HTTP/2:
    // GOAWAY); the sweeper drops those still open at the drain deadline (or at their earlier
    // close deadline when they were closing already).
    order_all(&registry, CLOSE, Instant::now() + settings.drain_timeout);
    drop(listener);
    connections.close();
    if tokio::time::timeout(settings.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed with connections still open"
        );
        order_all(&registry, DROP, Instant::now());
    }
    sweeper.abort();
}

/// Serves one connection's requests (after any TLS handshake) until it ends or the sweeper
/// drops it; `conn` is its entry in the listener's registry.
async fn serve_connection<I, H, Fut>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    cert: Option<PeerCert>,
    handler: H,
    peer: SocketAddr,
    conn: Arc<Conn>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let svc = {
        let conn = conn.clone();
        service_fn(move |mut req: Request<Incoming>| {
            conn.active.fetch_add(1, Ordering::Relaxed);
            conn.requests.fetch_add(1, Ordering::Relaxed);
            if req.version() == http::Version::HTTP_2 {
                conn.http2.store(true, Ordering::Relaxed);
            }
            let in_flight = InFlight(conn.clone());
            // The connection-level identity, for authentication (`src/proxy/auth.rs`).
            if let Some(cert) = &cert {
                req.extensions_mut().insert(cert.clone());
            }
            let fut = handler(req, peer);
            async move {
                let resp = fut.await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let served = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    let mut closing = false;
    // Each wake-up: register the waker (so an order is never missed), read the order, poll
    // the connection. No timer and no lock here.
    let ended = std::future::poll_fn(|cx| {
        conn.waker.register(cx.waker());
        match conn.command.load(Ordering::Acquire) {
            DROP => return Poll::Ready(None),
            CLOSE if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        served.as_mut().poll(cx).map(Some)
    })
    .await;
    match ended {
        Some(Err(e)) => tracing::debug!(error = %e, %peer, "connection ended with an error"),
        Some(Ok(())) => {}
        None => tracing::debug!(%peer, "connection dropped after its close grace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_under_the_open_file_limit() {
        assert_eq!(fit_connections(10_000, 1_048_576, 500), 10_000);
        assert_eq!(fit_connections(10_000, 256, 150), 106);
        assert_eq!(fit_connections(10_000, 100, 150), 1);
    }
}
