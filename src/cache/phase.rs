//! What the cache did for one request, as one typed value (in the spirit of Pingora's
//! `CachePhase` / `NoCacheReason`), and the three things derived from it: the `Cache-Status`
//! header (RFC 9211), the metric outcome and the access-log outcome. The request path sets the
//! phase; nothing else decides what a response says about the cache.

use std::fmt::Write as _;

use http::HeaderValue;

use crate::canonical::NoCacheReason;
use crate::error::Blame;

/// The cache's identifier in `Cache-Status`.
pub const CACHE_NAME: &str = "zoho-gateway";

/// Why a request was forwarded without the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BypassReason {
    /// The query cannot be canonicalised with certainty.
    Query(NoCacheReason),
    /// The client sent `Cache-Control: no-store` and the route honours it.
    NoStore,
    /// An allowlisted pass-through route (never cached).
    Passthrough,
}

impl BypassReason {
    /// Stable label: the `Cache-Status` `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Query(r) => r.as_str(),
            BypassReason::NoStore => "no-store",
            BypassReason::Passthrough => "passthrough",
        }
    }
}

/// What the cache did for one request. Starts as [`CachePhase::Uncached`] and is set once the
/// request path knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePhase {
    /// No cache decision was made: answered locally before the lookup (bad input, unknown key
    /// or route, wrong method).
    #[default]
    Uncached,
    /// Served from a fresh entry; no upstream call.
    Fresh,
    /// Not in this replica's cache, served fresh from the fleet's shared cache (L2 in Redis,
    /// another replica's answer); no upstream call.
    SharedHit,
    /// Served a just-expired entry at once while one background refresh runs (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Served an expired entry because the upstream failed or the key is held after a failure
    /// (RFC 5861 §4).
    StaleIfError,
    /// Served an expired entry because the tenant is under its credit reserve and the client
    /// may not spend it (`priority` not `high`); no upstream call.
    StaleCreditReserve,
    /// The key is held after a recent upstream failure and no entry can stand in: that failure
    /// is answered again, with `Retry-After`; no upstream call.
    Held,
    /// This request led the single-flight: its own upstream call.
    Miss,
    /// This request joined another request's flight.
    Collapsed,
    /// Forwarded without using the cache.
    Bypass(BypassReason),
}

/// What the gateway did with one request: the metric label and the access-log field, derived
/// from a [`CachePhase`] by [`CachePhase::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from a fresh cache entry; no upstream call.
    Hit,
    /// This request's own upstream call (it led the flight).
    Miss,
    /// Joined another request's in-flight upstream call.
    Collapsed,
    /// Served a stale entry (stale-while-revalidate or stale-if-error).
    Stale,
    /// Answered from a hold after a recent upstream failure (the failure again, with
    /// `Retry-After`); no upstream call.
    Held,
    /// Forwarded without using the cache (not canonicalisable, `no-store`, or a pass-through
    /// route), whatever the upstream answered.
    Bypass,
    /// Answered locally with an error (bad input, unknown key or route); no upstream call.
    Rejected,
    /// Failed with a gateway-produced error after trying upstream (or a gateway fault).
    Error,
}

impl Outcome {
    /// All variants, in label order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Stale,
        Outcome::Held,
        Outcome::Bypass,
        Outcome::Rejected,
        Outcome::Error,
    ];

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Stale => "stale",
            Outcome::Held => "held",
            Outcome::Bypass => "bypass",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl CachePhase {
    /// The metric and access-log outcome of a request in this phase that ended with a
    /// gateway-produced error of blame `error` (`None`: it got a response).
    pub fn outcome(self, error: Option<Blame>) -> Outcome {
        match (self, error) {
            (CachePhase::Fresh | CachePhase::SharedHit, _) => Outcome::Hit,
            (
                CachePhase::StaleWhileRevalidate
                | CachePhase::StaleIfError
                | CachePhase::StaleCreditReserve,
                _,
            ) => Outcome::Stale,
            (CachePhase::Held, _) => Outcome::Held,
            (CachePhase::Bypass(_), _) => Outcome::Bypass,
            (CachePhase::Uncached, None | Some(Blame::Client)) => Outcome::Rejected,
            (CachePhase::Uncached, Some(_)) => Outcome::Error,
            (CachePhase::Miss | CachePhase::Collapsed, Some(_)) => Outcome::Error,
            (CachePhase::Miss, None) => Outcome::Miss,
            (CachePhase::Collapsed, None) => Outcome::Collapsed,
        }
    }

    /// The phase's own `Cache-Status` `detail`, if any.
    fn detail(self) -> Option<&'static str> {
        match self {
            CachePhase::StaleWhileRevalidate => Some("stale-while-revalidate"),
            CachePhase::StaleIfError => Some("stale-if-error"),
            CachePhase::StaleCreditReserve => Some("credit-reserve"),
            CachePhase::Held => Some("upstream-hold"),
            CachePhase::SharedHit => Some("shared"),
            CachePhase::Bypass(reason) => Some(reason.as_str()),
            _ => None,
        }
    }

    /// The `Cache-Status` value (RFC 9211) of a response in this phase, e.g.
    /// `zoho-gateway; hit; ttl=42`, `zoho-gateway; fwd=miss; stored; ttl=60`,
    /// `zoho-gateway; fwd=miss; collapsed`, `zoho-gateway; fwd=bypass; detail=no-store`,
    /// `zoho-gateway; hit; ttl=42; detail=shared` (from the fleet's L2).
    ///
    /// `stored`: this request's flight stored the answer; `ttl`: remaining freshness in seconds,
    /// negative for a stale entry (RFC 9211 §2.6); `error`: the kind of a gateway-produced error,
    /// which replaces the phase's own `detail`.
    pub fn cache_status(self, stored: bool, ttl: Option<i64>, error: Option<&str>) -> HeaderValue {
        // Written on the stack and cut from the per-thread header arena: no allocation per
        // response (every answer carries one).
        let mut s = StackString::<128>::default();
        s.push_str(CACHE_NAME);
        match self {
            CachePhase::Fresh
            | CachePhase::SharedHit
            | CachePhase::StaleWhileRevalidate
            | CachePhase::StaleIfError
            | CachePhase::StaleCreditReserve => {
                s.push_str("; hit");
            }
            CachePhase::Miss => s.push_str("; fwd=miss"),
            CachePhase::Collapsed => s.push_str("; fwd=miss; collapsed"),
            CachePhase::Bypass(_) => s.push_str("; fwd=bypass"),
            CachePhase::Uncached | CachePhase::Held => {}
        }
        if stored {
            s.push_str("; stored");
        }
        if let Some(ttl) = ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        // A held key says it is held, whatever failure it replays (the failure's kind is in
        // `X-Zoho-Gateway-Error`); elsewhere the error is the detail.
        let detail = match self {
            CachePhase::Held => self.detail(),
            _ => error.or(self.detail()),
        };
        if let Some(detail) = detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        if s.overflowed {
            return HeaderValue::from_static(CACHE_NAME); // never: the longest value is ~70 bytes
        }
        crate::headers::arena_value(&[s.as_bytes()])
    }
}

/// A fixed-capacity string on the stack; writes past the capacity set `overflowed`.
struct StackString<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> Default for StackString<N> {
    fn default() -> Self {
        StackString {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }
}

impl<const N: usize> StackString<N> {
    fn push_str(&mut self, s: &str) {
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len += s.len();
            }
            None => self.overflowed = true,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> std::fmt::Write for StackString<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values() {
        assert_eq!(
            CachePhase::Held.cache_status(false, None, Some("upstream_connect")),
            "zoho-gateway; detail=upstream-hold"
        );
        assert_eq!(
            CachePhase::Fresh.cache_status(false, Some(42), None),
            "zoho-gateway; hit; ttl=42"
        );
        assert_eq!(
            CachePhase::SharedHit.cache_status(false, Some(42), None),
            "zoho-gateway; hit; ttl=42; detail=shared"
        );
        assert_eq!(
            CachePhase::Miss.cache_status(true, Some(60), None),
            "zoho-gateway; fwd=miss; stored; ttl=60"
        );
        assert_eq!(
            CachePhase::Bypass(BypassReason::Query(NoCacheReason::RepeatedParam))
                .cache_status(false, None, None),
            "zoho-gateway; fwd=bypass; detail=repeated_param"
        );
        assert_eq!(
            CachePhase::StaleWhileRevalidate.cache_status(false, Some(-3), None),
            "zoho-gateway; hit; ttl=-3; detail=stale-while-revalidate"
        );
        // A failing bypass still says `fwd=bypass`, with the error's kind.
        assert_eq!(
            CachePhase::Bypass(BypassReason::Passthrough).cache_status(
                false,
                None,
                Some("upstream_connect")
            ),
            "zoho-gateway; fwd=bypass; detail=upstream_connect"
        );
        assert_eq!(
            CachePhase::Uncached.cache_status(false, None, Some("unknown_key")),
            "zoho-gateway; detail=unknown_key"
        );
    }

    #[test]
    fn outcome_follows_phase_and_blame() {
        use CachePhase as P;
        assert_eq!(P::Fresh.outcome(None), Outcome::Hit);
        assert_eq!(P::SharedHit.outcome(None), Outcome::Hit);
        assert_eq!(P::StaleIfError.outcome(None), Outcome::Stale);
        assert_eq!(P::StaleCreditReserve.outcome(None), Outcome::Stale);
        assert_eq!(P::Miss.outcome(Some(Blame::Upstream)), Outcome::Error);
        assert_eq!(P::Collapsed.outcome(None), Outcome::Collapsed);
        assert_eq!(
            P::Bypass(BypassReason::NoStore).outcome(Some(Blame::Upstream)),
            Outcome::Bypass
        );
        assert_eq!(P::Uncached.outcome(Some(Blame::Client)), Outcome::Rejected);
        assert_eq!(P::Uncached.outcome(Some(Blame::Gateway)), Outcome::Error);
    }
}
