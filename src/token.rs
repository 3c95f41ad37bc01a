//! OAuth access-token management, one [`TokenManager`] per tenant (API-NOTES §5).
//!
//! - **Grant**: `POST {accounts}/oauth/v2/token` with the refresh-token grant as a form body.
//!   Success means the JSON has an `access_token`; anything else is a failure whatever the HTTP
//!   status or the language of the message (Zoho answers errors with HTTP 200). Lifetime comes
//!   from `expires_in_sec` when present (older form, where `expires_in` is milliseconds), else
//!   from `expires_in` in seconds; it is clamped to [`MAX_TOKEN_LIFETIME`], and a lifetime of 0
//!   or beyond [`ABSURD_TOKEN_LIFETIME`] makes the grant a failure.
//! - **Failures are classified** ([`TokenFailure`]): `invalid_*` / `unsupported_*` errors are
//!   `Rejected`; only Zoho's documented throttle answer (`"error": "Access Denied"` with an
//!   `error_description`) is `Throttled` and starts the lockout (default 900 s); a 5xx, a
//!   connection failure, a timeout or any other shape is `Unreachable`: a short hold that
//!   doubles with each consecutive failure ([`FAILURE_HOLD`] up to [`MAX_FAILURE_HOLD`]).
//! - **Once per tenant**: one refresh in flight at a time (an async mutex plus a generation
//!   check, so callers that queued behind a refresh reuse its token instead of refreshing again).
//! - **Ahead of expiry**: [`TokenManager::run_refresh_ahead`] refreshes `refresh_margin` before
//!   expiry in the background; requests never wait for a refresh while the current token is valid.
//! - **Once per tenant for the fleet** (with `[redis]`): while Redis is available, a refresh goes
//!   through [`crate::fleet::tokens`]: the token another replica published is adopted, or this
//!   replica makes the fleet's one grant under the tenant's lease, within the fleet-wide grant
//!   budget and throttle lockout, and publishes it sealed. A refusal or failure there becomes a
//!   local hold of the same length. While Redis is unavailable, the local path below runs with
//!   `redis.fallback_share_percent` of the budget. At start-up the first refresh waits (at most
//!   `token_timeout`) for the first Redis connection attempt, so replicas starting together
//!   share one grant.
//! - **Within Zoho's limits**: a local budget (default 10 grants per 600 s, Zoho's limit); while a
//!   hold is on, no attempt is made and callers get the failure with the time left
//!   (`Retry-After`).
//! - **Restarts**: with `token_state_file`, the current token, the recent grant times and any
//!   hold are kept in a file (mode 0600, written atomically, off the async runtime) bound to the
//!   client id and refresh token; a restart reuses a still-valid token instead of spending a
//!   grant, so restart loops cannot trip Zoho's lockout. Values read back are bounded (a token
//!   living more than [`MAX_TOKEN_LIFETIME`], a hold longer than the configured lockout), never
//!   trusted into `Instant` arithmetic.
//! - **Secrets**: the token value lives in a [`Secret`]; nothing here logs it, nor the grant's
//!   form body. A failed grant is logged once, with its cause chain.
//! - **Time**: expiry, budget and holds use the gateway's [`Clock`]; request deadlines use tokio's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Secret, TenantConfig};
use crate::error::{GatewayError, TokenFailure};
use crate::fleet::tokens::{SharedRefresh, SharedToken};
use crate::fleet::{Availability, Fleet, Unavailable};
use crate::metrics::Metrics;
use crate::telemetry::ErrorChain;
use crate::upstream::Upstream;

/// After a first failed grant (other than the throttle), further attempts wait this long (the
/// same failure is returned meanwhile), so a burst of requests cannot spend the refresh budget.
/// Each consecutive failure doubles it, up to [`MAX_FAILURE_HOLD`].
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// Longest hold after consecutive non-throttle failures.
pub const MAX_FAILURE_HOLD: Duration = Duration::from_secs(60);

/// Longest token lifetime taken from a grant answer (Zoho's tokens live 3600 s); longer ones are
/// clamped (the millisecond reading of the older form, say). A token Zoho drops earlier is
/// replaced on its first 401.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A lifetime beyond this is no plausible reading in any unit: the grant counts as failed
/// (`Unreachable`) instead of being clamped.
pub const ABSURD_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A live access token.
#[derive(Debug)]
pub struct AccessToken {
    value: Secret,
    /// When Zoho will stop accepting it.
    pub expires_at: Instant,
    /// Increases with every grant; identifies the token without exposing it.
    pub generation: u64,
    /// The fleet's id of this token when it came through the fleet tier (see
    /// [`crate::fleet::tokens`]); `None` for a token of this replica's own.
    pub fleet_id: Option<u64>,
}

impl AccessToken {
    /// The token value, for the `Authorization: Zoho-oauthtoken …` header only.
    pub fn expose(&self) -> &str {
        self.value.expose()
    }
}

#[derive(Clone, Debug, Default)]
struct State {
    current: Option<Arc<AccessToken>>,
    generation: u64,
    /// Instants of grant attempts inside the budget window.
    attempts: VecDeque<Instant>,
    /// No attempt before this instant; the failure to report meanwhile.
    hold: Option<(Instant, TokenFailure)>,
    /// Consecutive failed grants (the backoff exponent); 0 after a success.
    failures: u32,
}

impl State {
    /// The hold in force at `now`, as the error to answer with.
    fn held(&self, now: Instant) -> Option<GatewayError> {
        let (until, reason) = self.hold.filter(|(until, _)| *until > now)?;
        Some(GatewayError::TokenUnavailable {
            reason,
            retry_after: until - now,
        })
    }
}

/// Why a refresh is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// No valid token.
    Missing,
    /// The token of this generation is near expiry (refresh-ahead); it stays in use meanwhile.
    Ahead(u64),
    /// Zoho rejected the token of this generation.
    Rejected(u64),
}

/// What [`TokenManager::admit`] decided about a refresh.
enum Admission {
    /// A usable token is there (another caller refreshed meanwhile).
    Reuse(Arc<AccessToken>),
    /// A hold is on: answer with this error, change nothing.
    Held(GatewayError),
    /// The local budget is spent until this instant.
    OverBudget(Instant),
    /// Make a grant (its attempt is already counted in the budget).
    Grant,
}

/// Observable token state, for `/readyz` and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenHealth {
    /// A valid token is held.
    Valid,
    /// No valid token yet (never obtained, or expired) and no failure recorded.
    Missing,
    /// The tenant cannot get a token: the last attempt failed and attempts are held back.
    Failing {
        /// Why.
        reason: TokenFailure,
        /// Time left before the next attempt.
        retry_after: Duration,
    },
}

/// Access-token manager of one tenant.
pub struct TokenManager {
    tenant: Arc<TenantConfig>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    lockout_gauge: prometheus::IntGauge,
    clock: Clock,
    state: Mutex<State>,
    refresh_lock: tokio::sync::Mutex<()>,
    changed: tokio::sync::Notify,
    /// The fleet tier: while available, one token per tenant for the whole fleet.
    fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("tenant", &self.tenant.name)
            .finish_non_exhaustive()
    }
}

/// A token answer as far as the gateway reads it.
#[derive(Deserialize)]
struct GrantResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
    expires_in_sec: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Why one grant failed: the cause for the log, and [`GrantError::failure`] for everything else.
/// Messages never hold the grant's form body or a token.
#[derive(Debug, thiserror::Error)]
enum GrantError {
    /// No answer: connection, TLS, DNS failure or the deadline.
    #[error("accounts server unreachable")]
    Transport(#[source] GatewayError),
    /// The accounts server (or a proxy before it) answered 5xx without a token.
    #[error("accounts server answered {0}")]
    ServerError(StatusCode),
    /// The body is not the JSON object expected (position only: serde's message can quote the
    /// offending value).
    #[error("token answer (HTTP {status}) is not the expected JSON (line {line}, column {column})")]
    NotJson {
        status: StatusCode,
        line: usize,
        column: usize,
    },
    /// `invalid_client`, `invalid_code`, `unsupported_grant_type`, …
    #[error("grant refused: {0}")]
    Refused(String),
    /// Zoho's documented "Access Denied" throttle.
    #[error("Zoho's \"Access Denied\" throttle")]
    Throttled,
    /// No `access_token` and no error the gateway knows.
    #[error("unrecognised token answer (HTTP {status}, error {error:?})")]
    Unrecognised {
        status: StatusCode,
        error: Option<String>,
    },
    /// A token with a lifetime of 0 or beyond [`ABSURD_TOKEN_LIFETIME`] seconds.
    #[error("unusable token lifetime: {0} s")]
    Lifetime(u64),
}

impl GrantError {
    fn failure(&self) -> TokenFailure {
        match self {
            GrantError::Refused(_) => TokenFailure::Rejected,
            GrantError::Throttled => TokenFailure::Throttled,
            GrantError::Transport(_)
            | GrantError::ServerError(_)
            | GrantError::NotJson { .. }
            | GrantError::Unrecognised { .. }
            | GrantError::Lifetime(_) => TokenFailure::Unreachable,
        }
    }
}

/// Zoho's `error` code as safe to log: at most 64 characters of `[A-Za-z0-9_ .-]`.
fn loggable_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '.' | '-'))
        .take(64)
        .collect()
}

/// Reads a grant answer: the token and its lifetime, or why there is none.
fn classify_grant(status: StatusCode, body: &[u8]) -> Result<(Secret, Duration), GrantError> {
    let parsed: GrantResponse = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(_) if status.is_server_error() => return Err(GrantError::ServerError(status)),
        Err(e) => {
            return Err(GrantError::NotJson {
                status,
                line: e.line(),
                column: e.column(),
            });
        }
    };
    if let Some(token) = parsed.access_token.filter(|t| !t.is_empty()) {
        let secs = parsed.expires_in_sec.or(parsed.expires_in).unwrap_or(3600);
        let lifetime = Duration::from_secs(secs);
        if secs == 0 || lifetime > ABSURD_TOKEN_LIFETIME {
            return Err(GrantError::Lifetime(secs));
        }
        return Ok((Secret::new(token), lifetime.min(MAX_TOKEN_LIFETIME)));
    }
    if status.is_server_error() {
        return Err(GrantError::ServerError(status));
    }
    let described = parsed
        .error_description
        .as_deref()
        .is_some_and(|d| !d.trim().is_empty());
    match parsed.error.as_deref() {
        Some(e) if e.starts_with("invalid_") || e.starts_with("unsupported_") => {
            Err(GrantError::Refused(loggable_code(e)))
        }
        Some(e) if e.eq_ignore_ascii_case("access denied") && described => {
            Err(GrantError::Throttled)
        }
        other => Err(GrantError::Unrecognised {
            status,
            error: other.map(loggable_code),
        }),
    }
}

impl TokenManager {
    /// Creates the manager. With a `token_state_file`, a still-valid token, the recent grant
    /// times and any hold are restored from it (an unreadable or foreign file is ignored, with a
    /// warning); otherwise no token is fetched until asked or until
    /// [`TokenManager::run_refresh_ahead`] runs.
    pub fn new(
        tenant: Arc<TenantConfig>,
        upstream: Upstream,
        metrics: Arc<Metrics>,
        clock: Clock,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        let mut state = State::default();
        if let Some(path) = &tenant.token_state_file {
            match state_file::load(path, &tenant, &clock) {
                Ok(Some(restored)) => {
                    state.attempts = restored.attempts;
                    state.hold = restored.hold;
                    if let Some((value, expires_at)) = restored.token {
                        state.generation = 1;
                        state.current = Some(Arc::new(AccessToken {
                            value,
                            expires_at,
                            generation: 1,
                            fleet_id: None,
                        }));
                        tracing::info!(tenant = %tenant.name, "reusing the access token from the state file");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, path = %path.display(), error = %e, "ignoring the token state file");
                }
            }
        }
        let lockout_gauge = metrics.tenant(&tenant.name).token_lockout;
        lockout_gauge.set(i64::from(matches!(
            state.hold,
            Some((_, TokenFailure::Throttled))
        )));
        TokenManager {
            lockout_gauge,
            tenant,
            upstream,
            metrics,
            clock,
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            fleet,
        }
    }

    /// A manager for the same credentials with new token settings (`refresh_margin`,
    /// `token_timeout`, the budget, the lockout, the state file): it carries this one's state —
    /// the current token, the recent grant times and any hold — so a settings change spends no
    /// grant and forgets no lockout. (Grants this manager makes afterwards, for requests still
    /// under way, are not counted in the successor's budget.)
    pub fn with_settings(&self, tenant: Arc<TenantConfig>) -> Self {
        let state = self.lock().clone();
        TokenManager {
            lockout_gauge: self.lockout_gauge.clone(),
            tenant,
            upstream: self.upstream.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            fleet: self.fleet.clone(),
        }
    }

    /// A manager for new credentials of the same tenant (a live reload): no token (the current
    /// one belongs to the old credentials), but this manager's recent grant attempts carry over,
    /// so no sequence of reloads sends Zoho more grant requests than `refresh_budget` per
    /// `refresh_window` for the tenant (Zoho counts grants per refresh token; one budget across
    /// a tenant's credentials is the bound that holds whichever token Zoho counts). A hold (a
    /// throttle lockout, a failure backoff) carries over while the refresh token is unchanged.
    pub fn with_credentials(&self, tenant: Arc<TenantConfig>) -> Self {
        let same_token = tenant.refresh_token == self.tenant.refresh_token;
        let next = TokenManager::new(
            tenant,
            self.upstream.clone(),
            self.metrics.clone(),
            self.clock.clone(),
            self.fleet.clone(),
        );
        {
            let old = self.lock();
            let mut st = next.lock();
            let mut attempts: Vec<Instant> = old
                .attempts
                .iter()
                .chain(st.attempts.iter())
                .copied()
                .collect();
            attempts.sort_unstable();
            st.attempts = attempts.into();
            if same_token
                && old
                    .hold
                    .is_some_and(|(until, _)| st.hold.is_none_or(|(u, _)| u < until))
            {
                st.hold = old.hold;
                st.failures = old.failures;
            }
        }
        next.lockout_gauge.set(i64::from(matches!(
            next.lock().hold,
            Some((_, TokenFailure::Throttled))
        )));
        next
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn valid_current(&self, now: Instant) -> Option<Arc<AccessToken>> {
        let st = self.lock();
        st.current.as_ref().filter(|t| t.expires_at > now).cloned()
    }

    /// Number of successful grants this manager has made (or restored from the state file).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Current health.
    pub fn health(&self) -> TokenHealth {
        let now = self.clock.now();
        let st = self.lock();
        if st.current.as_ref().is_some_and(|t| t.expires_at > now) {
            return TokenHealth::Valid;
        }
        match st.hold {
            Some((until, reason)) if until > now => TokenHealth::Failing {
                reason,
                retry_after: until - now,
            },
            _ => TokenHealth::Missing,
        }
    }

    /// A valid access token: the current one if it has not expired, else a fresh grant (shared
    /// with concurrent callers).
    ///
    /// # Errors
    /// [`GatewayError::TokenUnavailable`] when no token can be obtained, with the time left
    /// before the next attempt.
    pub async fn token(&self) -> Result<Arc<AccessToken>, GatewayError> {
        if let Some(t) = self.valid_current(self.clock.now()) {
            return Ok(t);
        }
        self.refresh(Cause::Missing).await
    }

    /// Zoho rejected `used` (401 `INVALID_TOKEN` / `AUTHENTICATION_FAILURE`): drop it and return a
    /// new one. Concurrent callers reporting the same token share one refresh.
    ///
    /// # Errors
    /// [`GatewayError::TokenUnavailable`] when no token can be obtained.
    pub async fn replace_rejected(
        &self,
        used: &AccessToken,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        self.refresh(Cause::Rejected(used.generation)).await
    }

    /// One refresh, in four steps: admit (reuse, hold, budget) → grant (ask and classify) →
    /// apply (state, metrics, log) → persist (state file, off the runtime).
    async fn refresh(&self, cause: Cause) -> Result<Arc<AccessToken>, GatewayError> {
        let wait = self.tenant.token_timeout.saturating_mul(2);
        let _guard = tokio::time::timeout(wait, self.refresh_lock.lock())
            .await
            .map_err(|_| GatewayError::TokenUnavailable {
                reason: TokenFailure::Unreachable,
                retry_after: Duration::from_secs(1),
            })?;
        // At start-up, the first token waits (bounded) for the first Redis connection, so that
        // replicas starting together adopt one grant instead of each making its own.
        if let Some(fleet) = &self.fleet {
            fleet.settled(self.tenant.token_timeout).await;
        }
        if let Some(fleet) = self
            .fleet
            .as_ref()
            .filter(|f| f.availability() == Availability::Available)
            && let Ok(result) = self.refresh_through_fleet(fleet, cause).await
        {
            self.persist().await;
            self.changed.notify_waiters();
            return result;
        }
        let result = match self.admit(cause) {
            Admission::Reuse(token) => return Ok(token),
            Admission::Held(err) => return Err(err),
            Admission::OverBudget(until) => self.apply_budget_exhausted(until),
            Admission::Grant => {
                let answer = self.grant().await;
                self.apply(answer)
            }
        };
        self.persist().await;
        self.changed.notify_waiters();
        result
    }

    /// The fleet path of a refresh (see [`crate::fleet::tokens`]): adopt the token another
    /// replica published, or make the fleet's one grant under its lease and budget. A refusal
    /// (fleet budget spent, lockout) or failure becomes a local hold.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis could not answer: the caller takes the local path, with its
    /// share of the budget.
    async fn refresh_through_fleet(
        &self,
        fleet: &Arc<Fleet>,
        cause: Cause,
    ) -> Result<Result<Arc<AccessToken>, GatewayError>, Unavailable> {
        let now = self.clock.now();
        let replacing = {
            let mut st = self.lock();
            let current = st.current.as_ref().filter(|t| t.expires_at > now).cloned();
            let replacing = match (current, cause) {
                (Some(t), Cause::Rejected(g)) if g == t.generation => {
                    st.current = None;
                    t.fleet_id
                }
                (Some(t), Cause::Ahead(g)) if g == t.generation => t.fleet_id,
                (Some(t), _) => return Ok(Ok(t)),
                (None, _) => None,
            };
            if let Some(err) = st.held(now) {
                return Ok(Err(err));
            }
            replacing
        };
        let grant = || async {
            // The grant's attempt counts in the local budget too, so a fall-back right after
            // does not spend the same window again.
            self.lock().attempts.push_back(self.clock.now());
            self.grant().await.map_err(|e| {
                let reason = e.failure();
                self.metrics
                    .record_token_refresh(&self.tenant.name, reason.as_str());
                tracing::warn!(tenant = %self.tenant.name, reason = reason.as_str(), error = %ErrorChain(&e), "access token refresh failed (fleet grant)");
                reason
            })
        };
        let outcome = fleet
            .refresh_shared(
                &self.tenant,
                replacing,
                self.tenant.refresh_margin,
                self.tenant.token_timeout.saturating_mul(2),
                grant,
            )
            .await?;
        let now = self.clock.now();
        let (reason, hold) = match outcome {
            SharedRefresh::Adopted(t) => return Ok(Ok(self.install_shared(t, false))),
            SharedRefresh::Granted(t) => return Ok(Ok(self.install_shared(t, true))),
            SharedRefresh::Refused(reason, hold) => {
                self.metrics
                    .record_token_refresh(&self.tenant.name, reason.as_str());
                (reason, hold)
            }
            SharedRefresh::Failed(reason) => (
                reason,
                match reason {
                    TokenFailure::Throttled => self.tenant.throttle_lockout,
                    _ => FAILURE_HOLD,
                },
            ),
        };
        self.lock().hold = Some((now.checked_add(hold).unwrap_or(now), reason));
        self.lockout_gauge
            .set(i64::from(reason == TokenFailure::Throttled));
        Ok(Err(GatewayError::TokenUnavailable {
            reason,
            retry_after: hold,
        }))
    }

    /// Makes a fleet token current (its expiry moved from Unix time onto the gateway's clock).
    fn install_shared(&self, t: SharedToken, granted_here: bool) -> Arc<AccessToken> {
        let now = self.clock.now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let lifetime = t.remaining(unix_now).min(MAX_TOKEN_LIFETIME);
        let token = {
            let mut st = self.lock();
            st.generation += 1;
            st.failures = 0;
            st.hold = None;
            let token = Arc::new(AccessToken {
                value: t.value,
                expires_at: now + lifetime,
                generation: st.generation,
                fleet_id: Some(t.id),
            });
            st.current = Some(token.clone());
            token
        };
        self.lockout_gauge.set(0);
        let outcome = if granted_here { "success" } else { "adopted" };
        self.metrics
            .record_token_refresh(&self.tenant.name, outcome);
        self.metrics.set_token_expiry(
            &self.tenant.name,
            i64::try_from(t.expires_at_unix_ms / 1000).unwrap_or(i64::MAX),
        );
        tracing::info!(tenant = %self.tenant.name, lifetime_s = lifetime.as_secs(), generation = token.generation, granted_here, "access token from the fleet");
        token
    }

    /// Decides whether a grant may be made now: not when another caller already replaced the
    /// token, not during a hold, not beyond the budget. Counts the attempt when it admits one.
    fn admit(&self, cause: Cause) -> Admission {
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(t) = st.current.as_ref().filter(|t| t.expires_at > now) {
            match cause {
                // Zoho refused this very token: drop it.
                Cause::Rejected(g) if g == t.generation => st.current = None,
                // Refresh ahead of expiry: keep serving the current token until a new one
                // arrives (a failed refresh must not throw away a valid token).
                Cause::Ahead(g) if g == t.generation => {}
                // Someone else already replaced it.
                _ => return Admission::Reuse(t.clone()),
            }
        }
        if let Some(err) = st.held(now) {
            return Admission::Held(err);
        }
        st.hold = None;
        let window = self.tenant.refresh_window;
        while st
            .attempts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            st.attempts.pop_front();
        }
        // With a fleet tier, this path runs only while Redis is unavailable: this replica's
        // share of the budget.
        let budget = match &self.fleet {
            Some(f) => f
                .config()
                .fallback_share(self.tenant.refresh_budget as usize),
            None => self.tenant.refresh_budget as usize,
        };
        if st.attempts.len() >= budget {
            let until = st
                .attempts
                .front()
                .and_then(|t| t.checked_add(window))
                .unwrap_or(now);
            return Admission::OverBudget(until);
        }
        st.attempts.push_back(now);
        Admission::Grant
    }

    /// One refresh-token grant: the token and its lifetime, or why not.
    async fn grant(&self) -> Result<(Secret, Duration), GrantError> {
        let t = &self.tenant;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &t.client_id)
            .append_pair("client_secret", t.client_secret.expose())
            .append_pair("refresh_token", t.refresh_token.expose())
            .finish();
        let req = Request::post(&t.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| GrantError::Transport(GatewayError::Internal))?;
        let resp = tokio::time::timeout(t.token_timeout, self.upstream.send(req))
            .await
            .unwrap_or(Err(GatewayError::UpstreamTimeout))
            .map_err(GrantError::Transport)?;
        classify_grant(resp.status, &resp.body)
    }

    /// Records a grant's outcome: the new token, or the failure and its hold.
    fn apply(
        &self,
        answer: Result<(Secret, Duration), GrantError>,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        let now = self.clock.now();
        let (value, lifetime) = match answer {
            Ok(granted) => granted,
            Err(e) => return Err(self.apply_failure(&e, now)),
        };
        // Bounded by MAX_TOKEN_LIFETIME; still never trusted into unchecked arithmetic.
        let Some(expires_at) = now.checked_add(lifetime) else {
            return Err(self.apply_failure(&GrantError::Lifetime(lifetime.as_secs()), now));
        };
        let token = {
            let mut st = self.lock();
            st.generation += 1;
            st.failures = 0;
            let token = Arc::new(AccessToken {
                value,
                expires_at,
                generation: st.generation,
                fleet_id: None,
            });
            st.current = Some(token.clone());
            token
        };
        let unix = SystemTime::now()
            .checked_add(lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.lockout_gauge.set(0);
        self.metrics
            .record_token_refresh(&self.tenant.name, "success");
        self.metrics.set_token_expiry(&self.tenant.name, unix);
        tracing::info!(tenant = %self.tenant.name, lifetime_s = lifetime.as_secs(), generation = token.generation, "access token refreshed");
        Ok(token)
    }

    /// Holds further attempts after a failed grant (the lockout for Zoho's throttle, a backoff
    /// otherwise) and logs the failure once, with its cause chain.
    fn apply_failure(&self, e: &GrantError, now: Instant) -> GatewayError {
        let reason = e.failure();
        let hold = {
            let mut st = self.lock();
            st.failures = st.failures.saturating_add(1);
            let hold = match reason {
                TokenFailure::Throttled => self.tenant.throttle_lockout,
                _ => FAILURE_HOLD
                    .saturating_mul(1u32 << (st.failures - 1).min(16))
                    .min(MAX_FAILURE_HOLD),
            };
            st.hold = Some((now.checked_add(hold).unwrap_or(now), reason));
            hold
        };
        self.lockout_gauge
            .set(i64::from(reason == TokenFailure::Throttled));
        self.metrics
            .record_token_refresh(&self.tenant.name, reason.as_str());
        tracing::warn!(tenant = %self.tenant.name, reason = reason.as_str(), hold_s = hold.as_secs(), error = %ErrorChain(e), "access token refresh failed");
        GatewayError::TokenUnavailable {
            reason,
            retry_after: hold,
        }
    }

    /// Holds attempts until the budget window frees a grant.
    fn apply_budget_exhausted(&self, until: Instant) -> Result<Arc<AccessToken>, GatewayError> {
        let now = self.clock.now();
        let reason = TokenFailure::BudgetExhausted;
        self.lock().hold = Some((until, reason));
        self.metrics
            .record_token_refresh(&self.tenant.name, reason.as_str());
        tracing::warn!(tenant = %self.tenant.name, hold_s = until.saturating_duration_since(now).as_secs(), "token refresh budget exhausted");
        Err(GatewayError::TokenUnavailable {
            reason,
            retry_after: until.saturating_duration_since(now),
        })
    }

    /// Background task: keeps a token ready, refreshing `refresh_margin` before expiry, until
    /// `shutdown` is cancelled. After a failure it retries when the hold ends.
    pub async fn run_refresh_ahead(self: Arc<Self>, shutdown: CancellationToken) {
        // After a failed refresh-ahead, the next try waits a quarter of the token's remaining
        // life (5..=60 s), so a flaky accounts server cannot drain the grant budget.
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = self.clock.now();
            let wake = self.next_refresh(now).max(retry_at.unwrap_or(now));
            if wake > now {
                let notified = self.changed.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.clock.sleep_until(wake) => {}
                    _ = notified => continue,
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            let current = self.lock().current.clone();
            let cause = match &current {
                Some(t) => Cause::Ahead(t.generation),
                None => Cause::Missing,
            };
            // A refresh under way when shutdown comes may finish (within `token_timeout`), so
            // that a grant already spent reaches the state file before the process exits.
            let refresh = self.refresh(cause);
            tokio::pin!(refresh);
            let result = tokio::select! {
                r = &mut refresh => r,
                _ = shutdown.cancelled() => {
                    let _ = tokio::time::timeout(self.tenant.token_timeout, refresh).await;
                    return;
                }
            };
            retry_at = match (result, current) {
                (Err(_), Some(t)) => {
                    let now = self.clock.now();
                    let left = t.expires_at.saturating_duration_since(now);
                    Some(now + (left / 4).clamp(Duration::from_secs(5), Duration::from_secs(60)))
                }
                _ => None,
            };
        }
    }

    /// When the refresh-ahead task should next act: the end of a hold, else `refresh_margin`
    /// before the current token expires, else now.
    fn next_refresh(&self, now: Instant) -> Instant {
        let st = self.lock();
        if let Some((until, _)) = st.hold.filter(|(until, _)| *until > now) {
            return until;
        }
        st.current.as_ref().map_or(now, |t| {
            t.expires_at
                .checked_sub(self.tenant.refresh_margin)
                .unwrap_or(now)
        })
    }

    /// Writes the state file, if configured, on a blocking thread (it fsyncs). Failures are
    /// logged, never fatal. Called under the refresh lock, so writes never reorder.
    async fn persist(&self) {
        let Some(path) = self.tenant.token_state_file.clone() else {
            return;
        };
        let file = {
            let st = self.lock();
            state_file::snapshot(
                &self.tenant,
                &self.clock,
                st.current.as_deref(),
                &st.attempts,
                st.hold,
            )
        };
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || state_file::write(&target, &file))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::warn!(tenant = %self.tenant.name, path = %path.display(), error = %ErrorChain(&e), "cannot write the token state file");
        }
    }
}

/// The token state file: JSON `{"version":1,"credential":"<sha256 hex of client id and refresh
/// token>","access_token":…,"expires_at_unix":…,"grants_unix":[…],"hold_until_unix":…,
/// "hold_reason":…}`, mode 0600, rewritten after every grant attempt, successful or not.
mod state_file {
    use std::collections::VecDeque;
    use std::path::Path;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Serialize};
    use sha2::{Digest, Sha256};
    use tokio::time::Instant;

    use super::{AccessToken, MAX_FAILURE_HOLD, MAX_TOKEN_LIFETIME};
    use crate::clock::Clock;
    use crate::config::{Secret, TenantConfig};
    use crate::error::TokenFailure;

    /// The file's content (built under the state lock, written off the runtime).
    #[derive(Serialize, Deserialize)]
    pub(super) struct File {
        version: u32,
        credential: String,
        access_token: Option<String>,
        expires_at_unix: Option<u64>,
        grants_unix: Vec<u64>,
        /// A lockout after Zoho's throttle (or a spent budget) outlives a restart.
        #[serde(default)]
        hold_until_unix: Option<u64>,
        #[serde(default)]
        hold_reason: Option<String>,
    }

    pub(super) struct Restored {
        pub token: Option<(Secret, Instant)>,
        pub attempts: VecDeque<Instant>,
        pub hold: Option<(Instant, TokenFailure)>,
    }

    fn credential(t: &TenantConfig) -> String {
        let mut h = Sha256::new();
        h.update(t.client_id.as_bytes());
        h.update([0]);
        h.update(t.refresh_token.expose().as_bytes());
        hex::encode(h.finalize())
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Reads the file back. Times in it are outside values: a token is reused only with more
    /// than the refresh margin and at most [`MAX_TOKEN_LIFETIME`] left, and a hold is cut to the
    /// longest this configuration could have set.
    pub(super) fn load(
        path: &Path,
        t: &TenantConfig,
        clock: &Clock,
    ) -> std::io::Result<Option<Restored>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: File = serde_json::from_str(&text)?;
        if file.version != 1 || file.credential != credential(t) {
            tracing::warn!(tenant = %t.name, path = %path.display(), "token state file belongs to other credentials: ignored (it will be replaced)");
            return Ok(None);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode != 0o600 {
                tracing::warn!(tenant = %t.name, path = %path.display(), mode = format!("{mode:o}"), "token state file was not private: setting mode 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let (now_unix, now) = (unix_now(), clock.now());
        let at = |unix: u64| now.checked_sub(Duration::from_secs(now_unix.saturating_sub(unix)));
        let attempts = file
            .grants_unix
            .iter()
            .filter(|&&g| now_unix.saturating_sub(g) < t.refresh_window.as_secs())
            .filter_map(|&g| at(g))
            .collect();
        let left = |until: u64, max: Duration| {
            let left = Duration::from_secs(until.checked_sub(now_unix)?);
            if left.is_zero() || left > max {
                return None;
            }
            now.checked_add(left)
        };
        let token = match (file.access_token, file.expires_at_unix) {
            (Some(v), Some(exp)) => left(exp, MAX_TOKEN_LIFETIME)
                .filter(|at| at.saturating_duration_since(now) > t.refresh_margin)
                .map(|at| (Secret::new(v), at)),
            _ => None,
        };
        let hold = match (file.hold_until_unix, file.hold_reason.as_deref()) {
            (Some(until), Some(reason)) => {
                let why = match reason {
                    "throttled" => TokenFailure::Throttled,
                    "budget_exhausted" => TokenFailure::BudgetExhausted,
                    "rejected" => TokenFailure::Rejected,
                    _ => TokenFailure::Unreachable,
                };
                let longest = t
                    .throttle_lockout
                    .max(t.refresh_window)
                    .max(MAX_FAILURE_HOLD);
                left(until, longest).map(|at| (at, why))
            }
            _ => None,
        };
        Ok(Some(Restored {
            token,
            attempts,
            hold,
        }))
    }

    /// The file's content for this state, now.
    pub(super) fn snapshot(
        t: &TenantConfig,
        clock: &Clock,
        token: Option<&AccessToken>,
        attempts: &VecDeque<Instant>,
        hold: Option<(Instant, TokenFailure)>,
    ) -> File {
        let (now_unix, now) = (unix_now(), clock.now());
        let unix_of =
            |i: Instant| now_unix.saturating_sub(now.saturating_duration_since(i).as_secs());
        let unix_in =
            |i: Instant| now_unix.saturating_add(i.saturating_duration_since(now).as_secs());
        File {
            version: 1,
            credential: credential(t),
            access_token: token.map(|t| t.expose().to_owned()),
            expires_at_unix: token.map(|t| unix_in(t.expires_at)),
            grants_unix: attempts.iter().map(|&i| unix_of(i)).collect(),
            hold_until_unix: hold
                .filter(|(until, _)| *until > now)
                .map(|(until, _)| unix_in(until)),
            hold_reason: hold.map(|(_, why)| why.as_str().to_owned()),
        }
    }

    /// Writes `file` to `path` atomically (temporary file, fsync, rename), mode 0600. Blocking.
    pub(super) fn write(path: &Path, file: &File) -> std::io::Result<()> {
        let json = serde_json::to_vec(file)?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Secret, Duration), TokenFailure> {
        parse_with(StatusCode::OK, json)
    }

    fn parse_with(status: StatusCode, body: &str) -> Result<(Secret, Duration), TokenFailure> {
        classify_grant(status, body.as_bytes()).map_err(|e| e.failure())
    }

    #[test]
    fn grant_responses_are_classified_by_access_token_presence() {
        let (tok, life) =
            parse(r#"{"access_token":"1000.a.b","expires_in":3600,"token_type":"Bearer"}"#)
                .unwrap();
        assert_eq!(tok.expose(), "1000.a.b");
        assert_eq!(life, Duration::from_secs(3600));
        // Older form: expires_in in milliseconds beside expires_in_sec.
        let (_, life) =
            parse(r#"{"access_token":"x","expires_in":3600000,"expires_in_sec":3600}"#).unwrap();
        assert_eq!(life, Duration::from_secs(3600));
        assert_eq!(
            parse(r#"{"error":"invalid_client"}"#).unwrap_err(),
            TokenFailure::Rejected
        );
        assert_eq!(
            parse(r#"{"error":"invalid_code"}"#).unwrap_err(),
            TokenFailure::Rejected
        );
        assert_eq!(
            parse(r#"{"error":"Access Denied","error_description":"You have made too many requests continuously."}"#)
                .unwrap_err(),
            TokenFailure::Throttled
        );
        // Also seen with HTTP 400.
        assert_eq!(
            parse_with(
                StatusCode::BAD_REQUEST,
                r#"{"error":"Access Denied","error_description":"Zu viele Anfragen."}"#
            )
            .unwrap_err(),
            TokenFailure::Throttled
        );
    }

    /// Issue 13, item 2: only Zoho's documented throttle answer starts the lockout; transient
    /// errors and unknown shapes are `Unreachable` (a short hold).
    #[test]
    fn only_the_documented_throttle_answer_is_throttled() {
        for (status, body) in [
            (503, r#"{"message":"Service temporarily unavailable"}"#),
            (503, "<html>Service Unavailable</html>"),
            (502, ""),
            (500, r#"{"error":"Access Denied","error_description":"x"}"#),
            (200, r#"{"error":"internal_error"}"#),
            (200, "{}"),
            (200, r#"{"error":"Access Denied"}"#),
            (200, r#"{"error":"Zugriff verweigert"}"#),
            (200, r#"{"access_token":""}"#),
            (200, "not json"),
        ] {
            assert_eq!(
                parse_with(StatusCode::from_u16(status).unwrap(), body).unwrap_err(),
                TokenFailure::Unreachable,
                "{status} {body}"
            );
        }
    }

    /// Issue 13, item 4: an absurd lifetime is a failed grant, a long one is clamped, none
    /// overflows `Instant` arithmetic.
    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(
            parse(r#"{"access_token":"x","expires_in":18446744073709551615}"#).unwrap_err(),
            TokenFailure::Unreachable
        );
        assert_eq!(
            parse(r#"{"access_token":"x","expires_in":0}"#).unwrap_err(),
            TokenFailure::Unreachable
        );
        let (_, life) = parse(r#"{"access_token":"x","expires_in":3600000}"#).unwrap();
        assert_eq!(life, MAX_TOKEN_LIFETIME);
    }

    #[test]
    fn logged_error_codes_are_tamed() {
        assert_eq!(loggable_code("invalid_client"), "invalid_client");
        assert_eq!(loggable_code("a\nb\u{1b}[31m"), "ab31m");
        assert_eq!(loggable_code(&"x".repeat(500)).len(), 64);
    }
}
