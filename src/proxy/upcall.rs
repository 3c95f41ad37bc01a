//! Upstream calls: whose token, forwarding headers, and the tenant's protections (circuit
//! breaker, concurrency limit, bounded retries) around each call.

use super::*;
use crate::fleet::Availability;
use crate::fleet::semaphore::{FleetSlot, SlotError};
use crate::upstream::limit::Slot;

/// Whose Zoho token an upstream call uses.
#[derive(Clone, Debug)]
pub(super) enum Credential {
    /// The tenant's token, managed by the gateway.
    Managed,
    /// The client's own token (pass-through tenants), forwarded as received.
    Client(HeaderValue),
}

/// What every upstream call made for a request carries: whose token, and the forwarding
/// headers (`X-Forwarded-For`, `X-Request-Id`, the client's `X-EXTERNAL`). A flight's fetch
/// carries its leader's (its followers share the key, so the same `X-EXTERNAL`).
#[derive(Clone, Debug)]
pub(super) struct CallCtx {
    pub(super) credential: Credential,
    pub(super) forwarded_for: HeaderValue,
    pub(super) request_id: HeaderValue,
    pub(super) external: Option<HeaderValue>,
    /// The client's claim on the tenant's credit reserve.
    pub(super) priority: Priority,
    /// Zoho API credits one upstream call of this request costs (its route's `credit_cost`,
    /// weighed by the parameters sent: [`RoutePolicy::cost_of`]).
    pub(super) cost: u32,
}

/// One upstream request to make.
pub(super) struct Upcall<'a> {
    pub(super) route: RouteKind,
    pub(super) method: Method,
    pub(super) path_and_query: &'a str,
    pub(super) body: Option<(Bytes, Option<HeaderValue>)>,
    pub(super) call: &'a CallCtx,
}

/// The fleet-wide part of an upstream slot (with `[redis]`), held with the local one for one
/// attempt.
#[derive(Debug)]
pub(super) enum SharedSlot {
    /// No fleet tier: the local limit is the whole limit.
    Single,
    /// One of the tenant's `max_concurrency` slots across every replica (released when dropped;
    /// lapses after `redis.slot_lease` if this replica dies).
    Fleet(#[allow(dead_code)] FleetSlot),
    /// Redis unavailable: one of this replica's share of the limit
    /// (`redis.fallback_share_percent`).
    Fallback(#[allow(dead_code)] Slot),
}

/// `Authorization: Zoho-oauthtoken <token>` for a managed token, marked sensitive.
pub(super) fn managed_auth(token: &AccessToken) -> Result<HeaderValue, GatewayError> {
    let mut auth = HeaderValue::try_from(format!("Zoho-oauthtoken {}", token.expose()))
        .map_err(|_| GatewayError::Internal)?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// Whether an upstream status is a failure that stale-if-error and the hold cover.
pub(super) fn is_failure(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in delta-seconds (RFC 9110 §10.2.3); HTTP-date forms are ignored.
pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// `path?query` for the upstream request (the client's raw query, forwarded as received).
pub(super) fn upstream_path(path: &str, raw_query: &str) -> String {
    if raw_query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{raw_query}")
    }
}

/// Whether a 401 body is Zoho's expired/revoked-token answer (not `OAUTH_SCOPE_MISMATCH`).
pub(super) fn is_token_rejection(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Code<'a> {
        #[serde(borrow)]
        code: Option<&'a str>,
    }
    matches!(
        serde_json::from_slice::<Code<'_>>(body)
            .ok()
            .and_then(|c| c.code),
        Some("INVALID_TOKEN" | "AUTHENTICATION_FAILURE")
    )
}

impl Gateway {
    /// One logical upstream call. With the tenant's managed token: on 401 `INVALID_TOKEN` /
    /// `AUTHENTICATION_FAILURE` the token is replaced once and the call retried once
    /// (`OAUTH_SCOPE_MISMATCH` is not retried). With a client's own token: as is.
    pub(super) async fn call_upstream(
        &self,
        tenant: TenantId,
        call: &CallCtx,
        route: RouteKind,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, Option<HeaderValue>)>,
    ) -> Result<UpstreamResponse, GatewayError> {
        let t = &*self.tenant(tenant);
        let up = Upcall {
            route,
            method,
            path_and_query,
            body,
            call,
        };
        let token = match &call.credential {
            Credential::Client(auth) => return self.send_guarded(t, auth.clone(), &up).await,
            Credential::Managed => t.tokens.token().await?,
        };
        let resp = self.send_guarded(t, managed_auth(&token)?, &up).await?;
        if resp.status == StatusCode::UNAUTHORIZED && is_token_rejection(&resp.body) {
            let token = t.tokens.replace_rejected(&token).await?;
            return self.send_guarded(t, managed_auth(&token)?, &up).await;
        }
        Ok(resp)
    }

    /// One upstream call under the tenant's protections: the circuit breaker, the concurrency
    /// limit (a slot per attempt, released during backoff), and for GETs bounded retries of
    /// 429 / 5xx / connection failures with jittered exponential backoff honouring
    /// `Retry-After`, all within `upstream.timeout` overall; plus one immediate retry of a GET
    /// whose pooled connection the upstream closed at that moment (`IncompleteMessage`).
    pub(super) async fn send_guarded(
        &self,
        t: &Tenant,
        auth: HeaderValue,
        up: &Upcall<'_>,
    ) -> Result<UpstreamResponse, GatewayError> {
        let cfg = self.config();
        let policy = &cfg.upstream;
        let idempotent = up.method == Method::GET;
        let retries = if idempotent { policy.max_retries } else { 0 };
        // All attempts together stay within `upstream.timeout` (queueing for a slot is bounded
        // separately by `queue_timeout`).
        let deadline = Instant::now() + policy.timeout;
        let mut attempt = 0;
        let mut reopened = false;
        // The previous attempt's answer, returned if a retry cannot go out.
        let mut last: Option<Result<UpstreamResponse, GatewayError>> = None;
        loop {
            if let Err(open) = t.breaker.allow() {
                // The circuit opened during our retries: report what Zoho said, not the breaker.
                return last.unwrap_or(Err(open));
            }
            let slot = t.limit.acquire().await?;
            let shared = self.shared_slot(t).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return last.unwrap_or(Err(GatewayError::UpstreamTimeout));
            }
            let result = tokio::time::timeout(remaining, self.send_once(t, auth.clone(), up))
                .await
                .unwrap_or(Err(GatewayError::UpstreamTimeout));
            drop(shared);
            drop(slot);
            let retry_after_hint = match &result {
                Ok(r) if is_failure(r.status) => {
                    let (tenant, route) = (&t.config.name, self.metrics.route_label(up.route));
                    self.upstream
                        .log_failed_attempt(tenant, route, attempt, Ok(r.status));
                    t.breaker
                        .record(if r.status == StatusCode::TOO_MANY_REQUESTS {
                            Verdict::Neutral
                        } else {
                            Verdict::Failure
                        });
                    retry_after(&r.headers)
                }
                Ok(_) => {
                    t.breaker.record(Verdict::Success);
                    return result;
                }
                Err(e) if idempotent && !reopened && upstream::is_incomplete_message(e) => {
                    reopened = true;
                    continue;
                }
                Err(e @ (GatewayError::UpstreamConnect(_) | GatewayError::UpstreamTimeout)) => {
                    let (tenant, route) = (&t.config.name, self.metrics.route_label(up.route));
                    self.upstream
                        .log_failed_attempt(tenant, route, attempt, Err(e));
                    t.breaker.record(Verdict::Failure);
                    None
                }
                Err(_) => return result,
            };
            if attempt >= retries || retry_after_hint.is_some_and(|d| d > policy.max_retry_after) {
                return result;
            }
            let delay = upstream::backoff(
                attempt,
                policy.retry_base_delay,
                policy.retry_max_delay,
                retry_after_hint,
            );
            if Instant::now() + delay >= deadline {
                return result;
            }
            last = Some(result);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The fleet-wide slot behind the local one: the local queue stays in front, so each
    /// replica contends in Redis with at most its local limit of callers. While Redis is
    /// available, one of the tenant's `max_concurrency` slots fleet-wide (waiting at most
    /// `queue_timeout`, then the gateway's 429 as for the local queue); while it is not, or if it
    /// fails mid-wait, one of this replica's fallback share.
    ///
    /// # Errors
    /// [`GatewayError::UpstreamBusy`] when no slot frees up within `queue_timeout`.
    async fn shared_slot(&self, t: &Tenant) -> Result<SharedSlot, GatewayError> {
        let Some(fleet) = &self.fleet else {
            return Ok(SharedSlot::Single);
        };
        if fleet.availability() == Availability::Available {
            let c = &t.config;
            match fleet
                .acquire_slot(&c.name, c.max_concurrency, c.queue_timeout)
                .await
            {
                Ok(slot) => return Ok(SharedSlot::Fleet(slot)),
                Err(SlotError::Timeout) => return Err(GatewayError::UpstreamBusy),
                Err(SlotError::Unavailable) => {}
            }
        }
        match &t.fallback_limit {
            Some(share) => Ok(SharedSlot::Fallback(share.acquire().await?)),
            None => Ok(SharedSlot::Single),
        }
    }

    pub(super) async fn send_once(
        &self,
        t: &Tenant,
        auth: HeaderValue,
        up: &Upcall<'_>,
    ) -> Result<UpstreamResponse, GatewayError> {
        let mut req = Request::builder()
            .method(up.method.clone())
            .uri(format!("{}{}", t.config.api_base, up.path_and_query))
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("zoho-gateway/", env!("CARGO_PKG_VERSION")),
            )
            .header(&headers::REQUEST_ID, up.call.request_id.clone())
            .header(
                headers::X_FORWARDED_FOR.clone(),
                up.call.forwarded_for.clone(),
            );
        if let Some(external) = &up.call.external {
            req = req.header(headers::X_EXTERNAL.clone(), external.clone());
        }
        let body = match &up.body {
            Some((bytes, content_type)) => {
                if let Some(ct) = content_type {
                    req = req.header(header::CONTENT_TYPE, ct);
                }
                bytes.clone()
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|_| GatewayError::Internal)?;
        let started = Instant::now();
        let result = self.upstream.send(req).await;
        self.metrics.record_upstream(
            &t.config.name,
            up.route,
            result.as_ref().ok().map(|r| r.status.as_u16()),
            started.elapsed(),
        );
        if let Ok(r) = &result {
            if let Some(code) = upstream::ZohoThrottle::classify(r.status, &r.body) {
                t.metrics.record_throttled(code);
            }
            self.record_credits(t, up.call.cost, r);
        }
        result
    }
}
