//! [`TestCluster`]: gridraft members in this process on 127.0.0.1:0 listeners with temporary
//! data directories, started through [`ClusterBuilder`] (a single member is a cluster of one).
//! Waits are on Raft metrics with timeouts, never fixed sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gridraft::config::{
    DiskSettings, EventSettings, GridSettings, HttpSettings, RaftSettings, Resolved, Settings,
};
use gridraft::map::SessionMap;
use gridraft::member::{self, Member};
use gridraft::mirror::{MirrorConfig, MirrorHandle, MirrorKind};
use tokio::net::TcpListener;

use super::{disk, eventually, init_tracing, session_body};

pub const SECRET: &str = "test-cluster-secret";

/// How long the harness waits for a leader, a restart or a member to catch up.
const WAIT: Duration = Duration::from_secs(30);

/// One member's addresses and data directory, and the member itself while it runs.
pub struct TestMember {
    pub id: u64,
    pub public: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    pub member: Option<Member>,
}

/// What every member of a [`TestCluster`] is configured with beyond the harness's defaults.
#[derive(Clone)]
pub struct ClusterBuilder {
    n: u64,
    snapshot_after_entries: u64,
    events: EventSettings,
    http: HttpSettings,
    grid: Option<GridSettings>,
    mirrors: Vec<MirrorConfig>,
    tune: fn(&mut Settings),
    seed: Option<Seed>,
    tls: Option<gridraft::tls::TlsFiles>,
    peer_tls: BTreeMap<u64, gridraft::tls::TlsFiles>,
}

/// Fills a member's data directory before its first start, given the member and the member
/// list (`1=addr,2=addr,...`); `gridraft restore` in the backup tests.
pub type Seed = Arc<dyn Fn(&TestMember, &str) + Send + Sync>;

impl ClusterBuilder {
    /// A small `n` makes snapshots (and log purges) happen in tests (default 10,000).
    pub fn snapshot_after_entries(mut self, n: u64) -> Self {
        self.snapshot_after_entries = n;
        self
    }

    /// Every member subscribes to the Grid event bus described by `events`.
    pub fn events(mut self, events: EventSettings) -> Self {
        self.events = events;
        self
    }

    /// Every member's `[http]` section (timeouts and caps).
    pub fn http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// Every member's `[grid]` section, instead of the harness's (15 s timeouts).
    pub fn grid(mut self, grid: GridSettings) -> Self {
        self.grid = Some(grid);
        self
    }

    /// Every member's public port serves HTTPS with `files` (see [`TestCluster::https_url`]).
    pub fn tls(mut self, files: gridraft::tls::TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Mutual TLS on the peer ports: member `id` with `files[id]` (its `client_ca` is the peer
    /// CA). The harness then reaches peer ports over TLS with member 1's files.
    pub fn peer_tls(mut self, files: BTreeMap<u64, gridraft::tls::TlsFiles>) -> Self {
        self.peer_tls = files;
        self
    }

    /// Every member writes through to `mirrors`.
    pub fn mirrors(mut self, mirrors: Vec<MirrorConfig>) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// Changes every member's settings after the harness's own.
    pub fn tune(mut self, tune: fn(&mut Settings)) -> Self {
        self.tune = tune;
        self
    }

    /// Runs `seed` for every member before it first starts.
    pub fn seed(mut self, seed: impl Fn(&TestMember, &str) + Send + Sync + 'static) -> Self {
        self.seed = Some(Arc::new(seed));
        self
    }

    /// Starts the members and waits until they agree on a leader.
    pub async fn start(self) -> TestCluster {
        init_tracing();
        let root = tempfile::tempdir().unwrap();
        let peer_http = self.peer_tls.get(&1).map(|files| {
            let tls = gridraft::tls::PeerTls::load(files.clone()).expect("peer TLS files load");
            gridraft::peer::client::http_client(Some(&tls))
        });
        let mut cluster = TestCluster {
            members: BTreeMap::new(),
            http: reqwest::Client::new(),
            peer_http,
            root,
            builder: self.clone(),
            disk: Default::default(),
        };
        let mut listeners = Vec::new();
        for id in 1..=self.n {
            let (public, peer) = cluster.add_slot(id).await;
            listeners.push((id, public, peer));
        }
        if let Some(seed) = &self.seed {
            let list = cluster.member_list();
            for m in cluster.members.values() {
                seed(m, &list);
            }
        }
        for (id, public, peer) in listeners {
            cluster.start_member(id, public, peer).await;
        }
        cluster.leader().await;
        cluster
    }
}

pub struct TestCluster {
    pub members: BTreeMap<u64, TestMember>,
    pub http: reqwest::Client,
    /// The client of peer ports with peer TLS (see [`ClusterBuilder::peer_tls`]).
    peer_http: Option<reqwest::Client>,
    root: tempfile::TempDir,
    builder: ClusterBuilder,
    /// Every member's free space (plenty unless a test says otherwise), read every 100 ms.
    pub disk: Arc<disk::FakeDisk>,
}

impl TestCluster {
    /// `n` members with the harness's settings; see [`TestCluster::builder`] for others.
    pub async fn start(n: u64) -> Self {
        Self::builder(n).start().await
    }

    pub fn builder(n: u64) -> ClusterBuilder {
        ClusterBuilder {
            n,
            snapshot_after_entries: 10_000,
            events: EventSettings::default(),
            http: HttpSettings::default(),
            grid: None,
            mirrors: Vec::new(),
            tune: |_| {},
            seed: None,
            tls: None,
            peer_tls: BTreeMap::new(),
        }
    }

    async fn add_slot(&mut self, id: u64) -> (TcpListener, TcpListener) {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slot = TestMember {
            id,
            public: public.local_addr().unwrap(),
            peer: peer.local_addr().unwrap(),
            dir: self.root.path().join(format!("m{id}")),
            member: None,
        };
        self.members.insert(id, slot);
        (public, peer)
    }

    async fn start_member(&mut self, id: u64, public: TcpListener, peer: TcpListener) {
        let cfg = self.settings(id);
        let running = member::start(&cfg, public, peer)
            .await
            .unwrap_or_else(|e| panic!("start member {id}: {e}"));
        self.members.get_mut(&id).unwrap().member = Some(running);
    }

    pub fn member_list(&self) -> String {
        self.members
            .values()
            .map(|m| format!("{}={}", m.id, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `id`'s resolved settings, as the harness starts it.
    pub fn settings(&self, id: u64) -> Resolved {
        let m = &self.members[&id];
        let b = &self.builder;
        let mut settings = Settings {
            id,
            listen: m.public.to_string(),
            peer_listen: m.peer.to_string(),
            data_dir: m.dir.clone(),
            members: self.member_list(),
            cluster_secret: Some(SECRET.into()),
            raft: RaftSettings {
                heartbeat_interval: "50ms".into(),
                election_timeout_min: "300ms".into(),
                election_timeout_max: "600ms".into(),
                snapshot_after_entries: b.snapshot_after_entries,
                keep_entries_after_snapshot: 10,
                ..Default::default()
            },
            grid: b.grid.clone().unwrap_or_else(|| GridSettings {
                write_timeout: "15s".into(),
                read_timeout: "15s".into(),
                ..Default::default()
            }),
            events: b.events.clone(),
            disk: DiskSettings {
                check_interval: "100ms".into(),
                ..Default::default()
            },
            http: b.http.clone(),
            ..Default::default()
        };
        if let Some(files) = b.peer_tls.get(&id) {
            settings.peer_tls = gridraft::config::PeerTlsSettings {
                cert_file: Some(files.cert.clone()),
                key_file: Some(files.key.clone()),
                ca_file: files.client_ca.clone(),
            };
        }
        (b.tune)(&mut settings);
        let mut cfg = settings.validate().expect("valid test settings");
        cfg.health.disk_probe = self.disk.clone();
        if !b.mirrors.is_empty() {
            cfg.mirrors = b.mirrors.clone();
        }
        cfg.tls = b.tls.clone();
        cfg
    }

    /// The running gridraft member `id`.
    pub fn member(&self, id: u64) -> &Member {
        self.members[&id]
            .member
            .as_ref()
            .expect("member is running")
    }

    /// The voters of the membership member `id` has appended (its own view, which may lag the
    /// leader's).
    pub fn voters(&self, id: u64) -> std::collections::BTreeSet<u64> {
        self.member(id)
            .cluster
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| m.member.is_some())
            .map(|m| m.id)
            .collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.members[&id].public, path)
    }

    /// [`TestCluster::url`] for a public port that serves HTTPS.
    pub fn https_url(&self, id: u64, path: &str) -> String {
        format!("https://{}{}", self.members[&id].public, path)
    }

    fn current_leader(&self, id: u64) -> Option<u64> {
        self.member(id)
            .cluster
            .raft
            .metrics()
            .borrow()
            .current_leader
    }

    fn applied(&self, id: u64) -> Option<u64> {
        let metrics = self.member(id).cluster.raft.metrics();
        let applied = metrics.borrow().last_applied.map(|l| l.index);
        applied
    }

    /// The leader every member in `ids` agrees on (itself one of them).
    pub async fn leader_among(&self, ids: &[u64], timeout: Duration) -> u64 {
        eventually(timeout, &format!("a leader {ids:?} agree on"), || async {
            let first = self.current_leader(*ids.first()?)?;
            (ids.contains(&first) && ids.iter().all(|id| self.current_leader(*id) == Some(first)))
                .then_some(first)
        })
        .await
    }

    /// The leader every running member agrees on.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        self.leader_among(&self.running(), timeout).await
    }

    pub async fn leader(&self) -> u64 {
        self.wait_for_leader(WAIT).await
    }

    /// Crashes a member: its tasks are dropped without a graceful stop.
    pub async fn kill(&mut self, id: u64) {
        tracing::info!(member = id, "killing member");
        let running = self.members.get_mut(&id).unwrap().member.take().unwrap();
        running.kill().await;
    }

    /// Stops a member gracefully.
    pub async fn stop(&mut self, id: u64) {
        let running = self.members.get_mut(&id).unwrap().member.take().unwrap();
        running.stop().await;
    }

    /// Restarts a stopped member on the same addresses and data directory.
    pub async fn restart(&mut self, id: u64) {
        tracing::info!(member = id, "restarting member");
        let cfg = self.settings(id);
        let (public, peer) = (self.members[&id].public, self.members[&id].peer);
        let running = eventually(WAIT, "the member to restart", || {
            let cfg = cfg.clone();
            async move {
                let p = TcpListener::bind(public).await.ok()?;
                let q = TcpListener::bind(peer).await.ok()?;
                member::start(&cfg, p, q)
                    .await
                    .map_err(|e| tracing::warn!(member = id, error = %e, "restart failed"))
                    .ok()
            }
        })
        .await;
        self.members.get_mut(&id).unwrap().member = Some(running);
    }

    /// Stops member `id`, starts it again, waits until it caught up, and adds `session`
    /// through it; every running member then reads the session.
    pub async fn restart_and_write(&mut self, id: u64, session: &str) {
        self.stop(id).await;
        self.restart(id).await;
        self.wait_caught_up(id).await;
        let status = self.add(id, session, "http://node:5555").await.status();
        assert_eq!(status, 200, "add {session} through restarted member {id}");
        for reader in self.running() {
            assert_eq!(
                self.get_status(reader, session).await,
                200,
                "{session} on {reader}"
            );
        }
    }

    /// Adds a new member's data dir and listeners (not yet part of the Raft membership).
    pub async fn spawn_new_member(&mut self, id: u64) {
        let (public, peer) = self.add_slot(id).await;
        self.start_member(id, public, peer).await;
    }

    /// Cuts member `id` off from every other member, both ways, as a network partition would:
    /// their Raft RPCs and peer requests to each other are refused at once. Its public port
    /// stays open. [`TestCluster::heal`] undoes it.
    pub fn isolate(&self, id: u64) {
        tracing::info!(member = id, "isolating member");
        self.set_cut(id, true);
    }

    /// Reconnects member `id` to every other member.
    pub fn heal(&self, id: u64) {
        tracing::info!(member = id, "healing member");
        self.set_cut(id, false);
    }

    fn set_cut(&self, id: u64, cut: bool) {
        let addr = |m: u64| self.members[&m].peer.to_string();
        for other in self.members.keys().copied().filter(|m| *m != id) {
            if let Some(running) = &self.members[&other].member {
                running.network_faults().set_unreachable(&addr(id), cut);
            }
            if let Some(running) = &self.members[&id].member {
                running.network_faults().set_unreachable(&addr(other), cut);
            }
        }
    }

    pub async fn add(&self, via: u64, session: &str, node: &str) -> reqwest::Response {
        self.http
            .post(self.url(via, "/se/grid/session"))
            .body(session_body(session, node))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_status(&self, via: u64, session: &str) -> u16 {
        self.http
            .get(self.url(via, &format!("/se/grid/session/{session}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The body of `GET path` on member `via`'s public port.
    pub async fn get_text(&self, via: u64, path: &str) -> String {
        let resp = self.http.get(self.url(via, path)).send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// Member `id`'s Prometheus text from its peer port.
    pub async fn metrics_text(&self, id: u64) -> String {
        let (http, scheme) = match &self.peer_http {
            Some(http) => (http, "https"),
            None => (&self.http, "http"),
        };
        let url = format!("{scheme}://{}/metrics", self.members[&id].peer);
        let resp = http.get(url).bearer_auth(SECRET).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "GET /metrics on member {id}: {text}");
        text
    }

    pub async fn delete(&self, via: u64, session: &str) -> u16 {
        self.http
            .delete(self.url(via, &format!("/se/grid/session/{session}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until member `id` has applied at least what the leader has applied.
    pub async fn wait_caught_up(&self, id: u64) {
        let target = self.applied(self.leader().await);
        let what = format!("member {id} to apply up to the leader's {target:?}");
        eventually(WAIT, &what, || async {
            (self.applied(id) >= target).then_some(())
        })
        .await;
    }

    /// The leader's applied map (after a read barrier, so it holds every acknowledged write).
    pub async fn truth(&self) -> SessionMap {
        let leader = self.leader().await;
        let cluster = &self.member(leader).cluster;
        cluster
            .read_barrier()
            .await
            .expect("read barrier on the leader");
        cluster.reader.snapshot()
    }

    /// Member `id`'s write-through to the mirror of `kind`.
    pub fn mirror_handle(&self, id: u64, kind: MirrorKind) -> Arc<MirrorHandle> {
        self.member(id)
            .cluster
            .mirrors
            .all()
            .into_iter()
            .find(|m| m.kind == kind)
            .expect("the mirror is configured")
    }

    /// Member `id`'s `/admin/status` document.
    pub async fn status(&self, id: u64) -> serde_json::Value {
        self.member(id).cluster.status()
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}
