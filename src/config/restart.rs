//! Which settings a live reload (SIGHUP) cannot apply. Each is built into something made once
//! at start-up: the listeners and their per-connection settings, moka's byte bound, the pooled
//! upstream client, the tracing subscriber, the Redis tier. A reload that changes any of them
//! is refused as a whole and names them ([`GatewayConfig::restart_only_changes`]); everything
//! else a reload changes takes effect for the next request.

use super::GatewayConfig;

impl GatewayConfig {
    /// The keys whose values differ between `self` (in force) and `new` and that only a
    /// restart applies, in file order (`server.listen`, `cache.max_bytes`, `upstream.timeout`,
    /// `logging.filter`, `redis.url`, …). Empty when `new` can be applied live. Secrets are
    /// compared, never shown.
    ///
    /// Live (not listed): `server.request_timeout`, `server.max_uri_bytes`, the TLS files,
    /// `cache.coalesce_timeout`, `cache.max_waiters`, `upstream.max_retries`,
    /// `retry_base_delay`, `retry_max_delay`, `max_retry_after` (read per call), routes'
    /// policies, the allowlist, `admin.token`, tenants and clients.
    pub fn restart_only_changes(&self, new: &GatewayConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name: &'static str, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("server.listen", self.listen != new.listen);
        check("server.admin_listen", self.admin_listen != new.admin_listen);
        check(
            "server.drain_timeout",
            self.drain_timeout != new.drain_timeout,
        );
        check(
            "server.header_read_timeout",
            self.header_read_timeout != new.header_read_timeout,
        );
        check("server.idle_timeout", self.idle_timeout != new.idle_timeout);
        check(
            "server.max_connections",
            self.max_connections != new.max_connections,
        );
        check(
            "server.max_header_bytes",
            self.max_header_bytes != new.max_header_bytes,
        );
        check("server.max_headers", self.max_headers != new.max_headers);
        check(
            "server.http2_max_concurrent_streams",
            self.http2_max_concurrent_streams != new.http2_max_concurrent_streams,
        );
        check(
            "server.tls (switched on or off)",
            self.tls.is_some() != new.tls.is_some(),
        );
        check(
            "cache.max_bytes",
            self.cache_max_bytes != new.cache_max_bytes,
        );
        let (u, n) = (&self.upstream, &new.upstream);
        check(
            "upstream.connect_timeout",
            u.connect_timeout != n.connect_timeout,
        );
        check("upstream.timeout", u.timeout != n.timeout);
        check(
            "upstream.max_body_bytes",
            u.max_body_bytes != n.max_body_bytes,
        );
        check(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout != n.pool_idle_timeout,
        );
        check("logging.filter", self.logging.filter != new.logging.filter);
        check("logging.format", self.logging.format != new.logging.format);
        match (&self.redis, &new.redis) {
            (None, None) => {}
            (Some(r), Some(n)) => {
                check("redis.url", r.url != n.url);
                check("redis.key_prefix", r.key_prefix != n.key_prefix);
                check(
                    "redis.connect_timeout",
                    r.connect_timeout != n.connect_timeout,
                );
                check(
                    "redis.command_timeout",
                    r.command_timeout != n.command_timeout,
                );
                check("redis.retry_interval", r.retry_interval != n.retry_interval);
                check(
                    "redis.token_encryption_key",
                    r.token_encryption_key != n.token_encryption_key,
                );
                check(
                    "redis.fallback_share_percent",
                    r.fallback_share_percent != n.fallback_share_percent,
                );
                check(
                    "redis.flight_lock_ttl",
                    r.flight_lock_ttl != n.flight_lock_ttl,
                );
                check("redis.slot_lease", r.slot_lease != n.slot_lease);
                check("redis.token_lease", r.token_lease != n.token_lease);
                check("redis.l1_ttl", r.l1_ttl != n.l1_ttl);
            }
            _ => check("redis (switched on or off)", true),
        }
        changed
    }
}
