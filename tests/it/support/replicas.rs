//! A fleet in one process (issue 12): N gateway replicas, each on its own thread with its own
//! tokio runtime, sharing one simulator and one private `redis-server`.
//!
//! [`Replica::kill`] drops the replica's runtime without a drain: its sockets close and its
//! tasks are dropped unpolled, so whatever it holds in Redis (slots, locks, leases) stays until
//! it lapses, as when a process dies. [`Replica::stop`] is the graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use zoho_crm_simulator::{RunningSimulator, SimConfig, Simulator};
use zoho_gateway::App;
use zoho_gateway::config::{GatewayConfig, RawConfig};
use zoho_gateway::fleet::Fleet;
use zoho_gateway::proxy::Gateway;

use super::redis_server::RedisServer;
use super::{KEY, Metrics, Resp, TestClient};

/// How a replica's thread ends.
enum End {
    /// Drain as `Running::shutdown` does.
    Stop,
    /// Drop the runtime at once.
    Kill,
}

/// One gateway replica on its own thread and runtime.
pub struct Replica {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub gateway: Arc<Gateway>,
    end: Option<oneshot::Sender<End>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Starts a replica with `config` and waits until it listens and its fleet tier is
    /// connected (bounded: 5 s).
    pub async fn start(config: GatewayConfig) -> Self {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (end_tx, end_rx) = oneshot::channel::<End>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("replica runtime");
            let running = rt.block_on(App::spawn(config)).expect("replica starts");
            let _ = ready_tx.send((
                running.proxy_addr(),
                running.admin_addr(),
                running.gateway().clone(),
            ));
            match rt.block_on(end_rx).unwrap_or(End::Kill) {
                End::Stop => rt.block_on(running.shutdown()),
                End::Kill => {
                    drop(running);
                    rt.shutdown_background();
                }
            }
        });
        let (proxy, admin, gateway) = tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("replica ready within 10 s")
            .expect("replica thread alive");
        let replica = Replica {
            proxy,
            admin,
            gateway,
            end: Some(end_tx),
            thread: Some(thread),
        };
        assert!(
            replica.fleet().wait_available(Duration::from_secs(5)).await,
            "replica connects to redis"
        );
        replica
    }

    /// Its fleet tier.
    pub fn fleet(&self) -> &Arc<Fleet> {
        self.gateway.fleet().expect("replica has a fleet tier")
    }

    /// `http://PROXY{path_and_query}`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.proxy)
    }

    /// GET through this replica with the tenant's client key.
    pub async fn get(&self, client: &TestClient, path_and_query: impl AsRef<str>) -> Resp {
        let auth = format!("Zoho-oauthtoken {KEY}");
        client
            .get(
                &self.url(path_and_query.as_ref()),
                &[("authorization", &auth)],
            )
            .await
    }

    /// Its metrics, read from its registry.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(String::from_utf8(self.gateway.metrics().render()).unwrap())
    }

    fn end(&mut self, how: End) -> Option<std::thread::JoinHandle<()>> {
        if let Some(end) = self.end.take() {
            let _ = end.send(how);
        }
        self.thread.take()
    }

    /// Graceful shutdown (drain), waited for.
    pub async fn stop(mut self) {
        if let Some(thread) = self.end(End::Stop) {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Abrupt death: the runtime is dropped without a drain, waited for.
    pub async fn kill(mut self) {
        if let Some(thread) = self.end(End::Kill) {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A test that panicked: kill without waiting.
        let _ = self.end(End::Kill);
    }
}

/// One simulator, one `redis-server` and N replicas of one tenant (`a`, client key [`KEY`]).
pub struct Fleet3 {
    pub redis: RedisServer,
    pub sim: RunningSimulator,
    pub replicas: Vec<Replica>,
    pub client: TestClient,
    tenant: String,
    extra: String,
}

impl Fleet3 {
    /// Starts `n` replicas, or `None` when `redis-server` is missing (the test is skipped; see
    /// [`RedisServer::start`]). `tenant` and `extra` go into each replica's config as
    /// [`replica_toml`] says.
    pub async fn start(n: usize, sim: SimConfig, tenant: &str, extra: &str) -> Option<Self> {
        let redis = RedisServer::start().await?;
        let sim = Simulator::spawn(sim).await.expect("simulator starts");
        let mut fleet = Fleet3 {
            redis,
            sim,
            replicas: Vec::new(),
            client: TestClient::new(),
            tenant: tenant.to_owned(),
            extra: extra.to_owned(),
        };
        for _ in 0..n {
            let r = fleet.spawn().await;
            fleet.replicas.push(r);
        }
        Some(fleet)
    }

    /// This fleet's replica config.
    pub fn config(&self) -> GatewayConfig {
        RawConfig::from_toml_str(&replica_toml(
            &self.sim.base_url(),
            &self.redis.url(),
            &self.tenant,
            &self.extra,
        ))
        .expect("replica config parses")
        .validate()
        .expect("replica config validates")
    }

    /// Starts one more replica of this fleet (not added to `replicas`).
    pub async fn spawn(&self) -> Replica {
        Replica::start(self.config()).await
    }
}

/// The seal key every replica shares.
pub const SEAL_KEY: &str = "fleet-replicas-seal-key-0123456789abcdef";

/// A replica's config: listeners on free ports, one tenant `a` on the simulator (its demo
/// credentials; `tenant` adds keys to `[tenants.a]`), the client key [`KEY`], the
/// write-through allowlist of the user-group writes, an admin token, and `[redis]` at
/// `redis_url` with short timeouts (`extra` adds sections, and keys to `[redis]` when it starts
/// with them).
pub fn replica_toml(sim_url: &str, redis_url: &str, tenant: &str, extra: &str) -> String {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        drain_timeout = "2s"
        [logging]
        filter = "warn"
        [admin]
        token = "admin-test-token"
        [tenants.a]
        api_base = "{sim_url}"
        accounts_url = "{sim_url}"
        client_id = "{id}"
        client_secret = "{secret}"
        refresh_token = "{refresh}"
        {tenant}
        [clients.a]
        tenant = "a"
        key = "{KEY}"
        [routes.passthrough]
        allow = [
          "POST /crm/{{version}}/settings/user_groups",
          "DELETE /crm/{{version}}/settings/user_groups/{{id}}",
        ]
        [redis]
        url = "{redis_url}"
        token_encryption_key = "{SEAL_KEY}"
        connect_timeout = "1s"
        command_timeout = "300ms"
        retry_interval = "100ms"
        {extra}
        "#
    )
}
