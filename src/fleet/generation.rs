//! Invalidation broadcast with a fleet-wide generation per (tenant, group).
//!
//! - A write through any replica, or an admin purge, calls [`Fleet::invalidate`]: one script
//!   increments `gen:{tenant}:{group}` and publishes `inval` with the new value. Every replica's
//!   hub delivers it as [`FleetEvent::Invalidated`] (drop the matching L1 entries) and records
//!   the generation locally ([`Fleet::local_generation`]).
//! - **No answer older than a write is stored**: a fetch notes the generation when it starts (the
//!   Redis one comes with the L2 lookup, [`super::l2::L2Lookup::generation`]; the local one from
//!   [`Fleet::local_generation`]) and stores into L2 only if Redis still has that generation (checked
//!   in the storing script) and into L1 only if the local view still has it. L2 entries carry
//!   their generation, and a lookup that finds an older one treats it as a miss.
//! - **Admin purges** bump a tenant-wide counter `gen-all:{tenant}` instead ([`Fleet::purge`]) and
//!   publish `purge` (`tenant \0 route`, empty route: every route); every replica drops the
//!   matching L1 entries ([`FleetEvent::Purged`]). The generation of a scope is the **sum** of
//!   its group counter and its tenant's counter (both only grow while they live), so a purge
//!   supersedes every L2 entry of the tenant and a group write only that group's.
//! - Generation keys expire [`GENERATION_TTL`] after the last bump or L2 store of their scope
//!   (every bump and every store renews both counters of the scope), and L2 entries never live
//!   longer than that: a counter referenced by a live entry never lapses back to 0, so no entry
//!   is revived.
//!
//! Message formats: `inval`: `tenant \0 group \0 generation` (decimal); `purge`:
//! `tenant \0 route`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Fleet, FleetEvent, Op, Unavailable};

/// Lifetime of a generation counter after its last bump; also the cap on any L2 entry's TTL.
pub const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Bumps `KEYS[1]`, renews `KEYS[2]` (the scope's other counter) and publishes
/// `ARGV[3] .. new value` (or `ARGV[3]` alone when `ARGV[4]` is `"plain"`) on `ARGV[2]`.
static BUMP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if KEYS[2] then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
if ARGV[4] == 'plain' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
else
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. g)
end
return g
",
    )
});

/// What an invalidation covers: one tenant's entries of one group (e.g. a route name). Both come
/// from configuration (closed sets), never from request data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope<'a> {
    /// Configured tenant name.
    pub tenant: &'a str,
    /// Invalidation group.
    pub group: &'a str,
}

/// Parses a `purge` message; `None` when malformed.
pub(super) fn parse_purge(payload: &[u8]) -> Option<FleetEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let (tenant, route) = text.split_once('\0')?;
    if tenant.is_empty() || route.contains('\0') {
        return None;
    }
    Some(FleetEvent::Purged {
        tenant: tenant.to_owned(),
        route: (!route.is_empty()).then(|| route.to_owned()),
    })
}

/// Parses an `inval` message; `None` when malformed.
pub(super) fn parse_message(payload: &[u8]) -> Option<FleetEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\0');
    let (tenant, group, generation) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(FleetEvent::Invalidated {
        tenant: tenant.to_owned(),
        group: group.to_owned(),
        generation: generation.parse().ok()?,
    })
}

impl Fleet {
    pub(super) fn generation_key(&self, scope: Scope<'_>) -> String {
        self.key(&["gen", scope.tenant, scope.group])
    }

    /// The tenant-wide counter bumped by admin purges.
    pub(super) fn tenant_generation_key(&self, tenant: &str) -> String {
        self.key(&["gen-all", tenant])
    }

    /// Invalidates `scope` fleet-wide: bumps its generation and broadcasts it. Returns the new
    /// generation.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer (the caller still drops its own L1 entries;
    /// other replicas resync when they next see Redis).
    pub async fn invalidate(&self, scope: Scope<'_>) -> Result<u64, Unavailable> {
        let key = self.generation_key(scope);
        let other = self.tenant_generation_key(scope.tenant);
        let channel = self.channel("inval");
        let prefix = format!("{}\0{}\0", scope.tenant, scope.group);
        let ttl = GENERATION_TTL.as_millis() as u64;
        let g: u64 = self
            .op(Op::Generation, |mut c| async move {
                BUMP.key(key)
                    .key(other)
                    .arg(ttl)
                    .arg(channel)
                    .arg(prefix)
                    .arg("counted")
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.observe_generation(scope.tenant, scope.group, g);
        Ok(g)
    }

    /// An admin purge of `tenant` (of `route` only, or every route): supersedes every L2 entry of
    /// the tenant (L2 keys carry no route, so a route purge drops the tenant's other L2 entries
    /// too: they are fetched again) and tells every replica to drop the matching L1 entries
    /// ([`FleetEvent::Purged`], also delivered to this replica). Returns the tenant's new
    /// purge counter.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer (the caller still purges its own L1; other
    /// replicas resync when they next see Redis).
    pub async fn purge(&self, tenant: &str, route: Option<&str>) -> Result<u64, Unavailable> {
        let key = self.tenant_generation_key(tenant);
        let channel = self.channel("purge");
        let message = format!("{tenant}\0{}", route.unwrap_or(""));
        let ttl = GENERATION_TTL.as_millis() as u64;
        self.op(Op::Generation, |mut c| async move {
            BUMP.key(key)
                .arg(ttl)
                .arg(channel)
                .arg(message)
                .arg("plain")
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// The generation of `scope` in Redis: its group counter plus its tenant's purge counter (0
    /// when never bumped or lapsed).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn generation(&self, scope: Scope<'_>) -> Result<u64, Unavailable> {
        let keys = [
            self.generation_key(scope),
            self.tenant_generation_key(scope.tenant),
        ];
        let (g, t): (Option<u64>, Option<u64>) = self
            .op(Op::Generation, |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await?;
        Ok(g.unwrap_or(0).saturating_add(t.unwrap_or(0)))
    }

    /// The highest generation of `scope` this replica has seen (events and its own bumps); 0 if
    /// none. A local read: no Redis round trip.
    pub fn local_generation(&self, scope: Scope<'_>) -> u64 {
        let map = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(scope.tenant.into(), scope.group.into()))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn observe_generation(&self, tenant: &str, group: &str, generation: u64) {
        let mut map = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let seen = map.entry((tenant.into(), group.into())).or_insert(0);
        *seen = (*seen).max(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_or_are_refused() {
        assert_eq!(
            parse_message(b"acme\0associated_users_count\x0042"),
            Some(FleetEvent::Invalidated {
                tenant: "acme".into(),
                group: "associated_users_count".into(),
                generation: 42
            })
        );
        assert_eq!(parse_message(b"acme\0g"), None);
        assert_eq!(parse_message(b"acme\0g\0x"), None);
        assert_eq!(parse_message(b"a\0g\x001\0extra"), None);
        assert_eq!(parse_message(b"\xff\0g\x001"), None);
        assert_eq!(
            parse_purge(b"acme\0search"),
            Some(FleetEvent::Purged {
                tenant: "acme".into(),
                route: Some("search".into())
            })
        );
        assert_eq!(
            parse_purge(b"acme\0"),
            Some(FleetEvent::Purged {
                tenant: "acme".into(),
                route: None
            })
        );
        assert_eq!(parse_purge(b"acme"), None);
        assert_eq!(parse_purge(b"\0r"), None);
        assert_eq!(parse_purge(b"a\0r\0x"), None);
    }
}
