//! What only the mirror tests need, on top of `tests/common` (whose `TestCluster` runs the
//! members, with `ClusterBuilder::mirrors`): throwaway PostgreSQL and Redis servers a test can
//! stop and restart, a deterministic mixed load with a model of its outcome, and exact
//! comparisons of each store with the Raft state. The shared servers come from
//! `GRIDRAFT_TEST_POSTGRES_URL` and `GRIDRAFT_TEST_REDIS_URL` (see
//! `scripts/start-test-services.sh`); without them the tests skip, or fail under
//! `GRIDRAFT_TEST_REQUIRE_ALL=1` (`common::deps`).
#![allow(dead_code)]

pub mod load;
pub mod servers;
pub mod stores;

use std::time::Duration;

use gridraft::mirror::hub::RunState;
use gridraft::mirror::{MirrorConfig, MirrorKind, MirrorMode};

use crate::common::{eventually, TestCluster};

/// `n` members that all write through to `mirrors`.
pub async fn mirrored(n: u64, mirrors: Vec<MirrorConfig>) -> TestCluster {
    TestCluster::builder(n).mirrors(mirrors).start().await
}

pub fn mirror(kind: MirrorKind, url: &str) -> MirrorConfig {
    MirrorConfig {
        kind,
        url: url.to_owned(),
        mode: MirrorMode::Async,
        sync_timeout: Duration::from_secs(2),
        ca_file: None,
    }
}

/// One member mirroring to `kind` at `url`, once that mirror has stopped with an error; and
/// the error.
pub async fn failed_mirror(kind: MirrorKind, url: &str) -> (TestCluster, String) {
    let c = mirrored(1, vec![mirror(kind, url)]).await;
    let handle = c.mirror_handle(1, kind);
    let error = eventually(Duration::from_secs(30), "the mirror to fail", || async {
        match handle.state() {
            RunState::Failed { error } => Some(error),
            _ => None,
        }
    })
    .await;
    (c, error)
}

/// A stopped mirror leaves the cluster unaffected: it still takes a write.
pub async fn assert_still_serving(c: &TestCluster) {
    let resp = c
        .http
        .post(c.url(1, "/se/grid/session"))
        .body(load::body("still-serving", "http://n:5555", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the cluster is unaffected");
}

/// A server certificate and key for 127.0.0.1 written into `dir`, the CA that signed them and
/// another CA (PEM files), for the mirrors' TLS tests.
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
}

impl TlsFiles {
    pub fn new(dir: &std::path::Path, server: &str) -> Self {
        use crate::common::certs::{write, Ca};
        let ca = Ca::new(&format!("{server} CA"));
        let (cert, key) = ca.leaf(server, false).write(dir, server);
        TlsFiles {
            cert,
            key,
            ca: write(dir, "ca.pem", &ca.pem()),
            other_ca: write(dir, "other.pem", &Ca::new("another CA").pem()),
        }
    }
}

/// Twenty sessions added through member 1; the map they make.
pub async fn add_sessions(c: &TestCluster) -> gridraft::map::SessionMap {
    for i in 0..20 {
        let id = format!("tls-{i}");
        let status = c
            .add(1, &id, &format!("http://node-{i}:5555"))
            .await
            .status();
        assert_eq!(status, 200, "add {id}");
    }
    c.truth().await
}
