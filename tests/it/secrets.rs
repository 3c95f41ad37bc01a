//! Secrets (client secret, refresh token, access tokens, gateway keys, HMAC key, admin token)
//! never appear in logs at `trace`, metrics, `Debug` output, error bodies or `check-config`.
//!
//! The log check runs in a process of its own: the capturing subscriber is thread-scoped, and
//! tracing's per-callsite interest cache is process-wide, so no other test may run beside it.
//! [`secrets_never_appear_in_logs_metrics_debug_or_error_bodies`] therefore runs this test
//! binary again with only [`isolated_log_check`] selected and checks that it passed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use zoho_crm_simulator::SimConfig;
use zoho_gateway::demo;

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

/// Set in the child process that runs [`isolated_log_check`].
const ISOLATED: &str = "IT_ISOLATED_LOG_CHECK";

#[test]
fn secrets_never_appear_in_logs_metrics_debug_or_error_bodies() {
    let name = "secrets::isolated_log_check";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ISOLATED, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(
        stdout.contains(&format!("test {name} ... ok")) && stdout.contains("1 passed"),
        "the isolated check did not run: {report}"
    );
}

/// The log check itself; run alone in its own process by the test above (ignored otherwise,
/// and a no-op when run in a shared process by `--ignored`).
#[tokio::test]
#[ignore = "runs in a process of its own, started by secrets_never_appear_in_logs_metrics_debug_or_error_bodies"]
async fn isolated_log_check() {
    if std::env::var_os(ISOLATED).is_none() {
        eprintln!("isolated_log_check: run only by its parent test, in a process of its own");
        return;
    }
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
    let metrics = h.metrics().await.text().to_owned();
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

/// `check-config` prints no secret: client secret, refresh token, client key, admin token.
#[test]
fn check_config_redacts_every_secret() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zoho-gateway"))
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[redacted]"));
    let (_, secret, refresh) = SimConfig::demo_credentials();
    for s in [
        secret.as_str(),
        refresh.as_str(),
        demo::DEMO_CLIENT_KEY,
        "demo-admin-token",
    ] {
        assert!(!text.contains(s), "check-config printed a secret");
    }
}
