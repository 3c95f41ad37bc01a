//! What the benches share: a gateway config in front of a simulator at `url`, with the
//! simulator's demo credentials, one tenant `bench`, the client key `bench-key`, the count
//! route cached for an hour, listeners on free loopback ports and quiet logs. `cache` and
//! `tenant` add keys to `[cache]` and `[tenants.bench]` (e.g. `max_bytes = 1048576`).

use zoho_crm_simulator::SimConfig;
use zoho_gateway::config::{GatewayConfig, RawConfig};

/// The client key of [`config`]'s one client.
#[allow(dead_code)] // not every bench sends requests with it
pub const KEY: &str = "bench-key";

/// The validated config (panics on a bad `cache` / `tenant` fragment: a bench bug).
pub fn config(url: &str, cache: &str, tenant: &str) -> GatewayConfig {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [logging]
        filter = "warn"
        [cache]
        {cache}
        [tenants.bench]
        {tenant}
        api_base = "{url}"
        accounts_url = "{url}"
        client_id = "{id}"
        client_secret = "{secret}"
        refresh_token = "{refresh}"
        [clients.bench]
        tenant = "bench"
        key = "{KEY}"
        [routes.associated_users_count]
        ttl = "1h"
        "#
    );
    RawConfig::from_toml_str(&toml)
        .expect("bench config parses")
        .validate()
        .expect("bench config validates")
}
