//! In-process cluster harness: members on 127.0.0.1:0 listeners with temporary data
//! directories, waits on Raft metrics with timeouts (never fixed sleeps).
#![allow(dead_code)]

pub mod disk;
pub mod grid;
pub mod java;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gridraft::config::{EventSettings, GridSettings, HttpSettings, RaftSettings, Settings};
use gridraft::member::{self, Member as RunningMember};
use tokio::net::TcpListener;

pub const SECRET: &str = "test-cluster-secret";

pub struct Member {
    pub id: u64,
    pub public: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    pub node: Option<RunningMember>,
}

pub struct TestCluster {
    pub members: BTreeMap<u64, Member>,
    pub http: reqwest::Client,
    _root: tempfile::TempDir,
    pub snapshot_after_entries: u64,
    /// Every member's `[events]` section (default: no event bus).
    pub events: EventSettings,
    /// Every member's free space (plenty unless a test says otherwise), read every 100 ms.
    pub disk: std::sync::Arc<disk::FakeDisk>,
    /// Every member's `[http]` section (default: the defaults).
    pub http_settings: HttpSettings,
    /// Changes every member's settings (see [`TestCluster::start_tuned`]).
    pub tune: fn(&mut Settings),
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gridraft=info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn session_body(id: &str, node: &str) -> String {
    format!(
        r#"{{"capabilities": {{"browserName": "chrome", "timeouts": {{"pageLoad": 300000}}}}, "sessionId": "{id}", "start": "2024-05-01T10:20:30.123400Z", "stereotype": {{"browserName": "chrome"}}, "uri": "{node}"}}"#
    )
}

impl TestCluster {
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, 10_000).await
    }

    /// `snapshot_after_entries` small makes snapshots (and log purges) happen in tests.
    pub async fn start_with(n: u64, snapshot_after_entries: u64) -> Self {
        Self::start_configured(
            n,
            snapshot_after_entries,
            EventSettings::default(),
            HttpSettings::default(),
            |_| {},
        )
        .await
    }

    /// Members that all subscribe to the Grid event bus described by `events`.
    pub async fn start_with_events(n: u64, events: EventSettings) -> Self {
        Self::start_configured(n, 10_000, events, HttpSettings::default(), |_| {}).await
    }

    /// Members whose listeners use `http`'s timeouts and caps.
    pub async fn start_with_http(n: u64, http: HttpSettings) -> Self {
        Self::start_configured(n, 10_000, EventSettings::default(), http, |_| {}).await
    }

    /// Members whose settings `tune` changes (after the harness's own).
    pub async fn start_tuned(n: u64, tune: fn(&mut Settings)) -> Self {
        Self::start_configured(
            n,
            10_000,
            EventSettings::default(),
            HttpSettings::default(),
            tune,
        )
        .await
    }

    async fn start_configured(
        n: u64,
        snapshot_after_entries: u64,
        events: EventSettings,
        http: HttpSettings,
        tune: fn(&mut Settings),
    ) -> Self {
        init_tracing();
        let root = tempfile::tempdir().unwrap();
        let mut members = BTreeMap::new();
        let mut listeners = Vec::new();
        for id in 1..=n {
            let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let m = Member {
                id,
                public: public.local_addr().unwrap(),
                peer: peer.local_addr().unwrap(),
                dir: root.path().join(format!("m{id}")),
                node: None,
            };
            members.insert(id, m);
            listeners.push((id, public, peer));
        }
        let mut cluster = TestCluster {
            members,
            http: reqwest::Client::new(),
            _root: root,
            snapshot_after_entries,
            events,
            disk: Default::default(),
            http_settings: http,
            tune,
        };
        for (id, public, peer) in listeners {
            let cfg = cluster.settings(id);
            let node = member::start(&cfg, public, peer).await.unwrap();
            cluster.members.get_mut(&id).unwrap().node = Some(node);
        }
        cluster.wait_for_leader(Duration::from_secs(20)).await;
        cluster
    }

    pub fn member_list(&self) -> String {
        self.members
            .values()
            .map(|m| format!("{}={}", m.id, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn settings(&self, id: u64) -> gridraft::config::Resolved {
        let m = &self.members[&id];
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
                snapshot_after_entries: self.snapshot_after_entries,
                keep_entries_after_snapshot: 10,
                ..Default::default()
            },
            grid: GridSettings {
                write_timeout: "15s".into(),
                read_timeout: "15s".into(),
                ..Default::default()
            },
            events: self.events.clone(),
            disk: gridraft::config::DiskSettings {
                check_interval: "100ms".into(),
                ..Default::default()
            },

            http: self.http_settings.clone(),
            ..Default::default()
        };
        (self.tune)(&mut settings);
        settings
            .validate()
            .map(|mut cfg| {
                cfg.health.disk_probe = self.disk.clone();
                cfg
            })
            .unwrap()
    }

    pub fn node(&self, id: u64) -> &RunningMember {
        self.members[&id].node.as_ref().expect("member is running")
    }

    pub fn running(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| m.node.is_some())
            .map(|m| m.id)
            .collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.members[&id].public, path)
    }

    /// The leader every running member agrees on.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        eventually(timeout, "a leader all running members agree on", || async {
            let leaders: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|id| {
                    self.node(*id)
                        .cluster
                        .raft
                        .metrics()
                        .borrow()
                        .current_leader
                })
                .collect();
            let first = leaders.first().copied().flatten()?;
            (leaders.iter().all(|l| *l == Some(first)) && self.running().contains(&first))
                .then_some(first)
        })
        .await
    }

    pub async fn leader(&self) -> u64 {
        self.wait_for_leader(Duration::from_secs(20)).await
    }

    /// Crashes a member: its tasks are dropped without a graceful stop.
    pub async fn kill(&mut self, id: u64) {
        tracing::info!(member = id, "killing member");
        let node = self.members.get_mut(&id).unwrap().node.take().unwrap();
        node.kill().await;
    }

    /// Stops a member gracefully.
    pub async fn stop(&mut self, id: u64) {
        let node = self.members.get_mut(&id).unwrap().node.take().unwrap();
        node.stop().await;
    }

    /// Restarts a stopped member on the same addresses and data directory.
    pub async fn restart(&mut self, id: u64) {
        tracing::info!(member = id, "restarting member");
        let cfg = self.settings(id);
        let (public, peer) = (self.members[&id].public, self.members[&id].peer);
        let node = eventually(Duration::from_secs(20), "the member to restart", || {
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
        self.members.get_mut(&id).unwrap().node = Some(node);
    }

    /// Adds a new member's data dir and listeners (not yet part of the Raft membership).
    pub async fn spawn_new_member(&mut self, id: u64) {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = self._root.path().join(format!("m{id}"));
        self.members.insert(
            id,
            Member {
                id,
                public: public.local_addr().unwrap(),
                peer: peer.local_addr().unwrap(),
                dir,
                node: None,
            },
        );
        let cfg = self.settings(id);
        let node = member::start(&cfg, public, peer).await.unwrap();
        self.members.get_mut(&id).unwrap().node = Some(node);
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
        self.http
            .get(self.url(via, path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Member `id`'s Prometheus text from its peer port.
    pub async fn metrics_text(&self, id: u64) -> String {
        self.http
            .get(format!("http://{}/metrics", self.members[&id].peer))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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
        let leader = self.leader().await;
        let target = self
            .node(leader)
            .cluster
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index);
        eventually(
            Duration::from_secs(30),
            "the member to catch up",
            || async {
                let applied = self
                    .node(id)
                    .cluster
                    .raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .map(|l| l.index);
                (applied >= target).then_some(())
            },
        )
        .await;
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}
