//! Process lifecycle of the real binary (`zoho-gateway serve --config FILE`) in front of an
//! in-process simulator: SIGTERM drains in-flight requests and exits 0; SIGHUP reloads the
//! config file without dropping the cache (tenants included), and refuses a broken file.
//!
//! The gateway listens on port 0; its addresses come from its "gateway listening" log line,
//! and reloads are awaited on their log lines, never by sleeping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zoho_crm_simulator::{SimConfig, Simulator};

/// A running `zoho-gateway serve`, killed on drop if it is still running.
struct GatewayProcess {
    /// `None` once handed to a thread waiting for its exit.
    child: Option<Child>,
    pid: u32,
    exited: bool,
    log: mpsc::UnboundedReceiver<String>,
    /// Every line [`GatewayProcess::wait_for_log`] has read so far.
    seen: Vec<String>,
    proxy: SocketAddr,
    admin: SocketAddr,
    dir: PathBuf,
    config: PathBuf,
}

impl GatewayProcess {
    /// Writes `toml` to a fresh temp dir and starts the binary on it.
    async fn start(name: &str, toml: &str) -> Self {
        Self::start_limited(name, toml, None).await
    }

    /// [`GatewayProcess::start`] under `sh -c 'ulimit <ulimit>; exec …'` when `ulimit` is given
    /// (e.g. `-Sn 256`): the binary starts with that open-file limit (`exec` keeps the pid).
    async fn start_limited(name: &str, toml: &str, ulimit: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "zoho-gateway-lifecycle-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gateway.toml");
        std::fs::write(&config, toml).unwrap();
        let bin = env!("CARGO_BIN_EXE_zoho-gateway");
        let mut cmd = match ulimit {
            None => Command::new(bin),
            Some(limits) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit {limits} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "zoho_gateway=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("ZOHO_GATEWAY_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(strip_ansi(&line)).is_err() {
                    break;
                }
            }
        });
        let mut p = GatewayProcess {
            pid: child.id(),
            child: Some(child),
            exited: false,
            log,
            seen: Vec::new(),
            proxy: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            dir,
            config,
        };
        let line = p.wait_for_log("gateway listening").await;
        p.proxy = field(&line, "proxy_addr").parse().unwrap();
        p.admin = field(&line, "admin_addr").parse().unwrap();
        p
    }

    /// Waits (bounded, 10 s) for a log line containing `needle`; returns it.
    async fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, self.log.recv())
                .await
                .unwrap_or_else(|_| panic!("no log line with {needle:?} within 10 s"))
                .unwrap_or_else(|| panic!("the gateway exited before logging {needle:?}"));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn pid(&self) -> String {
        self.pid.to_string()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.proxy, path_and_query)
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("not waited for yet");
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        let status = tokio::time::timeout(bound, waiting)
            .await
            .unwrap_or_else(|_| panic!("the gateway did not exit within {bound:?}"))
            .unwrap()
            .unwrap();
        self.exited = true;
        status
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        } else if !self.exited {
            // A waiting thread owns the child: end it by its pid.
            let _ = Command::new("kill").arg("-KILL").arg(self.pid()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `name=value` from a human-format tracing line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        + name.len()
        + 1;
    line[start..].split_whitespace().next().unwrap()
}

/// `GET /readyz` on a new connection; `None` when the listener is closed or says nothing.
async fn readyz_raw(admin: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        Some(String::from_utf8_lossy(&buf).into_owned()).filter(|t| !t.is_empty())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("readyz exchange within 5 s")
}

/// The `ttl=N` of a `Cache-Status` value.
fn ttl(cache_status: &str) -> u64 {
    cache_status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {cache_status:?}"))
        .parse()
        .unwrap()
}

fn auth() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Zoho-oauthtoken {KEY}"))]
}

async fn get(client: &TestClient, url: &str) -> Resp {
    let headers = auth();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    client.get(url, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_two_hundred_in_flight_requests_then_exits_zero() {
    let sim = Simulator::spawn(SimConfig {
        concurrency_limit: 10_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let toml = gateway_toml(
        &sim.base_url(),
        Extra {
            server: r#"drain_timeout = "10s""#,
            tenant_a: "max_concurrency = 500",
            rest: "",
        },
    );
    let mut gw = GatewayProcess::start("drain", &toml).await;
    let client = TestClient::new();
    // The first request also proves the token is in place before the burst.
    assert_eq!(
        get(&client, &gw.url(&starts_with("Tier", 1))).await.status,
        200
    );
    // Long enough that all 200 are upstream at once even on a loaded machine.
    sim.handle().set_latency(Duration::from_secs(4));

    let mut tasks = Vec::new();
    for i in 1..=200 {
        let (client, url) = (client.clone(), gw.url(&starts_with("T", i)));
        tasks.push(tokio::spawn(async move { get(&client, &url).await }));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        sim.handle().wait_for_in_flight(200),
    )
    .await
    .expect("200 requests in flight upstream");

    let signalled = Instant::now();
    gw.signal("TERM");
    gw.wait_for_log("shutting down").await;
    // Draining: the admin listener stays up until the proxy has drained; `/readyz` says 503.
    let text = readyz_raw(gw.admin)
        .await
        .expect("the admin listener answers while the proxy drains");
    assert!(text.starts_with("HTTP/1.1 503"), "draining but: {text}");

    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.json()["associated_users_count"].is_array());
    }
    let status = gw
        .wait_exit(Duration::from_secs(10) + Duration::from_secs(5))
        .await;
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10) + Duration::from_secs(5));
    assert_eq!(count_calls(&sim.handle()), 201);
    sim.shutdown().await;
}

const TTL_60: &str = "[routes.associated_users_count]\nttl = \"60s\"\nttl_jitter_percent = 0";
const TTL_120: &str = "[routes.associated_users_count]\nttl = \"120s\"\nttl_jitter_percent = 0";

#[tokio::test]
async fn sighup_applies_a_new_ttl_keeps_the_cache_and_refuses_a_broken_file() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let base = sim.base_url();
    let with = |rest: &str| {
        gateway_toml(
            &base,
            Extra {
                rest,
                ..Extra::default()
            },
        )
    };
    let mut gw = GatewayProcess::start("reload", &with(TTL_60)).await;
    let client = TestClient::new();
    let calls = || count_calls(&sim.handle());

    let first = get(&client, &gw.url(&starts_with("Tier", 1))).await;
    assert_eq!(first.status, 200);
    assert!(
        (58..=60).contains(&ttl(first.cache_status())),
        "{}",
        first.cache_status()
    );

    // A new TTL: the cached entry survives, a new entry gets the new TTL.
    std::fs::write(&gw.config, with(TTL_120)).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let hit = get(&client, &gw.url(&starts_with("Tier", 1))).await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.body, first.body);
    assert_eq!(calls(), 1);
    let fresh = get(&client, &gw.url(&starts_with("Sales", 1))).await;
    assert!(
        fresh.cache_status().contains("stored"),
        "{}",
        fresh.cache_status()
    );
    assert!(
        (118..=120).contains(&ttl(fresh.cache_status())),
        "{}",
        fresh.cache_status()
    );
    assert_eq!(calls(), 2);

    // A broken file is refused; the gateway keeps serving with the config in force.
    std::fs::write(&gw.config, with(&TTL_60.replace("\"60s\"", "\"sixty\""))).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reload refused").await;
    let still = get(&client, &gw.url(&starts_with("Sales", 2))).await;
    assert_eq!(still.status, 200);
    assert!(
        (118..=120).contains(&ttl(still.cache_status())),
        "{}",
        still.cache_status()
    );
    let hit = get(&client, &gw.url(&starts_with("Tier", 1))).await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(calls(), 3);

    // Not even valid TOML: refused too.
    std::fs::write(&gw.config, "[server\nlisten = ").unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reload refused").await;
    assert_eq!(
        get(&client, &gw.url(&starts_with("Tier", 1))).await.status,
        200
    );

    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn sighup_renaming_a_tenant_applies_live() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let toml = gateway_toml(&sim.base_url(), Extra::default());
    let mut gw = GatewayProcess::start("tenants", &toml).await;
    let client = TestClient::new();
    let as_b = |key: &'static str| [("x-gateway-key", key)];
    assert_eq!(
        get(&client, &gw.url(&starts_with("Tier", 1))).await.status,
        200
    );

    // Rename tenant b to c (the key moves with it): applied on SIGHUP, no restart.
    let renamed = toml
        .replace("[tenants.b]", "[tenants.c]")
        .replace("tenant = \"b\"", "tenant = \"c\"");
    std::fs::write(&gw.config, renamed).unwrap();
    gw.signal("HUP");
    let line = gw.wait_for_log("configuration reloaded").await;
    assert!(
        line.contains("added") && line.contains("\"c\"") && line.contains("\"b\""),
        "{line}"
    );
    let c = client
        .get(&gw.url(&starts_with("Tier", 1)), &as_b(KEY_B))
        .await;
    assert_eq!(c.status, 200, "the key now acts for tenant c: {:?}", c.body);
    assert!(c.cache_status().contains("fwd=miss"), "c has its own cache");
    assert_eq!(
        get(&client, &gw.url(&starts_with("Tier", 1))).await.status,
        200
    );

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    sim.shutdown().await;
}

#[tokio::test]
async fn sigterm_with_a_hung_request_exits_by_the_drain_deadline() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let toml = gateway_toml(
        &sim.base_url(),
        Extra {
            server: r#"drain_timeout = "1s""#,
            rest: "[upstream]\ntimeout = \"30s\"\nmax_retries = 0",
            ..Extra::default()
        },
    );
    let mut gw = GatewayProcess::start("deadline", &toml).await;
    let client = TestClient::new();
    assert_eq!(
        get(&client, &gw.url(&starts_with("Tier", 1))).await.status,
        200
    );
    sim.handle().hang_next(1);
    let hung = {
        let url = gw.url(&starts_with("Sales", 1));
        tokio::spawn(async move {
            // Answered at the drain deadline with the gateway's 503.
            let headers = auth();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut req = http::Request::get(url.as_str());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            tokio::time::timeout(Duration::from_secs(10), c.request(req))
                .await
                .expect("the hung request ends within 10 s")
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::timeout(Duration::from_secs(5), sim.handle().wait_for_in_flight(1))
        .await
        .expect("the request hangs upstream");

    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "waited for the drain: {took:?}"
    );
    assert!(
        took < Duration::from_secs(1) + Duration::from_secs(3),
        "{took:?}"
    );
    // Just before the drain deadline the waiting request is answered (503, shutting down)
    // rather than losing its connection.
    assert_eq!(hung.await.unwrap().ok(), Some(503));
    sim.shutdown().await;
}

/// `(soft, hard)` open-file limits of a process, from `/proc/PID/limits`.
fn nofile_limits(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// Issue 13, item 7: at start-up the soft open-file limit is raised to the hard one.
#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let toml = gateway_toml(&sim.base_url(), Extra::default());
    let gw = GatewayProcess::start_limited("nofile-raise", &toml, Some("-Sn 256")).await;
    let (soft, hard) = nofile_limits(&gw.pid());
    assert_eq!(soft, hard, "soft limit raised to the hard one");
    assert_ne!(soft, "256");
    drop(gw);
    sim.shutdown().await;
}

/// Issue 13, item 7: with a hard limit of 256, `max_connections` (10 000 by default) is clamped
/// with a warning, and 300 idle connections cannot starve the process of descriptors: the
/// admin listener still answers and `accept` never fails.
#[tokio::test]
async fn max_connections_is_clamped_to_the_open_file_limit() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let toml = gateway_toml(&sim.base_url(), Extra::default());
    let mut gw = GatewayProcess::start_limited("nofile-clamp", &toml, Some("-n 256")).await;
    // Logged before "gateway listening", which `start` waited for.
    let line = gw
        .seen
        .iter()
        .find(|l| l.contains("clamped to fit the open-file limit"))
        .unwrap_or_else(|| panic!("no clamp warning in {:?}", gw.seen))
        .clone();
    let fit: usize = field(&line, "max_connections").parse().unwrap();
    assert!(fit > 0 && fit < 256, "{line}");

    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(gw.proxy).await.unwrap());
    }
    let client = TestClient::new();
    let health = client
        .get(&format!("http://{}/healthz", gw.admin), &[])
        .await;
    assert_eq!(health.status, 200);
    drop(idle);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    let mut accept_failures = 0;
    while let Ok(line) = gw.log.try_recv() {
        accept_failures += usize::from(line.contains("accept failed"));
    }
    assert_eq!(accept_failures, 0, "accept never failed");
    sim.shutdown().await;
}
