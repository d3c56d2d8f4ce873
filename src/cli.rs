//! Command-line interface. Every serve flag has a `GRIDRAFT_*` variable and a TOML key
//! (see `config/gridraft.example.toml`); flags win over the environment, which wins over the file.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::PeerTlsSettings;
use crate::peer::client::PeerClient;
use crate::tls::{PeerTls, TlsFiles};

mod serve;
pub use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "gridraft",
    version,
    about = "A Raft-replicated SessionMap for Selenium Grid 4"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a member (the default when no command is given).
    Serve(ServeArgs),
    /// Print the effective configuration, secrets redacted, and exit.
    PrintConfig(ServeArgs),
    /// Inspect or change the cluster through a member's peer port.
    Cluster(ClusterArgs),
    /// Load the sessions of a Selenium Postgres or Redis store into a cluster (through Raft).
    Import(ImportArgs),
    /// Write a cluster's sessions into a Selenium Postgres or Redis store.
    Export(ExportArgs),
    /// Write a consistent, checksummed backup of a running cluster's session map to a file.
    Backup(BackupArgs),
    /// Seed the empty data directory of a member of a new cluster from a backup file.
    Restore(RestoreArgs),
    /// GET a URL (default: this member's /readyz); exit 0 on 2xx, 1 otherwise. For container
    /// health checks in images without curl.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (http, or https with `--ca-file`).
    #[arg(
        long,
        env = "GRIDRAFT_PROBE_URL",
        default_value = "http://127.0.0.1:5556/readyz"
    )]
    pub url: String,
    /// For an https URL: the CA that signed the member's certificate (PEM).
    #[arg(long, env = "GRIDRAFT_PROBE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate to present (a port with `tls.client-ca-file`), with `--key-file`.
    #[arg(long, env = "GRIDRAFT_PROBE_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "GRIDRAFT_PROBE_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Peer address of any member.
    #[arg(
        long,
        global = true,
        env = "GRIDRAFT_PEER",
        default_value = "127.0.0.1:7556"
    )]
    pub peer: String,
    /// File holding the cluster secret.
    #[arg(long, global = true, env = "GRIDRAFT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster secret itself (prefer the file or the environment variable).
    #[arg(
        long,
        global = true,
        env = "GRIDRAFT_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    #[command(flatten)]
    pub tls: PeerTlsArgs,
    #[command(subcommand)]
    pub action: ClusterAction,
}

impl ClusterArgs {
    /// A client of the peer port these flags describe (see [`peer_client`]).
    pub fn client(&self) -> Result<PeerClient, String> {
        peer_client(
            self.cluster_secret.as_deref(),
            self.cluster_secret_file.as_deref(),
            &self.tls,
        )
    }
}

/// Mutual TLS to a peer port with `peer-tls`: the same files (and variables) a member uses.
#[derive(Debug, Clone, Default, Args)]
pub struct PeerTlsArgs {
    /// The CA that signed the members' peer certificates (PEM).
    #[arg(long, global = true, env = "GRIDRAFT_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,
    /// A certificate signed by that CA to present (PEM), with `--peer-tls-key-file`.
    #[arg(long, global = true, env = "GRIDRAFT_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,
    #[arg(long, global = true, env = "GRIDRAFT_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,
}

impl PeerTlsArgs {
    /// The files, when given; all three or none.
    fn files(&self) -> Result<Option<TlsFiles>, String> {
        let settings = PeerTlsSettings {
            cert_file: self.peer_tls_cert_file.clone(),
            key_file: self.peer_tls_key_file.clone(),
            ca_file: self.peer_tls_ca_file.clone(),
        };
        settings.files().map_err(|_| {
            "give all of --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file (or \
             their GRIDRAFT_PEER_TLS_CERT_FILE, _KEY_FILE and _CA_FILE variables), or none"
                .into()
        })
    }
}

/// A client of a member's peer port: with the cluster secret, over mutual TLS when `tls` has
/// files. A secret is required unless TLS is given (a cluster with peer TLS may have none).
pub fn peer_client(
    secret: Option<&str>,
    secret_file: Option<&std::path::Path>,
    tls: &PeerTlsArgs,
) -> Result<PeerClient, String> {
    let tls = match tls.files()? {
        Some(files) => Some(Arc::new(PeerTls::load(files).map_err(|e| e.to_string())?)),
        None => None,
    };
    let secret = match (secret, secret_file, &tls) {
        // Members with peer TLS may have no secret: their certificates authenticate them.
        (None, None, Some(_)) => String::new(),
        _ => cluster_secret(secret, secret_file)?,
    };
    let client = PeerClient::new(reqwest::Client::new(), Arc::from(secret));
    Ok(match tls {
        Some(tls) => client.with_tls(tls),
        None => client,
    })
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Leader, term, membership, and each member's log and apply progress.
    Status,
    /// Initialise a cluster from the static member list (normally automatic).
    Init,
    /// Add a member: as a learner, wait for it to catch up, then promote it to voter.
    Add {
        id: u64,
        /// The new member's peer address, host:port.
        addr: String,
    },
    /// Remove a member (the leader included).
    Remove { id: u64 },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The Selenium store: postgres://... (table sessions_map) or redis://... (session:* keys).
    #[arg(long, env = "GRIDRAFT_IMPORT_FROM", hide_env_values = true)]
    pub from: String,
    /// Public Grid address of any member, e.g. http://gridraft-1:5556.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The Selenium store to write: postgres://... or redis://...
    #[arg(long, env = "GRIDRAFT_EXPORT_TO", hide_env_values = true)]
    pub to: String,
    #[command(flatten)]
    pub member: PeerArgs,
    /// Also delete the store's sessions that the cluster does not have (the store then equals
    /// the cluster). Without it, sessions are only added or replaced.
    #[arg(long)]
    pub replace: bool,
}

/// How `export` and `backup` reach a member's peer port.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Peer address of any member.
    #[arg(long, env = "GRIDRAFT_PEER", default_value = "127.0.0.1:7556")]
    pub peer: String,
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    #[command(flatten)]
    pub tls: PeerTlsArgs,
}

impl PeerArgs {
    /// A client of the peer port these flags describe (see [`peer_client`]).
    pub fn client(&self) -> Result<PeerClient, String> {
        peer_client(
            self.cluster_secret.as_deref(),
            self.cluster_secret_file.as_deref(),
            &self.tls,
        )
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The member the backup is taken from, at a linearizable point.
    #[command(flatten)]
    pub member: PeerArgs,
    /// The file to write; written under a temporary name, fsynced, checked, then renamed.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file written by `gridraft backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The new member's data directory: must not exist or be empty.
    #[arg(long, env = "GRIDRAFT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The new member's id.
    #[arg(long, env = "GRIDRAFT_ID")]
    pub id: u64,
    /// The new cluster's members, as for `serve`: `1=host:port,2=host:port,...`.
    #[arg(long, env = "GRIDRAFT_MEMBERS")]
    pub members: String,
    /// The new cluster's name (`serve --cluster-name`); default: the backed-up cluster's.
    #[arg(long, env = "GRIDRAFT_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
}

/// The cluster secret from `--cluster-secret` / `GRIDRAFT_CLUSTER_SECRET`, else from the file.
pub fn cluster_secret(
    secret: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, String> {
    match (secret, file) {
        (Some(s), _) => Ok(s.to_owned()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("read {}: {e}", path.display())),
        (None, None) => Err("give --cluster-secret-file or GRIDRAFT_CLUSTER_SECRET".into()),
    }
}
