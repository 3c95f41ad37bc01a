//! The per-thread front of the response cache (L0): each worker thread keeps its hottest fresh
//! entries, so that a hit writes to nothing another thread also writes — no reference count, no
//! moka access bookkeeping, no shared read log. On a two-core machine under load those shared
//! writes (cache lines moving between cores on every hit) were about half of a hit's cost
//! (issue 14: `hit_path -- gateway_hit_threads/2` against `/1`).
//!
//! Each slot holds an entry of the main cache and **its own copy of the body** (a shared
//! body's reference count would move between cores on every clone and drop). A slot answers
//! only while all of these hold, checked on every use:
//!
//! - it belongs to this [`ResponseCache`](super::ResponseCache) (several gateways may share a
//!   process, as the tests do) and the cache's **epoch** is the one it was filled under: every
//!   invalidation (purge, write-through group, tenant removal, reload) bumps the epoch;
//! - the entry is still in the main cache: not **superseded** (replaced under its key, removed,
//!   evicted for space or expired: the main cache marks it, in `insert`/`remove` and in its
//!   removal listener for every cause), and every [`SAMPLE`]th L0 hit reads the key from moka
//!   (which also tells moka's eviction policy the entry is hot) and drops the slot if moka no
//!   longer returns that very entry;
//! - the request's instant is before the slot's **deadline**: the end of the entry's freshness
//!   (stale entries go the main path, with its holds and background refreshes), and, with the
//!   fleet tier's `redis.l1_ttl`, `l1_ttl` after the entry entered this cache.
//!
//! So an L0 answer is one the main cache would have given. Memory: [`SLOTS`] slots per thread,
//! bodies of at most [`ResponseCache`](super::ResponseCache)'s L0 limit (1/1024 of `max_bytes`,
//! at most 16 KiB), so at most 64 × 2 × 16 KiB = 2 MiB (plus the entries' small headers) per
//! worker thread beyond the bound; a slot keeps its entry alive until the slot is reused.
//!
//! Slots are direct-mapped by the key (a SHA-256, so its first bytes are uniform). A newcomer
//! takes a slot that is empty or no longer valid at once; a valid occupant is replaced only after
//! as many conflicting misses as it had hits (halved each time), so a hot entry is not pushed out
//! by a colder one.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::CachedResponse;
use crate::canonical::CacheKey;

/// Slots per thread.
pub const SLOTS: usize = 64;

/// One L0 hit in this many also reads the entry from moka (its recency and frequency).
pub const SAMPLE: u32 = 32;

/// What the request path keeps with a slot to answer from it faster: a response head built
/// once for the entry, and the per-second values last written into it (filled and read by
/// `proxy::respond`; dropped with the slot).
#[derive(Default)]
pub struct Prepared {
    /// The entry's response head with placeholders for the per-request values.
    pub head: Option<http::HeaderMap>,
    /// `(ttl, age)` in whole seconds, and their `Cache-Status` and `Age` values.
    pub stamp: Option<(u64, u64, http::HeaderValue, http::HeaderValue)>,
}

struct Slot {
    cache: u64,
    epoch: u64,
    key: CacheKey,
    entry: Arc<CachedResponse>,
    body: Bytes,
    /// The slot answers only before this instant (see the module doc).
    until: Instant,
    /// Hits since filled (halved by each conflicting miss; saturating).
    hits: u32,
    /// Hits counted for sampling (wrapping).
    sampled: u32,
    prepared: Prepared,
}

thread_local! {
    static L0: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn index(key: &CacheKey) -> usize {
    let b = &key.0;
    let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    (n % SLOTS as u64) as usize
}

/// What [`serve`] found.
pub enum Served<R> {
    /// Answered from this thread's slot; `sample`: the entry (as a pointer, for comparison
    /// only) when moka should be read now — then [`forget`] the slot unless moka still holds
    /// that entry.
    Hit { answer: R, sample: Option<usize> },
    /// Not in this thread's slots (or no longer valid there).
    Miss,
}

/// Answers `key` from this thread's slot with `f(entry, body, prepared)` if the slot is valid
/// for cache `cache` at `epoch` and the entry is fresh at `now`. `unsampled`: only if this
/// answer is not a sampling turn (one that must read moka); a declined turn is left for the
/// next call.
pub fn serve<R>(
    cache: u64,
    epoch: u64,
    key: &CacheKey,
    now: Instant,
    unsampled: bool,
    f: impl FnOnce(&CachedResponse, &Bytes, &mut Prepared) -> R,
) -> Served<R> {
    L0.try_with(|l0| {
        let Ok(mut l0) = l0.try_borrow_mut() else {
            return Served::Miss;
        };
        let Some(Some(slot)) = l0.get_mut(index(key)) else {
            return Served::Miss;
        };
        if slot.cache != cache
            || slot.key != *key
            || slot.epoch != epoch
            || slot.entry.is_superseded()
            || now >= slot.until
        {
            return Served::Miss;
        }
        if unsampled && slot.sampled.wrapping_add(1) % SAMPLE == 0 {
            return Served::Miss;
        }
        slot.hits = slot.hits.saturating_add(1);
        slot.sampled = slot.sampled.wrapping_add(1);
        Served::Hit {
            answer: f(&slot.entry, &slot.body, &mut slot.prepared),
            sample: (slot.sampled % SAMPLE == 0).then_some(Arc::as_ptr(&slot.entry) as usize),
        }
    })
    .unwrap_or(Served::Miss)
}

/// Empties this thread's slot for `key` if it holds `entry` of cache `cache` (moka no longer
/// returns that entry).
pub fn forget(cache: u64, key: &CacheKey, entry: usize) {
    let _ = L0.try_with(|l0| {
        if let Ok(mut l0) = l0.try_borrow_mut()
            && let Some(slot) = l0.get_mut(index(key))
            && slot
                .as_ref()
                .is_some_and(|s| s.cache == cache && Arc::as_ptr(&s.entry) as usize == entry)
        {
            *slot = None;
        }
    });
}

/// Offers `entry` (just found fresh in the main cache under `key`) to this thread's slot, to
/// answer until `until` at most.
pub fn offer(
    cache: u64,
    epoch: u64,
    key: &CacheKey,
    entry: &Arc<CachedResponse>,
    now: Instant,
    until: Instant,
) {
    let _ = L0.try_with(|l0| {
        let Ok(mut l0) = l0.try_borrow_mut() else {
            return;
        };
        if l0.is_empty() {
            l0.resize_with(SLOTS, || None);
        }
        let slot = &mut l0[index(key)];
        if let Some(occupant) = slot {
            let valid = occupant.cache == cache
                && occupant.epoch == epoch
                && !occupant.entry.is_superseded()
                && now < occupant.until;
            let same_key = occupant.cache == cache && occupant.key == *key;
            if valid && same_key && Arc::ptr_eq(&occupant.entry, entry) {
                return;
            }
            // Another key's hot entry keeps its slot for a while; a newer entry of the same key
            // always takes it.
            if valid && !same_key && occupant.hits > 0 {
                occupant.hits /= 2;
                return;
            }
        }
        *slot = Some(Slot {
            cache,
            epoch,
            key: *key,
            entry: entry.clone(),
            body: Bytes::copy_from_slice(&entry.body),
            until,
            hits: 0,
            sampled: 0,
            prepared: Prepared::default(),
        });
    });
}
