//! Zoho Accounts' refresh-token grant: `POST /oauth/v2/token`
//! (API-NOTES.md §5), and the access tokens it issues.
//!
//! - Parameters `grant_type=refresh_token&client_id&client_secret&refresh_token`
//!   come from the form body and/or the query string; when both carry a
//!   parameter the body wins (**choice**).
//! - Success, HTTP 200: `{"access_token":"1000.<32 hex>.<32 hex>","api_domain":
//!   "<simulator base url>","token_type":"Bearer","expires_in":3600}`; with
//!   `legacy_expires_in`, `expires_in` is in milliseconds and `expires_in_sec`
//!   in seconds.
//! - Failures, HTTP 200 without `access_token`: `{"error":"unsupported_grant_type"}`
//!   (any other or missing grant type), `{"error":"invalid_client"}` (missing or
//!   unknown client id, wrong secret), `{"error":"invalid_code"}` (missing,
//!   unknown, revoked or other client's refresh token), and the throttle
//!   `{"error":"Access Denied","error_description":"You have made too many
//!   requests continuously. Please try again after some time."}` with
//!   `token_throttle_status`. Checks run in that order.
//! - Throttle: at most `token_rate_limit` successful grants per refresh token
//!   in any sliding `token_rate_window`; the first grant over it is denied and
//!   locks the refresh token out for `token_throttle_lockout` (denied attempts
//!   neither count as grants nor extend the lockout).
//! - At most `max_live_tokens` live access tokens per refresh token: a further
//!   grant silently invalidates the oldest live one.
//! - A method other than POST gets HTTP 405 `{"error":"method_not_allowed"}`
//!   (**choice**). When the endpoint is set down it answers 503 with an HTML body.
//!
//! All expiry and window arithmetic uses `tokio::time::Instant`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::config::{DuplicateParams, SimConfig};
use super::handle::State;
use super::params::Params;
use super::response::{SimResponse, plain_json};
use super::server::{BodyError, read_body};

/// Who a refresh token belongs to and what its access tokens carry.
#[derive(Debug)]
pub(crate) struct RefreshInfo {
    client_id: String,
    /// The owner key: the refresh token itself.
    owner: Arc<str>,
    scopes: Arc<[String]>,
    user_active: bool,
}

/// Immutable client and refresh-token registry built from the config.
#[derive(Debug)]
pub(crate) struct Registry {
    secrets: HashMap<String, String>,
    refresh: HashMap<String, RefreshInfo>,
}

impl Registry {
    /// # Errors
    /// A message naming a duplicate client id or refresh token.
    pub(crate) fn from_config(cfg: &SimConfig) -> Result<Registry, String> {
        let mut secrets = HashMap::new();
        let mut refresh = HashMap::new();
        for c in &cfg.clients {
            if secrets
                .insert(c.client_id.clone(), c.client_secret.clone())
                .is_some()
            {
                return Err(format!("duplicate client_id {:?}", c.client_id));
            }
            for r in &c.refresh_tokens {
                let info = RefreshInfo {
                    client_id: c.client_id.clone(),
                    owner: Arc::from(r.token.as_str()),
                    scopes: r.scopes.clone().into(),
                    user_active: r.user_active,
                };
                if refresh.insert(r.token.clone(), info).is_some() {
                    return Err("duplicate refresh token".into());
                }
            }
        }
        Ok(Registry { secrets, refresh })
    }
}

/// What an access token grants.
#[derive(Debug, Clone)]
pub(crate) struct AccessGrant {
    /// The refresh token it came from (concurrency is counted per owner).
    pub owner: Arc<str>,
    pub expires_at: Instant,
    pub scopes: Arc<[String]>,
    pub user_active: bool,
}

#[derive(Debug, Default)]
struct OwnerTokens {
    /// Times of successful grants inside the current window, oldest first.
    grants: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Issued access tokens, oldest first (may include expired ones).
    live: VecDeque<String>,
}

/// Issued access tokens and per-refresh-token throttle state.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    owners: HashMap<Arc<str>, OwnerTokens>,
    access: HashMap<String, AccessGrant>,
    /// Refresh tokens revoked at run time ([`super::SimHandle::revoke_refresh_token`]).
    revoked: HashSet<Arc<str>>,
}

enum GrantOutcome {
    Granted(String),
    Throttled,
    Revoked,
}

impl TokenStore {
    fn grant(&mut self, info: &RefreshInfo, cfg: &SimConfig, now: Instant) -> GrantOutcome {
        if self.revoked.contains(&info.owner) {
            return GrantOutcome::Revoked;
        }
        let owner = self.owners.entry(info.owner.clone()).or_default();
        if owner.locked_until.is_some_and(|t| now < t) {
            return GrantOutcome::Throttled;
        }
        while owner
            .grants
            .front()
            .is_some_and(|t| now.duration_since(*t) >= cfg.token_rate_window)
        {
            owner.grants.pop_front();
        }
        if owner.grants.len() >= cfg.token_rate_limit as usize {
            owner.locked_until = Some(now + cfg.token_throttle_lockout);
            return GrantOutcome::Throttled;
        }
        owner.grants.push_back(now);
        let access = &mut self.access;
        owner
            .live
            .retain(|t| access.get(t).is_some_and(|g| g.expires_at > now));
        while owner.live.len() >= cfg.max_live_tokens.max(1) {
            if let Some(oldest) = owner.live.pop_front() {
                access.remove(&oldest);
            }
        }
        let token = format!(
            "1000.{}.{}",
            hex::encode(rand::random::<[u8; 16]>()),
            hex::encode(rand::random::<[u8; 16]>())
        );
        owner.live.push_back(token.clone());
        access.insert(
            token.clone(),
            AccessGrant {
                owner: info.owner.clone(),
                expires_at: now + cfg.token_ttl,
                scopes: info.scopes.clone(),
                user_active: info.user_active,
            },
        );
        GrantOutcome::Granted(token)
    }

    /// The grant behind a live token; expired tokens are dropped.
    pub(crate) fn lookup(&mut self, token: &str, now: Instant) -> Option<AccessGrant> {
        match self.access.get(token) {
            Some(g) if g.expires_at > now => Some(g.clone()),
            Some(_) => {
                self.access.remove(token);
                None
            }
            None => None,
        }
    }

    /// Revokes one refresh token: later grants get `invalid_code` and its
    /// access tokens stop working. Returns whether the token was live before.
    pub(crate) fn revoke_refresh(&mut self, registry: &Registry, token: &str) -> bool {
        let Some(info) = registry.refresh.get(token) else {
            return false;
        };
        self.access.retain(|_, g| g.owner != info.owner);
        if let Some(o) = self.owners.get_mut(&info.owner) {
            o.live.clear();
        }
        self.revoked.insert(info.owner.clone())
    }

    /// Invalidates every access token (refresh tokens and throttles stay).
    pub(crate) fn revoke_all(&mut self) {
        self.access.clear();
        for o in self.owners.values_mut() {
            o.live.clear();
        }
    }

    /// Number of unexpired access tokens.
    pub(crate) fn live(&self, now: Instant) -> usize {
        self.access.values().filter(|g| g.expires_at > now).count()
    }
}

#[derive(Serialize)]
struct TokenReply<'a> {
    access_token: &'a str,
    api_domain: &'a str,
    token_type: &'static str,
    expires_in: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_sec: Option<u64>,
}

/// Serves `/oauth/v2/token`.
pub(crate) async fn token_endpoint(state: &State, req: Request<Incoming>) -> SimResponse {
    if state.token_down.load(Ordering::Relaxed) {
        return service_unavailable();
    }
    if req.method() != Method::POST {
        let mut resp = plain_json(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed"}),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let query = Params::parse(req.uri().query().unwrap_or("").as_bytes());
    let body = match read_body(req.into_body(), state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return plain_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "request_too_large"}),
            );
        }
        Err(BodyError::Broken) => {
            return plain_json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request"}),
            );
        }
    };
    let mut params = Params::parse(&body);
    params.extend(query);
    let get = |name| {
        params
            .get(name, DuplicateParams::First)
            .ok()
            .flatten()
            .unwrap_or("")
    };
    let failure = |error: &str| plain_json(StatusCode::OK, &json!({ "error": error }));
    if get("grant_type") != "refresh_token" {
        return failure("unsupported_grant_type");
    }
    let client_id = get("client_id");
    match state.registry.secrets.get(client_id) {
        Some(secret) if secret == get("client_secret") => {}
        _ => return failure("invalid_client"),
    }
    let Some(info) = state
        .registry
        .refresh
        .get(get("refresh_token"))
        .filter(|i| i.client_id == client_id)
    else {
        return failure("invalid_code");
    };
    let cfg = &state.config;
    let outcome = state
        .tokens
        .lock()
        .expect("token lock")
        .grant(info, cfg, Instant::now());
    match outcome {
        GrantOutcome::Revoked => failure("invalid_code"),
        GrantOutcome::Throttled => plain_json(
            StatusCode::from_u16(cfg.token_throttle_status).unwrap_or(StatusCode::OK),
            &json!({
                "error": "Access Denied",
                "error_description":
                    "You have made too many requests continuously. Please try again after some time."
            }),
        ),
        GrantOutcome::Granted(token) => {
            state.counters.token_grants.fetch_add(1, Ordering::Relaxed);
            let (expires_in, expires_in_sec) = if cfg.legacy_expires_in {
                (cfg.token_ttl.as_millis(), Some(cfg.token_ttl.as_secs()))
            } else {
                (u128::from(cfg.token_ttl.as_secs()), None)
            };
            let body = TokenReply {
                access_token: &token,
                api_domain: &state.base_url,
                token_type: "Bearer",
                expires_in,
                expires_in_sec,
            };
            let mut resp = plain_json(StatusCode::OK, &json!(null));
            *resp.body_mut() = Full::new(Bytes::from(
                serde_json::to_vec(&body).expect("token reply serializes"),
            ));
            resp
        }
    }
}

fn service_unavailable() -> SimResponse {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/html;charset=UTF-8")
        .body(Full::new(Bytes::from_static(
            b"<html><head><title>503 Service Temporarily Unavailable</title></head>\
              <body><h1>Service Temporarily Unavailable</h1></body></html>",
        )))
        .expect("valid response")
}
