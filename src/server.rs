//! Listeners: accept loop, optional TLS handshake ([`crate::tls`]), HTTP/1.1 and HTTP/2
//! (hyper-util's auto builder: h2c on plain TCP, ALPN `h2` over TLS), connection limits, idle
//! and slow-client timeouts, graceful drain; and the open-file limit those connections must fit
//! in ([`raise_open_file_limit`], [`fit_connections`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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
use crate::tls::{Acceptor, PeerCert};

/// Per-listener settings.
#[derive(Clone, Copy, Debug)]
pub struct ListenerSettings {
    /// Deadline for a client to send its request headers once it started (slow-client
    /// protection).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed. A new connection must
    /// deliver its first request head within `header_read_timeout`.
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
}

/// When a connection last finished a request, how many it has in flight, how many it began.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    active: AtomicUsize,
    requests: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection should be closed: no complete request head within
    /// `first_request` of connecting (this also covers clients that send nothing, or stop
    /// inside the HTTP/2 preface), or nothing in flight for `idle`.
    fn expired(&self, first_request: Duration, idle: Duration) -> bool {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return self.started.elapsed() >= first_request;
        }
        self.idle_for().is_some_and(|d| d >= idle)
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// Ends the request's activity when dropped (also when the client goes away mid-request).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
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
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.http2_max_concurrent_streams);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
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
        let (builder, shutdown, handler, tls) = (
            builder.clone(),
            shutdown.clone(),
            handler.clone(),
            tls.clone(),
        );
        connections.spawn(async move {
            let conn = Conn {
                peer,
                settings,
                builder,
                shutdown,
            };
            match tls {
                None => conn.run(stream, None, handler).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok((stream, cert))) => conn.run(stream, cert, handler).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
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
    }
}

/// One accepted connection, after any TLS handshake.
struct Conn {
    peer: SocketAddr,
    settings: ListenerSettings,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: CancellationToken,
}

impl Conn {
    /// Serves the connection's requests until it ends, is idle too long, or the drain closes it.
    async fn run<I, H, Fut>(self, io: I, cert: Option<PeerCert>, handler: H)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let Conn {
            peer,
            settings,
            builder,
            shutdown,
        } = self;
        let activity = Arc::new(Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        });
        let svc = {
            let activity = activity.clone();
            service_fn(move |mut req: Request<Incoming>| {
                activity.active.fetch_add(1, Ordering::Relaxed);
                activity.requests.fetch_add(1, Ordering::Relaxed);
                let in_flight = InFlight(activity.clone());
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
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let every = settings.idle_timeout.min(settings.header_read_timeout) / 4;
        let mut check = tokio::time::interval(every.max(Duration::from_millis(10)));
        // Once asked to close, a connection that does not finish within its grace (an HTTP/2
        // peer that never answers GOAWAY's ping, say) is dropped.
        let mut close_by: Option<Instant> = None;
        loop {
            let hard_close = async {
                match close_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break;
                }
                _ = hard_close => {
                    tracing::debug!(%peer, "connection dropped after its close grace");
                    break;
                }
                _ = shutdown.cancelled(), if close_by.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + settings.drain_timeout);
                }
                _ = check.tick(), if close_by.is_none() => {
                    if activity.expired(settings.header_read_timeout, settings.idle_timeout) {
                        conn.as_mut().graceful_shutdown();
                        close_by = Some(Instant::now() + settings.header_read_timeout);
                    }
                }
            }
        }
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
