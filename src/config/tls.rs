//! `[tls]`: HTTPS on the public port (see `crate::tls`). The files are read at start by
//! `crate::tls::ServerTls::load`; here only their combination is checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::tls::TlsFiles;

/// `[tls]`: the public port's certificate, key and optional client CA (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain (leaf first). With `key-file`, the public port serves HTTPS only.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// When set, clients of the public port must present a certificate signed by a CA in it.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// The files, when TLS is on; adds a problem for an incomplete combination.
    pub(super) fn resolve(&self, problems: &mut Vec<String>) -> Option<TlsFiles> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca_file.clone(),
            }),
            (None, None) => {
                if self.client_ca_file.is_some() {
                    problems.push(
                        "tls.client-ca-file needs tls.cert-file and tls.key-file (client \
                         certificates are checked only on an HTTPS port)"
                            .into(),
                    );
                }
                None
            }
            (Some(_), None) => {
                problems.push("tls.cert-file is set without tls.key-file".into());
                None
            }
            (None, Some(_)) => {
                problems.push("tls.key-file is set without tls.cert-file".into());
                None
            }
        }
    }
}

/// `[peer-tls]`: mutual TLS on the peer port. All three files or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PeerTlsSettings {
    /// This member's certificate chain (leaf first), presented to peers in both directions; it
    /// must name the host of this member's peer address.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The CA every member's certificate must be signed by.
    pub ca_file: Option<PathBuf>,
}

/// Some of `[peer-tls]`'s three files given, not all.
#[derive(Debug, thiserror::Error)]
#[error("peer TLS needs all of the certificate, key and CA files, or none")]
pub struct IncompletePeerTls;

impl PeerTlsSettings {
    /// The files, when peer TLS is on; an error when only some of the three are given.
    pub fn files(&self) -> Result<Option<TlsFiles>, IncompletePeerTls> {
        match (&self.cert_file, &self.key_file, &self.ca_file) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: Some(ca.clone()),
            })),
            (None, None, None) => Ok(None),
            _ => Err(IncompletePeerTls),
        }
    }

    /// The files, when peer TLS is on; adds a problem for an incomplete combination.
    pub(super) fn resolve(&self, problems: &mut Vec<String>) -> Option<TlsFiles> {
        self.files().unwrap_or_else(|IncompletePeerTls| {
            problems.push(
                "peer-tls needs all of cert-file, key-file and ca-file (members present their \
                 certificate and check each other's against the CA)"
                    .into(),
            );
            None
        })
    }
}
