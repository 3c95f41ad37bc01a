//! The response cache: a moka future cache bounded in **bytes**, keyed by
//! [`CacheKey`](crate::canonical::CacheKey).
//!
//! - **Weight** of an entry = key (32) + body + stored headers + a fixed per-entry overhead
//!   ([`ENTRY_OVERHEAD`]); `max_bytes` bounds the sum. moka applies the bound during its
//!   maintenance, which [`ResponseCache::run_maintenance`] also runs on a timer so the bound holds
//!   under write bursts.
//! - **Freshness** is judged by the gateway with `tokio::time::Instant` (so tests can pause time):
//!   an entry is fresh while `now < stored_at + ttl`. moka's own per-entry expiry evicts it at the
//!   same moment.
//! - **Stored headers** are only those safe to replay to any client of the tenant
//!   ([`STORED_HEADERS`]); Zoho's per-user `Set-Cookie` and `X-ACCESSTOKEN-RESET` never are.
//! - The cache fails open: nothing here returns an error; a miss just means an upstream call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use moka::Expiry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::canonical::CacheKey;
use crate::upstream::UpstreamResponse;

/// Fixed bytes charged per entry for the key, the `Arc`, moka's node and bookkeeping.
pub const ENTRY_OVERHEAD: u32 = 256;

/// Response headers kept with a cached answer and replayed on hits.
pub const STORED_HEADERS: &[HeaderName] = &[header::CONTENT_TYPE, header::CONTENT_LANGUAGE];

/// An upstream answer as kept in the cache (and handed to coalesced waiters).
#[derive(Debug)]
pub struct CachedResponse {
    /// Upstream status.
    pub status: StatusCode,
    /// The replayable headers ([`STORED_HEADERS`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body bytes (shared, never copied on hits).
    pub body: Bytes,
    /// When the upstream response arrived.
    pub stored_at: Instant,
    /// `Age` the upstream reported, seconds (RFC 9111 §5.1), 0 when absent.
    pub upstream_age: u64,
    /// Freshness lifetime from `stored_at`.
    pub ttl: Duration,
    /// Tenant index (for per-tenant invalidation).
    pub tenant: usize,
}

impl CachedResponse {
    /// Keeps the replayable parts of `resp` with freshness lifetime `ttl`.
    pub fn from_upstream(resp: UpstreamResponse, ttl: Duration, tenant: usize) -> Self {
        let headers = STORED_HEADERS
            .iter()
            .filter_map(|name| Some((name.clone(), resp.headers.get(name)?.clone())))
            .collect();
        let upstream_age = resp
            .headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        CachedResponse {
            status: resp.status,
            headers,
            body: resp.body,
            stored_at: resp.received_at,
            upstream_age,
            ttl,
            tenant,
        }
    }

    /// Weighted size in bytes (see the module doc).
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let total = ENTRY_OVERHEAD as usize + 32 + self.body.len() + headers;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// Whether the entry is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.stored_at + self.ttl
    }

    /// `Age` at `now`, whole seconds: time since the upstream response was received plus the
    /// upstream's own `Age` (RFC 9111 §4.2.3, with no clock skew between us and our own clock).
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored_at).as_secs() + self.upstream_age
    }

    /// Remaining freshness at `now`, whole seconds (the `ttl` of `Cache-Status`, RFC 9211 §2.6).
    pub fn remaining_ttl(&self, now: Instant) -> u64 {
        (self.stored_at + self.ttl)
            .saturating_duration_since(now)
            .as_secs()
    }
}

struct PerEntryTtl;

impl Expiry<CacheKey, Arc<CachedResponse>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResponse>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The byte-bounded response cache. Cheap to clone.
#[derive(Clone)]
pub struct ResponseCache {
    inner: moka::future::Cache<CacheKey, Arc<CachedResponse>>,
    max_bytes: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl ResponseCache {
    /// A cache whose weighted size stays within `max_bytes` (after maintenance).
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Arc<CachedResponse>| v.weight())
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache { inner, max_bytes }
    }

    /// The entry for `key` if present and fresh at `now`.
    pub async fn get_fresh(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.inner.get(key).await.filter(|e| e.is_fresh(now))
    }

    /// Stores `entry` under `key`, replacing any previous one.
    pub async fn insert(&self, key: CacheKey, entry: Arc<CachedResponse>) {
        self.inner.insert(key, entry).await;
    }

    /// Number of entries (approximate until maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Weighted size in bytes (approximate until maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Runs moka's pending maintenance now (evictions, expirations, size accounting).
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }

    /// Runs maintenance every `every` until `shutdown`, so the byte bound holds under bursts.
    pub async fn run_maintenance(self, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.inner.run_pending_tasks().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn response(body: &[u8], ttl: Duration) -> Arc<CachedResponse> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("crmcsr=abc"));
        headers.insert(
            "x-accesstoken-reset",
            HeaderValue::from_static("2026-01-01T00:00:00Z"),
        );
        Arc::new(CachedResponse::from_upstream(
            UpstreamResponse {
                status: StatusCode::OK,
                headers,
                body: Bytes::copy_from_slice(body),
                received_at: Instant::now(),
            },
            ttl,
            0,
        ))
    }

    #[test]
    fn only_safe_headers_are_stored() {
        let r = response(b"{}", Duration::from_secs(60));
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_age_and_ttl_follow_paused_time() {
        let cache = ResponseCache::new(1 << 20);
        let key = CacheKey([7; 32]);
        cache
            .insert(key, response(b"{}", Duration::from_secs(60)))
            .await;
        let e = cache.get_fresh(&key, Instant::now()).await.unwrap();
        assert_eq!(e.age(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(59)).await;
        let now = Instant::now();
        let e = cache.get_fresh(&key, now).await.unwrap();
        assert_eq!(e.age(now), 59);
        assert_eq!(e.remaining_ttl(now), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get_fresh(&key, Instant::now()).await.is_none());
    }

    #[tokio::test]
    async fn weighted_size_stays_within_bound() {
        let max = 64 * 1024;
        let cache = ResponseCache::new(max);
        let body = vec![b'x'; 1000];
        for i in 0..(10 * max / 1000) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_le_bytes());
            cache
                .insert(CacheKey(k), response(&body, Duration::from_secs(60)))
                .await;
        }
        cache.run_pending_tasks().await;
        assert!(
            cache.weighted_size() <= max,
            "{} > {max}",
            cache.weighted_size()
        );
        assert!(cache.entry_count() > 0);
    }
}
