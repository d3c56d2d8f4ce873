//! Command-line interface. Every serve flag has a `GRIDRAFT_*` variable and a TOML key
//! (see `config/gridraft.example.toml`); flags win over the environment, which wins over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Settings};

mod health;
pub use health::HealthArgs;

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
    /// GET a URL (default: this member's /readyz); exit 0 on 2xx, 1 otherwise. For container
    /// health checks in images without curl.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (plain http).
    #[arg(
        long,
        env = "GRIDRAFT_PROBE_URL",
        default_value = "http://127.0.0.1:5556/readyz"
    )]
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "GRIDRAFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// This member's id.
    #[arg(long, env = "GRIDRAFT_ID")]
    pub id: Option<u64>,
    /// Public Grid address (default 0.0.0.0:5556).
    #[arg(long, env = "GRIDRAFT_LISTEN")]
    pub listen: Option<String>,
    /// Peer address for Raft, forwarding and admin (default 127.0.0.1:7556).
    #[arg(long, env = "GRIDRAFT_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Peer address other members use to reach this one.
    #[arg(long, env = "GRIDRAFT_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Data directory (default ./data).
    #[arg(long, env = "GRIDRAFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Static member list: 1=host:port,2=host:port,3=host:port (peer addresses).
    #[arg(long, env = "GRIDRAFT_MEMBERS")]
    pub members: Option<String>,
    /// Cluster name recorded in the data directory.
    #[arg(long, env = "GRIDRAFT_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// File holding the cluster secret.
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster secret (prefer the file or the environment variable).
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "GRIDRAFT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Async worker threads (default 0: one per CPU core). Lower it when several members share
    /// a machine's cores.
    #[arg(long, env = "GRIDRAFT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    #[arg(long, env = "GRIDRAFT_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    #[arg(long, env = "GRIDRAFT_ELECTION_TIMEOUT_MIN")]
    pub election_timeout_min: Option<String>,
    #[arg(long, env = "GRIDRAFT_ELECTION_TIMEOUT_MAX")]
    pub election_timeout_max: Option<String>,
    #[arg(long, env = "GRIDRAFT_SNAPSHOT_AFTER_ENTRIES")]
    pub snapshot_after_entries: Option<u64>,
    #[arg(long, env = "GRIDRAFT_SNAPSHOT_AFTER_BYTES")]
    pub snapshot_after_bytes: Option<u64>,
    #[arg(long, env = "GRIDRAFT_WRITE_TIMEOUT")]
    pub write_timeout: Option<String>,
    #[arg(long, env = "GRIDRAFT_READ_TIMEOUT")]
    pub read_timeout: Option<String>,
    /// follower (answer reads locally after a ReadIndex round) or leader (forward reads).
    #[arg(long, env = "GRIDRAFT_READ_MODE")]
    pub read_mode: Option<String>,
    #[arg(long, env = "GRIDRAFT_READY_GRACE")]
    pub ready_grace: Option<String>,
    /// Largest accepted request body in bytes (default 1048576, at most 16777216).
    #[arg(long, env = "GRIDRAFT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest accepted session id in bytes (default 1024).
    #[arg(long, env = "GRIDRAFT_MAX_SESSION_ID_BYTES")]
    pub max_session_id_bytes: Option<usize>,
    /// Longest accepted node URI in bytes (default 4096).
    #[arg(long, env = "GRIDRAFT_MAX_NODE_URI_BYTES")]
    pub max_node_uri_bytes: Option<usize>,
    /// Largest session record entering the log in bytes (default 1048576, at most 8388608).
    #[arg(long, env = "GRIDRAFT_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,

    /// Writes waiting on the leader to join a log entry; more are refused at once.
    #[arg(long, env = "GRIDRAFT_MAX_PENDING_WRITES")]
    pub max_pending_writes: Option<usize>,
    /// Reads waiting for a ReadIndex round on a member; more are refused at once.
    #[arg(long, env = "GRIDRAFT_MAX_PENDING_READS")]
    pub max_pending_reads: Option<usize>,
    /// The Grid event bus's publish address (Selenium's --publish-events), e.g. tcp://bus:4442.
    #[arg(long, env = "GRIDRAFT_PUBLISH_EVENTS")]
    pub publish_events: Option<String>,
    /// The Grid event bus's subscribe address (Selenium's --subscribe-events), e.g. tcp://bus:4443.
    #[arg(long, env = "GRIDRAFT_SUBSCRIBE_EVENTS")]
    pub subscribe_events: Option<String>,
    /// Selenium's registration secret (events signed with another are dropped).
    #[arg(long, env = "GRIDRAFT_REGISTRATION_SECRET", hide_env_values = true)]
    pub registration_secret: Option<String>,
    /// File holding Selenium's registration secret.
    #[arg(long, env = "GRIDRAFT_REGISTRATION_SECRET_FILE")]
    pub registration_secret_file: Option<PathBuf>,
    /// Largest frame accepted from the event bus, in bytes (default 1048576).
    #[arg(long, env = "GRIDRAFT_EVENTS_MAX_FRAME_BYTES")]
    pub events_max_frame_bytes: Option<usize>,
    /// Event bus messages queued for this member before libzmq stops reading (default 1000).
    #[arg(long, env = "GRIDRAFT_EVENTS_RECEIVE_HWM")]
    pub events_receive_hwm: Option<u32>,

    /// Time a client may take to send a request's header (default 10s).
    #[arg(long, env = "GRIDRAFT_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// Time a client may take to send a request's body (default 30s).
    #[arg(long, env = "GRIDRAFT_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// How long a kept-alive connection may wait for its next request (default 120s).
    #[arg(long, env = "GRIDRAFT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Concurrent connections on the public listener (default 10000).
    #[arg(long, env = "GRIDRAFT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Concurrent connections on the peer listener (default 1024).
    #[arg(long, env = "GRIDRAFT_PEER_MAX_CONNECTIONS")]
    pub peer_max_connections: Option<usize>,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    #[command(flatten)]
    pub health: HealthArgs,
}

impl ServeArgs {
    /// Defaults, then the file, then environment and flags (clap merges those two).
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! overlay {
            ($($field:ident => $($target:ident).+),* $(,)?) => {
                $(if let Some(v) = &self.$field { s.$($target).+ = v.clone().into(); })*
            };
        }
        overlay!(
            id => id,
            listen => listen,
            peer_listen => peer_listen,
            data_dir => data_dir,
            members => members,
            cluster_name => cluster_name,
            log_format => log_format,
            worker_threads => worker_threads,
            heartbeat_interval => raft.heartbeat_interval,
            election_timeout_min => raft.election_timeout_min,
            election_timeout_max => raft.election_timeout_max,
            snapshot_after_entries => raft.snapshot_after_entries,
            snapshot_after_bytes => raft.snapshot_after_bytes,
            write_timeout => grid.write_timeout,
            read_timeout => grid.read_timeout,
            read_mode => grid.read_mode,
            ready_grace => grid.ready_grace,
            max_body_bytes => grid.max_body_bytes,
            max_session_id_bytes => grid.max_session_id_bytes,
            max_node_uri_bytes => grid.max_node_uri_bytes,
            max_record_bytes => grid.max_record_bytes,

            header_read_timeout => http.header_read_timeout,
            body_read_timeout => http.body_read_timeout,
            idle_timeout => http.idle_timeout,
            max_connections => http.max_connections,
            peer_max_connections => http.peer_max_connections,

            max_pending_writes => grid.max_pending_writes,
            max_pending_reads => grid.max_pending_reads,
        );
        for (target, value) in [
            (&mut s.events.publish_events, &self.publish_events),
            (&mut s.events.subscribe_events, &self.subscribe_events),
            (&mut s.events.registration_secret, &self.registration_secret),
        ] {
            if value.is_some() {
                *target = value.clone();
            }
        }
        if let Some(v) = &self.registration_secret_file {
            s.events.registration_secret_file = Some(v.clone());
        }
        if let Some(v) = self.events_max_frame_bytes {
            s.events.max_frame_bytes = v;
        }
        if let Some(v) = self.events_receive_hwm {
            s.events.receive_hwm = v;
        }
        self.mirror.overlay(&mut s);
        self.health.overlay(&mut s);
        if let Some(v) = &self.advertise_peer {
            s.advertise_peer = Some(v.clone());
        }
        if let Some(v) = &self.cluster_secret_file {
            s.cluster_secret_file = Some(v.clone());
        }
        if let Some(v) = &self.cluster_secret {
            s.cluster_secret = Some(v.clone());
        }
        Ok(s)
    }
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
    #[command(subcommand)]
    pub action: ClusterAction,
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

/// Write-through mirror flags (`[mirror.postgres]`, `[mirror.redis]` in the file).
#[derive(Debug, Default, Args)]
pub struct MirrorArgs {
    /// Postgres mirror URL, postgres://user:password@host:port/db (prefer the file or env).
    #[arg(long, env = "GRIDRAFT_MIRROR_POSTGRES_URL", hide_env_values = true)]
    pub mirror_postgres_url: Option<String>,
    /// File holding the Postgres mirror URL.
    #[arg(long, env = "GRIDRAFT_MIRROR_POSTGRES_URL_FILE")]
    pub mirror_postgres_url_file: Option<PathBuf>,
    /// async (default) or sync.
    #[arg(long, env = "GRIDRAFT_MIRROR_POSTGRES_MODE")]
    pub mirror_postgres_mode: Option<String>,
    /// How long a sync-mode write waits for the Postgres mirror (default 2s).
    #[arg(long, env = "GRIDRAFT_MIRROR_POSTGRES_SYNC_TIMEOUT")]
    pub mirror_postgres_sync_timeout: Option<String>,
    /// Redis mirror URL, `redis://[:password@]host:port[/db]` (prefer the file or env).
    #[arg(long, env = "GRIDRAFT_MIRROR_REDIS_URL", hide_env_values = true)]
    pub mirror_redis_url: Option<String>,
    /// File holding the Redis mirror URL.
    #[arg(long, env = "GRIDRAFT_MIRROR_REDIS_URL_FILE")]
    pub mirror_redis_url_file: Option<PathBuf>,
    /// async (default) or sync.
    #[arg(long, env = "GRIDRAFT_MIRROR_REDIS_MODE")]
    pub mirror_redis_mode: Option<String>,
    /// How long a sync-mode write waits for the Redis mirror (default 2s).
    #[arg(long, env = "GRIDRAFT_MIRROR_REDIS_SYNC_TIMEOUT")]
    pub mirror_redis_sync_timeout: Option<String>,
}

impl MirrorArgs {
    /// A URL given here replaces both `url` and `url-file` from the file (and vice versa).
    pub(crate) fn overlay(&self, s: &mut Settings) {
        for (m, url, file, mode, timeout) in [
            (
                &mut s.mirror.postgres,
                &self.mirror_postgres_url,
                &self.mirror_postgres_url_file,
                &self.mirror_postgres_mode,
                &self.mirror_postgres_sync_timeout,
            ),
            (
                &mut s.mirror.redis,
                &self.mirror_redis_url,
                &self.mirror_redis_url_file,
                &self.mirror_redis_mode,
                &self.mirror_redis_sync_timeout,
            ),
        ] {
            if let Some(f) = file {
                m.url_file = Some(f.clone());
                m.url = None;
            }
            if let Some(u) = url {
                m.url = Some(u.clone());
                m.url_file = None;
            }
            if let Some(v) = mode {
                m.mode = v.clone();
            }
            if let Some(v) = timeout {
                m.sync_timeout = v.clone();
            }
        }
    }
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
    /// Peer address of any member.
    #[arg(long, env = "GRIDRAFT_PEER", default_value = "127.0.0.1:7556")]
    pub peer: String,
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    #[arg(long, env = "GRIDRAFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Also delete the store's sessions that the cluster does not have (the store then equals
    /// the cluster). Without it, sessions are only added or replaced.
    #[arg(long)]
    pub replace: bool,
}
