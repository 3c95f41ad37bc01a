//! The simulator's public API as the gateway's tests and CLI use it, from
//! outside the crate: every name the brief fixes must stay public.

use std::time::Duration;

use zoho_crm_simulator::filters::{self, Filter};
use zoho_crm_simulator::{
    Dataset, NoMatch, RunningSimulator, SimClient, SimConfig, SimError, SimHandle, SimRefreshToken,
    SimRoute, Simulator, generate_dataset,
};

#[tokio::test]
async fn public_api_is_usable_from_outside() {
    let (client_id, client_secret, refresh) = SimConfig::demo_credentials();
    let cfg = SimConfig {
        clients: vec![SimClient {
            client_id,
            client_secret,
            refresh_tokens: vec![SimRefreshToken {
                token: refresh,
                scopes: vec!["ZohoCRM.settings.user_groups.READ".into()],
                user_active: true,
                user_name: "Outside".into(),
            }],
        }],
        token_ttl: Duration::from_secs(60),
        no_match: NoMatch::EmptyList,
        ..SimConfig::default()
    };
    let sim: RunningSimulator = Simulator::spawn(cfg).await.unwrap();
    assert!(sim.base_url().ends_with(&sim.addr().port().to_string()));
    let h: SimHandle = sim.handle();
    h.set_latency(Duration::ZERO);
    h.fail_next(0, 500);
    h.fail_next_with_retry_after(0, 429, 1);
    h.reset_next(0);
    h.hang_next(0);
    h.set_token_endpoint_down(false);
    h.revoke_access_tokens();
    h.reset_counters();
    assert_eq!(h.calls(SimRoute::Token), 0);
    assert_eq!(h.query_calls(SimRoute::AssociatedUsersCount, ""), 0);
    assert_eq!(h.total_api_calls(), 0);
    assert_eq!((h.max_concurrent(), h.in_flight()), (0, 0));
    assert_eq!((h.token_grants(), h.live_tokens()), (0, 0));
    assert_eq!(h.dataset_groups(), Dataset::bundled().groups.len());
    for r in [SimRoute::Control, SimRoute::Unknown] {
        assert!(!r.as_str().is_empty());
    }
    sim.shutdown().await;

    let f: Filter =
        filters::parse(r#"{"field":{"api_name":"name"},"comparator":"equal","value":"Tier1"}"#)
            .unwrap();
    assert!(f.matches("Tier1", "", true));
    assert!(
        generate_dataset(10, 10, 1)
            .groups
            .iter()
            .any(|g| g.name == "Tier1")
    );

    let busy = Simulator::spawn(SimConfig::default()).await.unwrap();
    let err = Simulator::spawn(SimConfig {
        listen: busy.addr(),
        ..SimConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, SimError::Bind { .. }));
    busy.shutdown().await;
}
