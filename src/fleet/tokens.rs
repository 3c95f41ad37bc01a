//! One access token per tenant for the whole fleet (API-NOTES §5: 10 grants per 10 minutes per
//! refresh token, at most 15 live tokens).
//!
//! Everything below lives under the tenant's [`TenantConfig::identity_scope`] (`{name}/{fingerprint
//! of its identity}`), written `{scope}`: new credentials never adopt the old ones' token, budget
//! or lockout.
//!
//! Semantics of [`Fleet::refresh_shared`] (the one entry point the token manager calls when its
//! own token is missing, near expiry or rejected):
//! 1. Register for `tok:{scope}` events, then read the published token: if it is not the one
//!    being replaced and has at least `min_remaining` left, **adopt** it (no grant).
//! 2. Otherwise take the tenant's refresh lease (`tok-lease:{scope}`, `redis.token_lease`). A
//!    replica that does not get it waits for the holder's publish event (or the lease's lapse, or
//!    the deadline), then goes back to 1 — it never polls.
//! 3. The lease holder reads again (a token may have been published meanwhile), then asks the
//!    **fleet grant budget** (a sorted set of grant times, trimmed to the window, checked and
//!    appended in one script on Redis time) and the **lockout** key. Refused: nothing is sent to
//!    Zoho. Allowed: one grant; success is sealed ([`super::seal`]) and published with a Redis
//!    TTL equal to its lifetime; Zoho's throttle sets the lockout (`throttle_lockout`), any other
//!    failure a short hold (5 s), so the waiters do not each spend a grant on a failing server.
//! 4. The lease is released with compare-and-delete and a `tok:{scope}` event in one script.
//!
//! N replicas through one token lifetime therefore make one grant. Redis holds the token only
//! sealed: `id (8) ‖ expires_at_unix_ms (8) ‖ sealed(token, aad = scope ‖ id ‖ expiry)`.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;

use super::lease::{Lease, LeaseAttempt};
use super::{Fleet, Op, Unavailable, Woken};
use crate::config::{Secret, TenantConfig};
use crate::error::TokenFailure;

/// After a failed grant other than Zoho's throttle, the fleet makes no new attempt for this long.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);

static TAKE_GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lock = redis.call('PTTL', KEYS[2])
if lock > 0 then return {0, lock, redis.call('GET', KEYS[2]) or ''} end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, math.max(1, tonumber(oldest[2]) + window - now), ''}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {2, 0, ''}
",
    )
});

/// An access token shared by the fleet.
#[derive(Debug)]
pub struct SharedToken {
    /// The token (for the `Authorization` header only).
    pub value: Secret,
    /// Random id of this publication (identifies the token without exposing it).
    pub id: u64,
    /// When Zoho stops accepting it, Unix milliseconds.
    pub expires_at_unix_ms: u64,
}

impl SharedToken {
    /// Lifetime left at `now_unix_ms`.
    pub fn remaining(&self, now_unix_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_unix_ms.saturating_sub(now_unix_ms))
    }
}

/// What the fleet budget says about one grant attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantPermit {
    /// Counted; go ahead.
    Allowed,
    /// `refresh_budget` grants in the last `refresh_window`; the oldest leaves it after this.
    Exhausted(Duration),
    /// A lockout (Zoho's throttle, or a recent failure) is in force for this much longer.
    LockedOut(TokenFailure, Duration),
}

/// How [`Fleet::refresh_shared`] ended.
#[derive(Debug)]
pub enum SharedRefresh {
    /// Another replica's token (no grant made here).
    Adopted(SharedToken),
    /// This replica's grant, now published to the fleet.
    Granted(SharedToken),
    /// No grant attempted: the fleet budget is spent or a lockout is in force, for this long.
    Refused(TokenFailure, Duration),
    /// This replica's grant failed (a lockout or hold is recorded for the fleet), or the wait for
    /// another replica's refresh passed the deadline ([`TokenFailure::Unreachable`]).
    Failed(TokenFailure),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn aad(tenant: &str, id: u64, expires: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(tenant.len() + 20);
    a.extend_from_slice(b"tok\0");
    a.extend_from_slice(tenant.as_bytes());
    a.push(0);
    a.extend_from_slice(&id.to_be_bytes());
    a.extend_from_slice(&expires.to_be_bytes());
    a
}

fn parse_failure(s: &str) -> TokenFailure {
    match s {
        "throttled" => TokenFailure::Throttled,
        "rejected" => TokenFailure::Rejected,
        "budget_exhausted" => TokenFailure::BudgetExhausted,
        _ => TokenFailure::Unreachable,
    }
}

/// Releases a held lease when dropped (also on cancellation), with an event for the waiters.
struct Held<'a> {
    fleet: &'a Arc<Fleet>,
    lease: Option<Lease>,
    /// The tenant's name (metric label).
    tenant: &'a str,
    /// Its [`TenantConfig::identity_scope`] (keys and channels).
    scope: &'a str,
}

impl Held<'_> {
    async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            let suffix = format!("tok:{}", self.scope);
            let _ = self
                .fleet
                .release(lease, Some((&suffix, b"released")))
                .await;
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.fleet
            .metrics
            .token_lease_holder
            .with_label_values(&[self.tenant])
            .set(0);
        if let Some(lease) = self.lease.take() {
            let event = (format!("tok:{}", self.scope), b"released".to_vec());
            lease.release_in_background(self.fleet, Some(event));
        }
    }
}

impl Fleet {
    /// The tenant's published token, opened; `None` when there is none (or it does not open: a
    /// different key, tampering — then it is treated as absent).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn read_token(&self, tenant: &str) -> Result<Option<SharedToken>, Unavailable> {
        let key = self.key(&["tok", tenant]);
        let raw: Option<Vec<u8>> = self
            .op(Op::Token, |mut c| async move {
                redis::cmd("GET").arg(key).query_async(&mut c).await
            })
            .await?;
        let Some(raw) = raw.filter(|r| r.len() > 16) else {
            return Ok(None);
        };
        let id = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
        let expires = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());
        Ok(self
            .sealer
            .open(&raw[16..], &aad(tenant, id, expires))
            .map(|value| SharedToken {
                value,
                id,
                expires_at_unix_ms: expires,
            }))
    }

    /// Publishes `value` (valid for `lifetime` from now) as the tenant's token: sealed, with a
    /// Redis TTL of `lifetime`, and a `tok:{tenant}` event.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn publish_token(
        &self,
        tenant: &str,
        value: &Secret,
        lifetime: Duration,
    ) -> Result<SharedToken, Unavailable> {
        let id = rand::random::<u64>();
        let ttl_ms = lifetime.as_millis().max(1) as u64;
        let expires = unix_ms() + ttl_ms;
        let mut record = Vec::with_capacity(64 + value.expose().len());
        record.extend_from_slice(&id.to_be_bytes());
        record.extend_from_slice(&expires.to_be_bytes());
        record.extend_from_slice(
            &self
                .sealer
                .seal(value.expose().as_bytes(), &aad(tenant, id, expires)),
        );
        let key = self.key(&["tok", tenant]);
        let channel = self.channel(&format!("tok:{tenant}"));
        self.op(Op::Token, |mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(key)
                .arg(record)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("PUBLISH")
                .arg(channel)
                .arg("published")
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        Ok(SharedToken {
            value: value.clone(),
            id,
            expires_at_unix_ms: expires,
        })
    }

    /// Counts one grant against the fleet budget (`budget` per `window`, on Redis time), unless
    /// a lockout is in force or the budget is spent.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn take_grant(
        &self,
        tenant: &str,
        budget: u32,
        window: Duration,
    ) -> Result<GrantPermit, Unavailable> {
        let grants = self.key(&["grants", tenant]);
        let lockout = self.key(&["lockout", tenant]);
        let member = self.next_owner();
        let window_ms = window.as_millis().max(1) as u64;
        let (verdict, ms, reason): (i64, i64, String) = self
            .op(Op::Token, |mut c| async move {
                TAKE_GRANT
                    .key(grants)
                    .key(lockout)
                    .arg(budget)
                    .arg(window_ms)
                    .arg(member)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let d = Duration::from_millis(ms.max(0) as u64);
        Ok(match verdict {
            2 => GrantPermit::Allowed,
            1 => GrantPermit::Exhausted(d),
            _ => GrantPermit::LockedOut(parse_failure(&reason), d),
        })
    }

    /// Records a fleet-wide lockout: no replica attempts a grant for `duration`.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn lock_out(
        &self,
        tenant: &str,
        why: TokenFailure,
        duration: Duration,
    ) -> Result<(), Unavailable> {
        let key = self.key(&["lockout", tenant]);
        let ms = duration.as_millis().max(1) as u64;
        self.op(Op::Token, |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(why.as_str())
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The fleet-wide lockout in force, if any (reason, time left).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn lockout(
        &self,
        tenant: &str,
    ) -> Result<Option<(TokenFailure, Duration)>, Unavailable> {
        let key = self.key(&["lockout", tenant]);
        let (reason, pttl): (Option<String>, i64) = self
            .op(Op::Token, |mut c| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(reason
            .filter(|_| pttl > 0)
            .map(|r| (parse_failure(&r), Duration::from_millis(pttl as u64))))
    }

    /// Gets a token for `tenant` through the fleet (see the module doc). `replacing` is the id of
    /// the token the caller wants replaced (near expiry or rejected by Zoho), if any; a published
    /// token is adopted only with at least `min_remaining` left. `grant` performs one
    /// refresh-token grant (called at most once, only by the lease holder, only when the fleet
    /// budget allows). Waits at most `deadline` for another replica's refresh.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer at some step: the caller falls back to its local
    /// token logic (with its local share of the budget).
    ///
    /// # Cancel safety
    /// Dropping the future releases a held lease (in the background) and spends nothing more.
    pub async fn refresh_shared<F, Fut>(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        replacing: Option<u64>,
        min_remaining: Duration,
        deadline: Duration,
        grant: F,
    ) -> Result<SharedRefresh, Unavailable>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), TokenFailure>>,
    {
        let name = tenant.name.as_str();
        // Redis keys and channels are per identity, not per name: a tenant whose refresh token
        // or client changed (a live reload, a rotated secret) never adopts, extends or locks
        // out the token of its old credentials (Zoho's grant budget is per refresh token
        // anyway). Metric labels stay the tenant's name.
        let scope = tenant.identity_scope();
        let scope = scope.as_str();
        let result = self.metrics.tokens.clone();
        let count = |what: &str| result.with_label_values(&[name, what]).inc();
        let until = tokio::time::Instant::now() + deadline;
        let mut events = self.subscribe(&format!("tok:{scope}"));
        let adoptable = |t: &SharedToken| {
            Some(t.id) != replacing
                && t.remaining(unix_ms()) >= min_remaining.max(Duration::from_millis(1))
        };
        let lease = loop {
            if let Some(t) = self.read_token(scope).await?
                && adoptable(&t)
            {
                count("adopted");
                return Ok(SharedRefresh::Adopted(t));
            }
            match self
                .try_lease(&format!("tok-lease:{scope}"), self.cfg.token_lease)
                .await?
            {
                LeaseAttempt::Acquired(lease) => break lease,
                LeaseAttempt::Held(left) => {
                    let wake = until.min(tokio::time::Instant::now() + left);
                    match events.wait_until(wake).await {
                        Woken::Unavailable => return Err(Unavailable),
                        Woken::Deadline if tokio::time::Instant::now() >= until => {
                            count("failed");
                            return Ok(SharedRefresh::Failed(TokenFailure::Unreachable));
                        }
                        Woken::Message(_) | Woken::Deadline => continue,
                    }
                }
            }
        };
        self.metrics
            .token_lease_holder
            .with_label_values(&[name])
            .set(1);
        let held = Held {
            fleet: self,
            lease: Some(lease),
            tenant: name,
            scope,
        };
        if let Some(t) = self.read_token(scope).await?
            && adoptable(&t)
        {
            held.release().await;
            count("adopted");
            return Ok(SharedRefresh::Adopted(t));
        }
        match self
            .take_grant(scope, tenant.refresh_budget, tenant.refresh_window)
            .await?
        {
            GrantPermit::Allowed => {}
            GrantPermit::Exhausted(d) => {
                held.release().await;
                count("refused");
                return Ok(SharedRefresh::Refused(TokenFailure::BudgetExhausted, d));
            }
            GrantPermit::LockedOut(why, d) => {
                held.release().await;
                count("refused");
                return Ok(SharedRefresh::Refused(why, d));
            }
        }
        let outcome = match grant().await {
            Ok((value, lifetime)) => match self.publish_token(scope, &value, lifetime).await {
                Ok(t) => {
                    count("granted");
                    Ok(SharedRefresh::Granted(t))
                }
                // Granted but not shared: the caller still gets its token, locally.
                Err(Unavailable) => Ok(SharedRefresh::Granted(SharedToken {
                    value,
                    id: rand::random(),
                    expires_at_unix_ms: unix_ms() + lifetime.as_millis() as u64,
                })),
            },
            Err(why) => {
                let hold = match why {
                    TokenFailure::Throttled => tenant.throttle_lockout,
                    _ => FAILURE_HOLD,
                };
                let _ = self.lock_out(scope, why, hold).await;
                count("failed");
                Ok(SharedRefresh::Failed(why))
            }
        };
        held.release().await;
        outcome
    }
}
