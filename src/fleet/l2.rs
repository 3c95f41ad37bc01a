//! The L2 cache: answers shared by every replica through Redis, behind each replica's moka L1.
//!
//! - **Key**: `l2:{hex of the 32-byte CacheKey}` — the canonical key contract
//!   ([`crate::canonical`]) is the same on every replica, so equal requests meet here.
//! - **Absolute times**: an entry carries the Unix millisecond its upstream answer arrived, plus
//!   its TTL and stale windows, so `Age` (RFC 9111 §4.2.3), the `ttl` of `Cache-Status`
//!   (RFC 9211 §2.6) and the stale-while-revalidate / stale-if-error windows (RFC 5861) mean the
//!   same on every replica. [`L2Entry::to_cached`] rebuilds a local [`CachedResponse`] whose
//!   `stored_at` is that arrival on the local clock.
//! - **Bounded**: every entry has a Redis TTL = the end of its last stale window (capped at
//!   [`super::generation::GENERATION_TTL`]); Redis `maxmemory` is the operator's.
//! - **Generations**: a lookup returns the scope's current generation too (same round trip); an
//!   entry of an older generation is a miss; a store happens only if the generation is still the
//!   one the fetch started with (see [`super::generation`]).
//! - **Format** (length-prefixed, big-endian): `"ZGL2" ‖ 1 ‖ status u16 ‖ stored_at_ms u64 ‖
//!   upstream_age u64 ‖ ttl_ms u64 ‖ swr_ms u64 ‖ sie_ms u64 ‖ generation u64 ‖ n u16 ‖ n × (name
//!   u16-prefixed ‖ value u32-prefixed) ‖ body u32-prefixed`. Anything malformed reads as a miss.
//!   Only [`crate::cache::STORED_HEADERS`] are ever stored: no credentials.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};
use redis::Script;
use tokio::time::Instant;

use super::generation::{GENERATION_TTL, Scope};
use super::{Fleet, Op, Unavailable};
use crate::cache::{CachedResponse, Lifetimes, StoredHeaders};
use crate::canonical::CacheKey;
use crate::config::TenantId;
use crate::route::RouteId;

const MAGIC: &[u8; 4] = b"ZGL2";
const VERSION: u8 = 1;

/// Stores `ARGV[2]` under `KEYS[1]` for `ARGV[3]` ms if the scope's generation (group counter
/// `KEYS[2]` + tenant purge counter `KEYS[3]`) is still `ARGV[1]`, and renews both counters for
/// `ARGV[4]` ms so neither lapses while the entry lives.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local g = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(redis.call('GET', KEYS[3]) or '0')
if tostring(g) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
",
    )
});

/// An answer as kept in L2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Entry {
    /// Upstream status.
    pub status: u16,
    /// The replayable headers ([`crate::cache::STORED_HEADERS`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body bytes.
    pub body: Bytes,
    /// When the upstream answer arrived, Unix milliseconds.
    pub stored_at_unix_ms: u64,
    /// `Age` the upstream reported, seconds.
    pub upstream_age: u64,
    /// Freshness lifetime and stale windows.
    pub lifetimes: Lifetimes,
    /// Generation of the entry's scope when its fetch began.
    pub generation: u64,
}

/// The answer of [`Fleet::l2_get`].
#[derive(Debug)]
pub struct L2Lookup {
    /// The entry, if present and of the current generation.
    pub entry: Option<L2Entry>,
    /// The scope's current generation (pass it to [`Fleet::l2_put`] after the fetch).
    pub generation: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl L2Entry {
    /// The L2 form of `e`, as of `now` on the local clock and `now_unix_ms` on the wall clock.
    pub fn from_cached(
        e: &CachedResponse,
        now: Instant,
        now_unix_ms: u64,
        generation: u64,
    ) -> Self {
        let age_ms = ms(now.saturating_duration_since(e.stored_at));
        L2Entry {
            status: e.status.as_u16(),
            headers: e.headers.to_vec(),
            body: e.body.clone(),
            stored_at_unix_ms: now_unix_ms.saturating_sub(age_ms),
            upstream_age: u64::from(e.upstream_age),
            lifetimes: e.lifetimes.get(),
            generation,
        }
    }

    /// A local cache entry for this answer: `stored_at` is the arrival instant on the local clock
    /// (`now` minus the wall-clock time since arrival; an arrival in the future, from clock skew
    /// between replicas, counts as now). Its validators are derived (body digest, arrival time:
    /// the same on every replica; Zoho's own are not in the L2 format); its invalidation group
    /// is 0 until the caller sets it with [`CachedResponse::with_group`].
    pub fn to_cached(
        &self,
        now: Instant,
        now_unix_ms: u64,
        tenant: TenantId,
        route: RouteId,
    ) -> CachedResponse {
        let since = Duration::from_millis(now_unix_ms.saturating_sub(self.stored_at_unix_ms));
        CachedResponse {
            status: StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK),
            headers: StoredHeaders::from_pairs(&self.headers),
            body: self.body.clone(),
            stored_at: now.checked_sub(since).unwrap_or(now),
            upstream_age: u32::try_from(self.upstream_age).unwrap_or(u32::MAX),
            lifetimes: self.lifetimes.into(),
            tenant,
            route,
            group: 0,
            superseded: Default::default(),
            inserted: Default::default(),
            validators: crate::cache::Validators::new(
                &http::HeaderMap::new(),
                &self.body,
                std::time::UNIX_EPOCH + Duration::from_millis(self.stored_at_unix_ms),
            ),
        }
    }

    /// Unix millisecond after which the entry is of no use (end of its last stale window).
    pub fn usable_until_unix_ms(&self) -> u64 {
        let l = &self.lifetimes;
        self.stored_at_unix_ms
            .saturating_add(ms(l.ttl))
            .saturating_add(ms(l.stale_while_revalidate.max(l.stale_if_error)))
    }

    /// The byte form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(64 + self.body.len());
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        b.put_u16(self.status);
        b.put_u64(self.stored_at_unix_ms);
        b.put_u64(self.upstream_age);
        b.put_u64(ms(self.lifetimes.ttl));
        b.put_u64(ms(self.lifetimes.stale_while_revalidate));
        b.put_u64(ms(self.lifetimes.stale_if_error));
        b.put_u64(self.generation);
        b.put_u16(self.headers.len().min(u16::MAX as usize) as u16);
        for (name, value) in self.headers.iter().take(u16::MAX as usize) {
            b.put_u16(name.as_str().len() as u16);
            b.put_slice(name.as_str().as_bytes());
            b.put_u32(value.len() as u32);
            b.put_slice(value.as_bytes());
        }
        b.put_u32(self.body.len() as u32);
        b.put_slice(&self.body);
        b.to_vec()
    }

    /// Parses the byte form; `None` if anything is off.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let mut b = raw;
        if b.len() < 5 + 2 + 8 * 6 + 2 + 4 || &b[..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        b.advance(5);
        let status = b.get_u16();
        StatusCode::from_u16(status).ok()?;
        let stored_at_unix_ms = b.get_u64();
        let upstream_age = b.get_u64();
        let ttl = Duration::from_millis(b.get_u64());
        let stale_while_revalidate = Duration::from_millis(b.get_u64());
        let stale_if_error = Duration::from_millis(b.get_u64());
        let generation = b.get_u64();
        let n = b.get_u16();
        let mut headers = Vec::with_capacity(usize::from(n).min(16));
        for _ in 0..n {
            let name = take(&mut b, 2)?;
            let value = take(&mut b, 4)?;
            headers.push((
                HeaderName::from_bytes(name).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            ));
        }
        let body = take(&mut b, 4)?;
        if !b.is_empty() {
            return None;
        }
        Some(L2Entry {
            status,
            headers,
            body: Bytes::copy_from_slice(body),
            stored_at_unix_ms,
            upstream_age,
            lifetimes: Lifetimes {
                ttl,
                stale_while_revalidate,
                stale_if_error,
            },
            generation,
        })
    }
}

/// Takes a `width`-byte (2 or 4) length prefix and that many bytes.
fn take<'a>(b: &mut &'a [u8], width: usize) -> Option<&'a [u8]> {
    if b.len() < width {
        return None;
    }
    let len = if width == 2 {
        usize::from(b.get_u16())
    } else {
        b.get_u32() as usize
    };
    if b.len() < len {
        return None;
    }
    let (head, rest) = b.split_at(len);
    *b = rest;
    Some(head)
}

impl Fleet {
    fn l2_key(&self, key: &CacheKey) -> String {
        self.key(&["l2", &hex::encode(key.0)])
    }

    /// Looks `key` up in L2 (one `MGET` of the entry and the scope's two generation counters).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer (treat as an L2 miss and carry on without L2).
    pub async fn l2_get(&self, key: &CacheKey, scope: Scope<'_>) -> Result<L2Lookup, Unavailable> {
        let keys = [
            self.l2_key(key),
            self.generation_key(scope),
            self.tenant_generation_key(scope.tenant),
        ];
        let (raw, group, tenant): (Option<Vec<u8>>, Option<u64>, Option<u64>) = self
            .op(Op::L2Get, |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await?;
        let generation = group.unwrap_or(0).saturating_add(tenant.unwrap_or(0));
        let entry = raw.and_then(|r| L2Entry::decode(&r));
        let result = match &entry {
            None => "miss",
            Some(e) if e.generation != generation => "superseded",
            Some(_) => "hit",
        };
        self.metrics.l2_lookups.with_label_values(&[result]).inc();
        Ok(L2Lookup {
            entry: entry.filter(|e| e.generation == generation),
            generation,
        })
    }

    /// Stores `entry` under `key` if the scope's generation is still `entry.generation` (else a
    /// write happened since the fetch began, and the answer may predate it). The Redis TTL ends
    /// with the entry's last stale window. Returns whether it was stored.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn l2_put(
        &self,
        key: &CacheKey,
        scope: Scope<'_>,
        entry: &L2Entry,
        now_unix_ms: u64,
    ) -> Result<bool, Unavailable> {
        let ttl_ms = entry
            .usable_until_unix_ms()
            .saturating_sub(now_unix_ms)
            .min(ms(GENERATION_TTL));
        if ttl_ms == 0 {
            return Ok(false);
        }
        let keys = (
            self.l2_key(key),
            self.generation_key(scope),
            self.tenant_generation_key(scope.tenant),
        );
        let (generation, bytes) = (entry.generation.to_string(), entry.encode());
        let renew = ms(GENERATION_TTL);
        let stored: i64 = self
            .op(Op::L2Put, |mut c| async move {
                PUT.key(keys.0)
                    .key(keys.1)
                    .key(keys.2)
                    .arg(generation)
                    .arg(bytes)
                    .arg(ttl_ms)
                    .arg(renew)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let result = if stored == 1 { "stored" } else { "superseded" };
        self.metrics.l2_stores.with_label_values(&[result]).inc();
        Ok(stored == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn entry() -> L2Entry {
        L2Entry {
            status: 200,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            )],
            body: Bytes::from_static(br#"{"associated_users_count":[]}"#),
            stored_at_unix_ms: 1_800_000_000_123,
            upstream_age: 3,
            lifetimes: Lifetimes {
                ttl: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(30),
                stale_if_error: Duration::from_secs(300),
            },
            generation: 7,
        }
    }

    #[test]
    fn codec_round_trips_and_refuses_damage() {
        let e = entry();
        let raw = e.encode();
        assert_eq!(L2Entry::decode(&raw), Some(e.clone()));
        for cut in [0, 4, 20, raw.len() - 1] {
            assert_eq!(L2Entry::decode(&raw[..cut]), None, "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(L2Entry::decode(&longer), None);
        let mut bad_version = raw.clone();
        bad_version[4] = 2;
        assert_eq!(L2Entry::decode(&bad_version), None);
        let empty = L2Entry {
            headers: vec![],
            body: Bytes::new(),
            status: 204,
            ..e
        };
        assert_eq!(L2Entry::decode(&empty.encode()), Some(empty));
    }

    #[tokio::test(start_paused = true)]
    async fn absolute_times_give_the_same_age_on_another_replica() {
        let e = entry();
        assert_eq!(e.usable_until_unix_ms(), 1_800_000_000_123 + 360_000);
        // Replica B reads it 42.5 s (wall clock) after the answer arrived.
        let now = Instant::now();
        let cached = e.to_cached(now, 1_800_000_042_623, TenantId(0), RouteId(0));
        assert_eq!(cached.age(now), 42 + 3);
        assert_eq!(cached.remaining_ttl(now), 17);
        // And back: the same arrival time in Unix milliseconds.
        let again = L2Entry::from_cached(&cached, now, 1_800_000_042_623, 7);
        assert_eq!(again, e);
        // Clock skew: an arrival "in the future" counts as now.
        let skewed = e.to_cached(now, 1_800_000_000_000, TenantId(0), RouteId(0));
        assert_eq!(skewed.age(now), 3);
    }
}
