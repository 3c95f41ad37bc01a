//! Exclusive leases: at most one holder per key across the fleet, for at most `ttl`.
//!
//! - **Acquire**: `SET key owner NX PX ttl` where `owner` is unique per acquisition
//!   (`{replica id}:{counter}`); when the key is taken, the same script returns its remaining
//!   time, so a waiter can wake when a dead holder's lease runs out instead of polling.
//! - **Release**: compare-and-delete in Lua (delete only if the value is still our owner), so a
//!   holder whose lease already ran out never deletes its successor's.
//! - A holder that dies simply stops renewing: its lease lapses after `ttl` (the Redis TTL).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::{Fleet, Op, Unavailable};

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return redis.call('PTTL', KEYS[1])
",
    )
});

/// Compare-and-delete; with a channel, also publishes a payload in the same step.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then released = redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return released
",
    )
});

/// A lease this replica holds (until released or `ttl` after acquisition).
#[derive(Clone, Debug)]
pub struct Lease {
    key: String,
    owner: String,
}

/// The result of [`Fleet::try_lease`].
#[derive(Debug)]
pub enum LeaseAttempt {
    /// Ours.
    Acquired(Lease),
    /// Someone else's, for about this much longer.
    Held(Duration),
}

impl Fleet {
    /// Tries to take the lease `{prefix}{name}` for `ttl`.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer.
    pub async fn try_lease(&self, name: &str, ttl: Duration) -> Result<LeaseAttempt, Unavailable> {
        let key = self.key(&[name]);
        let owner = self.next_owner();
        let ms = ttl.as_millis().max(1) as u64;
        let pttl: i64 = self
            .op(Op::Lease, |mut c| {
                let (key, owner) = (key.clone(), owner.clone());
                async move {
                    ACQUIRE
                        .key(key)
                        .arg(owner)
                        .arg(ms)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(if pttl == -1 {
            LeaseAttempt::Acquired(Lease { key, owner })
        } else {
            // -2: expired between SET and PTTL; try again at once.
            LeaseAttempt::Held(Duration::from_millis(pttl.max(0) as u64))
        })
    }

    /// Releases `lease` if it is still ours; returns whether it was. With `publish = Some((channel
    /// suffix, payload))`, publishes that event in the same script (whether or not the lease was
    /// still ours).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot answer (the lease then lapses by itself).
    pub async fn release(
        &self,
        lease: Lease,
        publish: Option<(&str, &[u8])>,
    ) -> Result<bool, Unavailable> {
        let (channel, payload) = match publish {
            Some((suffix, payload)) => (self.channel(suffix), payload.to_vec()),
            None => (String::new(), Vec::new()),
        };
        let released: i64 = self
            .op(Op::Lease, |mut c| async move {
                RELEASE
                    .key(lease.key)
                    .arg(lease.owner)
                    .arg(channel)
                    .arg(payload)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(released == 1)
    }
}

impl Lease {
    /// Releases the lease from a `Drop` (best effort, in a spawned task; lapses otherwise).
    pub(super) fn release_in_background(
        self,
        fleet: &Arc<Fleet>,
        publish: Option<(String, Vec<u8>)>,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime (process exit): the lease lapses by itself
        };
        let fleet = fleet.clone();
        rt.spawn(async move {
            let publish = publish.as_ref().map(|(s, p)| (s.as_str(), p.as_slice()));
            let _ = fleet.release(self, publish).await;
        });
    }
}
