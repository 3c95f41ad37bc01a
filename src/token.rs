//! OAuth access-token management, one [`TokenManager`] per tenant (API-NOTES §5).
//!
//! - **Grant**: `POST {accounts}/oauth/v2/token` with the refresh-token grant as a form body.
//!   Success means the JSON has an `access_token`; anything else is a failure whatever the HTTP
//!   status or the language of the message (Zoho answers errors with HTTP 200). Lifetime comes
//!   from `expires_in_sec` when present (older form, where `expires_in` is milliseconds), else
//!   from `expires_in` in seconds.
//! - **Once per tenant**: one refresh in flight at a time (an async mutex plus a generation
//!   check, so callers that queued behind a refresh reuse its token instead of refreshing again).
//! - **Ahead of expiry**: [`TokenManager::run_refresh_ahead`] refreshes `refresh_margin` before
//!   expiry in the background; requests never wait for a refresh while the current token is valid.
//! - **Within Zoho's limits**: a local budget (default 10 grants per 600 s, Zoho's limit) and, on
//!   Zoho's "Access Denied" throttle, a lockout (default 900 s) with no attempt at all.
//! - **Restarts**: with `token_state_file`, the current token and the recent grant times are kept
//!   in a file (mode 0600, written atomically) bound to the client id and refresh token; a
//!   restart reuses a still-valid token instead of spending a grant, so restart loops cannot trip
//!   Zoho's lockout.
//! - **Secrets**: the token value lives in a [`Secret`]; nothing here logs it.
//! - **Time**: expiry, budget and holds use the gateway's [`Clock`]; request deadlines use tokio's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Secret, TenantConfig};
use crate::error::{GatewayError, TokenFailure};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// After a failed grant, further on-demand attempts wait this long (the same failure is returned
/// meanwhile), so a burst of requests cannot spend the refresh budget.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// A live access token.
#[derive(Debug)]
pub struct AccessToken {
    value: Secret,
    /// When Zoho will stop accepting it.
    pub expires_at: Instant,
    /// Increases with every grant; identifies the token without exposing it.
    pub generation: u64,
}

impl AccessToken {
    /// The token value, for the `Authorization: Zoho-oauthtoken …` header only.
    pub fn expose(&self) -> &str {
        self.value.expose()
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<AccessToken>>,
    generation: u64,
    /// Instants of grant attempts inside the budget window.
    attempts: VecDeque<Instant>,
    /// No attempt before this instant; the failure to report meanwhile.
    hold: Option<(Instant, TokenFailure)>,
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

/// Observable token state, for `/readyz` and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenHealth {
    /// A valid token is held.
    Valid,
    /// No valid token yet (never obtained, or expired) and no failure recorded.
    Missing,
    /// The last attempt failed; attempts are held back.
    Failing(TokenFailure),
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
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("tenant", &self.tenant.name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct GrantResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
    expires_in_sec: Option<u64>,
    error: Option<String>,
}

impl TokenManager {
    /// Creates the manager. With a `token_state_file`, a still-valid token and the recent grant
    /// times are restored from it (an unreadable or foreign file is ignored, with a warning);
    /// otherwise no token is fetched until asked or until [`TokenManager::run_refresh_ahead`] runs.
    pub fn new(
        tenant: Arc<TenantConfig>,
        upstream: Upstream,
        metrics: Arc<Metrics>,
        clock: Clock,
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
        TokenManager {
            lockout_gauge: metrics.tenant(&tenant.name).token_lockout,
            tenant,
            upstream,
            metrics,
            clock,
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        }
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
            Some((until, why)) if until > now => TokenHealth::Failing(why),
            _ => TokenHealth::Missing,
        }
    }

    /// A valid access token: the current one if it has not expired, else a fresh grant (shared
    /// with concurrent callers).
    ///
    /// # Errors
    /// [`GatewayError::TokenUnavailable`] when no token can be obtained.
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

    /// Refreshes unless another caller already replaced the token (`rejected` is the generation
    /// known bad, `None` for "no valid token").
    async fn refresh(&self, cause: Cause) -> Result<Arc<AccessToken>, GatewayError> {
        let wait = self.tenant.token_timeout * 2;
        let _guard = tokio::time::timeout(wait, self.refresh_lock.lock())
            .await
            .map_err(|_| GatewayError::TokenUnavailable(TokenFailure::Unreachable))?;
        let now = self.clock.now();
        {
            let mut st = self.lock();
            if let Some(t) = st.current.as_ref().filter(|t| t.expires_at > now) {
                match cause {
                    // Zoho refused this very token: drop it.
                    Cause::Rejected(g) if g == t.generation => st.current = None,
                    // Refresh ahead of expiry: keep serving the current token until a new one
                    // arrives (a failed refresh must not throw away a valid token).
                    Cause::Ahead(g) if g == t.generation => {}
                    // Someone else already replaced it.
                    _ => return Ok(t.clone()),
                }
            }
            if let Some((until, why)) = st.hold {
                if until > now {
                    return Err(GatewayError::TokenUnavailable(why));
                }
                st.hold = None;
            }
            let window = self.tenant.refresh_window;
            while st
                .attempts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                st.attempts.pop_front();
            }
            if st.attempts.len() >= self.tenant.refresh_budget as usize {
                let until = st.attempts.front().map_or(now, |t| *t + window);
                st.hold = Some((until, TokenFailure::BudgetExhausted));
                drop(st);
                self.save_state();
                self.metrics.record_token_refresh(
                    &self.tenant.name,
                    TokenFailure::BudgetExhausted.as_str(),
                );
                tracing::warn!(tenant = %self.tenant.name, "token refresh budget exhausted");
                return Err(GatewayError::TokenUnavailable(
                    TokenFailure::BudgetExhausted,
                ));
            }
            st.attempts.push_back(now);
        }
        match self.grant().await {
            Ok((value, lifetime)) => {
                let now = self.clock.now();
                let token = {
                    let mut st = self.lock();
                    st.generation += 1;
                    let token = Arc::new(AccessToken {
                        value,
                        expires_at: now + lifetime,
                        generation: st.generation,
                    });
                    st.current = Some(token.clone());
                    token
                };
                let unix = SystemTime::now()
                    .checked_add(lifetime)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                self.save_state();
                self.lockout_gauge.set(0);
                self.metrics
                    .record_token_refresh(&self.tenant.name, "success");
                self.metrics.set_token_expiry(&self.tenant.name, unix);
                tracing::info!(tenant = %self.tenant.name, lifetime_s = lifetime.as_secs(), generation = token.generation, "access token refreshed");
                self.changed.notify_waiters();
                Ok(token)
            }
            Err(why) => {
                let hold = match why {
                    TokenFailure::Throttled => self.tenant.throttle_lockout,
                    _ => FAILURE_HOLD,
                };
                self.lock().hold = Some((self.clock.now() + hold, why));
                self.save_state();
                self.lockout_gauge
                    .set(i64::from(why == TokenFailure::Throttled));
                self.metrics
                    .record_token_refresh(&self.tenant.name, why.as_str());
                tracing::warn!(tenant = %self.tenant.name, reason = why.as_str(), hold_s = hold.as_secs(), "access token refresh failed");
                self.changed.notify_waiters();
                Err(GatewayError::TokenUnavailable(why))
            }
        }
    }

    /// One refresh-token grant. Returns the token and its lifetime.
    async fn grant(&self) -> Result<(Secret, Duration), TokenFailure> {
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
            .map_err(|_| TokenFailure::Unreachable)?;
        let resp = tokio::time::timeout(t.token_timeout, self.upstream.send(req))
            .await
            .map_err(|_| TokenFailure::Unreachable)?
            .map_err(|_| TokenFailure::Unreachable)?;
        let parsed: GrantResponse =
            serde_json::from_slice(&resp.body).map_err(|_| TokenFailure::Unreachable)?;
        classify_grant(parsed)
    }

    /// Background task: keeps a token ready, refreshing `refresh_margin` before expiry, until
    /// `shutdown` is cancelled. After a failure it retries when the hold ends (at most every 5 s).
    pub async fn run_refresh_ahead(self: Arc<Self>, shutdown: CancellationToken) {
        // After a failed refresh-ahead, the next try waits a quarter of the token's remaining
        // life (5..=60 s), so a flaky accounts server cannot drain the grant budget.
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = self.clock.now();
            let (due, hold_until) = {
                let st = self.lock();
                let due = st.current.as_ref().map(|t| {
                    t.expires_at
                        .checked_sub(self.tenant.refresh_margin)
                        .unwrap_or(now)
                });
                (due, st.hold.map(|(until, _)| until))
            };
            let mut wake = match (due, hold_until) {
                (_, Some(until)) if until > now => until,
                (Some(due), _) => due,
                (None, _) => now,
            };
            if let Some(at) = retry_at {
                wake = wake.max(at);
            }
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
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.refresh(cause) => r,
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
}

impl TokenManager {
    /// Writes the state file, if configured. Failures are logged, never fatal.
    fn save_state(&self) {
        let Some(path) = &self.tenant.token_state_file else {
            return;
        };
        let (token, attempts, hold) = {
            let st = self.lock();
            (st.current.clone(), st.attempts.clone(), st.hold)
        };
        if let Err(e) = state_file::save(
            path,
            &self.tenant,
            &self.clock,
            token.as_deref(),
            &attempts,
            hold,
        ) {
            tracing::warn!(tenant = %self.tenant.name, path = %path.display(), error = %e, "cannot write the token state file");
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

    use super::AccessToken;
    use crate::clock::Clock;
    use crate::config::{Secret, TenantConfig};
    use crate::error::TokenFailure;

    #[derive(Serialize, Deserialize)]
    struct File {
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
        // Reuse only a token with more than the refresh margin left.
        let token = match (file.access_token, file.expires_at_unix) {
            (Some(v), Some(exp)) if exp > now_unix + t.refresh_margin.as_secs() => {
                Some((Secret::new(v), now + Duration::from_secs(exp - now_unix)))
            }
            _ => None,
        };
        let hold = match (file.hold_until_unix, file.hold_reason.as_deref()) {
            (Some(until), Some(reason)) if until > now_unix => {
                let why = match reason {
                    "throttled" => TokenFailure::Throttled,
                    "budget_exhausted" => TokenFailure::BudgetExhausted,
                    "rejected" => TokenFailure::Rejected,
                    _ => TokenFailure::Unreachable,
                };
                Some((now + Duration::from_secs(until - now_unix), why))
            }
            _ => None,
        };
        Ok(Some(Restored {
            token,
            attempts,
            hold,
        }))
    }

    pub(super) fn save(
        path: &Path,
        t: &TenantConfig,
        clock: &Clock,
        token: Option<&AccessToken>,
        attempts: &VecDeque<Instant>,
        hold: Option<(Instant, TokenFailure)>,
    ) -> std::io::Result<()> {
        let (now_unix, now) = (unix_now(), clock.now());
        let unix_of =
            |i: Instant| now_unix.saturating_sub(now.saturating_duration_since(i).as_secs());
        let file = File {
            version: 1,
            credential: credential(t),
            access_token: token.map(|t| t.expose().to_owned()),
            expires_at_unix: token
                .map(|t| now_unix + t.expires_at.saturating_duration_since(now).as_secs()),
            grants_unix: attempts.iter().map(|&i| unix_of(i)).collect(),
            hold_until_unix: hold
                .filter(|(until, _)| *until > now)
                .map(|(until, _)| now_unix + until.saturating_duration_since(now).as_secs()),
            hold_reason: hold.map(|(_, why)| why.as_str().to_owned()),
        };
        let json = serde_json::to_vec(&file)?;
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

fn classify_grant(parsed: GrantResponse) -> Result<(Secret, Duration), TokenFailure> {
    match parsed.access_token {
        Some(token) if !token.is_empty() => {
            let secs = parsed.expires_in_sec.or(parsed.expires_in).unwrap_or(3600);
            Ok((Secret::new(token), Duration::from_secs(secs.max(1))))
        }
        _ => Err(match parsed.error.as_deref() {
            Some(e) if e.starts_with("invalid_") || e.starts_with("unsupported_") => {
                TokenFailure::Rejected
            }
            // "Access Denied" and anything unrecognised (it is localised): assume the throttle.
            _ => TokenFailure::Throttled,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Secret, Duration), TokenFailure> {
        classify_grant(serde_json::from_str(json).unwrap())
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
        assert_eq!(
            parse(r#"{"error":"Zugriff verweigert"}"#).unwrap_err(),
            TokenFailure::Throttled
        );
        assert_eq!(
            parse(r#"{"access_token":""}"#).unwrap_err(),
            TokenFailure::Throttled
        );
    }
}
