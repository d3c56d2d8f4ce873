//! Harness for the mirror tests: an in-process cluster whose members mirror to real Postgres
//! and Redis servers, a deterministic mixed load with a model of its outcome, and exact
//! comparisons of each store with the Raft state. Servers come from `GRIDRAFT_TEST_POSTGRES_URL`
//! and `GRIDRAFT_TEST_REDIS_URL` (see `scripts/start-test-services.sh`); without them the tests
//! fail rather than skip.
#![allow(dead_code)]

pub mod load;
pub mod servers;
pub mod stores;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridraft::config::{GridSettings, RaftSettings, Settings};
use gridraft::map::SessionMap;
use gridraft::member::{self, Member as RunningMember};
use gridraft::mirror::{MirrorConfig, MirrorHandle, MirrorKind, MirrorMode};
use tokio::net::TcpListener;

pub const SECRET: &str = "mirror-test-secret";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gridraft=info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The value of a required environment variable, or a failure that says how to set it.
pub fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the mirror tests need real servers. Run\n    eval \"$(scripts/start-test-services.sh)\"\nfirst (it installs and starts PostgreSQL and Redis on 127.0.0.1)."
        ),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails with `what` after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn mirror(kind: MirrorKind, url: &str) -> MirrorConfig {
    MirrorConfig {
        kind,
        url: url.to_owned(),
        mode: MirrorMode::Async,
        sync_timeout: Duration::from_secs(2),
    }
}

pub struct Member {
    pub public: SocketAddr,
    pub peer: SocketAddr,
    pub dir: PathBuf,
    pub node: Option<RunningMember>,
}

/// Members on 127.0.0.1:0 listeners with temporary data directories, all mirroring.
pub struct MirrorCluster {
    pub members: BTreeMap<u64, Member>,
    pub http: reqwest::Client,
    pub mirrors: Vec<MirrorConfig>,
    _root: tempfile::TempDir,
}

impl MirrorCluster {
    pub async fn start(n: u64, mirrors: Vec<MirrorConfig>) -> Self {
        init_tracing();
        let root = tempfile::tempdir().unwrap();
        let mut members = BTreeMap::new();
        let mut listeners = Vec::new();
        for id in 1..=n {
            let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(
                id,
                Member {
                    public: public.local_addr().unwrap(),
                    peer: peer.local_addr().unwrap(),
                    dir: root.path().join(format!("m{id}")),
                    node: None,
                },
            );
            listeners.push((id, public, peer));
        }
        let mut cluster = MirrorCluster {
            members,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            mirrors,
            _root: root,
        };
        for (id, public, peer) in listeners {
            let cfg = cluster.settings(id);
            let node = member::start(&cfg, public, peer)
                .await
                .expect("start a member");
            cluster.members.get_mut(&id).unwrap().node = Some(node);
        }
        cluster.leader().await;
        cluster
    }

    fn settings(&self, id: u64) -> gridraft::config::Resolved {
        let m = &self.members[&id];
        let list = if self.members.len() > 1 {
            self.members
                .iter()
                .map(|(id, m)| format!("{id}={}", m.peer))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        let mut cfg = Settings {
            id,
            listen: m.public.to_string(),
            peer_listen: m.peer.to_string(),
            data_dir: m.dir.clone(),
            members: list,
            cluster_secret: Some(SECRET.into()),
            raft: RaftSettings {
                heartbeat_interval: "50ms".into(),
                election_timeout_min: "300ms".into(),
                election_timeout_max: "600ms".into(),
                ..Default::default()
            },
            grid: GridSettings {
                write_timeout: "15s".into(),
                read_timeout: "15s".into(),
                ..Default::default()
            },
            ..Default::default()
        }
        .validate()
        .expect("valid test settings");
        cfg.mirrors = self.mirrors.clone();
        cfg
    }

    pub fn node(&self, id: u64) -> &RunningMember {
        self.members[&id].node.as_ref().expect("member is running")
    }

    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.members[&id].public, path)
    }

    /// The leader every running member agrees on.
    pub async fn leader(&self) -> u64 {
        eventually(
            Duration::from_secs(30),
            "a leader all running members agree on",
            || async {
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
            },
        )
        .await
    }

    /// The leader's applied map (after a read barrier, so it holds every acknowledged write).
    pub async fn truth(&self) -> SessionMap {
        let leader = self.leader().await;
        let cluster = &self.node(leader).cluster;
        cluster
            .read_barrier()
            .await
            .expect("read barrier on the leader");
        cluster.reader.snapshot()
    }

    pub fn handle(&self, id: u64, kind: MirrorKind) -> Arc<MirrorHandle> {
        self.node(id)
            .cluster
            .mirrors
            .all()
            .into_iter()
            .find(|m| m.kind == kind)
            .expect("the mirror is configured")
    }

    pub async fn status(&self, id: u64) -> serde_json::Value {
        self.node(id).cluster.status()
    }

    /// Crashes a member: its tasks are dropped without a graceful stop.
    pub async fn kill(&mut self, id: u64) {
        tracing::info!(member = id, "killing member");
        let node = self.members.get_mut(&id).unwrap().node.take().unwrap();
        node.kill().await;
    }

    pub async fn shutdown(mut self) {
        for id in self.running() {
            let node = self.members.get_mut(&id).unwrap().node.take().unwrap();
            node.stop().await;
        }
    }
}
