//! A member whose open-file limit is low, its public port flooded with connections: Raft writes
//! and the peer port go on. The member runs as a child process under `prlimit`, so the limit and
//! the flood's file descriptors are its own.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_the_public_port_under_a_low_fd_limit_does_not_stop_raft_writes() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let (public, peer) = (
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        port(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
    );
    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=512:512")
        .arg(env!("CARGO_BIN_EXE_gridraft"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{public}"),
            "--peer-listen",
            &format!("127.0.0.1:{peer}"),
            "--cluster-secret",
            common::SECRET,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = || async {
        let r = http
            .get(format!("http://127.0.0.1:{public}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 204).then_some(())
    };
    eventually(Duration::from_secs(20), "the member to be ready", ready).await;

    tracing::info!("phase: flood the public port with idle connections");
    let mut flood = Vec::new();
    for _ in 0..1000 {
        // A full backlog drops the SYN and the kernel would retry it for minutes.
        let connect = TcpStream::connect(("127.0.0.1", public));
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            flood.push(s);
        }
    }
    tracing::info!(open = flood.len(), "phase: add sessions and read metrics");
    // Each add on a fresh connection, as a balancer's new connections would be.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // At the cap a new connection takes the place of an idle one, unless 64 replaced ones are
    // still closing: then it is closed at once (reset), for the client to try again, as a
    // balancer does. Right after the flood that can happen on a busy host; the member must
    // still answer each add within a few tries.
    for i in 0..20 {
        let mut refused = 0;
        let r = loop {
            let sent = fresh
                .post(format!("http://127.0.0.1:{public}/se/grid/session"))
                .body(common::session_body(&format!("s{i}"), "http://n:5555"))
                .send()
                .await;
            match sent {
                Err(e) if refused < 20 && !e.is_timeout() => {
                    refused += 1;
                    tracing::info!(error = %e, refused, "connection refused at the cap; again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sent => break sent.expect("an add is answered while the public port is flooded"),
            }
        };
        assert_eq!(r.status(), 200);
    }
    let metrics = http
        .get(format!("http://127.0.0.1:{peer}/metrics"))
        .bearer_auth(common::SECRET)
        .send()
        .await
        .expect("the peer port answers while the public port is flooded");
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    let value = |name: &str| {
        let prefix = format!("{name}{{listener=\"public\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or(0)
    };
    // 512 descriptors: 256 reserved, a quarter of the rest for the peer port.
    assert!(value("gridraft_connections_open") <= 192, "{metrics}");
    assert!(
        value("gridraft_connections_reclaimed_total") > 0,
        "{metrics}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the member is still running"
    );
    drop(flood);
    let r = fresh
        .get(format!("http://127.0.0.1:{public}/se/grid/session/s0"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the sessions added under the flood are there"
    );
}
