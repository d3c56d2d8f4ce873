//! Wiring only: opens storage, starts Raft, both listeners and the background tasks, and runs
//! the orderly shutdown. Listeners are bound by the caller so tests can use port 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::server::{ConnectionMetrics, ListenerSettings};
use crate::api::{self, fd_budget, AppState};
use crate::cluster::disk;
use crate::cluster::health::{self, FatalHandle};
use crate::cluster::reconcile::{self, ReconcileMetrics};
use crate::cluster::{bootstrap, event_sink, Cluster, Leader};
use crate::config::Resolved;
use crate::events::{spawn_subscriber, EventMetrics};
use crate::peer::PeerClient;
use crate::raft::network::{Contacts, Network, NetworkFaults};
use crate::raft::{open_storage, OpenStorageError, Raft};
use crate::store::durable::{DataIdentity, LogStats, Storage};
use crate::telemetry::Metrics;
use crate::tls::{PeerTls, ServerTls};

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Storage(#[from] OpenStorageError),
    #[error("invalid raft settings: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("start raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cluster secret at {path}: {source}")]
    Secret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running member.
pub struct Member {
    pub cluster: Arc<Cluster>,
    storage: Storage,
    faults: NetworkFaults,
    public_stop: CancellationToken,
    peer_stop: CancellationToken,
    tasks_stop: CancellationToken,
    public_server: JoinHandle<()>,
    peer_server: JoinHandle<()>,
}

/// Starts a member on already-bound listeners.
pub async fn start(
    cfg: &Resolved,
    public: TcpListener,
    peer: TcpListener,
) -> Result<Member, MemberError> {
    let span = tracing::info_span!("member", id = cfg.cluster.id);
    start_inner(cfg, public, peer).instrument(span).await
}

async fn start_inner(
    cfg: &Resolved,
    public: TcpListener,
    peer: TcpListener,
) -> Result<Member, MemberError> {
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }
    let secret: Arc<str> = Arc::from(cluster_secret(cfg)?);
    // Before storage and Raft: a certificate that does not load stops the start at once.
    let public_tls = match &cfg.tls {
        Some(files) => {
            let tls = Arc::new(ServerTls::load(files.clone())?);
            tracing::info!(cert = %files.cert.display(), client_ca = files.client_ca.is_some(), "the public port serves HTTPS");
            Some(tls)
        }
        None => None,
    };
    let peer_tls = match &cfg.peer_tls {
        Some(files) => {
            let tls = Arc::new(PeerTls::load(files.clone())?);
            tracing::info!(cert = %files.cert.display(), "the peer port requires mutual TLS");
            Some(tls)
        }
        None => None,
    };
    let identity = DataIdentity {
        cluster: cfg.cluster_name.clone(),
        node_id: cfg.cluster.id,
    };
    let (storage, log_store, state_machine) =
        open_storage(&cfg.data_dir, &identity, cfg.raft.preallocate_log_segments)?;
    let cluster_id: Option<Arc<str>> = storage
        .cluster_id()
        .map_err(OpenStorageError::from)?
        .map(Arc::from);
    if let Some(id) = &cluster_id {
        tracing::info!(cluster_id = %id, "restored cluster: peers must carry this cluster id");
    }
    let reader = state_machine.reader();
    let applied = state_machine.applied_index();
    let mirror_applied = state_machine.applied_index();
    let events_applied = state_machine.applied_index();
    let mirror_log = log_store.clone();
    let raft_config = cfg.raft.openraft.clone().validate()?;
    let contacts = Arc::new(Contacts::default());
    let faults = NetworkFaults::default();
    let mut peers = PeerClient::new(crate::peer::client::http_client(None), secret.clone())
        .with_cluster_id(cluster_id.clone())
        .with_faults(faults.clone());
    if let Some(tls) = &peer_tls {
        peers = peers.with_tls(tls.clone());
    }
    if cfg.peer_streams {
        peers = peers.with_streams();
    }
    let network = Network::new(peers.clone(), contacts.clone(), cfg.raft.retry);
    let raft = Raft::new(
        cfg.cluster.id,
        Arc::new(raft_config),
        network,
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| MemberError::Raft(e.to_string()))?;
    let cluster = Cluster::new(cfg.cluster.clone(), raft, reader, applied, peers, contacts);
    let metrics = Metrics::new();
    let event_metrics = EventMetrics::new(&metrics.registry);
    let connection_metrics = ConnectionMetrics::new(&metrics.registry);
    cluster.read_stats().register(&metrics.registry);
    cluster.peers.metrics().register(&metrics.registry);
    storage.log_sync.register(&metrics.registry);
    cluster.health.register(&metrics.registry);
    cluster.queue_full.register(&metrics.registry);
    let reconcile_metrics = ReconcileMetrics::new(&metrics.registry);
    let peer_streams = api::peer_stream::StreamMetrics::new(&metrics.registry);
    let state = Arc::new(AppState {
        cluster: cluster.clone(),
        metrics,
        max_body_bytes: cfg.grid.max_body_bytes,
        session_limits: cfg.grid.session_limits,
        secret,
        cluster_name: cfg.cluster_name.clone(),
        cluster_id,
        foreign_cluster_log: Default::default(),
        failures: Default::default(),
        events: cfg.events.is_some().then(|| event_metrics.clone()),
        ui: api::ui::StatusPage::new(cfg.ui.enabled),
        peer_streams,
    });

    let caps = fd_budget::connection_caps(fd_budget::raise_open_file_limit(), &cfg.http);
    tracing::info!(
        public = caps.public,
        peer = caps.peer,
        max_connections = cfg.http.max_connections,
        peer_max_connections = cfg.http.peer_max_connections,
        "connection caps"
    );
    let listener = |name, cap, streams, tls| ListenerSettings {
        name,
        cap,
        limits: cfg.http,
        streams,
        tls,
    };
    let peer_stop = CancellationToken::new();
    let peer_server = api::server::spawn(
        peer,
        api::App::Router(api::peer::router(state.clone())),
        listener(
            "peer",
            caps.peer,
            Some(state.clone()),
            peer_tls.clone().map(|t| t as Arc<dyn crate::tls::Accepts>),
        ),
        &connection_metrics,
        peer_stop.clone(),
    );
    let public_stop = CancellationToken::new();
    let public_server = api::server::spawn(
        public,
        api::App::Grid(state),
        listener(
            "public",
            caps.public,
            None,
            public_tls
                .clone()
                .map(|t| t as Arc<dyn crate::tls::Accepts>),
        ),
        &connection_metrics,
        public_stop.clone(),
    );

    let tasks_stop = CancellationToken::new();
    let mirror_ctx = crate::mirror::runner::RunnerContext {
        raft: cluster.raft.clone(),
        reader: cluster.reader.clone(),
        log: mirror_log,
        applied: mirror_applied,
    };
    crate::mirror::runner::spawn_all(
        &cfg.mirrors,
        &cluster.mirrors,
        mirror_ctx,
        tasks_stop.clone(),
    );
    if let Some(events) = &cfg.events {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        // Events are stamped with the applied index when received (see `event_sink`).
        spawn_subscriber(
            events.clone(),
            tx,
            events_applied,
            tasks_stop.clone(),
            event_metrics,
        );
        tokio::spawn(event_sink::run(cluster.clone(), rx, tasks_stop.clone()).in_current_span());
    }
    if let Some(reconcile) = &cfg.reconcile {
        let run = reconcile::run(
            cluster.clone(),
            reconcile.clone(),
            reconcile_metrics,
            tasks_stop.clone(),
        );
        tokio::spawn(run.in_current_span());
    }
    tokio::spawn(
        cluster
            .clone()
            .watch_leader(tasks_stop.clone())
            .in_current_span(),
    );
    tokio::spawn(health::watch_raft(cluster.clone(), tasks_stop.clone()).in_current_span());
    if let Some(tls) = public_tls {
        tokio::spawn(crate::tls::watch(tls, tasks_stop.clone()).in_current_span());
    }
    if let Some(tls) = peer_tls {
        tokio::spawn(crate::tls::watch(tls, tasks_stop.clone()).in_current_span());
    }
    let disk = cfg.health.disk_watch(cfg.data_dir.clone());
    tokio::spawn(disk::watch_disk(cluster.clone(), disk, tasks_stop.clone()).in_current_span());
    tokio::spawn(
        snapshot_by_size(
            cluster.raft.clone(),
            storage.stats.clone(),
            cfg.raft.snapshot_after_bytes,
            tasks_stop.clone(),
        )
        .in_current_span(),
    );
    let boot = cluster.clone();
    tokio::spawn(async move { bootstrap::bootstrap(&boot).await }.in_current_span());
    tracing::info!(
        public = %cfg.listen,
        peer = %cfg.peer_listen,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "member started"
    );
    Ok(Member {
        cluster,
        storage,
        faults,
        public_stop,
        peer_stop,
        tasks_stop,
        public_server,
        peer_server,
    })
}

/// The configured secret, or for a single member without one, a random secret kept in the
/// data directory (so `gridraft cluster` can use it via `--cluster-secret-file`).
fn cluster_secret(cfg: &Resolved) -> Result<String, MemberError> {
    if let Some(s) = &cfg.cluster_secret {
        return Ok(s.clone());
    }
    if cfg.peer_tls.is_some() {
        // Members authenticate each other by certificate; there is no secret to present.
        return Ok(String::new());
    }
    let path = cfg.data_dir.join("cluster-secret");
    let err = |source| MemberError::Secret {
        path: path.clone(),
        source,
    };
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_owned());
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(err)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &secret).map_err(err)?;
    tracing::info!(path = %path.display(), "generated a cluster secret for this single member");
    Ok(secret)
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Triggers a snapshot once the log written since the last one outgrows `after_bytes`, or a
/// sixteenth of the last snapshot's size if that is larger (so a large map is not rewritten over
/// and over). openraft only counts entries, and a batched entry can be 100 KiB: without this,
/// the log (its disk, and the replay of the next start) could reach `snapshot-after-entries`
/// such entries.
async fn snapshot_by_size(
    raft: Raft,
    stats: Arc<LogStats>,
    after_bytes: u64,
    stop: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    if after_bytes == 0 {
        return;
    }
    // The snapshot last asked for: the `appended_at_snapshot` it should replace, and when.
    let mut pending: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let current = stats.appended_at_snapshot.load(Relaxed);
        if pending
            .is_some_and(|(at, when)| at == current && when.elapsed() < Duration::from_secs(120))
        {
            continue;
        }
        let limit = after_bytes.max(stats.snapshot_bytes.load(Relaxed) / 16);
        let since = stats.since_snapshot();
        if since < limit {
            continue;
        }
        tracing::info!(
            log_bytes = since,
            limit,
            "log outgrew its limit: taking a snapshot"
        );
        match raft.trigger().snapshot().await {
            Ok(()) => pending = Some((current, Instant::now())),
            Err(e) => {
                tracing::warn!(error = %e, "could not trigger a snapshot");
                return;
            }
        }
    }
}

/// A stop takes a snapshot first when at least this many entries were applied since the last.
const STOP_SNAPSHOT_MIN_ENTRIES: u64 = 1_000;
/// The longest a stop waits for that snapshot.
const STOP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);

impl Member {
    /// Fault injection for in-process tests: while `on`, this member's log appends fail as on
    /// a full disk (`ENOSPC`), which stops its Raft.
    #[doc(hidden)]
    pub fn inject_disk_full(&self, on: bool) {
        self.storage.log_sync.inject_disk_full(on);
    }

    /// Fault injection for in-process tests: the peer addresses this member's outbound Raft
    /// RPCs and peer requests treat as unreachable (refused at once). A test isolates a member
    /// by marking every other member here and this member on every other one.
    #[doc(hidden)]
    pub fn network_faults(&self) -> &NetworkFaults {
        &self.faults
    }

    /// Resolves once Raft has stopped on this member (a storage error, a panic in its core).
    /// The member then answers `/readyz` and `/healthz` with 503; whether the process exits is
    /// the caller's decision (`main` exits after `[health] fatal-drain`).
    pub fn fatal(&self) -> FatalHandle {
        self.cluster.health.fatal()
    }

    /// Orderly stop: stop accepting Grid requests and drain them, hand leadership over, stop
    /// Raft, flush storage, close the peer port.
    pub async fn stop(mut self) {
        self.public_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.public_server).await;
        // A stopped Raft can neither hand over nor snapshot; waiting for it would only delay.
        if self.cluster.health.stopped().is_none() {
            self.hand_over_leadership().await;
            self.snapshot_before_stop().await;
        }
        self.tasks_stop.cancel();
        if let Err(e) = self.cluster.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.storage.flusher.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        self.peer_stop.cancel();
        self.cluster.peers.close_streams();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.peer_server).await;
        tracing::info!("member stopped");
    }

    /// Simulates a crash (tests): every task is dropped at once, nothing is flushed beyond what
    /// was already acknowledged as durable.
    pub async fn kill(mut self) {
        // Closing the listeners' connections matters: a crashed process closes its sockets, so
        // peers must not keep talking to this member's handlers over pooled connections.
        self.public_stop.cancel();
        self.peer_stop.cancel();
        self.tasks_stop.cancel();
        self.cluster.peers.close_streams();
        let _ = self.cluster.raft.shutdown().await;
        for server in [&mut self.public_server, &mut self.peer_server] {
            if tokio::time::timeout(Duration::from_secs(2), &mut *server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }

    /// Takes a snapshot when many entries were applied since the last one, so the next start
    /// loads one file instead of replaying them. Bounded: a stop is never held up for long.
    ///
    /// A snapshot already being built (the log outgrew its limit just before the stop) makes
    /// openraft ignore the request: when that one finishes short of what was applied, and the
    /// rest is still worth a snapshot, it asks again instead of waiting out the timeout.
    async fn snapshot_before_stop(&self) {
        let raft: &Raft = &self.cluster.raft;
        let mut metrics = raft.metrics();
        let (applied, mut taken) = {
            let m = metrics.borrow();
            (
                m.last_applied.map(|l| l.index).unwrap_or(0),
                m.snapshot.map(|l| l.index).unwrap_or(0),
            )
        };
        if applied.saturating_sub(taken) < STOP_SNAPSHOT_MIN_ENTRIES {
            return;
        }
        let started = Instant::now();
        let deadline = started + STOP_SNAPSHOT_TIMEOUT;
        let mut asks = 0;
        while asks < 3 {
            tracing::info!(
                applied,
                snapshot = taken,
                "taking a snapshot before stopping"
            );
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "could not take a snapshot before stopping");
                return;
            }
            asks += 1;
            let asked_at = taken;
            while Instant::now() < deadline && taken == asked_at {
                let _ = tokio::time::timeout_at(deadline.into(), metrics.changed()).await;
                taken = metrics.borrow().snapshot.map(|l| l.index).unwrap_or(0);
            }
            if taken == asked_at {
                break;
            }
            if applied.saturating_sub(taken) < STOP_SNAPSHOT_MIN_ENTRIES {
                tracing::info!(index = taken, elapsed = ?started.elapsed(), "snapshot taken");
                return;
            }
        }
        tracing::warn!(
            applied,
            snapshot = taken,
            "snapshot before stopping did not finish in time; the next start replays the log"
        );
    }

    /// Whether so many other voters refuse connections to their peer port that the rest make no
    /// quorum (all members stopping at once). Asks `/peer/info`, which no Raft timer notices.
    async fn no_quorum_answers(&self) -> bool {
        let others: Vec<String> = {
            let m = self.cluster.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            membership
                .voter_ids()
                .filter(|id| *id != self.cluster.id())
                .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
                .collect()
        };
        let mut refused = 0;
        for addr in &others {
            let wait = self.cluster.settings.election_timeout_max / 4;
            if let Ok(Err(e)) = tokio::time::timeout(wait, self.cluster.peers.info(addr)).await {
                refused += usize::from(e.is_refused());
            }
        }
        (others.len() - refused + 1) * 2 <= others.len() + 1
    }

    /// A leader that stops sends no more heartbeats and refuses to stand again, then waits
    /// (bounded) until another member has taken over, so in-flight forwarding still works.
    async fn hand_over_leadership(&self) {
        let raft: &Raft = &self.cluster.raft;
        let voters = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if self.cluster.leader() != Leader::Me || voters < 2 {
            return;
        }
        tracing::info!("leader stopping: handing leadership over");
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().elect(false);
        self.cluster
            .stepping_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + self.cluster.settings.election_timeout_max * 4;
        let mut metrics = raft.metrics();
        while Instant::now() < deadline {
            let leader = metrics.borrow().current_leader;
            if leader.is_some_and(|l| l != self.cluster.id()) {
                tracing::info!(new_leader = leader, "leadership handed over");
                return;
            }
            // Every other member stopping too (or gone): nobody can take over.
            if self.cluster.quorum_unreachable() || self.no_quorum_answers().await {
                tracing::info!("no member left to hand leadership over to");
                return;
            }
            // Also wake now and then: what is learnt about the other members changes no metric.
            let tick =
                (Instant::now() + self.cluster.settings.election_timeout_max / 4).min(deadline);
            let _ = tokio::time::timeout_at(tick.into(), metrics.changed()).await;
        }
        tracing::warn!("no other member took over before the deadline");
    }
}
