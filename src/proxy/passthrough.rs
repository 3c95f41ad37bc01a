//! Forwarding without the cache: uncacheable count queries (bypass) and allowlisted routes
//! (pass-through), with hop-by-hop and per-user headers stripped.

use super::*;

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus Zoho's per-user headers that never leave the
/// gateway (`Set-Cookie`, `X-ACCESSTOKEN-RESET`).
pub(super) fn copy_end_to_end_headers(from: &HeaderMap, to: &mut HeaderMap) {
    let mut hop: Vec<&str> = Vec::new();
    for v in from.get_all(header::CONNECTION) {
        hop.extend(v.to_str().unwrap_or("").split(',').map(str::trim));
    }
    for (name, value) in from {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "set-cookie"
                | "x-accesstoken-reset"
                | "content-length"
        ) || hop.iter().any(|h| h.eq_ignore_ascii_case(n));
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
}

impl Gateway {
    /// Forwards a count request the gateway will not cache (no single-flight: its meaning is
    /// not known for sure, or the client said `no-store`).
    pub(super) async fn bypass(
        &self,
        tenant: usize,
        call: &CallCtx,
        path: &str,
        raw_query: &str,
        detail: &str,
    ) -> Result<Response<Body>, GatewayError> {
        let resp = self
            .call_upstream(
                tenant,
                call,
                RouteKind::AssociatedUsersCount,
                Method::GET,
                &upstream_path(path, raw_query),
                None,
            )
            .await?;
        let mut out = Response::new(Full::new(resp.body));
        *out.status_mut() = resp.status;
        let h = out.headers_mut();
        for name in crate::cache::STORED_HEADERS {
            if let Some(v) = resp.headers.get(name) {
                h.insert(name.clone(), v.clone());
            }
        }
        h.insert(
            &headers::CACHE_STATUS,
            CacheStatus {
                outcome: Outcome::Bypass,
                stored: false,
                ttl: None,
                detail: Some(detail),
            }
            .value(),
        );
        Ok(out)
    }

    /// An allowlisted route: forwarded with the tenant's token, never cached. A successful
    /// user-group write drops the tenant's cached user-group answers.
    pub(super) async fn passthrough<B>(
        &self,
        cfg: &GatewayConfig,
        req: Request<B>,
        tenant: usize,
        call: CallCtx,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        // The body must arrive within the header-read deadline: a slow upload is the client's
        // fault (408), not the upstream's.
        let read = Limited::new(body, cfg.passthrough_max_body).collect();
        let body = tokio::time::timeout(cfg.header_read_timeout, read)
            .await
            .map_err(|_| GatewayError::RequestTimeout)?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    GatewayError::PayloadTooLarge
                } else {
                    GatewayError::BadRequestBody
                }
            })?
            .to_bytes();
        let path = parts.uri.path();
        let path_and_query = upstream_path(path, parts.uri.query().unwrap_or(""));
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let body =
            (!body.is_empty() || parts.method != Method::GET).then_some((body, content_type));
        let resp = self
            .call_upstream(
                tenant,
                &call,
                RouteKind::Passthrough,
                parts.method.clone(),
                &path_and_query,
                body,
            )
            .await?;
        if resp.status.is_success() && route::invalidates_user_groups(&parts.method, path) {
            self.invalidate(Some(tenant), None);
            tracing::info!(tenant = %self.tenants[tenant].config.name, "user-group write: tenant's cached entries dropped");
        }
        let mut out = Response::new(Full::new(resp.body));
        *out.status_mut() = resp.status;
        copy_end_to_end_headers(&resp.headers, out.headers_mut());
        out.headers_mut().insert(
            &headers::CACHE_STATUS,
            CacheStatus {
                outcome: Outcome::Bypass,
                stored: false,
                ttl: None,
                detail: Some("passthrough"),
            }
            .value(),
        );
        Ok(out)
    }
}
