//! Zoho's daily credit budget on the request path (see [`crate::credits`]): every upstream
//! answer is charged to the tenant's ledger at its call's cost (the route's `credit_cost`,
//! weighed by `credit_cost_when`), and under the
//! tenant's `credit_reserve` a client without `priority = "high"` starts no upstream call:
//!
//! - a miss with an expired entry still in its stale-if-error window gets that entry
//!   (`Cache-Status: …; detail=credit-reserve`); without one, `429 TOO_MANY_REQUESTS`
//!   (`credit_reserve`) with `Retry-After` = the time until the reserve is free again;
//! - a miss whose key already has a flight joins it (that call is being spent anyway; between
//!   the check and the join the flight may end, so at most one call per key slips through);
//! - stale-while-revalidate serves the entry without its background refresh;
//! - bypass and pass-through requests (writes included) get the 429.
//!
//! Hits never look at the budget.

use super::*;

impl Gateway {
    /// Charges an upstream answer to the tenant's credit ledger (`cost`: the call's, its
    /// route's `credit_cost` weighed by the parameters sent; 1 for pass-through; unless Zoho
    /// did not charge it) and keeps Zoho's `X-API-CREDITS-REMAINING`.
    pub(super) fn record_credits(&self, t: &Tenant, cost: u32, resp: &UpstreamResponse) {
        if crate::credits::charged(resp.status) {
            t.credits.spend(u64::from(cost));
        }
        if let Some(left) = crate::credits::reported_remaining(&resp.headers) {
            t.credits.report_remaining(left);
        }
    }

    /// `None` when `call`'s client may spend `tenant`'s credits now (what is left after the
    /// call's `cost` is still at least the reserve); else the time until it may.
    fn reserve_hold(&self, tenant: TenantId, call: &CallCtx) -> Option<Duration> {
        if call.priority == Priority::High {
            return None;
        }
        let t = self.tenant(tenant);
        let reserve = t.config.credit_reserve?;
        t.credits.reserve_hold(
            t.config.credit_allowance,
            reserve.saturating_add(u64::from(call.cost)),
        )
    }

    /// Whether `call`'s client may spend `tenant`'s credits now.
    pub(super) fn may_spend(&self, tenant: TenantId, call: &CallCtx) -> bool {
        self.reserve_hold(tenant, call).is_none()
    }

    /// A bypass or pass-through request: refused under the reserve (counted).
    ///
    /// # Errors
    /// [`GatewayError::CreditReserve`] under the reserve for a normal-priority client.
    pub(super) fn reserve_gate(
        &self,
        tenant: TenantId,
        call: &CallCtx,
    ) -> Result<(), GatewayError> {
        match self.reserve_hold(tenant, call) {
            None => Ok(()),
            Some(retry_after) => {
                self.tenant(tenant).metrics.record_reserve(false);
                Err(GatewayError::CreditReserve { retry_after })
            }
        }
    }

    /// A miss under the reserve for a normal-priority client with no flight to join: the
    /// stale entry if there is one, else the 429 (`None`: go ahead).
    pub(super) fn reserve_miss(
        &self,
        target: &Target<'_>,
        call: &CallCtx,
        stale: Option<&Arc<CachedResponse>>,
        conditions: Option<&Conditions>,
        ctx: &mut RequestCtx,
    ) -> Option<Result<Response<Body>, GatewayError>> {
        if self.flights.waiters(&target.key) > 0 {
            return None;
        }
        let retry_after = self.reserve_hold(target.tenant, call)?;
        let t = self.tenant(target.tenant);
        t.metrics.record_reserve(stale.is_some());
        Some(match stale {
            Some(entry) => {
                ctx.phase = CachePhase::StaleCreditReserve;
                Ok(cached_response(
                    entry,
                    self.clock.now(),
                    ctx.phase,
                    conditions,
                ))
            }
            None => Err(GatewayError::CreditReserve { retry_after }),
        })
    }
}
