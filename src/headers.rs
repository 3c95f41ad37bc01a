//! Header names the gateway reads and writes (`Cache-Status` (RFC 9211; its value comes from
//! [`crate::cache::CachePhase::cache_status`]), the request id, the gateway key), and the
//! hop-by-hop rules for relayed answers (RFC 9110 §7.6.1).

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Request-Id`: echoed when the client sent a sane one, else generated.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Gateway-Key`: alternative to `Authorization: Zoho-oauthtoken <key>`.
pub static GATEWAY_KEY: HeaderName = HeaderName::from_static("x-gateway-key");

/// `X-API-CREDITS-REMAINING`: Zoho's count of the organisation's credits left in the rolling
/// 24 h, on some answers (API-NOTES §4, \[unverified\]); read by [`crate::credits`].
pub const API_CREDITS_REMAINING: &str = "x-api-credits-remaining";

/// `X-EXTERNAL`: Zoho's header for external-id lookups (`{module}.{field}`); forwarded upstream
/// and part of the cache key (see the `canonical` module doc).
pub static X_EXTERNAL: HeaderName = HeaderName::from_static("x-external");

/// `X-Forwarded-For`: the client's address, set on upstream requests.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Copies the end-to-end headers of an upstream answer: drops the hop-by-hop headers (RFC 9110
/// §7.6.1: `Connection` and the headers it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`), `Content-Length` (hyper sets its own), and Zoho's per-user
/// headers that never leave the gateway (`Set-Cookie`, `X-ACCESSTOKEN-RESET`).
pub fn copy_end_to_end_headers(from: &HeaderMap, to: &mut HeaderMap) {
    let mut hop: Vec<&str> = Vec::new();
    for v in from.get_all(header::CONNECTION) {
        hop.extend(v.to_str().unwrap_or("").split(',').map(str::trim));
    }
    for (name, value) in from {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "set-cookie"
                | "x-accesstoken-reset"
                | "content-length"
        ) || hop.iter().any(|h| h.eq_ignore_ascii_case(n));
        if !dropped {
            to.append(name.clone(), value.clone());
        }
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
    fn request_id_echoes_sane_values_only() {
        let mut h = HeaderMap::new();
        h.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        assert_eq!(request_id(&HeaderMap::new()).len(), 16);
    }
}
