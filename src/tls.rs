//! TLS for the public port: the member's certificate and key, and optionally the CA that client
//! certificates must be signed by, read from PEM files and read again when they change.
//!
//! [`ServerTls::load`] reads the files at start: a missing or unreadable file, a key that does
//! not match the certificate, or a CA file without a certificate stops the start with the
//! file named. [`watch`] then looks at the files' modification times every few seconds and on
//! SIGHUP; when one changed it loads all of them again and, if they make a valid configuration,
//! new connections use it from then on (connections already open keep theirs). A set that does
//! not load is logged, once per change, and the previous one stays in use, as nginx and etcd do
//! when a reload fails.
//!
//! The crypto is rustls with the *ring* provider; TLS 1.2 and 1.3, ALPN `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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

    /// A server configuration from the files as they are now.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
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
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
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

/// A TLS listener's current configuration, replaced when its files change.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

struct Loaded {
    acceptor: TlsAcceptor,
    stamp: Vec<Option<SystemTime>>,
    /// The stamp of a change that did not load (logged once).
    refused: Option<Vec<Option<SystemTime>>>,
}

impl ServerTls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let acceptor = TlsAcceptor::from(Arc::new(files.server_config()?));
        Ok(ServerTls {
            files,
            current: RwLock::new(Loaded {
                acceptor,
                stamp,
                refused: None,
            }),
        })
    }

    /// The configuration new connections use.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .acceptor
            .clone()
    }

    /// Loads the files again if one changed since the last load (or if `force`); returns
    /// whether the configuration was replaced.
    pub fn reload(&self, force: bool) -> bool {
        let stamp = self.files.stamp();
        {
            let loaded = self.current.read().unwrap_or_else(|e| e.into_inner());
            let seen = loaded.stamp == stamp || loaded.refused.as_ref() == Some(&stamp);
            if seen && !force {
                return false;
            }
        }
        let outcome = self.files.server_config();
        let mut loaded = self.current.write().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(config) => {
                loaded.acceptor = TlsAcceptor::from(Arc::new(config));
                loaded.stamp = stamp;
                loaded.refused = None;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded again");
                true
            }
            Err(e) => {
                if loaded.refused.as_ref() != Some(&stamp) {
                    tracing::error!(
                        error = %e,
                        "TLS files changed but do not load; the previous certificate stays in use"
                    );
                }
                loaded.refused = Some(stamp);
                false
            }
        }
    }
}

/// Reloads `tls` when its files change (checked every [`RELOAD_CHECK`]) and on SIGHUP, until
/// `stop` is cancelled.
pub async fn watch(tls: Arc<ServerTls>, stop: CancellationToken) {
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
