//! TLS for both ports: the member's certificate and key, and the CA that client certificates
//! must be signed by (optional on the public port, required on the peer port), read from PEM
//! files and read again when they change.
//!
//! [`ServerTls::load`] reads the files at start: a missing or unreadable file, a key that does
//! not match the certificate, or a CA file without a certificate stops the start with the
//! file named. [`watch`] then looks at the files' modification times every few seconds and on
//! SIGHUP; when one changed it loads all of them again and, if they make a valid configuration,
//! new connections use it from then on (connections already open keep theirs). A set that does
//! not load is logged, once per change, and the previous one stays in use, as nginx and etcd do
//! when a reload fails.
//!
//! On the peer port ([`PeerTls`]) both ends present a certificate signed by the peer CA and
//! check the other's: the server with rustls' client verifier, the client with its server
//! verifier (so a member's certificate must name the host of its peer address). ALPN tells a
//! peer stream ([`PEER_ALPN`]) from HTTP on the same port. The client side's key and trust
//! roots are looked up per handshake ([`PeerKeys`]), so one rustls configuration, shared by the
//! streams and the HTTP client, follows the files as they change.
//!
//! The crypto is rustls with the *ring* provider; TLS 1.2 and 1.3, ALPN `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// The ALPN protocol of a peer stream over TLS; HTTP on the peer port offers `http/1.1`.
pub const PEER_ALPN: &[u8] = b"gridraft-peer/1";
const HTTP_ALPN: &[u8] = b"http/1.1";

/// How often [`watch`] looks at the files' modification times.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("TLS configuration from {cert} and {key}: {detail}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

fn file_error(path: &Path, detail: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// The crypto provider of every TLS configuration gridraft builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// The CAs of a PEM file, as trust roots.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// The files' modification times, to tell when one changed.
    fn stamp(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// A server configuration from the files as they are now, offering `http/1.1`.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        self.server_config_with(&[HTTP_ALPN])
    }

    fn server_config_with(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let config_error = |detail: String| TlsError::Config {
            cert: self.cert.clone(),
            key: self.key.clone(),
            detail,
        };
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = Arc::new(read_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| file_error(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_error(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The peer client's key and trust roots from the files as they are now.
    fn peer_keys(&self) -> Result<PeerKeys, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| file_error(&self.key, e))?;
        let key = CertifiedKey::new(certs, signing);
        key.keys_match().map_err(|e| TlsError::Config {
            cert: self.cert.clone(),
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        let ca = self.client_ca.as_ref().expect("the peer port has a CA");
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                .build()
                .map_err(|e| file_error(ca, e))?;
        Ok(PeerKeys {
            key: Arc::new(key),
            verifier,
        })
    }
}

/// A client configuration trusting the CAs in `ca`, presenting `identity` (certificate and key
/// files) when given: `gridraft probe` against an HTTPS port.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(ca, e))?
        .with_root_certificates(read_roots(ca)?);
    match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| file_error(cert, e)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A configuration built from [`TlsFiles`], built again when they change.
struct Reloading<T> {
    /// Names the configuration in logs ("public port", "peer port").
    what: &'static str,
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<T, TlsError>,
    current: RwLock<Loaded<T>>,
}

struct Loaded<T> {
    value: T,
    stamp: Vec<Option<SystemTime>>,
    /// The stamp of a change that did not load (logged once).
    refused: Option<Vec<Option<SystemTime>>>,
}

impl<T: Clone> Reloading<T> {
    fn load(
        what: &'static str,
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let value = build(&files)?;
        Ok(Reloading {
            what,
            files,
            build,
            current: RwLock::new(Loaded {
                value,
                stamp,
                refused: None,
            }),
        })
    }

    fn get(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .value
            .clone()
    }

    /// Builds the configuration again if a file changed since the last load (or if `force`);
    /// returns whether it was replaced.
    fn reload(&self, force: bool) -> bool {
        let stamp = self.files.stamp();
        {
            let loaded = self.current.read().unwrap_or_else(|e| e.into_inner());
            let seen = loaded.stamp == stamp || loaded.refused.as_ref() == Some(&stamp);
            if seen && !force {
                return false;
            }
        }
        let outcome = (self.build)(&self.files);
        let mut loaded = self.current.write().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(value) => {
                loaded.value = value;
                loaded.stamp = stamp;
                loaded.refused = None;
                tracing::info!(cert = %self.files.cert.display(), what = self.what, "TLS certificate loaded again");
                true
            }
            Err(e) => {
                if loaded.refused.as_ref() != Some(&stamp) {
                    tracing::error!(
                        error = %e,
                        what = self.what,
                        "TLS files changed but do not load; the previous certificate stays in use"
                    );
                }
                loaded.refused = Some(stamp);
                false
            }
        }
    }
}

/// Something [`watch`] reloads.
pub trait Reload: Send + Sync {
    /// Loads the files again if one changed (or if `force`); returns whether anything changed.
    fn reload(&self, force: bool) -> bool;
}

/// What a TLS listener accepts new connections with (the configuration of the moment).
pub trait Accepts: Send + Sync {
    fn acceptor(&self) -> TlsAcceptor;
}

/// A TLS listener's current configuration, replaced when its files change.
pub struct ServerTls(Reloading<TlsAcceptor>);

impl ServerTls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let build = |f: &TlsFiles| Ok(TlsAcceptor::from(Arc::new(f.server_config()?)));
        Reloading::load("public port", files, build).map(ServerTls)
    }
}

impl Accepts for ServerTls {
    fn acceptor(&self) -> TlsAcceptor {
        self.0.get()
    }
}

impl Reload for ServerTls {
    fn reload(&self, force: bool) -> bool {
        self.0.reload(force)
    }
}

/// Mutual TLS between members: the peer port's acceptor, and the client configurations a
/// member (or `gridraft cluster`) connects to peer ports with. All from one certificate, key
/// and CA, and all following the files when they change.
pub struct PeerTls {
    accept: Reloading<TlsAcceptor>,
    keys: Arc<Reloading<PeerKeys>>,
    streams: TlsConnector,
    http: rustls::ClientConfig,
}

/// The client side's current certificate and trust roots.
#[derive(Clone)]
struct PeerKeys {
    key: Arc<CertifiedKey>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerTls {
    /// Loads the files (`client_ca` is the peer CA and must be set); an error names the file.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        if files.client_ca.is_none() {
            return Err(file_error(&files.cert, "the peer port needs a CA file"));
        }
        let build = |f: &TlsFiles| {
            let config = f.server_config_with(&[PEER_ALPN, HTTP_ALPN])?;
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let accept = Reloading::load("peer port", files.clone(), build)?;
        let keys = Arc::new(Reloading::load("peer client", files, TlsFiles::peer_keys)?);
        let client = |alpn: &[u8]| {
            let current = Arc::new(CurrentKeys(keys.clone()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(current.clone())
                .with_client_cert_resolver(current);
            config.alpn_protocols = vec![alpn.to_vec()];
            config
        };
        Ok(PeerTls {
            accept,
            streams: TlsConnector::from(Arc::new(client(PEER_ALPN))),
            http: client(HTTP_ALPN),
            keys,
        })
    }

    /// What peer streams connect with (ALPN [`PEER_ALPN`]).
    pub fn connector(&self) -> TlsConnector {
        self.streams.clone()
    }

    /// The configuration for an HTTP client of peer ports (`reqwest`'s preconfigured TLS).
    pub fn http_client_config(&self) -> rustls::ClientConfig {
        self.http.clone()
    }
}

impl Accepts for PeerTls {
    fn acceptor(&self) -> TlsAcceptor {
        self.accept.get()
    }
}

impl Reload for PeerTls {
    fn reload(&self, force: bool) -> bool {
        // Both, whatever the first did: they read the same files.
        let accept = self.accept.reload(force);
        self.keys.reload(force) | accept
    }
}

/// The server name a client checks a peer's certificate against: the host of `addr`
/// (`host:port`, `[v6]:port`).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{addr}: not a host name: {e}"))
}

/// The client side's key and verifier, looked up per handshake.
struct CurrentKeys(Arc<Reloading<PeerKeys>>);

impl std::fmt::Debug for CurrentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CurrentKeys({})", self.0.files.cert.display())
    }
}

impl ResolvesClientCert for CurrentKeys {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for CurrentKeys {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = self.0.get().verifier;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .get()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().verifier.supported_verify_schemes()
    }
}

/// Reloads `tls` when its files change (checked every [`RELOAD_CHECK`]) and on SIGHUP, until
/// `stop` is cancelled.
pub async fn watch(tls: Arc<dyn Reload>, stop: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: TLS files are checked on a timer only");
            None
        }
    };
    let mut tick = tokio::time::interval(RELOAD_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        tls.reload(forced);
    }
}
