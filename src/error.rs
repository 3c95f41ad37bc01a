//! The one per-request error type, and how it becomes a Zoho-shaped response.
//!
//! Errors the gateway produces itself use Zoho's JSON error envelope
//! (`{"code":…,"details":{…},"message":…,"status":"error"}`, keys in Zoho's alphabetical order,
//! `../shared/zoho/API-NOTES.md` §4) and carry the [`GATEWAY_ERROR_HEADER`] header naming the error
//! kind, so a client can tell the gateway's answers from Zoho's. Responses that Zoho itself sent
//! (a 401 from upstream, say) are not errors here: they are forwarded as responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// Response header set on every error the gateway produced itself; its value is
/// [`GatewayError::kind`].
pub const GATEWAY_ERROR_HEADER: &str = "x-zoho-gateway-error";

/// Who caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong.
    Client,
    /// Zoho (or the network to it) failed.
    Upstream,
    /// The gateway itself failed.
    Gateway,
}

/// Why a tenant has no usable access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// The accounts server rejected the grant (`invalid_client`, `invalid_code`, …).
    Rejected,
    /// Zoho answered with its documented "Access Denied" throttle (`error` "Access Denied" with
    /// an `error_description`, API-NOTES §5); refreshes are locked out for a while.
    Throttled,
    /// The local refresh budget (Zoho's 10 per 10 minutes) is spent.
    BudgetExhausted,
    /// The accounts server could not be reached, timed out, answered 5xx or an answer the gateway
    /// does not recognise (including an absurd token lifetime): a short hold with backoff.
    Unreachable,
}

impl TokenFailure {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFailure::Rejected => "rejected",
            TokenFailure::Throttled => "throttled",
            TokenFailure::BudgetExhausted => "budget_exhausted",
            TokenFailure::Unreachable => "unreachable",
        }
    }
}

/// Everything that can end a client request with an error produced by the gateway.
///
/// Cheap to clone (single-flight hands one error to every waiter of a flight).
#[derive(Clone, Debug, thiserror::Error)]
pub enum GatewayError {
    /// No gateway key in `Authorization: Zoho-oauthtoken …` or `X-Gateway-Key`.
    #[error("missing gateway key")]
    MissingKey,
    /// A key was sent but is not configured.
    #[error("unknown gateway key")]
    UnknownKey,
    /// The client's configuration asks for a TLS client certificate (`cert_subject` /
    /// `cert_spki_sha256`) and the connection presented none, or another one.
    #[error("this client must present its TLS client certificate")]
    ClientCertificateRequired,
    /// The key is valid but not allowed on this route.
    #[error("this gateway key may not use this route")]
    NoPermission,
    /// A pass-through tenant's client sent no Zoho token in `Authorization: Zoho-oauthtoken …`.
    #[error("missing Zoho token for a pass-through tenant")]
    MissingZohoToken,
    /// The query is one Zoho is known to reject; answered locally.
    #[error("invalid {param}: {message}")]
    InvalidData {
        /// The offending parameter (`filters`, `page`, `per_page`, `query`, …).
        param: std::borrow::Cow<'static, str>,
        /// Short explanation, safe to show the client.
        message: String,
        /// Zoho's error code: `INVALID_DATA`, or `REQUIRED_PARAM_MISSING` for a missing
        /// mandatory parameter, `LIMIT_EXCEEDED` for too many items, ….
        code: &'static str,
        /// The limit the parameter went over (`details.limit` of Zoho's `LIMIT_EXCEEDED`).
        limit: Option<u32>,
    },
    /// No route of this gateway matches the path.
    #[error("unknown route")]
    UnknownRoute,
    /// The path is a route of this gateway, but not for this method (RFC 9110 §15.5.6).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods allowed on the path: the `Allow` header (RFC 9110 §10.2.1).
        allow: HeaderValue,
    },
    /// The request body exceeds the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The client's request body could not be read.
    #[error("request body could not be read")]
    BadRequestBody,
    /// The client sent its request body too slowly.
    #[error("request body not received in time")]
    RequestTimeout,
    /// The request is malformed at the HTTP level (e.g. no or several `Host` headers in
    /// HTTP/1.1, RFC 9112 §3.2; several credential headers).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The client asked for a stored answer only (`Cache-Control: only-if-cached`, RFC 9111
    /// §5.2.1.7) and the cache has none it may serve: 504, as the RFC says.
    #[error("no stored answer for an only-if-cached request")]
    NotCached,
    /// A coalesced waiter reached its deadline before the shared fetch finished.
    #[error("timed out waiting for the shared upstream fetch")]
    WaitTimeout,
    /// The upstream request exceeded its deadline.
    #[error("upstream request timed out")]
    UpstreamTimeout,
    /// The upstream could not be reached or broke the connection.
    #[error("upstream request failed")]
    UpstreamConnect(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The tenant's upstream concurrency limit is reached and its queue is full or timed out.
    #[error("too many requests in flight to Zoho for this tenant")]
    UpstreamBusy,
    /// The tenant is under its credit reserve and this client's priority is not `high`, and no
    /// stale answer can stand in.
    #[error("the tenant's remaining Zoho API credits are reserved for high-priority clients")]
    CreditReserve {
        /// Time until the reserve is free again (`Retry-After`).
        retry_after: Duration,
    },
    /// Too many requests are already waiting for upstream answers (the gateway's or the
    /// tenant's `max_waiters`).
    #[error("too many requests waiting for upstream answers")]
    TooManyWaiters,
    /// The tenant's circuit breaker is open after consecutive upstream failures.
    #[error("upstream circuit open after consecutive failures")]
    CircuitOpen {
        /// Time left before the breaker lets a probe through (`Retry-After`).
        retry_after: Duration,
    },
    /// The request URI exceeds the configured limit.
    #[error("request URI too long")]
    UriTooLong,
    /// The upstream body exceeded the configured limit.
    #[error("upstream response too large")]
    UpstreamTooLarge,
    /// No access token could be obtained for the tenant.
    #[error("no access token ({})", .reason.as_str())]
    TokenUnavailable {
        /// Why.
        reason: TokenFailure,
        /// Time left before the gateway tries again to get a token (`Retry-After`).
        retry_after: Duration,
    },
    /// The gateway is shutting down and its drain deadline came before the answer.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A bug: a task panicked or an invariant broke.
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MissingKey
            | GatewayError::UnknownKey
            | GatewayError::ClientCertificateRequired
            | GatewayError::MissingZohoToken => StatusCode::UNAUTHORIZED,
            GatewayError::NoPermission => StatusCode::FORBIDDEN,
            GatewayError::InvalidData { .. } => StatusCode::BAD_REQUEST,
            GatewayError::UnknownRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequestBody | GatewayError::InvalidRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::WaitTimeout | GatewayError::UpstreamTimeout | GatewayError::NotCached => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::TokenUnavailable { .. }
            | GatewayError::CircuitOpen { .. }
            | GatewayError::TooManyWaiters
            | GatewayError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamBusy | GatewayError::CreditReserve { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::UriTooLong => StatusCode::URI_TOO_LONG,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable label: the [`GATEWAY_ERROR_HEADER`] value, metric label and log field.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::MissingKey => "missing_key",
            GatewayError::UnknownKey => "unknown_key",
            GatewayError::ClientCertificateRequired => "client_certificate_required",
            GatewayError::NoPermission => "no_permission",
            GatewayError::MissingZohoToken => "missing_zoho_token",
            GatewayError::InvalidData { .. } => "invalid_data",
            GatewayError::UnknownRoute => "unknown_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::BadRequestBody => "bad_request_body",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::InvalidRequest(_) => "invalid_request",
            GatewayError::WaitTimeout => "wait_timeout",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamConnect(_) => "upstream_connect",
            GatewayError::UpstreamTooLarge => "upstream_too_large",
            GatewayError::TokenUnavailable { .. } => "token_unavailable",
            GatewayError::UpstreamBusy => "upstream_busy",
            GatewayError::CreditReserve { .. } => "credit_reserve",
            GatewayError::CircuitOpen { .. } => "circuit_open",
            GatewayError::TooManyWaiters => "too_many_waiters",
            GatewayError::UriTooLong => "uri_too_long",
            GatewayError::NotCached => "not_cached",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::Internal => "internal",
        }
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            GatewayError::MissingKey
            | GatewayError::UnknownKey
            | GatewayError::ClientCertificateRequired
            | GatewayError::NoPermission
            | GatewayError::MissingZohoToken
            | GatewayError::InvalidData { .. }
            | GatewayError::UnknownRoute
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::PayloadTooLarge
            | GatewayError::UriTooLong
            | GatewayError::NotCached
            | GatewayError::BadRequestBody
            | GatewayError::RequestTimeout
            | GatewayError::InvalidRequest(_) => Blame::Client,
            GatewayError::WaitTimeout
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamTooLarge
            | GatewayError::UpstreamBusy
            | GatewayError::CreditReserve { .. }
            | GatewayError::CircuitOpen { .. }
            | GatewayError::TokenUnavailable { .. } => Blame::Upstream,
            GatewayError::Internal | GatewayError::ShuttingDown | GatewayError::TooManyWaiters => {
                Blame::Gateway
            }
        }
    }

    /// Whether the client may retry the same request later with a chance of success.
    pub fn retryable(&self) -> bool {
        self.blame() != Blame::Client
    }

    /// Zoho's error `code` for the envelope. Zoho's own codes where Zoho has one
    /// (`INVALID_TOKEN`, `INVALID_DATA`, `INVALID_URL_PATTERN`, `AUTHENTICATION_FAILURE`,
    /// API-NOTES §4); otherwise an upper-snake name in the same style.
    pub fn zoho_code(&self) -> &'static str {
        match self {
            GatewayError::MissingKey => "AUTHENTICATION_FAILURE",
            GatewayError::UnknownKey => "INVALID_TOKEN",
            GatewayError::ClientCertificateRequired => "AUTHENTICATION_FAILURE",
            GatewayError::NoPermission => "NO_PERMISSION",
            GatewayError::MissingZohoToken => "AUTHENTICATION_FAILURE",
            GatewayError::InvalidData { code, .. } => code,
            GatewayError::UnknownRoute => "INVALID_URL_PATTERN",
            // Zoho's code and message for a known path with a wrong method (its v8 OpenAPI
            // examples, `response-400-invalidrequestmethodresponse1`); the status is RFC 9110's
            // 405 with `Allow`, where Zoho says 400.
            GatewayError::MethodNotAllowed { .. } => "INVALID_REQUEST_METHOD",
            GatewayError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            GatewayError::BadRequestBody | GatewayError::InvalidRequest(_) => "INVALID_REQUEST",
            GatewayError::RequestTimeout => "REQUEST_TIMEOUT",
            GatewayError::WaitTimeout | GatewayError::UpstreamTimeout => "GATEWAY_TIMEOUT",
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamTooLarge => "BAD_GATEWAY",
            GatewayError::TokenUnavailable { .. }
            | GatewayError::CircuitOpen { .. }
            | GatewayError::TooManyWaiters
            | GatewayError::ShuttingDown => "SERVICE_UNAVAILABLE",
            GatewayError::UpstreamBusy | GatewayError::CreditReserve { .. } => "TOO_MANY_REQUESTS",
            GatewayError::UriTooLong => "URI_TOO_LONG",
            GatewayError::NotCached => "NOT_CACHED",
            GatewayError::Internal => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The client-facing message (never contains secrets or echoed credentials).
    fn zoho_message(&self) -> String {
        match self {
            GatewayError::UnknownKey => "invalid oauth token".to_owned(),
            GatewayError::UnknownRoute => {
                "Please check if the URL trying to access is a correct one".to_owned()
            }
            GatewayError::InvalidData { message, .. } => message.clone(),
            GatewayError::MethodNotAllowed { .. } => {
                "The http request method type is not a valid one".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The Zoho-shaped JSON body: `{"code","details":{"gateway":true,"kind",…},"message","status":"error"}`.
    pub fn body(&self) -> Bytes {
        let mut details = serde_json::Map::new();
        details.insert("gateway".into(), json!(true));
        details.insert("kind".into(), json!(self.kind()));
        match self {
            GatewayError::InvalidData { param, limit, .. } => {
                if let Some(limit) = limit {
                    details.insert("limit".into(), json!(limit));
                }
                details.insert("param_name".into(), json!(param));
            }
            GatewayError::TokenUnavailable { reason, .. } => {
                details.insert("reason".into(), json!(reason.as_str()));
            }
            _ => {}
        }
        let body = json!({
            "code": self.zoho_code(),
            "details": details,
            "message": self.zoho_message(),
            "status": "error",
        });
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Seconds a client should wait before retrying (`Retry-After`, RFC 9110 §10.2.3), for
    /// errors that pass: the real time left of the breaker's cool-down or of the token hold
    /// (rounded up, at least 1) or of the credit reserve, 1 for a full queue or a shutdown.
    pub fn retry_after_secs(&self) -> Option<u64> {
        if !self.retryable() {
            return None;
        }
        match self {
            GatewayError::UpstreamBusy
            | GatewayError::ShuttingDown
            | GatewayError::TooManyWaiters => Some(1),
            GatewayError::CircuitOpen { retry_after }
            | GatewayError::CreditReserve { retry_after }
            | GatewayError::TokenUnavailable { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(secs.max(1))
            }
            _ => None,
        }
    }

    /// The header value naming this error kind.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_static(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_zoho_shape_and_marker() {
        let e = GatewayError::InvalidData {
            param: "filters".into(),
            message: "invalid JSON".into(),
            code: "INVALID_DATA",
            limit: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["code"], "INVALID_DATA");
        assert_eq!(v["status"], "error");
        assert_eq!(v["details"]["gateway"], true);
        assert_eq!(v["details"]["param_name"], "filters");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        // Zoho's key order: code, details, message, status.
        let text = String::from_utf8(e.body().to_vec()).unwrap();
        let order: Vec<usize> = ["\"code\"", "\"details\"", "\"message\"", "\"status\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn retry_after_is_the_real_hold_rounded_up() {
        let open = |ms| GatewayError::CircuitOpen {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(open(27_000).retry_after_secs(), Some(27));
        assert_eq!(open(27_001).retry_after_secs(), Some(28));
        assert_eq!(open(0).retry_after_secs(), Some(1));
        let locked = GatewayError::TokenUnavailable {
            reason: TokenFailure::Throttled,
            retry_after: Duration::from_secs(873),
        };
        assert_eq!(locked.retry_after_secs(), Some(873));
        assert_eq!(GatewayError::UnknownKey.retry_after_secs(), None);
    }
}
