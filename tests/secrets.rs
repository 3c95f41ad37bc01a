//! Secrets (client secret, refresh token, access tokens, gateway keys, HMAC key) never appear
//! in logs at `trace`, metrics, `Debug` output or error bodies. In its own test binary: the
//! capturing subscriber is thread-scoped, and tracing's per-callsite interest cache is
//! process-wide, so only tests that install their own capturing subscriber run beside it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use zoho_gateway::simulator::SimConfig;

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs_metrics_debug_or_error_bodies() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start_with(scoped_sim(), PASS_THROUGH).await;
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let client_token = fetch_token(&h.sim.base_url(), &id, &secret, &refresh).await;
    let mut bodies = Vec::new();
    bodies.push(h.get(&name_filter("starts_with", "Tier1")).await.body);
    bodies.push(h.get(&name_filter("starts_with", "Tier1")).await.body);
    h.sim().revoke_access_tokens();
    bodies.push(h.get(&name_filter("starts_with", "Tier2")).await.body);
    bodies.push(h.get(&format!("{COUNT}?filters=%7Bbad")).await.body);
    bodies.push(
        h.client
            .get(
                &h.url(&name_filter("starts_with", "Tier1")),
                &[("authorization", "Zoho-oauthtoken wrong")],
            )
            .await
            .body,
    );
    bodies.push(
        h.client
            .get(
                &h.url(&name_filter("starts_with", "Tier1")),
                &[
                    ("x-gateway-key", "pass-client-key"),
                    ("authorization", &format!("Zoho-oauthtoken {client_token}")),
                ],
            )
            .await
            .body,
    );
    h.sim().set_token_endpoint_down(true);
    h.advance(Duration::from_secs(4000));
    bodies.push(h.get(&name_filter("starts_with", "Sales")).await.body);
    let metrics = h.metrics().await;
    let debug = format!(
        "{:?} {:?}",
        h.gw,
        gateway_config(&h.sim.base_url(), PASS_THROUGH)
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("access token refreshed"),
        "trace logs were captured"
    );
    let mut haystacks = vec![("logs", logs), ("metrics", metrics), ("debug", debug)];
    for (i, b) in bodies.iter().enumerate() {
        haystacks.push(("body", format!("{i}: {}", String::from_utf8_lossy(b))));
    }
    let secrets = [
        secret.as_str(),
        refresh.as_str(),
        client_token.as_str(),
        KEY,
        KEY_B,
        "pass-client-key",
        "pass-through-hmac-secret-0123456789abcdef",
    ];
    for (what, text) in &haystacks {
        for s in secrets {
            assert!(
                !text.contains(s),
                "{what} contains a secret ({} chars)",
                s.len()
            );
        }
        // Any access token the simulator issued has this shape.
        let issued = text
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
            .any(|w| {
                let parts: Vec<_> = w.split('.').collect();
                parts.len() == 3
                    && parts[0] == "1000"
                    && parts[1].len() == 32
                    && parts[2].len() == 32
            });
        assert!(!issued, "{what} contains an access token");
    }
}

/// Issue 10, item 6: an upstream connect failure and a token-grant connect failure reach the
/// log with their cause (the refused connection underneath), and no secret does.
#[tokio::test]
async fn connect_failures_are_logged_with_their_cause_and_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sim = zoho_gateway::simulator::Simulator::spawn(SimConfig::default())
        .await
        .unwrap();
    let mut cfg = gateway_config(&sim.base_url(), "");
    cfg.tenants[0].api_base = format!("http://{closed}");
    cfg.tenants[1].token_url = format!("http://{closed}/oauth/v2/token");
    let gw = zoho_gateway::App::spawn(cfg).await.unwrap();
    let client = TestClient::new();
    let get = |key: &'static str| {
        let client = client.clone();
        let url = format!(
            "http://{}{}",
            gw.proxy_addr(),
            name_filter("equal", "Tier1")
        );
        async move {
            client
                .get(
                    &url,
                    &[("authorization", &format!("Zoho-oauthtoken {key}"))],
                )
                .await
        }
    };
    let r = get(KEY).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.header("x-zoho-gateway-error"), Some("upstream_connect"));
    let r = get(KEY_B).await;
    assert_eq!(r.header("x-zoho-gateway-error"), Some("token_unavailable"));
    gw.shutdown().await;
    sim.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |what: &str| {
        logs.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} event in:\n{logs}"))
            .to_owned()
    };
    let attempt = line("upstream attempt failed");
    assert!(attempt.contains("Connection refused"), "{attempt}");
    assert!(
        attempt.contains("tenant=\"a\"") || attempt.contains("tenant=a"),
        "{attempt}"
    );
    let grant = line("access token refresh failed");
    assert!(grant.contains("Connection refused"), "{grant}");
    let (_, secret, refresh) = SimConfig::demo_credentials();
    for s in [secret.as_str(), refresh.as_str(), KEY, KEY_B] {
        assert!(
            !logs.contains(s),
            "the log contains a secret ({} chars)",
            s.len()
        );
    }
}
