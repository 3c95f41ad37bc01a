//! The README's "run it" path: the embedded demo config, the simulator and the gateway wired
//! together, and the seed's sample request answered twice, the second time from cache.

use crate::support::{SEED_CURL, TestClient, count_calls, with_filters};
use zoho_crm_simulator::{SimConfig, SimRoute};
use zoho_gateway::config::RawConfig;
use zoho_gateway::demo;

#[tokio::test]
async fn demo_serves_the_seed_sample_then_from_cache() {
    let mut raw = RawConfig::from_toml_str(demo::DEMO_CONFIG).unwrap();
    // Same config, but free ports so tests can run beside a running demo.
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.admin_listen = "127.0.0.1:0".into();
    let d = demo::start(raw).await.expect("demo starts");
    let banner = d.banner();
    assert!(banner.contains(demo::DEMO_CLIENT_KEY));
    assert!(banner.contains(SEED_CURL));

    let client = TestClient::new();
    let url = format!(
        "http://{}{}",
        d.gateway.proxy_addr(),
        with_filters(SEED_CURL)
    );
    let auth = format!("Zoho-oauthtoken {}", demo::DEMO_CLIENT_KEY);
    let first = client.get(&url, &[("authorization", &auth)]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let second = client.get(&url, &[("authorization", &auth)]).await;
    assert_eq!(second.body, first.body);
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(count_calls(&d.simulator.handle()), 1);
    d.shutdown().await;
}

#[tokio::test]
async fn demo_exercises_hot_reads_and_reports_credits_saved_by_route() {
    let mut raw = RawConfig::from_toml_str(demo::DEMO_CONFIG).unwrap();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.admin_listen = "127.0.0.1:0".into();
    let d = demo::start(raw).await.expect("demo starts");
    let savings = d.exercise().await.expect("hot reads answered");
    let sim = d.simulator.handle();
    // Each of the six questions cost one upstream call; its second spelling was a hit.
    for route in [
        SimRoute::ListModules,
        SimRoute::ListFields,
        SimRoute::ListUsers,
        SimRoute::ListRecords,
        SimRoute::SearchRecords,
        SimRoute::AssociatedUsersCount,
    ] {
        assert_eq!(sim.calls(route), 1, "{route:?}");
    }
    assert_eq!(savings.len(), 6, "{savings:?}");
    for s in &savings {
        assert_eq!((s.requests, s.without_upstream), (2, 1), "{s:?}");
        assert_eq!(s.credits_saved, 1, "{s:?}");
    }
    let report = d.savings_report(&savings);
    assert!(
        report.contains("/crm/{version}/{module}/search"),
        "{report}"
    );
    assert!(report.contains("6 Zoho credits saved"), "{report}");
    d.shutdown().await;
}

#[test]
fn demo_config_carries_the_simulators_demo_credentials() {
    let raw = RawConfig::from_toml_str(demo::DEMO_CONFIG).unwrap();
    let t = &raw.tenants["demo"];
    let (id, secret, refresh) = SimConfig::demo_credentials();
    assert_eq!(t.client_id, id);
    let literal = |s: &zoho_gateway::config::SecretSource| match s {
        zoho_gateway::config::SecretSource::Literal(v) => v.clone(),
        _ => panic!("demo secrets are literal"),
    };
    assert_eq!(literal(t.client_secret.as_ref().unwrap()), secret);
    assert_eq!(literal(t.refresh_token.as_ref().unwrap()), refresh);
}

/// `simulate --config FILE` runs the simulator with the settings of a `config/simulator.toml`
/// style file (it could not be loaded before: `simulate` took only `--listen`); `--listen`
/// overrides the file's address.
#[tokio::test]
async fn simulate_takes_a_config_file() {
    let dir = std::env::temp_dir().join(format!("zoho-sim-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("simulator.toml");
    let shipped = include_str!("../../config/simulator.toml");
    assert!(shipped.contains("token_ttl = \"3600s\""));
    std::fs::write(
        &file,
        shipped.replace("token_ttl = \"3600s\"", "token_ttl = \"120s\""),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zoho-gateway"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    });
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), first)
        .await
        .expect("the simulator prints its address within 10 s")
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("Zoho CRM simulator on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let (id, secret, refresh) = zoho_crm_simulator::SimConfig::demo_credentials();
    let r = TestClient::new()
        .send(
            "POST",
            &format!("{base}/oauth/v2/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            bytes::Bytes::from(format!(
                "grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token={refresh}"
            )),
        )
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        r.json()["expires_in"],
        120,
        "the file's token_ttl: {:?}",
        r.body
    );
}
