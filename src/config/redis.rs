//! `[redis]`: the optional fleet tier (issue 12). Off unless `url` is set; then every replica
//! sharing the same Redis and `key_prefix` shares tokens, the L2 cache, single-flight and the
//! concurrency limit (see [`crate::fleet`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, SecretSource};

/// `[redis]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS), literal or from
    /// `{ env = … }` / `{ file = … }` (it may hold a password). Default: unset (no Redis: every
    /// replica on its own, as a single binary needs).
    pub url: Option<SecretSource>,
    /// Prefix of every key and channel this gateway uses, so several fleets can share one Redis.
    /// 1-64 of `[A-Za-z0-9_.:-]`. Default: `zgw:`.
    pub key_prefix: String,
    /// Deadline of one connection attempt (TCP, TLS, AUTH). Default: `2s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one Redis command or script; past it the operation counts as "Redis
    /// unavailable" and the gateway falls back to local behaviour. Default: `250ms`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// While Redis is unavailable, how often to try it again. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// Key material (at least 32 bytes, e.g. 64 hex digits) from which the AES-256-GCM key that
    /// seals access tokens in Redis is derived; literal, `{ env = … }` or `{ file = … }`. Every
    /// replica needs the same value. Required when `url` is set. Default: unset.
    pub token_encryption_key: Option<SecretSource>,
    /// While Redis is unavailable, each replica uses this percentage of a tenant's grant budget
    /// and of its concurrency limit on its own (at least 1 of each), so N replicas on their own
    /// stay near Zoho's limits: about 100 / N. 1..=100. Default: `34` (three replicas).
    pub fallback_share_percent: u8,
    /// A cross-replica single-flight lock lasts at most this long, so a dead owner's lock expires
    /// and a waiter takes over. Should exceed `upstream.timeout` (with retries). Default: `45s`.
    #[serde(with = "humantime_serde")]
    pub flight_lock_ttl: Duration,
    /// A fleet concurrency slot lapses after this long unless released, so a dead replica's slots
    /// come back. Should exceed `upstream.timeout`. Default: `45s`.
    #[serde(with = "humantime_serde")]
    pub slot_lease: Duration,
    /// The token-refresh lease lasts at most this long. Should exceed the tenants'
    /// `token_timeout`. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub token_lease: Duration,
    /// Longest an answer stays in a replica's own cache (L1) after it was put there; L2 keeps
    /// it for its full lifetime, and the next request on the replica reads it from there
    /// (`Age`, TTL and stale windows unchanged). Bounds L1 memory and how long a replica that
    /// missed an invalidation while Redis was out of reach can serve an old answer. Default:
    /// unset (L1 keeps an answer as long as its last stale window).
    #[serde(default, with = "humantime_serde")]
    pub l1_ttl: Option<Duration>,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: None,
            key_prefix: "zgw:".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(250),
            retry_interval: Duration::from_secs(1),
            token_encryption_key: None,
            fallback_share_percent: 34,
            flight_lock_ttl: Duration::from_secs(45),
            slot_lease: Duration::from_secs(45),
            token_lease: Duration::from_secs(30),
            l1_ttl: None,
        }
    }
}

/// Validated `[redis]` (present only when `url` is set; meanings and defaults at [`RawRedis`]).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Connection URL (may contain a password).
    pub url: Secret,
    /// Key and channel prefix.
    pub key_prefix: String,
    /// Connect deadline.
    pub connect_timeout: Duration,
    /// Per-command deadline.
    pub command_timeout: Duration,
    /// Re-try interval while unavailable.
    pub retry_interval: Duration,
    /// Token sealing key material (at least 32 bytes).
    pub token_encryption_key: Secret,
    /// Local share of budgets while Redis is unavailable, percent (1..=100).
    pub fallback_share_percent: u8,
    /// Cross-replica single-flight lock lifetime.
    pub flight_lock_ttl: Duration,
    /// Fleet concurrency slot lease.
    pub slot_lease: Duration,
    /// Token-refresh lease.
    pub token_lease: Duration,
    /// L1 bound (`None`: none).
    pub l1_ttl: Option<Duration>,
}

impl RedisConfig {
    /// `value`'s local share while Redis is unavailable: `ceil(value × share / 100)`, at least 1.
    pub fn fallback_share(&self, value: usize) -> usize {
        (value * usize::from(self.fallback_share_percent))
            .div_ceil(100)
            .max(1)
    }
}

impl RawRedis {
    /// `None` when `url` is unset (the tier is off).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad `redis.*` key (the URL itself is never
    /// printed: it may hold a password).
    pub fn validate(&self) -> Result<Option<RedisConfig>, ConfigError> {
        let Some(url_src) = &self.url else {
            return Ok(None);
        };
        let url = url_src.resolve("redis.url")?;
        let scheme_ok =
            url.expose().starts_with("redis://") || url.expose().starts_with("rediss://");
        if !scheme_ok || redis::Client::open(url.expose()).is_err() {
            return Err(ConfigError::invalid(
                "redis.url",
                format!("{url_src:?}"),
                "expected redis://[user:password@]host[:port][/db] or rediss://…",
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                &self.key_prefix,
                "expected 1-64 of [A-Za-z0-9_.:-]",
            ));
        }
        for (key, d) in [
            ("redis.connect_timeout", self.connect_timeout),
            ("redis.command_timeout", self.command_timeout),
            ("redis.retry_interval", self.retry_interval),
            ("redis.flight_lock_ttl", self.flight_lock_ttl),
            ("redis.slot_lease", self.slot_lease),
            ("redis.token_lease", self.token_lease),
            ("redis.l1_ttl", self.l1_ttl.unwrap_or(Duration::MAX)),
        ] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::invalid(
                    key,
                    humantime::format_duration(d).to_string(),
                    "must be at least 1ms",
                ));
            }
        }
        if !(1..=100).contains(&self.fallback_share_percent) {
            return Err(ConfigError::invalid(
                "redis.fallback_share_percent",
                self.fallback_share_percent.to_string(),
                "must be 1..=100",
            ));
        }
        let key = match &self.token_encryption_key {
            Some(src) => src.resolve("redis.token_encryption_key")?,
            None => {
                return Err(ConfigError::invalid(
                    "redis.token_encryption_key",
                    "",
                    "required when redis.url is set",
                ));
            }
        };
        if key.expose().len() < 32 {
            return Err(ConfigError::invalid(
                "redis.token_encryption_key",
                "[redacted]",
                "must be at least 32 bytes",
            ));
        }
        Ok(Some(RedisConfig {
            url,
            key_prefix: self.key_prefix.clone(),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            retry_interval: self.retry_interval,
            token_encryption_key: key,
            fallback_share_percent: self.fallback_share_percent,
            flight_lock_ttl: self.flight_lock_ttl,
            slot_lease: self.slot_lease,
            token_lease: self.token_lease,
            l1_ttl: self.l1_ttl,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawRedis {
        RawRedis {
            url: Some(SecretSource::Literal(url.into())),
            token_encryption_key: Some(SecretSource::Literal("k".repeat(32))),
            ..RawRedis::default()
        }
    }

    fn problem(r: &RawRedis) -> (String, String) {
        match r.validate().unwrap_err() {
            ConfigError::Invalid { key, value, .. } => (key, value),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn off_by_default_and_valid_urls_accepted() {
        assert!(RawRedis::default().validate().unwrap().is_none());
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pw@cache:6380/2",
            "redis://user:pw@cache",
            "rediss://cache.example:6380",
        ] {
            let c = raw(url).validate().unwrap().unwrap();
            assert_eq!(c.url.expose(), url);
            assert_eq!(format!("{c:?}").matches("[redacted]").count(), 2);
            assert!(!format!("{c:?}").contains("pw"));
        }
    }

    #[test]
    fn bad_values_name_the_key_and_never_print_the_url() {
        let (key, value) = problem(&raw("http://user:hunter2@cache"));
        assert_eq!((key.as_str(), value.as_str()), ("redis.url", "[redacted]"));
        let mut r = raw("redis://cache");
        r.token_encryption_key = None;
        assert_eq!(problem(&r).0, "redis.token_encryption_key");
        r.token_encryption_key = Some(SecretSource::Literal("short".into()));
        assert_eq!(
            problem(&r),
            ("redis.token_encryption_key".into(), "[redacted]".into())
        );
        let mut r = raw("redis://cache");
        r.key_prefix = "has space".into();
        assert_eq!(problem(&r).0, "redis.key_prefix");
        let mut r = raw("redis://cache");
        r.command_timeout = Duration::ZERO;
        assert_eq!(problem(&r).0, "redis.command_timeout");
        let mut r = raw("redis://cache");
        r.fallback_share_percent = 0;
        assert_eq!(problem(&r).0, "redis.fallback_share_percent");
    }

    #[test]
    fn fallback_share_rounds_up_and_keeps_one() {
        let c = raw("redis://cache").validate().unwrap().unwrap();
        assert_eq!(c.fallback_share_percent, 34);
        assert_eq!(c.fallback_share(10), 4);
        assert_eq!(c.fallback_share(5), 2);
        assert_eq!(c.fallback_share(1), 1);
        assert_eq!(c.fallback_share(0), 1);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure error type
    fn url_from_env_via_jail() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TEST_REDIS_URL", "redis://:secret@10.0.0.1:6379");
            jail.set_env("TEST_REDIS_KEY", "0123456789abcdef0123456789abcdef");
            let raw = crate::config::RawConfig::from_toml_str(
                "[redis]\nurl = { env = \"TEST_REDIS_URL\" }\ntoken_encryption_key = { env = \"TEST_REDIS_KEY\" }\nkey_prefix = \"prod:\"\n",
            )
            .unwrap();
            let c = raw.redis.validate().unwrap().unwrap();
            assert_eq!(c.url.expose(), "redis://:secret@10.0.0.1:6379");
            assert_eq!(c.key_prefix, "prod:");
            Ok(())
        });
    }
}
