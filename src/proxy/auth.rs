//! Client authentication: gateway keys (by SHA-256 digest, confirmed in constant time), TLS
//! client certificates (the connection's [`PeerCert`], instead of or in addition to a key), route
//! binding, and pass-through tenants' own Zoho tokens with their HMAC cache partition.

use super::*;
use crate::gateway::TenantRef;
use crate::tls::PeerCert;

/// A client authenticated for a route.
pub(super) struct Authenticated<'a> {
    pub(super) client: &'a ClientKey,
    /// The client's tenant.
    pub(super) tenant: TenantRef,
    pub(super) credential: Credential,
    /// HMAC of the client's token, partitioning the cache (pass-through tenants).
    pub(super) partition: Option<[u8; 32]>,
}

impl Gateway {
    /// Identifies the client: its key from `X-Gateway-Key`; else the connection's verified
    /// client certificate (`cert`) when it names a key-less client; else the key from
    /// `Authorization: Zoho-oauthtoken <key>`. A keyed client configured with a certificate must
    /// also have presented that certificate. Checks the client may use `route`; for a
    /// pass-through tenant, takes the client's own Zoho token from `Authorization` and its HMAC
    /// cache partition.
    pub(super) fn authenticate<'c>(
        &self,
        cfg: &'c GatewayConfig,
        h: &RequestHeads<'_>,
        cert: Option<&PeerCert>,
        route: RouteKind,
    ) -> Result<Authenticated<'c>, GatewayError> {
        if h.authorizations > 1 || h.gateway_keys > 1 {
            return Err(GatewayError::InvalidRequest(
                "conflicting credentials: send one Authorization and at most one X-Gateway-Key",
            ));
        }
        let zoho_token = h.authorization.map(|v| {
            let v = v.as_bytes();
            let scheme = b"zoho-oauthtoken ";
            (v.len() > scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme))
                .then(|| v[scheme.len()..].trim_ascii())
                .filter(|t| !t.is_empty())
        });
        let from_header = h.gateway_key.map(HeaderValue::as_bytes);
        // Keys are looked up by SHA-256 digest (the table holds no plain keys; the lookup's
        // timing depends only on the digest) and confirmed with a constant-time comparison.
        let by_key = |presented: &[u8]| {
            let digest = key_digest(presented);
            cfg.clients
                .get(&digest)
                .filter(|c| bool::from(c.digest.ct_eq(&digest)))
                .ok_or(GatewayError::UnknownKey)
        };
        let by_cert = cert.and_then(|c| cfg.client_certs.find(c));
        let (client, via_cert) = match (from_header, by_cert, zoho_token) {
            (Some(key), _, _) => (by_key(key.trim_ascii())?, false),
            (None, Some(client), _) => (client, true),
            (None, None, Some(Some(key))) => (by_key(key)?, false),
            (None, None, Some(None)) => return Err(GatewayError::UnknownKey),
            (None, None, None) => return Err(GatewayError::MissingKey),
        };
        if let Some(required) = &client.cert
            && !cert.is_some_and(|c| required.matches(c))
        {
            return Err(GatewayError::ClientCertificateRequired);
        }
        if client.routes.as_ref().is_some_and(|r| !r.contains(&route)) {
            return Err(GatewayError::NoPermission);
        }
        let tenant = self.tenant_ref(client.tenant);
        let Some(hmac_key) = tenant.config.pass_through_hmac.as_ref() else {
            return Ok(Authenticated {
                client,
                tenant,
                credential: Credential::Managed,
                partition: None,
            });
        };
        // Pass-through: the client was identified by X-Gateway-Key or its certificate; the Zoho
        // token comes from Authorization.
        let token = match (from_header.is_some() || via_cert, zoho_token) {
            (true, Some(Some(token))) => token,
            _ => return Err(GatewayError::MissingZohoToken),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key.expose().as_bytes())
            .map_err(|_| GatewayError::Internal)?;
        mac.update(token);
        let partition: [u8; 32] = mac.finalize().into_bytes().into();
        let mut auth = h
            .authorization
            .cloned()
            .ok_or(GatewayError::MissingZohoToken)?;
        auth.set_sensitive(true);
        Ok(Authenticated {
            client,
            tenant,
            credential: Credential::Client(auth),
            partition: Some(partition),
        })
    }
}
