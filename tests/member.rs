//! One member's edges: the peer port's secret, foreign or corrupt data directories, SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{eventually, TestCluster, SECRET};
use gridraft::config::Settings;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_requests_without_the_cluster_secret_and_changes_nothing() {
    let c = TestCluster::start(1).await;
    let peer = c.members[&1].peer;
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::POST, "/peer/write"),
        (reqwest::Method::POST, "/raft/append"),
        (reqwest::Method::POST, "/admin/remove"),
        (reqwest::Method::GET, "/admin/status"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("wrong")] {
            let mut req = http
                .request(method.clone(), format!("http://{peer}{path}"))
                .body("{\"id\": 1}");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            assert_eq!(
                req.send().await.unwrap().status(),
                401,
                "{method} {path} with {auth:?}"
            );
        }
    }
    assert_eq!(c.voters(1).len(), 1, "membership unchanged");
    let metrics = http
        .get(format!("http://{peer}/metrics"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "gridraft_raft_term",
        "gridraft_raft_applied_index",
        "gridraft_raft_committed_index",
        "gridraft_live_sessions",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The bootstrap's entries were made durable, each group commit's fdatasync timed.
    let fsyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gridraft_log_fsync_duration_seconds_count "))
        .expect("the log's fsync histogram is exported")
        .parse()
        .unwrap();
    assert!(fsyncs >= 1, "{fsyncs} log fsyncs counted");
    // The public port serves no peer route.
    let public = c.url(1, "/admin/status");
    assert_eq!(
        http.get(public)
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    c.shutdown().await;
}

/// Starts a member, retrying while the previous one's database handle is still being released.
async fn try_start(settings: Settings) -> Result<gridraft::member::Member, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match start_once(settings.clone()).await {
            Err(e)
                if e.contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

async fn start_once(settings: Settings) -> Result<gridraft::member::Member, String> {
    let cfg = settings.validate().map_err(|e| e.to_string())?;
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    gridraft::member::start(&cfg, public, peer)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_member_or_cluster_or_a_corrupt_one_is_refused() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let base = Settings {
        data_dir: dir.path().join("data"),
        cluster_secret: Some(SECRET.into()),
        ..Default::default()
    };
    let node = try_start(base.clone()).await.unwrap();
    node.stop().await;
    try_start(base.clone())
        .await
        .expect("the member restarts on its own data")
        .stop()
        .await;

    let other_member = Settings {
        id: 2,
        ..base.clone()
    };
    let err = try_start(other_member)
        .await
        .err()
        .expect("member 2 must refuse member 1's data");
    assert!(err.contains("belongs to member 1"), "{err}");

    let other_cluster = Settings {
        cluster_name: "elsewhere".into(),
        ..base.clone()
    };
    let err = try_start(other_cluster)
        .await
        .err()
        .expect("another cluster's data must be refused");
    assert!(err.contains("belongs to cluster \"gridraft\""), "{err}");

    for entry in std::fs::read_dir(dir.path().join("data/sled")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"this is not a sled file").unwrap();
        }
    }
    let err = try_start(base)
        .await
        .err()
        .expect("a corrupt data directory must be refused");
    assert!(err.contains("sled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_exits_zero_keeping_the_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let (public, peer) = (
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
    );
    // The second start runs on one worker thread, as co-located members are configured.
    let spawn = |workers: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
            .args([
                "serve",
                "--worker-threads",
                workers,
                "--listen",
                &format!("127.0.0.1:{public}"),
                "--peer-listen",
                &format!("127.0.0.1:{peer}"),
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http
            .get(format!("http://127.0.0.1:{public}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 204).then_some(())
    };
    let mut child = spawn("0");
    eventually(Duration::from_secs(20), "the member to be ready", ready).await;
    let body = common::session_body("kept", "http://n:5555");
    let r = http
        .post(format!("http://127.0.0.1:{public}/se/grid/session"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let _child = spawn("1");
    eventually(
        Duration::from_secs(20),
        "the member to be ready again",
        ready,
    )
    .await;
    let r = http
        .get(format!("http://127.0.0.1:{public}/se/grid/session/kept"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_command_reports_status_and_refuses_a_wrong_secret() {
    let c = TestCluster::start(1).await;
    let peer = c.members[&1].peer.to_string();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), SECRET).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
        .args(["cluster", "--peer", &peer, "--cluster-secret-file"])
        .arg(secret_file.path())
        .arg("status")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["leader"], 1);
    assert_eq!(status["voters"], serde_json::json!([1]));
    assert_eq!(status["ready"], true);

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
        .args([
            "cluster",
            "status",
            "--peer",
            &peer,
            "--cluster-secret",
            "wrong",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    c.shutdown().await;
}

#[tokio::test]
async fn worker_threads_is_checked_and_shown_by_print_config() {
    let gridraft = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = gridraft(&["print-config", "--worker-threads", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("worker-threads = 2"), "{text}");

    let out = gridraft(&[
        "serve",
        "--worker-threads",
        "5000",
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker-threads: 5000 is above 1024"), "{err}");
}
