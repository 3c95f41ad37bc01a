//! Client authentication: gateway keys (by SHA-256 digest, confirmed in constant time), route
//! binding, and pass-through tenants' own Zoho tokens with their HMAC cache partition.

use super::*;

/// A client authenticated for a route.
pub(super) struct Authenticated<'a> {
    pub(super) client: &'a ClientKey,
    pub(super) credential: Credential,
    /// HMAC of the client's token, partitioning the cache (pass-through tenants).
    pub(super) partition: Option<[u8; 32]>,
}

impl Gateway {
    /// Identifies the client: its key from `X-Gateway-Key`, else from `Authorization:
    /// Zoho-oauthtoken <key>`; checks the key may use `route`; for a pass-through tenant, takes
    /// the client's own Zoho token from `Authorization` and its HMAC cache partition.
    pub(super) fn authenticate<'c>(
        &self,
        cfg: &'c GatewayConfig,
        h: &HeaderMap,
        route: RouteKind,
    ) -> Result<Authenticated<'c>, GatewayError> {
        if h.get_all(header::AUTHORIZATION).iter().count() > 1
            || h.get_all(&headers::GATEWAY_KEY).iter().count() > 1
        {
            return Err(GatewayError::InvalidRequest(
                "conflicting credentials: send one Authorization and at most one X-Gateway-Key",
            ));
        }
        let zoho_token = h.get(header::AUTHORIZATION).map(|v| {
            let v = v.as_bytes();
            let scheme = b"zoho-oauthtoken ";
            (v.len() > scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme))
                .then(|| v[scheme.len()..].trim_ascii())
                .filter(|t| !t.is_empty())
        });
        let from_header = h.get(&headers::GATEWAY_KEY).map(HeaderValue::as_bytes);
        let presented = match (from_header, zoho_token) {
            (Some(key), _) => key.trim_ascii(),
            (None, Some(Some(key))) => key,
            (None, Some(None)) => return Err(GatewayError::UnknownKey),
            (None, None) => return Err(GatewayError::MissingKey),
        };
        // Keys are looked up by SHA-256 digest (the table holds no plain keys; the lookup's
        // timing depends only on the digest) and confirmed with a constant-time comparison.
        let digest = key_digest(presented);
        let client = cfg
            .clients
            .get(&digest)
            .filter(|c| bool::from(c.digest.ct_eq(&digest)))
            .ok_or(GatewayError::UnknownKey)?;
        if client.routes.as_ref().is_some_and(|r| !r.contains(&route)) {
            return Err(GatewayError::NoPermission);
        }
        let tenant = self.tenant(client.tenant);
        let Some(hmac_key) = tenant.config.pass_through_hmac.as_ref() else {
            return Ok(Authenticated {
                client,
                credential: Credential::Managed,
                partition: None,
            });
        };
        // Pass-through: the key came from X-Gateway-Key, the Zoho token from Authorization.
        let token = match (from_header, zoho_token) {
            (Some(_), Some(Some(token))) => token,
            _ => return Err(GatewayError::MissingZohoToken),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key.expose().as_bytes())
            .map_err(|_| GatewayError::Internal)?;
        mac.update(token);
        let partition: [u8; 32] = mac.finalize().into_bytes().into();
        let mut auth = h
            .get(header::AUTHORIZATION)
            .cloned()
            .ok_or(GatewayError::MissingZohoToken)?;
        auth.set_sensitive(true);
        Ok(Authenticated {
            client,
            credential: Credential::Client(auth),
            partition: Some(partition),
        })
    }
}
