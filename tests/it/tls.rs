//! TLS on the proxy listener, with certificates generated at test time (rcgen): the seed request
//! over HTTPS, mutual TLS (a client certificate instead of, or in addition to, a gateway key),
//! and a certificate reload that new connections see while an open connection finishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use zoho_crm_simulator::{SimConfig, Simulator};
use zoho_gateway::{App, Running};

use crate::support::*;

/// A CA and the PEM files of certificates it issued, in a scratch directory.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: its DER, and the PEM files of chain and key.
struct Leaf {
    der: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
    key_der: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex (computed by rcgen, not by the gateway).
    spki_sha256: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "zoho-gateway-tls-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A server certificate for `localhost` / 127.0.0.1.
    fn server(&self, file: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate with subject `CN=<cn>,O=Acme`.
    fn client(&self, file: &str, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Most significant first, as openssl's `-subj /O=Acme/CN=…` writes it.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert: cert_path,
            key: key_path,
            key_der: key.serialize_der(),
            spki_sha256: hex::encode(Sha256::digest(key.subject_public_key_info())),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn tls_toml(cert: &Path, key: &Path, client_ca: Option<(&Path, &str)>) -> String {
    let mut s = format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some((ca, mode)) = client_ca {
        s += &format!(
            "client_ca = {:?}\nclient_auth = \"{mode}\"\n",
            ca.display().to_string()
        );
    }
    s
}

/// A TLS connection to the gateway as hyper's HTTP/1 client: the request sender and the
/// certificate the server presented.
async fn connect(
    addr: std::net::SocketAddr,
    trust: &[CertificateDer<'static>],
    identity: Option<&Leaf>,
) -> std::io::Result<(SendRequest<Full<Bytes>>, CertificateDer<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in trust {
        roots.add(ca.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::try_from(leaf.key_der.clone()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((sender, served))
}

/// GET `path_and_query` on the connection with extra headers: status, `Cache-Status`, body.
async fn get(
    sender: &mut SendRequest<Full<Bytes>>,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String, Bytes), hyper::Error> {
    sender.ready().await?;
    let mut req = Request::get(path_and_query).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("answer within 10 s")?;
    let status = resp.status();
    let cache_status = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, cache_status, body))
}

/// Connects and sends one GET; `Err` when the handshake or the request fails.
async fn one_get(
    addr: std::net::SocketAddr,
    trust: &[CertificateDer<'static>],
    identity: Option<&Leaf>,
    headers: &[(&str, &str)],
) -> Result<StatusCode, String> {
    let (mut sender, _) = connect(addr, trust, identity)
        .await
        .map_err(|e| e.to_string())?;
    get(&mut sender, &name_filter("equal", "Tier1"), headers)
        .await
        .map(|(status, _, _)| status)
        .map_err(|e| e.to_string())
}

fn seed_path() -> String {
    with_filters(SEED_CURL)
}

async fn start(sim_url: &str, server_toml: &str, rest: &str) -> Running {
    App::spawn(gateway_config_with(
        sim_url,
        Extra {
            server: server_toml,
            rest,
            ..Extra::default()
        },
    ))
    .await
    .expect("gateway starts")
}

#[tokio::test]
async fn seed_request_over_https_with_the_generated_ca() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let pki = Pki::new("seed");
    let server = pki.server("server");
    let gw = start(
        &sim.base_url(),
        &tls_toml(&server.cert, &server.key, None),
        "",
    )
    .await;
    let auth = format!("Zoho-oauthtoken {KEY}");
    let (mut conn, served) = connect(gw.proxy_addr(), &[pki.ca_der()], None)
        .await
        .expect("handshake with the generated CA");
    assert_eq!(served, server.der);
    let (status, cache_status, body) = get(&mut conn, &seed_path(), &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(cache_status.contains("fwd=miss"), "{cache_status}");
    let counts: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<_> = counts["associated_users_count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_group"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Tier1", "Tier2"], "{counts}");
    let (status, cache_status, _) = get(&mut conn, &seed_path(), &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status.contains("hit"), "{cache_status}");
    assert_eq!(count_calls(&sim.handle()), 1);

    // A client that does not trust the CA, and a plain-HTTP client, get nothing.
    let other = Pki::new("untrusted");
    assert!(
        connect(gw.proxy_addr(), &[other.ca_der()], None)
            .await
            .is_err()
    );
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        plain.request(
            Request::get(format!("http://{}{}", gw.proxy_addr(), seed_path()))
                .header("authorization", &auth)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("plain HTTP is answered or closed within 10 s");
    assert!(r.is_err(), "plain HTTP on the TLS port: {r:?}");
    assert_eq!(count_calls(&sim.handle()), 1);
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn client_certificates_identify_clients_instead_of_or_with_a_key() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let pki = Pki::new("mtls");
    let server = pki.server("server");
    let reporting = pki.client("reporting", "reporting");
    let billing = pki.client("billing", "billing");
    let stranger_ca = Pki::new("stranger");
    let stranger = stranger_ca.client("stranger", "reporting");
    let rest = format!(
        r#"
        [clients.reporting]
        tenant = "a"
        cert_subject = "CN=reporting,O=Acme"
        [clients.billing]
        tenant = "a"
        key = "billing-key"
        cert_spki_sha256 = "{}"
        "#,
        billing.spki_sha256
    );
    let tls = tls_toml(&server.cert, &server.key, Some((&pki.ca_pem(), "required")));
    let gw = start(&sim.base_url(), &tls, &rest).await;
    let addr = gw.proxy_addr();
    let ca = [pki.ca_der()];

    // The certificate alone identifies `reporting`.
    assert_eq!(
        one_get(addr, &ca, Some(&reporting), &[]).await,
        Ok(StatusCode::OK)
    );
    // `billing` needs its key and its certificate.
    let billing_key = [("x-gateway-key", "billing-key")];
    assert_eq!(
        one_get(addr, &ca, Some(&billing), &billing_key).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        one_get(addr, &ca, Some(&reporting), &billing_key).await,
        Ok(StatusCode::UNAUTHORIZED),
        "billing's key with another certificate"
    );
    // `billing`'s certificate without its key names no key-less client.
    assert_eq!(
        one_get(addr, &ca, Some(&billing), &[]).await,
        Ok(StatusCode::UNAUTHORIZED)
    );
    // Required: no certificate, or one from another CA, and the handshake is refused.
    let key_a = format!("Zoho-oauthtoken {KEY}");
    let r = one_get(addr, &ca, None, &[("authorization", &key_a)]).await;
    assert!(r.is_err(), "no client certificate: {r:?}");
    let r = one_get(addr, &ca, Some(&stranger), &[]).await;
    assert!(r.is_err(), "certificate from another CA: {r:?}");
    // Every accepted request was one miss then hits: one upstream call.
    assert_eq!(count_calls(&sim.handle()), 1);
    gw.shutdown().await;

    // Optional: key-only clients get in without a certificate; nobody gets in with neither.
    let tls = tls_toml(&server.cert, &server.key, Some((&pki.ca_pem(), "optional")));
    let gw = start(&sim.base_url(), &tls, &rest).await;
    let addr = gw.proxy_addr();
    assert_eq!(
        one_get(addr, &ca, None, &[("authorization", &key_a)]).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        one_get(addr, &ca, None, &[]).await,
        Ok(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        one_get(addr, &ca, Some(&reporting), &[]).await,
        Ok(StatusCode::OK)
    );
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_while_open_ones_finish() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let old_pki = Pki::new("old");
    let new_pki = Pki::new("new");
    let old = old_pki.server("server");
    let new = new_pki.server("server");
    let trust = [old_pki.ca_der(), new_pki.ca_der()];
    let gw = start(&sim.base_url(), &tls_toml(&old.cert, &old.key, None), "").await;
    let auth = format!("Zoho-oauthtoken {KEY}");

    let (mut open, served) = connect(gw.proxy_addr(), &trust, None).await.unwrap();
    assert_eq!(served, old.der);
    // A request in flight on the open connection while the certificate changes.
    sim.handle().set_latency(Duration::from_millis(300));
    let request = Request::get(name_filter("equal", "Tier1"))
        .header("host", "localhost")
        .header("authorization", &auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let in_flight = tokio::spawn(open.send_request(request));
    let sim_handle = sim.handle();
    wait_until("the request reached the simulator", || {
        count_calls(&sim_handle) == 1
    })
    .await;

    // The same reload SIGHUP runs: a new config with the new certificate files.
    let reloaded = gateway_config_with(
        &sim.base_url(),
        Extra {
            server: &tls_toml(&new.cert, &new.key, None),
            ..Extra::default()
        },
    );
    gw.reload(reloaded).expect("reload accepted");

    let (mut fresh, served) = connect(gw.proxy_addr(), &trust, None).await.unwrap();
    assert_eq!(served, new.der, "a new connection gets the new certificate");
    let (status, _, _) = get(&mut fresh, &seed_path(), &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let resp = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request answered within 10 s")
        .unwrap()
        .expect("in-flight request finishes");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    // The open connection goes on with its session: another request on it.
    let (status, cache_status, _) = get(
        &mut open,
        &name_filter("equal", "Tier1"),
        &[("authorization", &auth)],
    )
    .await
    .expect("the open connection still works");
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status.contains("hit"), "{cache_status}");

    // A client trusting only the old CA can no longer connect.
    assert!(
        connect(gw.proxy_addr(), &[old_pki.ca_der()], None)
            .await
            .is_err()
    );
    gw.shutdown().await;
    sim.shutdown().await;
}

#[test]
fn bad_tls_files_are_refused_naming_the_key() {
    let pki = Pki::new("bad");
    let server = pki.server("server");
    let other = pki.server("other");
    let config = |server: &str, rest: &str| {
        zoho_gateway::config::RawConfig::from_toml_str(&gateway_toml(
            "http://127.0.0.1:1",
            Extra {
                server,
                rest,
                ..Extra::default()
            },
        ))
        .unwrap()
        .validate()
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let missing = pki.dir.join("missing.pem");
    let err = config(&tls_toml(&missing, &server.key, None), "").unwrap_err();
    assert!(err.contains("server.tls.cert"), "{err}");
    // A key that is not the certificate's.
    let err = config(&tls_toml(&server.cert, &other.key, None), "").unwrap_err();
    assert!(err.contains("server.tls.key"), "{err}");
    // A certificate identity without a client CA could never match.
    let cert_client = "[clients.c]\ntenant = \"a\"\ncert_subject = \"CN=c\"\n";
    let err = config(&tls_toml(&server.cert, &server.key, None), cert_client).unwrap_err();
    assert!(
        err.contains("clients.c") && err.contains("client_ca"),
        "{err}"
    );
    let mutual = tls_toml(&server.cert, &server.key, Some((&pki.ca_pem(), "required")));
    assert_eq!(config(&mutual, cert_client), Ok(()));
    let err = config(
        &mutual,
        "[clients.c]\ntenant = \"a\"\ncert_subject = \"CN=c, O=x\"\n",
    )
    .unwrap_err();
    assert!(err.contains("clients.c.cert_subject"), "{err}");
    assert_eq!(
        config(&tls_toml(&server.cert, &server.key, None), ""),
        Ok(())
    );
}
