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

/// `Cache-Control` of the gateway's own answers (RFC 9111 §5.2.2.7 `private`, §5.2.2.4
/// `no-cache`): never stored by a shared cache; a client's private cache must revalidate.
pub const RESPONSE_CACHE_CONTROL: &str = "private, no-cache";

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
/// (16 hex digits, built in the per-thread [`arena_value`] buffer: no allocation per request).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = next_request_id();
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    arena_value(&[&hex])
}

thread_local! {
    /// Per-thread generator state for request ids, seeded from the OS generator once.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
}

/// A 64-bit request id: SplitMix64 over per-thread state seeded at random (ids need to be
/// unique for correlation, not unpredictable: they are no secret; `rand::random` per request cost
/// a ChaCha block).
fn next_request_id() -> u64 {
    ID_STATE.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Bytes per arena chunk: a chunk serves many responses' small values, and a response kept
/// alive (a slow client) pins at most the chunk its values were cut from.
const ARENA_CHUNK: usize = 1024;

thread_local! {
    /// Per-thread buffer that small per-response header values are cut from (see
    /// [`arena_value`]).
    static ARENA: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// A header value holding the concatenation of `parts`, cut from a per-thread buffer: one
/// allocation per [`ARENA_CHUNK`] bytes of values instead of one per value, and its reference
/// count lives on the thread that writes the response (a value shared by every worker would
/// bounce its count between cores on each clone and drop). For the values a response computes
/// (`Age`, `Cache-Status`, the request id) or replays from an entry (validators).
///
/// The parts must be a valid header value (visible ASCII, spaces, tabs); anything else falls
/// back to an empty value, which callers never produce.
pub fn arena_value(parts: &[&[u8]]) -> HeaderValue {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let bytes = ARENA.with(|arena| {
        let Ok(mut arena) = arena.try_borrow_mut() else {
            return bytes::Bytes::from(parts.concat()); // not re-entered in practice
        };
        if arena.capacity() - arena.len() < len {
            *arena = bytes::BytesMut::with_capacity(ARENA_CHUNK.max(len));
        }
        for part in parts {
            arena.extend_from_slice(part);
        }
        arena.split().freeze()
    });
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The request headers the gateway reads, found in one pass over the request's map (a hit would
/// otherwise hash about ten names into it). Values borrow the request.
#[derive(Default)]
pub struct RequestHeads<'r> {
    /// `Host` lines (RFC 9112 §3.2: exactly one for HTTP/1.1).
    pub hosts: usize,
    /// The first `Authorization`, and how many were sent.
    pub authorization: Option<&'r HeaderValue>,
    /// `Authorization` lines.
    pub authorizations: usize,
    /// The first `X-Gateway-Key`, and how many were sent.
    pub gateway_key: Option<&'r HeaderValue>,
    /// `X-Gateway-Key` lines.
    pub gateway_keys: usize,
    /// The first `X-EXTERNAL`.
    pub external: Option<&'r HeaderValue>,
    /// `X-EXTERNAL` lines.
    pub externals: usize,
    /// Whether the client sent `Cache-Control` or `Pragma` (client directives to read).
    pub directives: bool,
    /// Whether the client sent `If-None-Match` or `If-Modified-Since` (conditions to read).
    pub conditional: bool,
}

/// Credential values are shown as `<redacted>`: `Authorization` and `X-Gateway-Key` hold
/// secrets.
impl std::fmt::Debug for RequestHeads<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: Option<&HeaderValue>| v.map(|_| "<redacted>");
        f.debug_struct("RequestHeads")
            .field("hosts", &self.hosts)
            .field("authorization", &redacted(self.authorization))
            .field("authorizations", &self.authorizations)
            .field("gateway_key", &redacted(self.gateway_key))
            .field("gateway_keys", &self.gateway_keys)
            .field("external", &self.external)
            .field("externals", &self.externals)
            .field("directives", &self.directives)
            .field("conditional", &self.conditional)
            .finish()
    }
}

impl<'r> RequestHeads<'r> {
    /// One pass over `h`.
    pub fn scan(h: &'r HeaderMap) -> Self {
        let mut heads = RequestHeads::default();
        for (name, value) in h {
            match name.as_str() {
                "host" => heads.hosts += 1,
                "authorization" => {
                    heads.authorizations += 1;
                    heads.authorization.get_or_insert(value);
                }
                "x-gateway-key" => {
                    heads.gateway_keys += 1;
                    heads.gateway_key.get_or_insert(value);
                }
                "x-external" => {
                    heads.externals += 1;
                    heads.external.get_or_insert(value);
                }
                "cache-control" | "pragma" => heads.directives = true,
                "if-none-match" | "if-modified-since" => heads.conditional = true,
                _ => {}
            }
        }
        heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_debug_redacts_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Zoho-oauthtoken 1000.secret"),
        );
        h.insert(
            "x-gateway-key",
            HeaderValue::from_static("client-secret-key"),
        );
        let shown = format!("{:?}", RequestHeads::scan(&h));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
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
