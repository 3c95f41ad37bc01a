//! Fleet-wide concurrency limit: a lease semaphore, so the edition's limit (API-NOTES §6) holds
//! across all replicas and a dead replica cannot leak slots.
//!
//! - **Shape**: one sorted set per tenant (`sem:{tenant}`), one member per held slot, scored by
//!   the slot's expiry in Redis `TIME` milliseconds (one clock for the whole fleet). The set
//!   itself carries a TTL of one lease, renewed on every acquire.
//! - **Acquire** (one Lua script): drop lapsed members, then add ours if fewer than `limit`
//!   remain; otherwise answer the time until the earliest lapses.
//! - **Release** (one Lua script): remove our member and publish `slot:{tenant}`.
//! - **Waiting**: register for `slot:{tenant}` first, then try; when full, wait for a release
//!   event, the earliest lease's lapse or the deadline — whichever comes first — and try again.
//!   No polling loop: every wake-up has a cause.
//! - **In front**: the local [`crate::upstream::limit::ConcurrencyLimit`] queue stays in front,
//!   so each replica contends with at most its local limit of waiters.
//! - A slot whose holder dies lapses after `redis.slot_lease`; a dropped [`FleetSlot`] releases
//!   in the background.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::{Fleet, Op, Unavailable, Woken};

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], lease)
  return -1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'released')
return n
",
    )
});

/// Why no fleet slot was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Redis could not answer: use the local limit share instead.
    #[error("redis unavailable")]
    Unavailable,
    /// Every slot stayed taken until the deadline (the caller answers 429 as for its local queue).
    #[error("no fleet slot before the deadline")]
    Timeout,
}

impl From<Unavailable> for SlotError {
    fn from(_: Unavailable) -> Self {
        SlotError::Unavailable
    }
}

/// A held fleet slot. Release it with [`FleetSlot::release`]; dropping it releases in the
/// background; a holder that dies lets it lapse after `redis.slot_lease`.
#[derive(Debug)]
pub struct FleetSlot {
    fleet: Arc<Fleet>,
    tenant: Box<str>,
    member: Option<String>,
}

impl FleetSlot {
    /// Gives the slot back now (and wakes one round of waiters fleet-wide).
    pub async fn release(mut self) {
        if let Some(member) = self.member.take() {
            let _ = self.fleet.release_slot(&self.tenant, member).await;
        }
    }
}

impl Drop for FleetSlot {
    fn drop(&mut self) {
        if let Some(member) = self.member.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (fleet, tenant) = (self.fleet.clone(), self.tenant.clone());
            rt.spawn(async move {
                let _ = fleet.release_slot(&tenant, member).await;
            });
        }
    }
}

impl Fleet {
    /// Takes one of `limit` fleet-wide slots of `tenant`, waiting at most `deadline`.
    ///
    /// # Errors
    /// [`SlotError::Unavailable`] when Redis cannot answer; [`SlotError::Timeout`] past the
    /// deadline.
    ///
    /// # Cancel safety
    /// Cancel-safe: a slot is only ever held by a returned [`FleetSlot`].
    pub async fn acquire_slot(
        self: &Arc<Self>,
        tenant: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<FleetSlot, SlotError> {
        let until = Instant::now() + deadline;
        let key = self.key(&["sem", tenant]);
        let lease_ms = self.cfg.slot_lease.as_millis().max(1) as u64;
        let mut events = self.subscribe(&format!("slot:{tenant}"));
        let mut waited = false;
        loop {
            let member = self.next_owner();
            let answer: i64 = self
                .op(Op::Slot, |mut c| {
                    let (key, member) = (key.clone(), member.clone());
                    async move {
                        ACQUIRE
                            .key(key)
                            .arg(limit)
                            .arg(member)
                            .arg(lease_ms)
                            .invoke_async(&mut c)
                            .await
                    }
                })
                .await
                .inspect_err(|_| self.metrics.slots.with_label_values(&["unavailable"]).inc())?;
            if answer == -1 {
                let label = if waited { "waited" } else { "acquired" };
                self.metrics.slots.with_label_values(&[label]).inc();
                return Ok(FleetSlot {
                    fleet: self.clone(),
                    tenant: tenant.into(),
                    member: Some(member),
                });
            }
            waited = true;
            let lapse = Instant::now() + Duration::from_millis(answer.max(1) as u64);
            match events.wait_until(until.min(lapse)).await {
                Woken::Unavailable => {
                    self.metrics.slots.with_label_values(&["unavailable"]).inc();
                    return Err(SlotError::Unavailable);
                }
                Woken::Deadline if Instant::now() >= until => {
                    self.metrics.slots.with_label_values(&["timeout"]).inc();
                    return Err(SlotError::Timeout);
                }
                Woken::Deadline | Woken::Message(_) => {}
            }
        }
    }

    async fn release_slot(&self, tenant: &str, member: String) -> Result<(), Unavailable> {
        let key = self.key(&["sem", tenant]);
        let channel = self.channel(&format!("slot:{tenant}"));
        let _: i64 = self
            .op(Op::Slot, |mut c| async move {
                RELEASE
                    .key(key)
                    .arg(member)
                    .arg(channel)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Slots of `tenant` currently held fleet-wide (lapsed ones excluded), for tests and the
    /// admin API.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn slots_in_use(&self, tenant: &str) -> Result<u64, Unavailable> {
        let key = self.key(&["sem", tenant]);
        self.op(Op::Slot, |mut c| async move {
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
            let now = secs * 1000 + micros / 1000;
            redis::cmd("ZCOUNT")
                .arg(key)
                .arg(format!("({now}"))
                .arg("+inf")
                .query_async(&mut c)
                .await
        })
        .await
    }
}
