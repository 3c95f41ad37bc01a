//! The per-thread memo of hot requests: from a request's raw target and credentials to what the
//! request path worked out for them — route, tenant, priority, credit cost and cache key — so a
//! repeated cache hit skips path decoding, the route match, client authentication (a SHA-256
//! and a table lookup) and the key memo, and goes straight to this thread's front of the cache
//! ([`cache::local`](crate::cache)).
//!
//! Safe for the same reason as the key memo ([`crate::canonical::memo`]): every step it skips
//! is a pure function of the request's method, raw path-and-query, credential headers and the
//! gateway's configuration (routes, clients, tenants). So a slot is used only when
//!
//! - it belongs to this gateway (its cache's id) and was filled under the current
//!   **generation** (bumped by every reload, which is the only way routes, clients and tenants
//!   change), and
//! - the request's method, raw target (byte for byte) and credential headers (`X-Gateway-Key`
//!   and `Authorization`, compared in constant time) are the slot's.
//!
//! Only plain requests use it ([`Probe::of`]): no client directives or conditions, no
//! `X-EXTERNAL`, no client certificate, at most one of each credential header, a valid Host
//! count. Everything else, and a slot whose entry is no longer in this thread's front, takes the
//! full path, which fills the slot again.
//!
//! Memory: [`SLOTS`] slots per worker thread, each at most [`MAX_TARGET_BYTES`] of target plus
//! the credentials (bounded by `server.max_header_bytes`). A slot holds the client's credential
//! bytes as presented (to compare the next request's with), zeroed when the slot is dropped or
//! reused; they are never logged or shown (`Slot` has no `Debug`).

use std::cell::RefCell;

use http::{Method, Request};
use subtle::ConstantTimeEq;
use xxhash_rust::xxh3::xxh3_64_with_seed;
use zeroize::Zeroize;

use crate::canonical::CacheKey;
use crate::config::{Priority, TenantId};
use crate::headers::RequestHeads;
use crate::route::RouteId;
use crate::tls::PeerCert;

/// Slots per worker thread.
pub const SLOTS: usize = 64;

/// Targets (path and query) longer than this (bytes) are not memoised.
pub const MAX_TARGET_BYTES: usize = 4096;

/// What the full request path worked out for a request, and what a slot returns.
#[derive(Clone, Copy)]
pub(super) struct Known {
    pub route: RouteId,
    pub tenant: TenantId,
    pub priority: Priority,
    /// The route's credit cost for this query (`credit_cost_when`).
    pub credits: u32,
    pub key: CacheKey,
}

/// A plain request's identity, borrowed from the request: see [`Probe::of`].
pub(super) struct Probe<'r> {
    hash: u64,
    head: bool,
    target: &'r [u8],
    gateway_key: Option<&'r [u8]>,
    authorization: Option<&'r [u8]>,
}

struct Slot {
    gateway: u64,
    generation: u64,
    hash: u64,
    head: bool,
    /// Target, then the `X-Gateway-Key` and `Authorization` values (lengths below).
    bytes: Box<[u8]>,
    target_len: usize,
    /// Length of the `X-Gateway-Key` value; `None`: not sent.
    key_len: Option<usize>,
    /// Length of the `Authorization` value; `None`: not sent.
    auth_len: Option<usize>,
    known: Known,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static HOT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// Random per process: the slot index's seed (a slot only chooses where a request is
/// memoised, never whether it matches: that is the byte comparison). One for all threads: a
/// probe made on one worker may fill a slot on another after an await.
static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Presence byte plus bytes, for hashing and comparing optional credentials.
fn opt_eq(presented: Option<&[u8]>, stored: Option<&[u8]>) -> bool {
    match (presented, stored) {
        (None, None) => true,
        (Some(a), Some(b)) => bool::from(a.ct_eq(b)),
        _ => false,
    }
}

impl<'r> Probe<'r> {
    /// The identity of `req` if it is a plain request the memo may answer (see the module
    /// doc); `None` otherwise.
    pub fn of<B>(req: &'r Request<B>, heads: &RequestHeads<'r>) -> Option<Self> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if heads.directives
            || heads.conditional
            || heads.externals > 0
            || heads.authorizations > 1
            || heads.gateway_keys > 1
            || (heads.hosts != 1 && req.version() == http::Version::HTTP_11)
            || req.extensions().get::<PeerCert>().is_some()
        {
            return None;
        }
        let target = req.uri().path_and_query()?.as_str().as_bytes();
        if target.len() > MAX_TARGET_BYTES {
            return None;
        }
        let gateway_key = heads.gateway_key.map(|v| v.as_bytes());
        let authorization = heads.authorization.map(|v| v.as_bytes());
        let seed = *SEED.get_or_init(rand::random);
        let mut hash = xxh3_64_with_seed(target, seed);
        for (tag, value) in [(1u64, gateway_key), (2, authorization)] {
            if let Some(v) = value {
                hash = hash.rotate_left(17) ^ xxh3_64_with_seed(v, seed ^ tag);
            }
        }
        Some(Probe {
            hash: hash ^ u64::from(head),
            head,
            target,
            gateway_key,
            authorization,
        })
    }

    fn index(&self) -> usize {
        (self.hash % SLOTS as u64) as usize
    }

    /// What the full path worked out for this very request under `generation` of gateway
    /// `gateway`, if this thread remembers it. A slot of this gateway filled under an earlier
    /// generation is emptied on the way (its credentials zeroed: a reload may have revoked
    /// them).
    pub fn lookup(&self, gateway: u64, generation: u64) -> Option<Known> {
        HOT.try_with(|hot| {
            let mut hot = hot.try_borrow_mut().ok()?;
            let entry = hot.get_mut(self.index())?;
            if entry
                .as_ref()
                .is_some_and(|s| s.gateway == gateway && s.generation != generation)
            {
                *entry = None;
            }
            let slot = entry.as_ref()?;
            let (target, rest) = slot.bytes.split_at(slot.target_len);
            let (key, auth) = rest.split_at(slot.key_len.unwrap_or(0));
            let matches = slot.gateway == gateway
                && slot.generation == generation
                && slot.hash == self.hash
                && slot.head == self.head
                && target == self.target
                && opt_eq(self.gateway_key, slot.key_len.map(|_| key))
                && opt_eq(self.authorization, slot.auth_len.map(|_| auth));
            matches.then_some(slot.known)
        })
        .ok()
        .flatten()
    }

    /// Remembers `known` for this request (worked out by the full path under `generation`).
    pub fn fill(&self, gateway: u64, generation: u64, known: Known) {
        let _ = HOT.try_with(|hot| {
            let Ok(mut hot) = hot.try_borrow_mut() else {
                return;
            };
            if hot.is_empty() {
                hot.resize_with(SLOTS, || None);
            }
            let (key, auth) = (self.gateway_key.unwrap_or(b""), self.authorization);
            let mut bytes =
                Vec::with_capacity(self.target.len() + key.len() + auth.map_or(0, <[u8]>::len));
            bytes.extend_from_slice(self.target);
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(auth.unwrap_or(b""));
            hot[self.index()] = Some(Slot {
                gateway,
                generation,
                hash: self.hash,
                head: self.head,
                bytes: bytes.into_boxed_slice(),
                target_len: self.target.len(),
                key_len: self.gateway_key.map(<[u8]>::len),
                auth_len: auth.map(<[u8]>::len),
                known,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(()).unwrap()
    }

    const KEY: &str = "/crm/v7/settings/user_groups/actions/associated_users_count?page=1";

    fn known(n: u8) -> Known {
        Known {
            route: RouteId(1),
            tenant: TenantId(2),
            priority: Priority::Normal,
            credits: 1,
            key: CacheKey([n; 32]),
        }
    }

    /// `lookup` of `req` after filling with `filled` (gateway 7, generation 3).
    fn after_fill(
        filled: &Request<()>,
        req: &Request<()>,
        gateway: u64,
        generation: u64,
    ) -> Option<u8> {
        let heads = RequestHeads::scan(filled.headers());
        Probe::of(filled, &heads).unwrap().fill(7, 3, known(9));
        let heads = RequestHeads::scan(req.headers());
        Probe::of(req, &heads)?
            .lookup(gateway, generation)
            .map(|k| k.key.0[0])
    }

    #[test]
    fn only_the_same_request_under_the_same_generation_matches() {
        let plain =
            |key: &str| request(Method::GET, KEY, &[("host", "gw"), ("x-gateway-key", key)]);
        let a = plain("key-a");
        assert_eq!(after_fill(&a, &plain("key-a"), 7, 3), Some(9));
        assert_eq!(after_fill(&a, &plain("key-b"), 7, 3), None, "another key");
        assert_eq!(after_fill(&a, &plain("key-a "), 7, 3), None, "other bytes");
        assert_eq!(
            after_fill(&a, &plain("key-a"), 7, 4),
            None,
            "after a reload"
        );
        assert_eq!(
            after_fill(&a, &plain("key-a"), 8, 3),
            None,
            "another gateway"
        );
        let head = request(
            Method::HEAD,
            KEY,
            &[("host", "gw"), ("x-gateway-key", "key-a")],
        );
        assert_eq!(after_fill(&a, &head, 7, 3), None, "HEAD is its own request");
        let other = request(
            Method::GET,
            &format!("{KEY}0"),
            &[("host", "gw"), ("x-gateway-key", "key-a")],
        );
        assert_eq!(after_fill(&a, &other, 7, 3), None, "another query");
        // The same key sent as a Zoho token is another request.
        let token = request(
            Method::GET,
            KEY,
            &[("host", "gw"), ("authorization", "key-a")],
        );
        assert_eq!(after_fill(&a, &token, 7, 3), None);
        let both = request(
            Method::GET,
            KEY,
            &[
                ("host", "gw"),
                ("x-gateway-key", "key-a"),
                ("authorization", "Zoho-oauthtoken t"),
            ],
        );
        assert_eq!(after_fill(&a, &both, 7, 3), None);
        assert_eq!(after_fill(&both, &both, 7, 3), Some(9));
    }

    #[test]
    fn a_slot_of_an_earlier_generation_is_emptied_when_looked_at() {
        let req = request(
            Method::GET,
            KEY,
            &[("host", "gw"), ("x-gateway-key", "gone")],
        );
        let heads = RequestHeads::scan(req.headers());
        let probe = Probe::of(&req, &heads).unwrap();
        probe.fill(7, 3, known(5));
        assert!(probe.lookup(7, 4).is_none(), "after a reload");
        assert!(probe.lookup(7, 3).is_none(), "emptied, not kept");
        probe.fill(7, 3, known(5));
        assert!(probe.lookup(8, 4).is_none(), "another gateway's lookup");
        assert_eq!(
            probe.lookup(7, 3).map(|k| k.key.0[0]),
            Some(5),
            "left alone"
        );
    }

    #[test]
    fn requests_the_full_path_must_read_are_not_probed() {
        let with = |extra: &[(&str, &str)]| {
            let mut h = vec![("host", "gw"), ("x-gateway-key", "k")];
            h.extend_from_slice(extra);
            request(Method::GET, KEY, &h)
        };
        for req in [
            with(&[("cache-control", "no-cache")]),
            with(&[("pragma", "no-cache")]),
            with(&[("if-none-match", "\"x\"")]),
            with(&[("x-external", "Leads.Id")]),
            with(&[("x-gateway-key", "k2")]),
            request(Method::GET, KEY, &[("x-gateway-key", "k")]),
            request(Method::POST, KEY, &[("host", "gw"), ("x-gateway-key", "k")]),
            request(
                Method::GET,
                &format!("{KEY}&q={}", "x".repeat(MAX_TARGET_BYTES)),
                &[("host", "gw")],
            ),
        ] {
            let heads = RequestHeads::scan(req.headers());
            assert!(Probe::of(&req, &heads).is_none(), "{req:?}");
        }
        let mut req = with(&[]);
        req.extensions_mut().insert(PeerCert {
            subject: "CN=reporting".into(),
            spki_sha256: [0; 32],
        });
        let heads = RequestHeads::scan(req.headers());
        assert!(Probe::of(&req, &heads).is_none(), "client certificate");
    }
}
