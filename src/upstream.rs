//! The one pooled HTTP client to Zoho (hyper-util's legacy `Client` over hyper-rustls, HTTP/1.1
//! keep-alive, HTTP/2 where the upstream offers it via ALPN).
//!
//! Every call is bounded: connect deadline, total deadline for headers and body, and a body size
//! limit. The client is cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::config::RawUpstream;
use crate::error::GatewayError;

/// A response read completely from the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: StatusCode,
    /// All response headers, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When the response headers arrived (RFC 9111 §4.2.3 `response_time`).
    pub received_at: Instant,
}

/// Pooled upstream client with deadlines.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body_bytes: usize,
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
            let received_at = Instant::now();
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
                received_at,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| GatewayError::UpstreamTimeout)?
    }
}
