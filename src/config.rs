//! gridraft's settings: defaults, then the TOML file, then `GRIDRAFT_*` environment variables,
//! then command-line flags. [`Settings::validate`] reports every problem at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod health;
mod http;
pub use health::{DiskSettings, HealthSettings, ResolvedHealth};
pub use http::{HttpLimits, HttpSettings};

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
    /// Public Grid port (Grid routes, /status, /healthz, /readyz).
    pub listen: String,
    /// Peer port (Raft RPC, forwarding, admin, /metrics); requires the cluster secret.
    pub peer_listen: String,
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
}

/// `[mirror.postgres]` and `[mirror.redis]` (see `docs/mirrors.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MirrorsSettings {
    pub postgres: MirrorSettings,
    pub redis: MirrorSettings,
}

/// One mirror; it is enabled when `url` or `url-file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MirrorSettings {
    /// Connection URL (`postgres://...`, `redis://...`). It may carry a password: prefer
    /// `url-file` or the environment.
    pub url: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// `async` (Grid writes never wait) or `sync` (the leader waits up to `sync-timeout`).
    pub mode: String,
    pub sync_timeout: String,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            url: None,
            url_file: None,
            mode: "async".into(),
            sync_timeout: "2s".into(),
        }
    }
}

/// The Selenium Grid event bus, named as Selenium names it (`[events]` in Selenium's TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventSettings {
    /// The bus's publish address (its XPUB), e.g. `tcp://bus:4442`; members subscribe here.
    /// Unset: no event bus (sessions then leave the map only by DELETE).
    pub publish_events: Option<String>,
    /// The bus's subscribe address (its XSUB), e.g. `tcp://bus:4443`.
    pub subscribe_events: Option<String>,
    /// Selenium's registration secret; events signed with another are dropped.
    pub registration_secret: Option<String>,
    pub registration_secret_file: Option<PathBuf>,
    /// Largest frame accepted from the bus, in bytes; a larger one costs the publisher its
    /// connection (libzmq `ZMQ_MAXMSGSIZE`).
    pub max_frame_bytes: usize,
    /// Bus messages queued for this member before libzmq stops reading (`ZMQ_RCVHWM`).
    pub receive_hwm: u32,
}

/// Bounds of `events.max-frame-bytes`: room for any real event, and no more than the largest
/// frame earlier versions accepted.
pub const EVENTS_FRAME_BYTES: std::ops::RangeInclusive<usize> = 65_536..=16 << 20;
/// Bounds of `events.receive-hwm` (0 would mean no limit to libzmq).
pub const EVENTS_RECEIVE_HWM: std::ops::RangeInclusive<u32> = 1..=100_000;

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            publish_events: None,
            subscribe_events: None,
            registration_secret: None,
            registration_secret_file: None,
            max_frame_bytes: crate::events::DEFAULT_MAX_FRAME_BYTES,
            receive_hwm: crate::events::DEFAULT_RECEIVE_HWM,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_interval: String,
    pub election_timeout_min: String,
    pub election_timeout_max: String,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Also build one once the log written since the last grew past this many bytes (or a
    /// sixteenth of the last snapshot's size, if larger); 0 turns the byte rule off.
    pub snapshot_after_bytes: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_entries_after_snapshot: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GridSettings {
    /// How long a write may wait for a leader and a commit before the Grid gets a 500.
    pub write_timeout: String,
    /// How long a read may wait for its ReadIndex round and for this member to catch up.
    pub read_timeout: String,
    /// `follower`: a member answers reads itself once it has applied the leader's read index.
    /// `leader`: a member forwards each read to the leader.
    pub read_mode: String,
    /// How long after losing its leader a member still reports ready (an election is short).
    pub ready_grace: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest accepted session id (in a body or a path), in bytes.
    pub max_session_id_bytes: usize,
    /// Longest accepted node URI, in bytes.
    pub max_node_uri_bytes: usize,
    /// Largest session record (id, node URI, start, capabilities and stereotype as rendered)
    /// that may enter the log, in bytes.
    pub max_record_bytes: usize,

    /// Writes waiting on the leader to join a log entry; more are refused at once.
    pub max_pending_writes: usize,
    /// Reads waiting for a ReadIndex round on a member; more are refused at once.
    pub max_pending_reads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            id: 1,
            listen: "0.0.0.0:5556".into(),
            peer_listen: "127.0.0.1:7556".into(),
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
        }
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: "100ms".into(),
            election_timeout_min: "500ms".into(),
            election_timeout_max: "1000ms".into(),
            snapshot_after_entries: 10_000,
            snapshot_after_bytes: 128 << 20,
            keep_entries_after_snapshot: 1_000,
        }
    }
}

impl Default for GridSettings {
    fn default() -> Self {
        GridSettings {
            write_timeout: "10s".into(),
            read_timeout: "10s".into(),
            read_mode: "follower".into(),
            ready_grace: "5s".into(),
            max_body_bytes: 1 << 20,
            max_session_id_bytes: 1024,
            max_node_uri_bytes: 4096,
            max_record_bytes: 1 << 20,
            max_pending_writes: 10_000,
            max_pending_reads: 100_000,
        }
    }
}

/// `(key, value, lowest, highest)` of each input limit (docs/api.md "Limits"). The record
/// limit's top stays far below what the log reader accepts and what replicates in one request.
fn input_limits(g: &GridSettings) -> [(&'static str, usize, usize, usize); 4] {
    [
        ("grid.max-body-bytes", g.max_body_bytes, 64 << 10, 16 << 20),
        (
            "grid.max-session-id-bytes",
            g.max_session_id_bytes,
            64,
            64 << 10,
        ),
        (
            "grid.max-node-uri-bytes",
            g.max_node_uri_bytes,
            256,
            64 << 10,
        ),
        (
            "grid.max-record-bytes",
            g.max_record_bytes,
            4 << 10,
            8 << 20,
        ),
    ]
}

impl GridSettings {
    fn check_limits(&self, problems: &mut Vec<String>) {
        for (key, value, lowest, highest) in input_limits(self) {
            if !(lowest..=highest).contains(&value) {
                problems.push(format!("{key}: {value} is not within {lowest}..={highest}"));
            }
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

/// Settings after validation, with parsed values.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: u64,
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    pub advertise_peer: String,
    pub data_dir: PathBuf,
    /// Empty for a single member.
    pub members: BTreeMap<u64, String>,
    pub cluster_name: String,
    /// `None` for a single member without a configured secret (a random one is used).
    pub cluster_secret: Option<String>,
    pub log_format: String,
    /// Async worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    pub heartbeat_interval: Duration,
    pub election_timeout: (Duration, Duration),
    pub snapshot_after_entries: u64,
    pub snapshot_after_bytes: u64,
    pub keep_entries_after_snapshot: u64,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub read_from_leader: bool,
    pub ready_grace: Duration,
    pub max_body_bytes: usize,
    pub session_limits: crate::session::SessionLimits,

    pub max_pending_writes: usize,
    pub max_pending_reads: usize,
    pub events: Option<ResolvedEvents>,
    pub http: HttpLimits,
    /// Configured write-through mirrors (URLs unredacted: never log them).
    pub mirrors: Vec<crate::mirror::MirrorConfig>,
    /// `[health]` and `[disk]`.
    pub health: ResolvedHealth,
}

#[derive(Debug, Clone)]
pub struct ResolvedEvents {
    pub publish_events: String,
    pub subscribe_events: Option<String>,
    pub registration_secret: String,
    pub max_frame_bytes: usize,
    pub receive_hwm: u32,
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
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push(format!(
                "log-format: {:?} is neither \"text\" nor \"json\"",
                self.log_format
            ));
        }
        self.grid.check_limits(&mut problems);

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
        let cluster_secret = self.secret(&mut problems);
        let events = self.resolve_events(&mut problems);
        let mirrors = self.resolve_mirrors(&mut problems);
        let health = health::resolve(&self.health, &self.disk, &mut problems);
        if members.len() > 1 && cluster_secret.is_none() {
            problems.push("cluster-secret-file (or GRIDRAFT_CLUSTER_SECRET) is required when members lists more than one member".into());
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
            id: self.id,
            listen,
            peer_listen,
            advertise_peer,
            data_dir: self.data_dir.clone(),
            members,
            cluster_name: self.cluster_name.clone(),
            cluster_secret,
            log_format: self.log_format.clone(),
            worker_threads: self.worker_threads,
            heartbeat_interval,
            election_timeout: (emin, emax),
            snapshot_after_entries: self.raft.snapshot_after_entries,
            snapshot_after_bytes: self.raft.snapshot_after_bytes,
            keep_entries_after_snapshot: self.raft.keep_entries_after_snapshot,
            write_timeout,
            read_timeout,
            read_from_leader,
            ready_grace,
            max_body_bytes: self.grid.max_body_bytes,
            session_limits: crate::session::SessionLimits {
                max_session_id_bytes: self.grid.max_session_id_bytes,
                max_node_uri_bytes: self.grid.max_node_uri_bytes,
                max_record_bytes: self.grid.max_record_bytes,
            },

            max_pending_writes: self.grid.max_pending_writes,
            max_pending_reads: self.grid.max_pending_reads,
            events,
            http,
            mirrors,
            health,
        })
    }

    fn resolve_mirrors(&self, problems: &mut Vec<String>) -> Vec<crate::mirror::MirrorConfig> {
        use crate::mirror::{MirrorConfig, MirrorKind, MirrorMode};
        let mut out = Vec::new();
        for (kind, m) in [
            (MirrorKind::Postgres, &self.mirror.postgres),
            (MirrorKind::Redis, &self.mirror.redis),
        ] {
            let key = format!("mirror.{}", kind.name());
            let url = match (&m.url, &m.url_file) {
                (Some(u), _) => Some(u.trim().to_owned()),
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(u) if !u.trim().is_empty() => Some(u.trim().to_owned()),
                    Ok(_) => {
                        problems.push(format!("{key}.url-file: {} is empty", path.display()));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("{key}.url-file: read {}: {e}", path.display()));
                        None
                    }
                },
                (None, None) => None,
            };
            let mode = match m.mode.as_str() {
                "async" => MirrorMode::Async,
                "sync" => MirrorMode::Sync,
                other => {
                    problems.push(format!(
                        "{key}.mode: {other:?} is neither \"async\" nor \"sync\""
                    ));
                    MirrorMode::Async
                }
            };
            let sync_timeout = parse_duration(&m.sync_timeout).unwrap_or_else(|e| {
                problems.push(format!("{key}.sync-timeout: {e}"));
                Duration::ZERO
            });
            let Some(url) = url else { continue };
            if MirrorKind::from_url(&url) != Some(kind) {
                // The URL is not echoed: it may carry a password.
                problems.push(format!(
                    "{key}.url: must start with {}",
                    match kind {
                        MirrorKind::Postgres => "postgres:// or postgresql://",
                        MirrorKind::Redis => "redis://",
                    }
                ));
                continue;
            }
            out.push(MirrorConfig {
                kind,
                url,
                mode,
                sync_timeout,
            });
        }
        out
    }

    fn secret(&self, problems: &mut Vec<String>) -> Option<String> {
        if let Some(s) = &self.cluster_secret {
            return Some(s.clone());
        }
        let path = self.cluster_secret_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Ok(_) => {
                problems.push(format!("cluster-secret-file: {} is empty", path.display()));
                None
            }
            Err(e) => {
                problems.push(format!("cluster-secret-file: read {}: {e}", path.display()));
                None
            }
        }
    }

    fn resolve_events(&self, problems: &mut Vec<String>) -> Option<ResolvedEvents> {
        let e = &self.events;
        for (key, value) in [
            ("events.publish-events", &e.publish_events),
            ("events.subscribe-events", &e.subscribe_events),
        ] {
            if let Some(v) = value {
                if !v.starts_with("tcp://")
                    && !v.starts_with("ipc://")
                    && !v.starts_with("inproc://")
                {
                    problems.push(format!(
                        "{key}: {v:?} is not a ZeroMQ address such as tcp://host:4442"
                    ));
                }
            }
        }
        let secret = match (&e.registration_secret, &e.registration_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => s.trim_end_matches(['\n', '\r']).to_owned(),
                Err(err) => {
                    problems.push(format!(
                        "events.registration-secret-file: read {}: {err}",
                        path.display()
                    ));
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        if !EVENTS_FRAME_BYTES.contains(&e.max_frame_bytes) {
            problems.push(format!(
                "events.max-frame-bytes: {} is outside {}..={}",
                e.max_frame_bytes,
                EVENTS_FRAME_BYTES.start(),
                EVENTS_FRAME_BYTES.end()
            ));
        }
        if !EVENTS_RECEIVE_HWM.contains(&e.receive_hwm) {
            problems.push(format!(
                "events.receive-hwm: {} is outside {}..={}",
                e.receive_hwm,
                EVENTS_RECEIVE_HWM.start(),
                EVENTS_RECEIVE_HWM.end()
            ));
        }
        let publish_events = e.publish_events.clone()?;
        Some(ResolvedEvents {
            publish_events,
            subscribe_events: e.subscribe_events.clone(),
            registration_secret: secret,
            max_frame_bytes: e.max_frame_bytes,
            receive_hwm: e.receive_hwm,
        })
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
