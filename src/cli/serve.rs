//! The flags of `serve` and `print-config`, and which setting each one sets.

use std::path::PathBuf;

use clap::Args;

use crate::config::selenium_env::{Given, SeleniumEnv};
use crate::config::{ConfigError, Settings};

/// The flags of `serve` and `print-config`. Each has a `GRIDRAFT_*` variable named after it and
/// sets the one TOML key [`ServeArgs::apply`] lists for it.
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
    /// How this member sends requests to other members: `stream` (persistent peer streams,
    /// HTTP to members of earlier versions) or `http` (default stream).
    #[arg(long, env = "GRIDRAFT_PEER_TRANSPORT")]
    pub peer_transport: Option<String>,
    /// The public port's certificate chain (PEM); with `--tls-key-file` it serves HTTPS only.
    #[arg(long, env = "GRIDRAFT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The public port's private key (PEM).
    #[arg(long, env = "GRIDRAFT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Clients of the public port must present a certificate signed by a CA in this file.
    #[arg(long, env = "GRIDRAFT_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// This member's certificate chain (PEM) for mutual TLS on the peer port, in both
    /// directions; with `--peer-tls-key-file` and `--peer-tls-ca-file`.
    #[arg(long, env = "GRIDRAFT_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,
    /// The private key of `--peer-tls-cert-file` (PEM).
    #[arg(long, env = "GRIDRAFT_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,
    /// The CA every member's peer certificate must be signed by (PEM).
    #[arg(long, env = "GRIDRAFT_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,
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
    /// Write the Raft log's next segment full of zeros ahead of need (true|false, default
    /// false; never on copy-on-write file systems).
    #[arg(long, env = "GRIDRAFT_PREALLOCATE_LOG_SEGMENTS", action = clap::ArgAction::Set)]
    pub preallocate_log_segments: Option<bool>,
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
    /// Redis over TLS (rediss://): the CA that signed the server's certificate (PEM).
    #[arg(long, env = "GRIDRAFT_MIRROR_REDIS_CA_FILE")]
    pub mirror_redis_ca_file: Option<PathBuf>,
    /// Exit non-zero once Raft has stopped on this member, after --fatal-drain (true|false,
    /// default true).
    #[arg(long, env = "GRIDRAFT_EXIT_ON_FATAL", action = clap::ArgAction::Set)]
    pub exit_on_fatal: Option<bool>,
    /// How long a member whose Raft stopped answers 503 before it exits (default 3s).
    #[arg(long, env = "GRIDRAFT_FATAL_DRAIN")]
    pub fatal_drain: Option<String>,
    /// Low on disk below the smaller of this many free bytes and --disk-min-free-percent
    /// (default 268435456; 0 turns the check off).
    #[arg(long, env = "GRIDRAFT_DISK_MIN_FREE_BYTES")]
    pub disk_min_free_bytes: Option<u64>,
    /// Percent of the data directory's filesystem (default 5; 0 turns the check off).
    #[arg(long, env = "GRIDRAFT_DISK_MIN_FREE_PERCENT")]
    pub disk_min_free_percent: Option<u8>,
    /// How often the data directory's free space is read (default 1s).
    #[arg(long, env = "GRIDRAFT_DISK_CHECK_INTERVAL")]
    pub disk_check_interval: Option<String>,
    /// Serve the status page at /ui on the public port (true|false, default true).
    #[arg(long, env = "GRIDRAFT_UI_ENABLED", action = clap::ArgAction::Set)]
    pub ui_enabled: Option<bool>,
    /// Whether the leader checks the Grid nodes and removes sessions they no longer hold
    /// (true|false; default true when the event bus is configured).
    #[arg(long, env = "GRIDRAFT_RECONCILE_ENABLED", action = clap::ArgAction::Set)]
    pub reconcile_enabled: Option<bool>,
    /// Time between two reconciler runs (default 30s).
    #[arg(long, env = "GRIDRAFT_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<String>,
    /// Sessions the reconciler has known for less than this are never removed (default 60s).
    #[arg(long, env = "GRIDRAFT_RECONCILE_GRACE")]
    pub reconcile_grace: Option<String>,
    /// A node unreachable for this long loses all its sessions (default 5m).
    #[arg(long, env = "GRIDRAFT_RECONCILE_NODE_DOWN_AFTER")]
    pub reconcile_node_down_after: Option<String>,
    /// Log and count what the reconciler would remove, remove nothing (`--reconcile-dry-run`
    /// or `--reconcile-dry-run true|false`).
    #[arg(long, env = "GRIDRAFT_RECONCILE_DRY_RUN", num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub reconcile_dry_run: Option<bool>,
}

/// Writes [`ServeArgs::apply`] and [`ServeArgs::KEYS`] from one line per flag:
/// `flag => section.key[, clearing section.other];`. The destructuring in `apply` names every
/// field, so a flag without a line (or a line without a flag) does not compile.
macro_rules! settings_from_flags {
    ($($flag:ident => $($key:ident).+ $(, clearing $($clear:ident).+)?;)*) => {
        impl ServeArgs {
            /// Every flag and the TOML key it sets, as `(field, key path)`.
            pub const KEYS: &'static [(&'static str, &'static [&'static str])] =
                &[$((stringify!($flag), &[$(stringify!($key)),+])),*];

            /// Sets each key whose flag (or `GRIDRAFT_*` variable) was given.
            pub fn apply(&self, s: &mut Settings) {
                let ServeArgs { config: _, $($flag),* } = self;
                $(if let Some(v) = $flag {
                    s.$($key).+ = v.clone().into();
                    $(s.$($clear).+ = None;)?
                })*
            }
        }
    };
}

settings_from_flags! {
    id => id;
    listen => listen;
    peer_listen => peer_listen;
    peer_transport => peer_transport;
    tls_cert_file => tls.cert_file;
    tls_key_file => tls.key_file;
    tls_client_ca_file => tls.client_ca_file;
    peer_tls_cert_file => peer_tls.cert_file;
    peer_tls_key_file => peer_tls.key_file;
    peer_tls_ca_file => peer_tls.ca_file;
    advertise_peer => advertise_peer;
    data_dir => data_dir;
    members => members;
    cluster_name => cluster_name;
    cluster_secret_file => cluster_secret_file;
    cluster_secret => cluster_secret;
    log_format => log_format;
    worker_threads => worker_threads;
    heartbeat_interval => raft.heartbeat_interval;
    election_timeout_min => raft.election_timeout_min;
    election_timeout_max => raft.election_timeout_max;
    snapshot_after_entries => raft.snapshot_after_entries;
    snapshot_after_bytes => raft.snapshot_after_bytes;
    preallocate_log_segments => raft.preallocate_log_segments;
    write_timeout => grid.write_timeout;
    read_timeout => grid.read_timeout;
    read_mode => grid.read_mode;
    ready_grace => grid.ready_grace;
    max_body_bytes => grid.max_body_bytes;
    max_session_id_bytes => grid.max_session_id_bytes;
    max_node_uri_bytes => grid.max_node_uri_bytes;
    max_record_bytes => grid.max_record_bytes;
    max_pending_writes => grid.max_pending_writes;
    max_pending_reads => grid.max_pending_reads;
    publish_events => events.publish_events;
    subscribe_events => events.subscribe_events;
    registration_secret => events.registration_secret;
    registration_secret_file => events.registration_secret_file;
    events_max_frame_bytes => events.max_frame_bytes;
    events_receive_hwm => events.receive_hwm;
    header_read_timeout => http.header_read_timeout;
    body_read_timeout => http.body_read_timeout;
    idle_timeout => http.idle_timeout;
    max_connections => http.max_connections;
    peer_max_connections => http.peer_max_connections;
    // A mirror's URL from the environment or a flag replaces both `url` and `url-file` from the
    // file; given both ways, the URL wins.
    mirror_postgres_url_file => mirror.postgres.url_file, clearing mirror.postgres.url;
    mirror_postgres_url => mirror.postgres.url, clearing mirror.postgres.url_file;
    mirror_postgres_mode => mirror.postgres.mode;
    mirror_postgres_sync_timeout => mirror.postgres.sync_timeout;
    mirror_redis_url_file => mirror.redis.url_file, clearing mirror.redis.url;
    mirror_redis_url => mirror.redis.url, clearing mirror.redis.url_file;
    mirror_redis_mode => mirror.redis.mode;
    mirror_redis_sync_timeout => mirror.redis.sync_timeout;
    mirror_redis_ca_file => mirror.redis.ca_file;
    exit_on_fatal => health.exit_on_fatal;
    fatal_drain => health.fatal_drain;
    disk_min_free_bytes => disk.min_free_bytes;
    disk_min_free_percent => disk.min_free_percent;
    disk_check_interval => disk.check_interval;
    ui_enabled => ui.enabled;
    reconcile_enabled => reconcile.enabled;
    reconcile_interval => reconcile.interval;
    reconcile_grace => reconcile.grace;
    reconcile_node_down_after => reconcile.node_down_after;
    reconcile_dry_run => reconcile.dry_run;
}

impl ServeArgs {
    /// Defaults, then the file, then docker-selenium's `SE_*` variables, then `GRIDRAFT_*`
    /// variables and flags (clap merges those two).
    pub fn load(&self) -> Result<Settings, ConfigError> {
        self.load_with(&SeleniumEnv::from_env())
    }

    /// [`ServeArgs::load`] with the `SE_*` variables of `selenium`.
    pub fn load_with(&self, selenium: &SeleniumEnv) -> Result<Settings, ConfigError> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let given = Given {
            publish_events: self.publish_events.is_some(),
            subscribe_events: self.subscribe_events.is_some(),
            registration_secret: self.registration_secret.is_some()
                || self.registration_secret_file.is_some(),
            listen: self.listen.is_some(),
        };
        selenium.apply(&mut s, given)?;
        self.apply(&mut s);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn health_flags_overlay_the_file() {
        let cli = Cli::try_parse_from([
            "gridraft",
            "serve",
            "--exit-on-fatal",
            "false",
            "--fatal-drain",
            "1s",
            "--disk-min-free-bytes",
            "1000",
            "--disk-min-free-percent",
            "2",
            "--disk-check-interval",
            "500ms",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve");
        };
        let s = args.load().unwrap();
        assert!(!s.health.exit_on_fatal);
        assert_eq!(s.health.fatal_drain, "1s");
        assert_eq!(s.disk.min_free_bytes, 1000);
        assert_eq!(s.disk.min_free_percent, 2);
        assert_eq!(s.disk.check_interval, "500ms");
    }

    #[test]
    fn reconcile_flags_overlay_the_file_and_a_bare_dry_run_means_true() {
        let cli = Cli::try_parse_from([
            "gridraft",
            "serve",
            "--reconcile-enabled",
            "true",
            "--reconcile-interval",
            "2s",
            "--reconcile-grace",
            "5s",
            "--reconcile-node-down-after",
            "10s",
            "--reconcile-dry-run",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve");
        };
        let s = args.load().unwrap();
        assert_eq!(s.reconcile.enabled, Some(true));
        assert_eq!(s.reconcile.interval, "2s");
        assert_eq!(s.reconcile.grace, "5s");
        assert_eq!(s.reconcile.node_down_after, "10s");
        assert!(s.reconcile.dry_run);
    }
}
