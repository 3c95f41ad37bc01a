//! TLS on the proxy listener (rustls, ring provider) and mutual TLS.
//!
//! - `[server.tls]` names a PEM certificate chain (leaf first) and its PEM private key; both
//!   are read and checked when the config is validated, so a bad file is refused at start and
//!   on SIGHUP (the old certificate then stays). ALPN offers `h2` and `http/1.1`.
//! - SIGHUP reload ([`crate::Running::reload`]) swaps the [`rustls::ServerConfig`] behind the
//!   [`Acceptor`]: new handshakes get the new certificate; open connections keep the session
//!   they negotiated and finish their requests.
//! - With `client_ca`, clients are asked for a certificate, verified against that CA bundle
//!   (WebPKI rules: chain, validity period, client-auth usage). `client_auth = "required"` (the
//!   default) refuses handshakes without one; `"optional"` lets key-only clients in too.
//! - A verified client certificate is summarised once per connection as a [`PeerCert`] (subject
//!   in RFC 4514 form, SHA-256 of the SubjectPublicKeyInfo) and attached to every request of the
//!   connection as an extension; authentication matches it against `[clients.NAME]`'s
//!   `cert_subject` / `cert_spki_sha256` ([`CertIdentity`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use x509_cert::der::{Decode, Encode};

use crate::config::ClientKey;

/// `[server.tls]`: serve the proxy listener over TLS. Absent (the default): plain HTTP.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CA certificates that issue client certificates. Set: mutual TLS.
    /// Default: unset (no client certificates asked for).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (handshakes without a valid client certificate fail) or
    /// `optional` (a certificate is asked for and verified when sent; clients without one
    /// authenticate with gateway keys). Default: `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether a client certificate is required on the TLS listener.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    #[default]
    Required,
    /// A client certificate is verified when sent, but not required.
    Optional,
}

/// A TLS setting that could not be loaded: which key, which file, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {problem}")]
pub struct TlsError {
    /// The config key (`server.tls.cert`, …).
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// The validated TLS settings: the rustls server config built from the files.
#[derive(Clone)]
pub struct TlsSettings {
    server: Arc<ServerConfig>,
    /// `Some` when client certificates are verified (mutual TLS).
    pub client_auth: Option<ClientAuth>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The rustls server config (a new one per load; reload swaps it in [`Acceptor`]).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |problem: String| TlsError {
        key,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

impl RawTls {
    /// Reads the files and builds the rustls server config.
    ///
    /// # Errors
    /// [`TlsError`] naming the key and file: unreadable, not PEM, no certificate or key, a
    /// key that does not match the certificate, a CA bundle rustls cannot use.
    pub fn load(&self) -> Result<TlsSettings, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs("server.tls.cert", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError {
            key: "server.tls.key",
            path: self.key.clone(),
            problem: e.to_string(),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                key: "server.tls",
                path: self.cert.clone(),
                problem: e.to_string(),
            })?;
        let (builder, client_auth) = match &self.client_ca {
            None => (builder.with_no_client_auth(), None),
            Some(ca) => {
                let ca_err = |problem: String| TlsError {
                    key: "server.tls.client_ca",
                    path: ca.clone(),
                    problem,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs("server.tls.client_ca", ca)? {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| ca_err(e.to_string()))?;
                (
                    builder.with_client_cert_verifier(verifier),
                    Some(self.client_auth),
                )
            }
        };
        let mut server = builder.with_single_cert(chain, key).map_err(|e| TlsError {
            key: "server.tls.key",
            path: self.key.clone(),
            problem: e.to_string(),
        })?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsSettings {
            server: Arc::new(server),
            client_auth,
        })
    }
}

/// The verified client certificate of a connection, as authentication sees it. Attached to
/// each request of the connection as an extension (`req.extensions().get::<PeerCert>()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// Subject distinguished name in RFC 4514 form, as `openssl x509 -noout -subject -nameopt
    /// RFC2253` prints it (e.g. `CN=reporting,O=Acme`).
    pub subject: Arc<str>,
    /// SHA-256 of the DER SubjectPublicKeyInfo (the public-key pin).
    pub spki_sha256: [u8; 32],
}

impl PeerCert {
    /// Summarises a DER certificate; `None` when it does not parse (rustls verified it already,
    /// so that does not happen for a verified peer).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().ok()?;
        Some(PeerCert {
            subject: tbs.subject.to_string().into(),
            spki_sha256: Sha256::digest(&spki).into(),
        })
    }
}

/// How a `[clients.NAME]` entry names its client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// `cert_subject`: the subject DN, normalised to RFC 4514 form.
    Subject(String),
    /// `cert_spki_sha256`: SHA-256 of the certificate's SubjectPublicKeyInfo.
    Spki([u8; 32]),
}

impl CertIdentity {
    /// Parses `cert_subject` (RFC 4514: `CN=reporting,O=Acme`, most specific first, no spaces
    /// around `,`), normalised so attribute names may be in any case or given as OIDs.
    ///
    /// # Errors
    /// A description when the text is not a distinguished name.
    pub fn subject(text: &str) -> Result<Self, String> {
        let name = x509_cert::name::Name::from_str(text.trim())
            .map_err(|e| format!("not an RFC 4514 distinguished name: {e}"))?;
        if name.0.is_empty() {
            return Err("empty distinguished name".into());
        }
        Ok(CertIdentity::Subject(name.to_string()))
    }

    /// Parses `cert_spki_sha256` (64 hex digits).
    ///
    /// # Errors
    /// A description when the text is not 64 hex digits.
    pub fn spki(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim().replace(':', ""))
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or("expected 64 hex digits")?;
        let mut d = [0u8; 32];
        d.copy_from_slice(&bytes);
        Ok(CertIdentity::Spki(d))
    }

    /// Whether the connection's certificate is this one.
    pub fn matches(&self, peer: &PeerCert) -> bool {
        match self {
            CertIdentity::Subject(s) => **s == *peer.subject,
            CertIdentity::Spki(d) => *d == peer.spki_sha256,
        }
    }
}

/// Clients identified by their certificate alone (no gateway key), by SPKI digest and by
/// subject.
#[derive(Clone, Debug, Default)]
pub struct CertClients {
    by_spki: HashMap<[u8; 32], ClientKey>,
    by_subject: HashMap<String, ClientKey>,
}

impl CertClients {
    /// Adds a client; `false` when another client has the same identity.
    pub fn insert(&mut self, id: CertIdentity, client: ClientKey) -> bool {
        match id {
            CertIdentity::Spki(d) => self.by_spki.insert(d, client).is_none(),
            CertIdentity::Subject(s) => self.by_subject.insert(s, client).is_none(),
        }
    }

    /// The client this certificate identifies (SPKI pin first, then subject).
    pub fn find(&self, peer: &PeerCert) -> Option<&ClientKey> {
        self.by_spki
            .get(&peer.spki_sha256)
            .or_else(|| self.by_subject.get(&*peer.subject))
    }

    /// Every certificate-only client, to update in place (tenant renumbering on reload).
    pub fn clients_mut(&mut self) -> impl Iterator<Item = &mut ClientKey> {
        self.by_spki
            .values_mut()
            .chain(self.by_subject.values_mut())
    }

    /// Number of certificate-only clients.
    pub fn len(&self) -> usize {
        self.by_spki.len() + self.by_subject.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The TLS side of the proxy listener: the current server config, swapped on reload.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<ArcSwap<ServerConfig>>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor serving `settings`.
    pub fn new(settings: &TlsSettings) -> Self {
        Acceptor {
            config: Arc::new(ArcSwap::new(settings.server_config())),
        }
    }

    /// New handshakes use `settings` from now on; open connections are not touched.
    pub fn replace(&self, settings: &TlsSettings) {
        self.config.store(settings.server_config());
    }

    /// Runs the server handshake on `tcp`; returns the stream and the verified client
    /// certificate, if one was presented.
    ///
    /// # Errors
    /// The handshake's I/O or TLS error (the caller bounds it with a timeout).
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<PeerCert>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let stream = acceptor.accept(tcp).await?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| PeerCert::from_der(leaf));
        Ok((stream, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_normalised_to_rfc_4514() {
        let a = CertIdentity::subject("CN=reporting,O=Acme").unwrap();
        // Attribute names in any case, or as OIDs, normalise to the short upper-case names.
        assert_eq!(CertIdentity::subject(" cn=reporting,o=Acme ").unwrap(), a);
        assert_eq!(
            CertIdentity::subject("2.5.4.3=reporting,O=Acme").unwrap(),
            a
        );
        // RFC 4514 has no spaces around the separators.
        assert!(CertIdentity::subject("CN=reporting, O=Acme").is_err());
        assert_eq!(a, CertIdentity::Subject("CN=reporting,O=Acme".into()));
        assert!(CertIdentity::subject("not a dn").is_err());
        assert!(CertIdentity::subject("").is_err());
    }

    #[test]
    fn peer_cert_summarises_subject_and_public_key() {
        use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Most significant first, as openssl's `-subj /O=Acme/CN=…` writes it.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(DnType::CommonName, "reporting");
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerCert::from_der(cert.der()).expect("parses");
        assert_eq!(&*peer.subject, "CN=reporting,O=Acme");
        let spki: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
        assert_eq!(peer.spki_sha256, spki);
        assert!(
            CertIdentity::subject("CN=reporting,O=Acme")
                .unwrap()
                .matches(&peer)
        );
        assert!(CertIdentity::Spki(spki).matches(&peer));
        assert!(
            !CertIdentity::subject("CN=reporting")
                .unwrap()
                .matches(&peer)
        );
        assert_eq!(PeerCert::from_der(b"not a certificate"), None);
    }

    #[test]
    fn spki_pins_are_64_hex_digits() {
        let hexed = "ab".repeat(32);
        assert_eq!(
            CertIdentity::spki(&hexed).unwrap(),
            CertIdentity::Spki([0xab; 32])
        );
        assert!(CertIdentity::spki("abcd").is_err());
        assert!(CertIdentity::spki(&"zz".repeat(32)).is_err());
    }
}
