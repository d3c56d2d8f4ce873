//! Online backup and restore through the `gridraft` binary: a backup taken from a running
//! three-member cluster under load holds every acknowledged session, restores into a new
//! three-member cluster that serves them, refuses damaged files and non-empty directories,
//! and the restored cluster and its source never join each other.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestCluster, SECRET};
use gridraft::peer::{AddMember, ClientError, PeerClient};

const NODE: &str = "http://10.0.0.7:5555";
const GRIDRAFT: &str = env!("CARGO_BIN_EXE_gridraft");

fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// Runs `gridraft backup` against member `via`'s peer port, writing `out`.
async fn backup(c: &TestCluster, via: u64, secret: &Path, out: &Path) -> Output {
    tokio::process::Command::new(GRIDRAFT)
        .arg("backup")
        .arg("--peer")
        .arg(c.members[&via].peer.to_string())
        .arg("--cluster-secret-file")
        .arg(secret)
        .arg("--out")
        .arg(out)
        .env_remove("GRIDRAFT_CLUSTER_SECRET")
        .output()
        .await
        .unwrap()
}

fn restore(from: &Path, dir: &Path, id: u64, members: &str) -> Output {
    std::process::Command::new(GRIDRAFT)
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data-dir")
        .arg(dir)
        .arg("--id")
        .arg(id.to_string())
        .arg("--members")
        .arg(members)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new three-member cluster whose members are restored from `file`.
async fn restored_from(file: &Path) -> TestCluster {
    let file = file.to_owned();
    TestCluster::builder(3)
        .seed(move |m, members| {
            let out = restore(&file, &m.dir, m.id, members);
            assert!(
                out.status.success(),
                "restore member {}: {}",
                m.id,
                text(&out)
            );
        })
        .start()
        .await
}

/// A cluster of `members` holding `sessions` sessions (`s-0`, `s-1`, ...), its backup taken
/// from member 1 into `map.grbackup` in the returned directory.
async fn backed_up(members: u64, sessions: usize) -> (TestCluster, tempfile::TempDir, PathBuf) {
    let c = TestCluster::start(members).await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..sessions {
        assert_eq!(c.add(1, &format!("s-{i}"), NODE).await.status(), 200);
    }
    let file = dir.path().join("map.grbackup");
    let out = backup(&c, 1, &secret_file(dir.path()), &file).await;
    assert!(out.status.success(), "backup: {}", text(&out));
    (c, dir, file)
}

/// Acknowledged adds with the moment each answer arrived.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

fn spawn_adds(
    c: &TestCluster,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3u64)
        .map(|client| {
            let url = c.url(client + 1, "/se/grid/session");
            let (stop, acked, http) = (stop.clone(), acked.clone(), c.http.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("bk-{client}-{i}");
                    i += 1;
                    let sent = http
                        .post(&url)
                        .body(common::session_body(&id, NODE))
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        acked.lock().unwrap().push((id, Instant::now()));
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_session_acknowledged_before_it_started() {
    let c = TestCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let file = dir.path().join("map.grbackup");

    tracing::info!("phase: adds on every member");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let load = spawn_adds(&c, stop.clone(), acked.clone());
    common::eventually(Duration::from_secs(30), "200 acknowledged adds", || async {
        (acked.lock().unwrap().len() >= 200).then_some(())
    })
    .await;

    tracing::info!("phase: backup from a follower while the adds go on");
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let started = Instant::now();
    let out = backup(&c, follower, &secret, &file).await;
    assert!(out.status.success(), "backup: {}", text(&out));
    assert!(text(&out).contains("wrote "), "{}", text(&out));
    // Adds keep being acknowledged after the backup, and are not expected in it.
    let after = acked.lock().unwrap().len();
    common::eventually(Duration::from_secs(30), "adds after the backup", || async {
        (acked.lock().unwrap().len() > after + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: Vec<&String> = acked
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(id, _)| id)
        .collect();
    let header = gridraft::backup::verify(&file).unwrap();
    tracing::info!(
        acknowledged = acked.len(),
        before_backup = before.len(),
        in_backup = header.sessions,
        index = header.index,
        "backup written"
    );
    assert!(header.sessions >= before.len() as u64);
    assert!(header.sessions <= acked.len() as u64 + 3);
    assert_eq!(header.member, follower);
    c.shutdown().await;

    tracing::info!("phase: restore into a new three-member cluster");
    let r = restored_from(&file).await;
    let map = r.truth().await;
    let missing: Vec<_> = before
        .iter()
        .filter(|id| !matches!(map.get(id), gridraft::map::Lookup::Found(_)))
        .collect();
    assert!(missing.is_empty(), "lost in the backup: {missing:?}");
    assert_eq!(map.len() as u64, header.sessions);
    for via in 1..=3 {
        assert_eq!(r.get_status(via, before[0]).await, 200);
        assert_eq!(r.get_status(via, before[before.len() - 1]).await, 200);
    }

    tracing::info!("phase: the restored cluster takes writes");
    assert_eq!(r.add(2, "after-restore", NODE).await.status(), 200);
    assert_eq!(r.delete(3, before[0]).await, 200);
    for via in 1..=3 {
        assert_eq!(r.get_status(via, "after-restore").await, 200);
        assert_eq!(r.get_status(via, before[0]).await, 404);
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_backups_and_non_empty_directories_are_refused() {
    let (c, dir, file) = backed_up(1, 20).await;
    let members = "1=127.0.0.1:1";

    tracing::info!("phase: a wrong secret writes nothing");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-secret").unwrap();
    let refused = dir.path().join("refused.grbackup");
    let out = backup(&c, 1, &wrong, &refused).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("401"), "{}", text(&out));
    assert!(!refused.exists());
    c.shutdown().await;

    tracing::info!("phase: a truncated backup");
    let good = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.grbackup");
    std::fs::write(&cut, &good[..good.len() - 100]).unwrap();
    let target = dir.path().join("m-cut");
    let out = restore(&cut, &target, 1, members);
    assert!(!out.status.success());
    assert!(text(&out).contains("is truncated"), "{}", text(&out));
    assert!(
        !target.exists(),
        "nothing is written from a truncated backup"
    );

    tracing::info!("phase: a corrupted backup");
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    let corrupt = dir.path().join("corrupt.grbackup");
    std::fs::write(&corrupt, &bad).unwrap();
    let out = restore(&corrupt, &dir.path().join("m-bad"), 1, members);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is corrupted: checksum mismatch"),
        "{}",
        text(&out)
    );

    tracing::info!("phase: a non-empty data directory");
    let used = dir.path().join("m-used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep-me"), "x").unwrap();
    let out = restore(&file, &used, 1, members);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1);

    tracing::info!("phase: the good file restores");
    let out = restore(&file, &dir.path().join("m-good"), 1, members);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("restored 20 sessions"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_cluster_and_its_source_never_join_each_other() {
    let (old, _dir, file) = backed_up(3, 10).await;
    let header = gridraft::backup::verify(&file).unwrap();
    let new = restored_from(&file).await;
    let admin = PeerClient::new(reqwest::Client::new(), Arc::from(SECRET));
    let post = reqwest::Method::POST;

    tracing::info!("phase: the old cluster is asked to add a restored member");
    let restored_addr = new.members[&1].peer.to_string();
    let add = AddMember {
        id: 9,
        addr: restored_addr.clone(),
    };
    let old_peer = old.members[&1].peer.to_string();
    let e = admin
        .admin(&old_peer, post.clone(), "/admin/add", Some(&add))
        .await
        .unwrap_err();
    tracing::info!(error = %e, "old cluster refused");
    assert!(
        matches!(&e, ClientError::Status { status: 409, body, .. }
            if body.contains("belongs to another cluster")
                && body.contains(&header.backup_id)),
        "{e}"
    );

    tracing::info!("phase: the restored cluster is asked to add an old member");
    let add = AddMember {
        id: 9,
        addr: old_peer.clone(),
    };
    let e = admin
        .admin(&restored_addr, post, "/admin/add", Some(&add))
        .await
        .unwrap_err();
    tracing::info!(error = %e, "restored cluster refused");
    assert!(
        matches!(&e, ClientError::Status { status: 409, body, .. }
            if body.contains("belongs to another cluster")),
        "{e}"
    );

    tracing::info!("phase: Raft and forwarded requests across the two are refused");
    let proposal = gridraft::map::Proposal {
        at: 1,
        event_id: None,
        op: gridraft::map::Op::Remove {
            id: "s-1".into(),
            reason: gridraft::session::RemovalReason::QuitCommand,
        },
    };
    let as_old = PeerClient::new(reqwest::Client::new(), Arc::from(SECRET));
    let e = as_old
        .forward_write(&restored_addr, &proposal, Duration::from_secs(5))
        .await
        .unwrap_err();
    tracing::info!(error = %e, "restored member refused an old member's write");
    assert!(
        matches!(&e, ClientError::Status { status: 403, body, .. }
            if body.contains("member of cluster id (none)")),
        "{e}"
    );
    let as_new = PeerClient::new(reqwest::Client::new(), Arc::from(SECRET))
        .with_cluster_id(Some(Arc::from(header.backup_id.as_str())));
    let e = as_new
        .forward_write(&old_peer, &proposal, Duration::from_secs(5))
        .await
        .unwrap_err();
    tracing::info!(error = %e, "old member refused a restored member's write");
    assert!(matches!(&e, ClientError::Status { status: 403, .. }), "{e}");

    tracing::info!("phase: both clusters are unchanged");
    for (c, name) in [(&old, "old"), (&new, "restored")] {
        let status = c.status(c.leader().await).await;
        assert_eq!(status["voters"], serde_json::json!([1, 2, 3]), "{name}");
        assert_eq!(c.get_status(2, "s-1").await, 200, "{name}");
    }
    old.shutdown().await;
    new.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_read_for_longer_than_the_idle_timeout_is_not_cut_off() {
    // More than the socket buffers and the member's chunk queue hold, read slowly: the member
    // is still writing after the idle timeout (1 s) has passed.
    let c = TestCluster::builder(1)
        .http(gridraft::config::HttpSettings {
            idle_timeout: "1s".into(),
            ..Default::default()
        })
        .start()
        .await;
    let pad = "x".repeat(20_000);
    for i in 0..600 {
        let body = common::session_body(&format!("big-{i}"), NODE).replacen(
            "\"chrome\",",
            &format!("\"chrome\", \"pad\": \"{pad}\","),
            1,
        );
        assert_eq!(
            c.http
                .post(c.url(1, "/se/grid/session"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let admin = PeerClient::new(reqwest::Client::new(), Arc::from(SECRET));
    let mut resp = admin.backup(&c.members[&1].peer.to_string()).await.unwrap();
    let mut received = resp.chunk().await.unwrap().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Some(chunk) = resp
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("cut off after {received} bytes: {e}"))
    {
        received += chunk.len();
    }
    tracing::info!(received, "whole backup received");
    assert!(received > 12_000_000, "{received} bytes");
    c.shutdown().await;
}
