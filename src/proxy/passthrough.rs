//! Forwarding without the cache: uncacheable queries of cached routes (bypass) and
//! allowlisted routes (pass-through), with hop-by-hop and per-user headers stripped.

use super::*;
use crate::headers::copy_end_to_end_headers;
use respond::forwarded_response;

impl Gateway {
    /// Forwards a cached route's request the gateway will not cache (no single-flight: its
    /// meaning is not known for sure, or the client said `no-store`).
    pub(super) async fn bypass(
        &self,
        tenant: TenantId,
        route: RouteId,
        call: &CallCtx,
        path: &str,
        raw_query: &str,
        phase: CachePhase,
    ) -> Result<Response<Body>, GatewayError> {
        self.reserve_gate(tenant, call)?;
        let resp = self
            .call_upstream(
                tenant,
                call,
                RouteKind::Cached(route),
                Method::GET,
                &upstream_path(path, raw_query),
                None,
            )
            .await?;
        Ok(forwarded_response(resp, phase))
    }

    /// An allowlisted route: forwarded with the tenant's token, never cached. A successful
    /// write drops the tenant's cached answers of the write's invalidation group.
    pub(super) async fn passthrough<B>(
        &self,
        cfg: &GatewayConfig,
        req: Request<B>,
        tenant: TenantId,
        call: CallCtx,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.reserve_gate(tenant, &call)?;
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
        if resp.status.is_success()
            && let Some(group) = route::write_invalidates(&parts.method, path)
        {
            self.invalidate_group_everywhere(tenant, &group).await;
            tracing::info!(tenant = %self.tenant(tenant).config.name, group = %group, "write: tenant's cached entries of the group dropped");
        }
        let mut out = Response::new(Full::new(resp.body));
        *out.status_mut() = resp.status;
        copy_end_to_end_headers(&resp.headers, out.headers_mut());
        out.headers_mut().insert(
            &headers::CACHE_STATUS,
            CachePhase::Bypass(BypassReason::Passthrough).cache_status(false, None, None),
        );
        Ok(out)
    }
}
