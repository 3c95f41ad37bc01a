//! A bounded memo from a request's raw query (in its [`KeyScope`]) to its [`CacheKey`], so a
//! hot query is not decoded, parsed, sorted and hashed again on every cache hit.
//!
//! Safe because the key is a pure function of the scope, the raw query bytes and the
//! [`CanonicalRules`](super::CanonicalRules): equal bytes in an equal scope under equal rules
//! give an equal key. The memo therefore compares the scope and the raw query **byte for byte**
//! (a hash collision can never return another query's key), and it holds keys for **one set of
//! rules**: the gateway's memos live inside each route's [`ParamSchema`](super::ParamSchema)
//! ([`SchemaMemo`], used by [`ParamSchema::key`](super::ParamSchema::key)), so a reload, which
//! builds new schemas, starts with empty memos, and a cloned schema gets an empty one.
//!
//! Only queries that canonicalised to a key are memoised (uncacheable and invalid ones are rare
//! and not hot). Bounds: `slots` entries (direct-mapped: a new query takes its slot's place),
//! each at most [`KeyMemo::MAX_QUERY_BYTES`] of query, so at most about `slots × 2.2 KiB`. The
//! slot index comes from XXH3 seeded with a per-memo random seed: not a keyed PRF like SipHash,
//! but a slot only chooses where a query is cached, never whether an answer matches (that is
//! the byte-for-byte comparison), so a client aiming queries at one slot can do no more than
//! evict, which costs a recomputation — as sending many distinct queries already can. XXH3 hashes
//! a ~350-byte query several times faster than SipHash-1-3 (issue 14: the memo's hash was most
//! of a hot query's key lookup). Lookups take no lock (each slot is an [`ArcSwapOption`]).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::SentParams;
use super::key::{CacheKey, KeyScope};

/// The memo a [`ParamSchema`](super::ParamSchema) keeps for
/// [`ParamSchema::key`](super::ParamSchema::key): [`SchemaMemo::SLOTS`] slots, allocated on
/// first use (schemas built for a single query, as [`canonicalize`](super::canonicalize) does,
/// never pay for it). A clone is a new, empty memo (a cloned schema may be changed afterwards,
/// and must not inherit keys worked out under other rules); two memos always compare equal (a
/// memo is a cache, not part of the schema's meaning).
#[derive(Default)]
pub struct SchemaMemo(std::sync::OnceLock<KeyMemo>);

impl SchemaMemo {
    /// Slots per schema (one per cached route): at most about 1024 × 2.2 KiB ≈ 2.3 MiB each,
    /// typically 1024 × ~0.4 KiB.
    pub const SLOTS: usize = 1024;

    /// The memo, allocated on first use.
    pub(super) fn get(&self) -> &KeyMemo {
        self.0.get_or_init(|| KeyMemo::new(Self::SLOTS))
    }
}

impl Clone for SchemaMemo {
    fn clone(&self) -> Self {
        SchemaMemo::default()
    }
}

impl PartialEq for SchemaMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SchemaMemo {}

impl std::fmt::Debug for SchemaMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaMemo")
            .field("in_use", &self.0.get().is_some())
            .finish()
    }
}

/// See the module doc.
pub struct KeyMemo {
    slots: Box<[ArcSwapOption<Slot>]>,
    /// Random per memo: the slot index's XXH3 seed.
    seed: u64,
}

/// One memoised query: its scope and raw query as length-prefixed bytes, its key, and which
/// schema parameters it sent (what a route's credit cost depends on).
struct Slot {
    id: Box<[u8]>,
    key: CacheKey,
    sent: SentParams,
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMemo")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Parts in a memo identity.
const PARTS: usize = 9;

/// The parts of a memo identity, in order: every scope field, then the raw query. Optional
/// fields (credential, `X-EXTERNAL`) are written with a presence byte so `None` and an empty
/// value never meet.
fn parts<'a>(scope: &'a KeyScope<'_>, raw_query: &'a str) -> [&'a [u8]; PARTS] {
    let (credential_present, credential): (&[u8], &[u8]) = match scope.credential {
        Some(c) => (b"1", c),
        None => (b"0", b""),
    };
    let (external_present, external): (&[u8], &[u8]) = match scope.external {
        Some(e) => (b"1", e),
        None => (b"0", b""),
    };
    [
        scope.tenant.as_bytes(),
        credential_present,
        credential,
        scope.method.as_bytes(),
        scope.version.as_bytes(),
        scope.route.as_bytes(),
        external_present,
        external,
        raw_query.as_bytes(),
    ]
}

/// Writes the length-prefixed concatenation of `parts` (a memo identity) into `out`.
fn write_id(out: &mut Vec<u8>, parts: &[&[u8]; PARTS]) {
    out.clear();
    out.reserve(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
}

thread_local! {
    /// Per-thread scratch for a lookup's identity bytes (no allocation per lookup once warm).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl KeyMemo {
    /// Queries longer than this (bytes) are not memoised.
    pub const MAX_QUERY_BYTES: usize = 2048;

    /// A memo of `slots` entries (at least 1).
    pub fn new(slots: usize) -> Self {
        KeyMemo {
            slots: (0..slots.max(1)).map(|_| ArcSwapOption::empty()).collect(),
            seed: rand::random(),
        }
    }

    /// The slot of an identity: one XXH3 pass over all of its bytes.
    fn slot(&self, id: &[u8]) -> &ArcSwapOption<Slot> {
        let h = xxh3_64_with_seed(id, self.seed);
        &self.slots[(h % self.slots.len() as u64) as usize]
    }

    /// The key (and sent parameters) memoised for `raw_query` in `scope`, if any: the identity
    /// is written once into a per-thread buffer, hashed once and compared with the slot's in one
    /// comparison.
    pub fn get(&self, scope: &KeyScope<'_>, raw_query: &str) -> Option<(CacheKey, SentParams)> {
        if raw_query.len() > Self::MAX_QUERY_BYTES {
            return None;
        }
        let parts = parts(scope, raw_query);
        SCRATCH.with(|scratch| {
            let Ok(mut id) = scratch.try_borrow_mut() else {
                return None; // not re-entered in practice; a miss is always safe
            };
            write_id(&mut id, &parts);
            let slot = self.slot(&id).load();
            slot.as_ref()
                .filter(|s| *s.id == id[..])
                .map(|s| (s.key, s.sent))
        })
    }

    /// Remembers that `raw_query` in `scope` has `key` and sent the parameters `sent` (the
    /// result of [`canonicalize`](super::canonicalize) and [`cache_key`](super::cache_key)
    /// under this memo's rules), replacing whatever held its slot.
    pub fn insert(&self, scope: &KeyScope<'_>, raw_query: &str, key: CacheKey, sent: SentParams) {
        if raw_query.len() > Self::MAX_QUERY_BYTES {
            return;
        }
        let mut id = Vec::new();
        write_id(&mut id, &parts(scope, raw_query));
        self.slot(&id).store(Some(Arc::new(Slot {
            id: id.into_boxed_slice(),
            key,
            sent,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(tenant: &'a str, credential: Option<&'a [u8; 32]>) -> KeyScope<'a> {
        KeyScope {
            tenant,
            credential,
            method: "GET",
            version: "v7",
            route: "/settings/user_groups/actions/associated_users_count",
            external: None,
        }
    }

    #[test]
    fn returns_only_what_was_stored_for_the_same_bytes_and_scope() {
        let memo = KeyMemo::new(64);
        let (k1, k2) = (CacheKey([1; 32]), CacheKey([2; 32]));
        memo.insert(&scope("acme", None), "page=1", k1, SentParams::default());
        assert_eq!(
            memo.get(&scope("acme", None), "page=1").map(|(k, _)| k),
            Some(k1)
        );
        // Other bytes, other tenant, a credential, another version: not this entry.
        assert_eq!(memo.get(&scope("acme", None), "page=1&"), None);
        assert_eq!(memo.get(&scope("acme", None), "page=01"), None);
        assert_eq!(memo.get(&scope("acm", None), "page=1"), None);
        assert_eq!(memo.get(&scope("acme", Some(&[0; 32])), "page=1"), None);
        let mut v8 = scope("acme", None);
        v8.version = "v8";
        assert_eq!(memo.get(&v8, "page=1"), None);
        // An `X-EXTERNAL` header, even an empty one, is another scope.
        let mut external = scope("acme", None);
        external.external = Some(b"");
        assert_eq!(memo.get(&external, "page=1"), None);
        external.external = Some(b"Leads.External_Id");
        assert_eq!(memo.get(&external, "page=1"), None);
        // Field boundaries are part of the identity: "ab"+"c" is not "a"+"bc".
        let mut a = scope("ab", None);
        a.method = "cGET";
        memo.insert(&a, "q", k2, SentParams::default());
        let mut b = scope("a", None);
        b.method = "bcGET";
        assert_eq!(memo.get(&b, "q"), None);
        assert_eq!(memo.get(&a, "q").map(|(k, _)| k), Some(k2));
    }

    #[test]
    fn stays_within_its_slots_and_skips_long_queries() {
        let memo = KeyMemo::new(8);
        for i in 0..1000u32 {
            let q = format!("page={i}");
            memo.insert(
                &scope("t", None),
                &q,
                CacheKey([i as u8; 32]),
                SentParams::default(),
            );
            // The latest insert is always found; older ones may have been displaced.
            assert_eq!(
                memo.get(&scope("t", None), &q).map(|(k, _)| k),
                Some(CacheKey([i as u8; 32]))
            );
        }
        let held = (0..1000u32)
            .filter(|i| memo.get(&scope("t", None), &format!("page={i}")).is_some())
            .count();
        assert!(held <= 8, "{held}");
        let long = "a".repeat(KeyMemo::MAX_QUERY_BYTES + 1);
        memo.insert(
            &scope("t", None),
            &long,
            CacheKey([9; 32]),
            SentParams::default(),
        );
        assert_eq!(memo.get(&scope("t", None), &long), None);
    }
}
