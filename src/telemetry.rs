//! Logging with tracing-subscriber: `RUST_LOG`-style filter (the `RUST_LOG` variable wins over
//! `[logging] filter`), human or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RawLogging};

/// Installs the global subscriber. Safe to call twice (the second call does nothing).
pub fn init(logging: &RawLogging) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Displays an error with its whole `source()` chain: `outer: cause: root cause`.
///
/// For log fields (`error = %ErrorChain(&e)`), so that an upstream connect, TLS or DNS failure
/// shows its root cause and not only "upstream request failed". Only use it on errors whose
/// messages hold no secrets (hyper, rustls, io and the gateway's own errors do not).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Lets one event through per `every`, and counts the ones it held back: for log lines that a
/// failure can repeat at wire speed (a failing `accept`, an unreachable upstream).
#[derive(Debug)]
pub struct LogLimiter {
    every: std::time::Duration,
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// At most one event per `every`.
    pub const fn new(every: std::time::Duration) -> Self {
        LogLimiter {
            every,
            next: std::sync::Mutex::new(None),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)` when an event may be logged now, `n` being how many were held back since the
    /// last one; `None` when this one should be dropped (it is counted).
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_some_and(|at| now < at) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next = Some(now + self.every);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_shows_every_cause() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(ErrorChain(&e).to_string(), "outer: connection refused");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_lets_one_event_through_per_period_and_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(5));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.allow(), Some(3));
        assert_eq!(limiter.allow(), None);
    }
}
