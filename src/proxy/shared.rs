//! The fleet tier on the request path (with `[redis]`): the L2 lookup after an L1 miss, and the
//! cross-replica single-flight around the upstream call.
//!
//! Semantics at the call site (the local flight's fetch, [`Gateway::fetch_and_store`], runs
//! this, so each replica asks Redis at most once per key at a time):
//! 1. **L2**: one `MGET` of the entry and its scope's generation ([`Fleet::l2_get`]). A fresh
//!    entry is the answer (`Cache-Status: …; hit; detail=shared`, with `Age` and `ttl` from its
//!    absolute times, so they read the same on every replica), and goes into L1 unless an
//!    invalidation ran meanwhile.
//! 2. **Cross-replica flight** ([`Fleet::fleet_flight`]): the replica that takes the key's lock
//!    calls Zoho ([`Gateway::fetch_upstream`]), stores the answer in L1 and L2 (only if the
//!    scope's generation is still the one read in step 1 or in the flight's last re-check: a
//!    write since then may postdate the answer) and publishes the completion; the others,
//!    registered for it before re-checking L2, read the answer from L2
//!    (`fwd=miss; collapsed`). A dead owner's lock lapses and one waiter takes over.
//! 3. **Fails open**: Redis unavailable at any step → this replica calls Zoho itself (its local
//!    flight still coalesces its own requests). The owner's failure or an unstorable answer is
//!    not shared: each waiting replica then calls Zoho itself (at most one call per replica), so
//!    every client gets Zoho's own answer. A waiter gives up on another replica after half of
//!    `cache.coalesce_timeout` (at most `redis.flight_lock_ttl`) and calls Zoho itself, so an
//!    owner cut off from Redis costs a delay, not a client error.
//! 4. Client `no-cache`: no L2 read, no cross-replica flight; the fresh answer is still stored
//!    in both tiers.
//!
//! Holds after failures stay per replica (L2 keeps answers only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::fleet::flight::{Completion, FleetFlightError};
use crate::fleet::generation::Scope;
use crate::fleet::l2::L2Entry;
use crate::fleet::{Availability, Unavailable};

/// What an L2 lookup found.
enum L2Found {
    /// A fresh answer (already in L1 unless an invalidation ran meanwhile).
    Fresh(Arc<CachedResponse>),
    /// Nothing usable; the scope's generation, for storing the answer after the fetch.
    Miss(u64),
}

/// Wall-clock Unix milliseconds (L2 entries carry absolute times).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Gateway {
    /// The fetch with a fleet tier (see the module doc).
    pub(super) async fn fetch_shared(
        self: &Arc<Self>,
        fleet: &Arc<Fleet>,
        key: CacheKey,
        owner: &Owner,
        call: &CallCtx,
        path_and_query: &str,
        recheck: bool,
    ) -> FetchResult {
        let alone = || async {
            self.fetch_upstream(key, owner, call, path_and_query, None)
                .await
                .0
        };
        if fleet.availability() == Availability::Unavailable {
            return alone().await;
        }
        let scope = Scope {
            tenant: &self.tenant(owner.tenant).config.name,
            group: &owner.group_name,
        };
        if !recheck {
            let l2 = fleet.generation(scope).await.ok().map(|g| (&**fleet, g));
            return self
                .fetch_upstream(key, owner, call, path_and_query, l2)
                .await
                .0;
        }
        let generation = match self.l2_lookup(fleet, &key, scope, owner).await {
            Ok(L2Found::Fresh(entry)) => return Ok(shared(entry, Source::Shared)),
            Ok(L2Found::Miss(g)) => AtomicU64::new(g),
            Err(Unavailable) => return alone().await,
        };
        let cfg = self.config();
        let wait = (cfg.coalesce_timeout / 2).min(fleet.config().flight_lock_ttl);
        let check = || async {
            Ok(match self.l2_lookup(fleet, &key, scope, owner).await? {
                L2Found::Fresh(entry) => Some(Ok(shared(entry, Source::Replica))),
                L2Found::Miss(g) => {
                    generation.store(g, Ordering::SeqCst);
                    None
                }
            })
        };
        let fetch = || async {
            let l2 = Some((&**fleet, generation.load(Ordering::SeqCst)));
            let (result, in_l2) = self
                .fetch_upstream(key, owner, call, path_and_query, l2)
                .await;
            let completion = if in_l2 {
                Completion::Stored
            } else {
                Completion::Failed
            };
            (result, completion)
        };
        match fleet.fleet_flight(&key, wait, check, fetch).await {
            Ok((result, _role)) => result,
            Err(
                FleetFlightError::Unavailable
                | FleetFlightError::OwnerFailed
                | FleetFlightError::Timeout,
            ) => alone().await,
        }
    }

    /// Looks `key` up in L2; a fresh entry also goes into L1 (unless this replica saw an
    /// invalidation of its group meanwhile).
    async fn l2_lookup(
        &self,
        fleet: &Fleet,
        key: &CacheKey,
        scope: Scope<'_>,
        owner: &Owner,
    ) -> Result<L2Found, Unavailable> {
        let t = self.tenant(owner.tenant);
        let local = t.generation(owner.group);
        let look = fleet.l2_get(key, scope).await?;
        let now = self.clock.now();
        let Some(entry) = look.entry else {
            return Ok(L2Found::Miss(look.generation));
        };
        let entry = Arc::new(
            entry
                .to_cached(now, unix_ms(), owner.tenant, owner.route)
                .with_group(owner.group),
        );
        if !entry.is_fresh(now) {
            return Ok(L2Found::Miss(look.generation));
        }
        if t.generation(owner.group) == local {
            self.cache.insert(*key, entry.clone()).await;
            // An invalidation that ran between the check and the insert: take it out again.
            if t.generation(owner.group) != local {
                self.cache.remove(key).await;
            }
        }
        Ok(L2Found::Fresh(entry))
    }

    /// Stores a fresh answer in L2 under the scope's `generation` (refused by Redis when a
    /// write bumped it since). Returns whether it is there.
    pub(super) async fn l2_store(
        &self,
        fleet: &Fleet,
        key: &CacheKey,
        owner: &Owner,
        entry: &CachedResponse,
        generation: u64,
    ) -> bool {
        let scope = Scope {
            tenant: &self.tenant(owner.tenant).config.name,
            group: &owner.group_name,
        };
        let now_unix = unix_ms();
        let l2 = L2Entry::from_cached(entry, self.clock.now(), now_unix, generation);
        fleet
            .l2_put(key, scope, &l2, now_unix)
            .await
            .unwrap_or(false)
    }
}

/// A flight answer read from L2.
fn shared(entry: Arc<CachedResponse>, source: Source) -> Fetched {
    Fetched {
        entry,
        stored: false,
        upstream_took: Duration::ZERO,
        source,
    }
}
