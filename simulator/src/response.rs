//! Zoho's error envelope, the error codes the simulator answers with, and
//! the headers every API response carries.
//!
//! Error body (API-NOTES.md §4), keys in alphabetical order as Zoho sends
//! them: `{"code":"<CODE>","details":{..},"message":"<text>","status":"error"}`.
//!
//! Headers on every API response (§4): `Content-Type:
//! application/json;charset=utf-8` (not on 204), `Cache-Control: no-store,
//! no-cache, must-revalidate, private`, `Pragma: no-cache`, a fresh CSRF cookie
//! `Set-Cookie: crmcsr=<32 hex>; Path=/; Secure; HttpOnly`, and
//! `X-ACCESSTOKEN-RESET: <ISO-8601 expiry>` when a valid token was presented.
//! `Date` is added by hyper (RFC 9110 §6.6.1).

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::dataset::zoho_time;

/// Response type of every simulator route.
pub(crate) type SimResponse = Response<Full<Bytes>>;

/// The `code` values the simulator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidData,
    InvalidRequestMethod,
    AuthenticationFailure,
    InvalidToken,
    OauthScopeMismatch,
    InactiveUser,
    NoPermission,
    InvalidUrlPattern,
    TooManyRequests,
    RequestEntityTooLarge,
    InternalServerError,
    ServiceUnavailable,
    MandatoryNotFound,
    DuplicateData,
    InvalidModule,
    RequiredParamMissing,
    ExpectedParamMissing,
    AmbiguityDuringProcessing,
    DiscretePaginationLimitExceeded,
    TokenBoundDataMismatch,
    LimitExceeded,
    LimitReached,
    InvalidQuery,
    CriteriaLimitExceeded,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidData => "INVALID_DATA",
            ErrorCode::InvalidRequestMethod => "INVALID_REQUEST_METHOD",
            ErrorCode::AuthenticationFailure => "AUTHENTICATION_FAILURE",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::OauthScopeMismatch => "OAUTH_SCOPE_MISMATCH",
            ErrorCode::InactiveUser => "INACTIVE_USER",
            ErrorCode::NoPermission => "NO_PERMISSION",
            ErrorCode::InvalidUrlPattern => "INVALID_URL_PATTERN",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::RequestEntityTooLarge => "REQUEST_ENTITY_TOO_LARGE",
            ErrorCode::InternalServerError => "INTERNAL_SERVER_ERROR",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::MandatoryNotFound => "MANDATORY_NOT_FOUND",
            ErrorCode::DuplicateData => "DUPLICATE_DATA",
            ErrorCode::InvalidModule => "INVALID_MODULE",
            ErrorCode::RequiredParamMissing => "REQUIRED_PARAM_MISSING",
            ErrorCode::ExpectedParamMissing => "EXPECTED_PARAM_MISSING",
            ErrorCode::AmbiguityDuringProcessing => "AMBIGUITY_DURING_PROCESSING",
            ErrorCode::DiscretePaginationLimitExceeded => "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            ErrorCode::TokenBoundDataMismatch => "TOKEN_BOUND_DATA_MISMATCH",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::LimitReached => "LIMIT_REACHED",
            ErrorCode::InvalidQuery => "INVALID_QUERY",
            ErrorCode::CriteriaLimitExceeded => "CRITERIA_LIMIT_EXCEEDED",
        }
    }

    /// The code used for an injected failure with `status`
    /// ([`crate::SimHandle::fail_next`]). Unlisted 5xx map to
    /// `INTERNAL_SERVER_ERROR`, unlisted 4xx to `INVALID_DATA`.
    pub(crate) fn for_status(status: StatusCode) -> ErrorCode {
        match status.as_u16() {
            401 => ErrorCode::InvalidToken,
            403 => ErrorCode::NoPermission,
            404 => ErrorCode::InvalidUrlPattern,
            413 => ErrorCode::RequestEntityTooLarge,
            429 => ErrorCode::TooManyRequests,
            503 => ErrorCode::ServiceUnavailable,
            s if s >= 500 => ErrorCode::InternalServerError,
            _ => ErrorCode::InvalidData,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            ErrorCode::InvalidData => "invalid data",
            ErrorCode::InvalidRequestMethod => "The http request method type is not a valid one",
            ErrorCode::AuthenticationFailure => "Authentication failed",
            ErrorCode::InvalidToken => "invalid oauth token",
            ErrorCode::OauthScopeMismatch => "invalid oauth scope to access this URL",
            ErrorCode::InactiveUser => "An inactive user cannot access this API",
            ErrorCode::NoPermission => "permission denied",
            ErrorCode::InvalidUrlPattern => {
                "Please check if the URL trying to access is a correct one"
            }
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::RequestEntityTooLarge => "request body is too large",
            ErrorCode::InternalServerError => "Internal Server Error",
            ErrorCode::ServiceUnavailable => "service unavailable",
            ErrorCode::MandatoryNotFound => "required field not found",
            ErrorCode::DuplicateData => "duplicate data",
            ErrorCode::InvalidModule => "the module name given seems to be invalid",
            ErrorCode::RequiredParamMissing => "One of the expected parameter is missing",
            ErrorCode::ExpectedParamMissing => "one of the expected parameters is missing",
            ErrorCode::AmbiguityDuringProcessing => "ambiguity during processing",
            ErrorCode::DiscretePaginationLimitExceeded => {
                "You can only get the first 2000 records without using page_token param"
            }
            ErrorCode::TokenBoundDataMismatch => {
                "The page_token given seems to be invalid or input param is added, altered, or deleted"
            }
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::LimitReached => "maximum response iteration limit reached",
            ErrorCode::InvalidQuery => "Invalid query formed",
            ErrorCode::CriteriaLimitExceeded => {
                "no of criterium that can be given exceed the limit 15"
            }
        }
    }
}

/// One error answer: status, code, message and details.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode) -> ApiError {
        ApiError {
            status,
            code,
            message: code.default_message().to_string(),
            details: json!({}),
            retry_after: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    /// 400 `INVALID_DATA`.
    pub(crate) fn invalid_data(details: Value) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidData).with_details(details)
    }

    /// 400 `INVALID_DATA` for a bad id in the path. `resource_path_index` counts
    /// path segments after the version: `settings`=0, `user_groups`=1, id=2.
    pub(crate) fn invalid_id() -> ApiError {
        ApiError::invalid_data(json!({"resource_path_index": 2}))
            .with_message("the id given seems to be invalid")
    }

    /// 400 with `code` and `details`.
    pub(crate) fn bad_request(code: ErrorCode, details: Value) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code).with_details(details)
    }

    /// 400 `REQUIRED_PARAM_MISSING` for query parameter `name`.
    pub(crate) fn param_missing(name: &str) -> ApiError {
        ApiError::bad_request(
            ErrorCode::RequiredParamMissing,
            json!({ "param_name": name }),
        )
    }

    /// 400 `INVALID_DATA` for query parameter `name`.
    pub(crate) fn invalid_param(name: &str) -> ApiError {
        ApiError::invalid_data(json!({ "param_name": name }))
    }

    /// The envelope as one JSON object.
    pub(crate) fn envelope(&self) -> Value {
        envelope_value(self.code.as_str(), &self.details, &self.message, "error")
    }
}

/// `{"code","details","message","status"}` in that order.
pub(crate) fn envelope_value(code: &str, details: &Value, message: &str, status: &str) -> Value {
    #[derive(Serialize)]
    struct Envelope<'a> {
        code: &'a str,
        details: &'a Value,
        message: &'a str,
        status: &'a str,
    }
    serde_json::to_value(Envelope {
        code,
        details,
        message,
        status,
    })
    .expect("envelope serializes")
}

/// A successful API answer before headers: status and optional JSON body
/// (`None` → empty body, no `Content-Type`).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Vec<u8>>,
}

impl Reply {
    pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
        Reply {
            status,
            body: Some(serde_json::to_vec(body).expect("reply serializes")),
        }
    }

    pub(crate) fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::json(e.status, &e.envelope())
    }
}

/// Per-request values that become response headers.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ResponseMeta {
    /// Expiry of the valid token presented → `X-ACCESSTOKEN-RESET`.
    pub token_expiry: Option<Instant>,
    /// → `Retry-After` (seconds).
    pub retry_after: Option<u32>,
    /// → `X-API-CREDITS-REMAINING`.
    pub credits_remaining: Option<u64>,
}

/// Builds the final API response with Zoho's headers.
pub(crate) fn api_response(reply: Reply, meta: ResponseMeta) -> SimResponse {
    let mut builder = Response::builder()
        .status(reply.status)
        .header(
            header::CACHE_CONTROL,
            "no-store, no-cache, must-revalidate, private",
        )
        .header(header::PRAGMA, "no-cache")
        .header(
            header::SET_COOKIE,
            format!(
                "crmcsr={}; Path=/; Secure; HttpOnly",
                hex::encode(rand::random::<[u8; 16]>())
            ),
        );
    if reply.body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json;charset=utf-8");
    }
    if let Some(expiry) = meta.token_expiry {
        builder = builder.header("x-accesstoken-reset", wall_clock(expiry));
    }
    if let Some(secs) = meta.retry_after {
        builder = builder.header(header::RETRY_AFTER, secs);
    }
    if let Some(n) = meta.credits_remaining {
        builder = builder.header("x-api-credits-remaining", n);
    }
    builder
        .body(Full::new(Bytes::from(reply.body.unwrap_or_default())))
        .expect("valid response")
}

/// A plain JSON response (token endpoint, control surface).
pub(crate) fn plain_json(status: StatusCode, body: &Value) -> SimResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Converts a paused-clock expiry into a wall-clock ISO-8601 string.
fn wall_clock(expiry: Instant) -> String {
    let remaining = expiry.saturating_duration_since(Instant::now());
    zoho_time(SystemTime::now() + remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keys_are_alphabetical() {
        let e = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken);
        assert_eq!(
            e.envelope().to_string(),
            r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#
        );
    }
}
