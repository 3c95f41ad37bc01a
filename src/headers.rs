//! Header names and values the gateway writes: `Cache-Status` (RFC 9211), `Age` (RFC 9111 §5.1),
//! the request id.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::metrics::Outcome;

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Request-Id`: echoed when the client sent a sane one, else generated.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Gateway-Key`: alternative to `Authorization: Zoho-oauthtoken <key>`.
pub static GATEWAY_KEY: HeaderName = HeaderName::from_static("x-gateway-key");

/// `X-Forwarded-For`: the client's address, set on upstream requests.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The cache's identifier in `Cache-Status`.
pub const CACHE_NAME: &str = "zoho-gateway";

/// What to say in `Cache-Status` about one response.
#[derive(Clone, Copy, Debug)]
pub struct CacheStatus<'a> {
    /// What happened.
    pub outcome: Outcome,
    /// The response was stored by this request's fetch (`stored`).
    pub stored: bool,
    /// Remaining freshness, seconds (`ttl`); negative for a stale entry (RFC 9211 §2.6).
    pub ttl: Option<i64>,
    /// Reason for a bypass or error (`detail`), a token from a closed set.
    pub detail: Option<&'a str>,
}

impl CacheStatus<'_> {
    /// Renders the header value, e.g. `zoho-gateway; hit; ttl=42`,
    /// `zoho-gateway; fwd=miss; stored; ttl=60`, `zoho-gateway; fwd=miss; collapsed`,
    /// `zoho-gateway; fwd=bypass; detail=repeated-param`.
    pub fn value(&self) -> HeaderValue {
        let mut s = String::with_capacity(48);
        s.push_str(CACHE_NAME);
        match self.outcome {
            Outcome::Hit | Outcome::Stale => s.push_str("; hit"),
            Outcome::Miss | Outcome::Error => s.push_str("; fwd=miss"),
            Outcome::Collapsed => s.push_str("; fwd=miss; collapsed"),
            Outcome::Bypass => s.push_str("; fwd=bypass"),
            Outcome::Rejected | Outcome::Held => {}
        }
        if self.stored {
            s.push_str("; stored");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

/// The client's `X-Request-Id` if it is 1–128 visible ASCII characters, else a new random id
/// (16 hex digits).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id: u64 = rand::random();
    HeaderValue::try_from(format!("{id:016x}")).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values() {
        let hit = CacheStatus {
            outcome: Outcome::Hit,
            stored: false,
            ttl: Some(42),
            detail: None,
        };
        assert_eq!(hit.value(), "zoho-gateway; hit; ttl=42");
        let miss = CacheStatus {
            outcome: Outcome::Miss,
            stored: true,
            ttl: Some(60),
            detail: None,
        };
        assert_eq!(miss.value(), "zoho-gateway; fwd=miss; stored; ttl=60");
        let bypass = CacheStatus {
            outcome: Outcome::Bypass,
            stored: false,
            ttl: None,
            detail: Some("repeated-param"),
        };
        assert_eq!(
            bypass.value(),
            "zoho-gateway; fwd=bypass; detail=repeated-param"
        );
    }

    #[test]
    fn request_id_echoes_sane_values_only() {
        let mut h = HeaderMap::new();
        h.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        assert_eq!(request_id(&HeaderMap::new()).len(), 16);
    }
}
