//! The one pooled HTTP client to Zoho (hyper-util's legacy `Client` over hyper-rustls, HTTP/1.1
//! keep-alive, HTTP/2 where the upstream offers it via ALPN).
//!
//! Every call is bounded: connect deadline, total deadline for headers and body, and a body size
//! limit. The client is cheap to clone.
//!
//! A response's body and header values may be slices of hyper's connection read buffer: fine
//! for relaying, but whatever is kept beyond the request must be copied
//! ([`crate::cache::CachedResponse::from_upstream`] does).

pub mod breaker;
pub mod limit;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::RawUpstream;
use crate::error::GatewayError;
use crate::telemetry::{ErrorChain, LogLimiter};

/// At most one "upstream attempt failed" event per this period per gateway (the others are
/// counted in the next event's `suppressed`).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(1);

/// A response read completely from the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: StatusCode,
    /// All response headers, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Pooled upstream client with deadlines.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body_bytes: usize,
    failure_log: Arc<LogLimiter>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client from `[upstream]` settings.
    pub fn new(cfg: &RawUpstream) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Upstream {
            client,
            timeout: cfg.timeout,
            max_body_bytes: cfg.max_body_bytes,
            failure_log: Arc::new(LogLimiter::new(FAILURE_LOG_EVERY)),
        }
    }

    /// Logs one failed upstream attempt (no response, or a 429 / 5xx one) with the error's cause
    /// chain (the connect, DNS or TLS error underneath), rate-limited per gateway. Called where
    /// the retry decision is made. Logs no header, token or query.
    pub fn log_failed_attempt(
        &self,
        tenant: &str,
        route: &str,
        attempt: u32,
        outcome: Result<StatusCode, &GatewayError>,
    ) {
        let Some(suppressed) = self.failure_log.allow() else {
            return;
        };
        match outcome {
            Ok(status) => tracing::warn!(
                tenant,
                route,
                attempt,
                status = status.as_u16(),
                suppressed,
                "upstream attempt failed"
            ),
            Err(e) => tracing::warn!(
                tenant,
                route,
                attempt,
                kind = e.kind(),
                error = %ErrorChain(e),
                suppressed,
                "upstream attempt failed"
            ),
        }
    }

    /// Sends `req` and reads the whole response within the configured deadline.
    ///
    /// # Errors
    /// [`GatewayError::UpstreamTimeout`] past the deadline, [`GatewayError::UpstreamTooLarge`]
    /// past the body limit, [`GatewayError::UpstreamConnect`] for connection and protocol errors.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; the pooled connection is discarded.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<UpstreamResponse, GatewayError> {
        let max = self.max_body_bytes;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| GatewayError::UpstreamConnect(Arc::new(e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        GatewayError::UpstreamTooLarge
                    } else {
                        GatewayError::UpstreamConnect(Arc::from(e))
                    }
                })?
                .to_bytes();
            Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| GatewayError::UpstreamTimeout)?
    }
}

/// Whether an upstream error is hyper's `IncompleteMessage`: a pooled connection the upstream
/// closed as the request went out. Safe to retry once for an idempotent request.
pub fn is_incomplete_message(err: &GatewayError) -> bool {
    let GatewayError::UpstreamConnect(e) = err else {
        return false;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Zoho's throttling answers, by the `code` of its JSON error envelope: a closed set, so it can
/// label a metric. Zoho answers 429 `TOO_MANY_REQUESTS` when the rolling 24 h API credit
/// allowance or the per-user concurrency limit is exhausted (Zoho CRM API "Status codes" and
/// "API limits"; API-NOTES §4 and §6), and `LIMIT_EXCEEDED` when a limit of the organisation is
/// reached. Any other code, or no readable code, on a 429 is [`ZohoThrottle::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZohoThrottle {
    /// `TOO_MANY_REQUESTS`: credits or concurrency exhausted.
    TooManyRequests,
    /// `LIMIT_EXCEEDED`: an organisation limit reached.
    LimitExceeded,
    /// A 429 with another code, or a body that is not Zoho's envelope.
    Other,
}

impl ZohoThrottle {
    /// Every value, in label order.
    pub const ALL: [ZohoThrottle; 3] = [
        ZohoThrottle::TooManyRequests,
        ZohoThrottle::LimitExceeded,
        ZohoThrottle::Other,
    ];

    /// The metric label: Zoho's code, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ZohoThrottle::TooManyRequests => "TOO_MANY_REQUESTS",
            ZohoThrottle::LimitExceeded => "LIMIT_EXCEEDED",
            ZohoThrottle::Other => "other",
        }
    }

    /// Classifies an upstream answer: `Some` for a 429 (any body) and for a 4xx whose `code` is
    /// one of Zoho's throttling codes; `None` otherwise. Reads the body only for 4xx answers.
    pub fn classify(status: StatusCode, body: &[u8]) -> Option<ZohoThrottle> {
        if !status.is_client_error() {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            code: Option<&'a str>,
        }
        let code = serde_json::from_slice::<Envelope<'_>>(body)
            .ok()
            .and_then(|e| e.code);
        match code {
            Some("TOO_MANY_REQUESTS") => Some(ZohoThrottle::TooManyRequests),
            Some("LIMIT_EXCEEDED") => Some(ZohoThrottle::LimitExceeded),
            _ if status == StatusCode::TOO_MANY_REQUESTS => Some(ZohoThrottle::Other),
            _ => None,
        }
    }
}

/// Jittered exponential backoff before retry `attempt` (0-based): a random delay in
/// `[0, min(max, base * 2^attempt)]` ("full jitter"), or `retry_after` when the upstream gave one.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(d) = retry_after {
        return d;
    }
    let cap = base
        .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoho_throttle_codes_are_a_closed_set() {
        let body = |code: &str| {
            format!(r#"{{"code":"{code}","details":{{}},"message":"m","status":"error"}}"#)
        };
        let c = |status: u16, b: &str| {
            ZohoThrottle::classify(StatusCode::from_u16(status).unwrap(), b.as_bytes())
        };
        assert_eq!(
            c(429, &body("TOO_MANY_REQUESTS")),
            Some(ZohoThrottle::TooManyRequests)
        );
        assert_eq!(
            c(429, &body("LIMIT_EXCEEDED")),
            Some(ZohoThrottle::LimitExceeded)
        );
        assert_eq!(
            c(400, &body("LIMIT_EXCEEDED")),
            Some(ZohoThrottle::LimitExceeded)
        );
        // A 429 with an unknown code or no envelope still counts, as `other`.
        assert_eq!(c(429, &body("SOMETHING_NEW")), Some(ZohoThrottle::Other));
        assert_eq!(c(429, "<html>busy</html>"), Some(ZohoThrottle::Other));
        // Other 4xx and every non-4xx are not throttling.
        assert_eq!(c(400, &body("INVALID_DATA")), None);
        assert_eq!(c(401, &body("INVALID_TOKEN")), None);
        assert_eq!(c(500, &body("TOO_MANY_REQUESTS")), None);
        assert_eq!(c(200, &body("LIMIT_EXCEEDED")), None);
        let labels: Vec<_> = ZohoThrottle::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(labels, ["TOO_MANY_REQUESTS", "LIMIT_EXCEEDED", "other"]);
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = backoff(attempt, base, max, None);
            assert!(
                d <= max.min(base * 2u32.saturating_pow(attempt.min(20))),
                "{attempt}: {d:?}"
            );
        }
        assert_eq!(
            backoff(3, base, max, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
