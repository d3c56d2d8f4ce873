//! gridraft's settings: defaults, then the TOML file, then `GRIDRAFT_*` environment variables,
//! then command-line flags (`crate::cli::ServeArgs::load`, one line per flag).
//! [`Settings`] is the file's shape; [`Settings::validate`] reports every problem at once and
//! returns [`Resolved`], made of the settings types the parts take as they are. Each section and
//! its checks live in a submodule named after it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cluster;
mod events;
mod grid;
mod health;
mod http;
mod mirror;
mod raft;
mod reconcile;
pub mod selenium_env;
mod tls;
mod ui;
pub use cluster::ClusterSettings;
pub use events::{EventSettings, EVENTS_FRAME_BYTES, EVENTS_RECEIVE_HWM};
pub use grid::{GridSettings, InputLimits};
pub use health::{DiskSettings, HealthSettings, ResolvedHealth};
pub use http::{HttpLimits, HttpSettings};
pub use mirror::{MirrorSettings, MirrorsSettings};
pub use raft::{RaftSettings, RaftTuning};
pub use reconcile::{ReconcileConfig, ReconcileSettings};
pub use tls::{PeerTlsSettings, TlsSettings};
pub use ui::UiSettings;

/// The shortest cluster secret a member accepts: it is all that guards the peer port.
pub const MIN_SECRET_BYTES: usize = 16;

/// Adds a warning when the secret file at `path` can be read by its group or by others.
fn warn_if_readable_by_others(key: &str, path: &std::path::Path, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "{key}: {} is readable by its group or by others (mode {mode:o}); \
                 `chmod 600` it, or 400 owned by the member's user",
                path.display()
            ));
        }
    }
}

/// Upper bound on `worker-threads`.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Upper bound on `grid.max-pending-writes` and `grid.max-pending-reads`.
pub const MAX_PENDING: usize = 10_000_000;

/// Everything a member needs to run. Field names are the TOML keys (kebab-case).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// This member's id; must appear in `members` when that is set.
    pub id: u64,
    /// Public Grid port (Grid routes, /status, /healthz, /readyz, the status page /ui).
    pub listen: String,
    /// Peer port (Raft RPC, forwarding, admin, /metrics); requires the cluster secret.
    pub peer_listen: String,
    /// How this member sends requests to other members: `stream` (persistent peer streams;
    /// HTTP to a member of an earlier version) or `http` (one HTTP request each).
    pub peer_transport: String,
    /// The peer address other members use to reach this one. Defaults to this member's entry in
    /// `members`, else `peer-listen`.
    pub advertise_peer: Option<String>,
    pub data_dir: PathBuf,
    /// Static member list `1=host:port,2=host:port,...` (peer addresses). Empty: a single member.
    pub members: String,
    /// Name recorded in the data directory; a member refuses data from another cluster.
    pub cluster_name: String,
    /// The cluster secret itself (prefer `cluster-secret-file` or the environment).
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: String,
    /// Threads that run the member's async work (requests, Raft, replication); 0 means one per
    /// CPU core. Lower it when members share a machine's cores (see docs/operations.md).
    pub worker_threads: usize,
    pub raft: RaftSettings,
    pub grid: GridSettings,
    pub events: EventSettings,
    pub http: HttpSettings,
    /// Write-through mirrors: `[mirror.postgres]`, `[mirror.redis]`.
    pub mirror: MirrorsSettings,
    /// What a member does when its Raft stops.
    pub health: HealthSettings,
    /// When the data directory counts as low on free space.
    pub disk: DiskSettings,
    /// The status page `/ui`.
    pub ui: UiSettings,
    /// HTTPS on the public port.
    pub tls: TlsSettings,
    /// `[peer-tls]`: mutual TLS between members.
    pub peer_tls: PeerTlsSettings,
    /// The leader's check of the Grid nodes that hold sessions.
    pub reconcile: ReconcileSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            id: 1,
            listen: "0.0.0.0:5556".into(),
            peer_listen: "127.0.0.1:7556".into(),
            peer_transport: "stream".into(),
            advertise_peer: None,
            data_dir: PathBuf::from("./data"),
            members: String::new(),
            cluster_name: "gridraft".into(),
            cluster_secret: None,
            cluster_secret_file: None,
            log_format: "text".into(),
            worker_threads: 0,
            raft: RaftSettings::default(),
            grid: GridSettings::default(),
            events: EventSettings::default(),
            http: HttpSettings::default(),
            mirror: MirrorsSettings::default(),
            health: HealthSettings::default(),
            disk: DiskSettings::default(),
            ui: UiSettings::default(),
            tls: TlsSettings::default(),
            peer_tls: PeerTlsSettings::default(),
            reconcile: ReconcileSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Settings after validation: the parts' own settings types, each built once here and handed
/// over whole by `crate::member` (and `main` for the listeners, logging and threads).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// `peer-transport = "stream"`.
    pub peer_streams: bool,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    /// `None` for a single member without a configured secret (a random one is used).
    pub cluster_secret: Option<String>,
    /// What the settings allow but an operator should hear about (logged as warnings at start).
    pub warnings: Vec<String>,
    pub log_format: String,
    /// Async worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// The member list, this member's id and address, the `[grid]` timeouts and queues.
    pub cluster: ClusterSettings,
    /// `[raft]`, for openraft, the replication backoff and the size-based snapshot trigger.
    pub raft: RaftTuning,
    /// The `[grid]` input limits.
    pub grid: InputLimits,
    /// `[http]`, for both listeners.
    pub http: HttpLimits,
    /// `[events]`; `None` without an event bus.
    pub events: Option<crate::events::EventBusSettings>,
    /// Configured write-through mirrors (URLs unredacted: never log them).
    pub mirrors: Vec<crate::mirror::MirrorConfig>,
    /// `[health]` and `[disk]`.
    pub health: ResolvedHealth,
    /// `[ui]`.
    pub ui: UiSettings,
    /// `[tls]`; `None` serves plain HTTP on the public port.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `[peer-tls]`; `None` keeps the peer port on plain TCP. Its `client_ca` is the peer CA.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// `[reconcile]`; `None` when the reconciler is off.
    pub reconcile: Option<ReconcileConfig>,
}

impl Settings {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every setting and reports all problems together.
    pub fn validate(&self) -> Result<Resolved, ConfigError> {
        let mut problems = Vec::new();
        let mut addr = |key: &str, value: &str| -> SocketAddr {
            value.parse().unwrap_or_else(|_| {
                problems.push(format!("{key}: {value:?} is not an IP address and port"));
                SocketAddr::from(([0, 0, 0, 0], 0))
            })
        };
        let listen = addr("listen", &self.listen);
        let peer_listen = addr("peer-listen", &self.peer_listen);
        let members = parse_members(&self.members).unwrap_or_else(|e| {
            problems.push(format!("members: {e}"));
            BTreeMap::new()
        });
        if !members.is_empty() && !members.contains_key(&self.id) {
            problems.push(format!(
                "id: member {} is not in members {:?}",
                self.id, self.members
            ));
        }
        let mut duration = |key: &str, value: &str| -> Duration {
            parse_duration(value).unwrap_or_else(|e| {
                problems.push(format!("{key}: {e}"));
                Duration::ZERO
            })
        };
        let heartbeat_interval = duration("raft.heartbeat-interval", &self.raft.heartbeat_interval);
        let emin = duration("raft.election-timeout-min", &self.raft.election_timeout_min);
        let emax = duration("raft.election-timeout-max", &self.raft.election_timeout_max);
        let write_timeout = duration("grid.write-timeout", &self.grid.write_timeout);
        let read_timeout = duration("grid.read-timeout", &self.grid.read_timeout);
        let ready_grace = duration("grid.ready-grace", &self.grid.ready_grace);
        if emin >= emax {
            problems
                .push("raft.election-timeout-min must be below raft.election-timeout-max".into());
        }
        if heartbeat_interval.is_zero() || heartbeat_interval >= emin {
            problems.push(
                "raft.heartbeat-interval must be above zero and below raft.election-timeout-min"
                    .into(),
            );
        }
        let read_from_leader = match self.grid.read_mode.as_str() {
            "follower" => false,
            "leader" => true,
            other => {
                problems.push(format!(
                    "grid.read-mode: {other:?} is neither \"follower\" nor \"leader\""
                ));
                false
            }
        };
        let peer_streams = match self.peer_transport.as_str() {
            "stream" => true,
            "http" => false,
            other => {
                problems.push(format!(
                    "peer-transport: {other:?} is neither \"stream\" nor \"http\""
                ));
                true
            }
        };
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push(format!(
                "log-format: {:?} is neither \"text\" nor \"json\"",
                self.log_format
            ));
        }
        let grid = self.grid.check_limits(&mut problems);
        for (key, value) in [
            ("grid.max-pending-writes", self.grid.max_pending_writes),
            ("grid.max-pending-reads", self.grid.max_pending_reads),
        ] {
            if !(1..=MAX_PENDING).contains(&value) {
                problems.push(format!("{key}: {value} is not between 1 and {MAX_PENDING}"));
            }
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            problems.push(format!(
                "worker-threads: {} is above {MAX_WORKER_THREADS} (0 means one per CPU core)",
                self.worker_threads
            ));
        }
        if self.cluster_name.is_empty() {
            problems.push("cluster-name must not be empty".into());
        }
        let http = self.http.resolve(&mut problems);
        let tls = self.tls.resolve(&mut problems);
        let peer_tls = self.peer_tls.resolve(&mut problems);
        let mut warnings = Vec::new();
        let cluster_secret = self.secret(&mut problems, &mut warnings);
        let events = self.events.resolve(&mut problems);
        if let Some(path) = &self.events.registration_secret_file {
            warn_if_readable_by_others("events.registration-secret-file", path, &mut warnings);
        }
        if events
            .as_ref()
            .is_some_and(|e| e.registration_secret.is_empty())
        {
            warnings.push(
                "the event bus is configured without a registration secret \
                 (events.registration-secret): the Grid's components then run without one, and \
                 anything that reaches the bus can register a node"
                    .into(),
            );
        }
        let reconcile = self.reconcile.resolve(
            events.as_ref().map(|e| e.registration_secret.as_str()),
            &mut problems,
        );
        let mirrors = self.mirror.resolve(&mut problems);
        let health = health::resolve(&self.health, &self.disk, &mut problems);
        if members.len() > 1 && cluster_secret.is_none() && peer_tls.is_none() {
            problems.push("cluster-secret-file (or GRIDRAFT_CLUSTER_SECRET) is required when members lists more than one member, unless peer-tls is configured".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let advertise_peer = self
            .advertise_peer
            .clone()
            .or_else(|| members.get(&self.id).cloned())
            .unwrap_or_else(|| self.peer_listen.clone());
        Ok(Resolved {
            listen,
            peer_listen,
            peer_streams,
            data_dir: self.data_dir.clone(),
            cluster_name: self.cluster_name.clone(),
            cluster_secret,
            warnings,
            log_format: self.log_format.clone(),
            worker_threads: self.worker_threads,
            cluster: ClusterSettings {
                id: self.id,
                write_timeout,
                read_timeout,
                read_from_leader,
                ready_grace,
                election_timeout_max: emax,
                cut_off_after: cluster::cut_off_after(heartbeat_interval, emax),
                members,
                advertise_peer,
                max_pending_writes: self.grid.max_pending_writes,
                max_pending_reads: self.grid.max_pending_reads,
            },
            raft: self
                .raft
                .tuning(&self.cluster_name, heartbeat_interval, (emin, emax)),
            grid,
            http,
            events,
            mirrors,
            health,
            ui: self.ui,
            tls,
            peer_tls,
            reconcile,
        })
    }

    fn secret(&self, problems: &mut Vec<String>, warnings: &mut Vec<String>) -> Option<String> {
        let (secret, from) = match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(s), _) => (s.clone(), "cluster-secret"),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) if !s.trim().is_empty() => {
                    warn_if_readable_by_others("cluster-secret-file", path, warnings);
                    (s.trim().to_owned(), "cluster-secret-file")
                }
                Ok(_) => {
                    problems.push(format!("cluster-secret-file: {} is empty", path.display()));
                    return None;
                }
                Err(e) => {
                    problems.push(format!("cluster-secret-file: read {}: {e}", path.display()));
                    return None;
                }
            },
            (None, None) => return None,
        };
        if secret.len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "{from}: the cluster secret is {} bytes; at least {MIN_SECRET_BYTES} are required \
                 (make one with `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Some(secret)
    }

    /// The settings as TOML, with secrets replaced by `"<redacted>"`.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        if copy.cluster_secret.is_some() {
            copy.cluster_secret = Some("<redacted>".into());
        }
        if copy.events.registration_secret.is_some() {
            copy.events.registration_secret = Some("<redacted>".into());
        }
        for m in [&mut copy.mirror.postgres, &mut copy.mirror.redis] {
            m.url = m.url.as_deref().map(crate::mirror::redact_url);
        }
        toml::to_string_pretty(&copy).expect("settings always serialise to TOML")
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_members(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut members = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not of the form ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} in {part:?} is not a member id"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("{addr:?} in {part:?} is not HOST:PORT"));
        }
        if members.insert(id, addr.to_owned()).is_some() {
            return Err(format!("member {id} is listed twice"));
        }
    }
    Ok(members)
}

/// Parses durations such as `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as \"500ms\" or \"10s\""))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{s:?} is not a duration such as \"500ms\" or \"10s\""
        )),
    }
}

#[cfg(test)]
mod tests;
