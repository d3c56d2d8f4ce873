//! Peer streams (`gridraft::peer::wire`): members send each other every request on one
//! persistent connection per pair, a connection is authenticated at its hello before any
//! request is read, and a member configured for HTTP (as members of earlier versions are)
//! still works in a cluster with members on streams.

mod common;

use std::time::Duration;

use common::cluster::{TestCluster, SECRET};
use common::eventually;
use gridraft::peer::wire::{self, Hello, Rpc, HELLO, OK, PREFACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of a metric line `name` (labels included) in Prometheus text, or 0.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Opens a raw connection to a peer port and sends the preface and a hello.
async fn hello(addr: std::net::SocketAddr, secret: &str, cluster_id: Option<&str>) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let hello = Hello {
        secret: secret.into(),
        cluster_id: cluster_id.map(str::to_owned),
    };
    let body = bincode::serialize(&hello).unwrap();
    tcp.write_all(&wire::opening(HELLO, &body)).await.unwrap();
    tcp
}

/// Reads the preface and one frame: (id, code, body).
async fn read_answer(tcp: &mut TcpStream) -> (u64, u16, Vec<u8>) {
    let mut preface = [0u8; 16];
    tcp.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, PREFACE);
    read_frame(tcp).await
}

async fn read_frame(tcp: &mut TcpStream) -> (u64, u16, Vec<u8>) {
    let len = tcp.read_u32().await.unwrap() as usize;
    let id = tcp.read_u64().await.unwrap();
    let code = tcp.read_u16().await.unwrap();
    let mut body = vec![0u8; len - wire::HEADER];
    tcp.read_exact(&mut body).await.unwrap();
    (id, code, body)
}

/// Whether the other side closes the connection (EOF) within a few seconds.
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `gridraft_peer_streams_open` of every running member, by id.
async fn open_streams(c: &TestCluster) -> Vec<(u64, f64)> {
    let mut open = Vec::new();
    for id in c.running() {
        open.push((
            id,
            metric(&c.metrics_text(id).await, "gridraft_peer_streams_open"),
        ));
    }
    open
}

/// The streams each member should have open once every follower has sent the leader a request:
/// one from each follower at the leader, one from the leader at each follower, none from the
/// members in `http_only`.
fn expected(c: &TestCluster, leader: u64, http_only: &[u64]) -> Vec<(u64, f64)> {
    let streams = |from: u64| f64::from(u8::from(!http_only.contains(&from)));
    c.running()
        .into_iter()
        .map(|id| {
            let open = if id == leader {
                c.running()
                    .into_iter()
                    .filter(|f| *f != leader)
                    .map(streams)
                    .sum()
            } else {
                streams(leader)
            };
            (id, open)
        })
        .collect()
}

#[tokio::test]
async fn members_reach_each_other_on_one_stream_per_pair_also_after_a_restart() {
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let followers: Vec<u64> = c.running().into_iter().filter(|id| *id != leader).collect();
    // Writes through followers are forwarded, reads through them ask for a read index.
    for (i, via) in followers.iter().cycle().take(20).enumerate() {
        let id = format!("stream-{i}");
        assert_eq!(c.add(*via, &id, "http://node:5555").await.status(), 200);
        for reader in c.running() {
            assert_eq!(c.get_status(reader, &id).await, 200, "{id} on {reader}");
        }
    }
    // The leader has a stream from each follower (forwards, read indexes), each follower one
    // from the leader (replication); followers send each other nothing.
    assert_eq!(open_streams(&c).await, expected(&c, leader, &[]));
    // A restarted follower is reached on new streams, and reaches the others on new ones.
    c.restart_and_write(followers[0], "after-restart").await;
    let leader = c.leader().await;
    eventually(
        Duration::from_secs(10),
        "streams to and from the restarted member",
        || async { (open_streams(&c).await == expected(&c, leader, &[])).then_some(()) },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_stream_is_refused_at_its_hello_without_the_secret_or_from_another_cluster() {
    let c = TestCluster::start(1).await;
    let peer = c.members[&1].peer;

    // A wrong secret: 401, then the connection closes; a request sent after the hello is
    // never read.
    let mut tcp = hello(peer, "not-the-cluster-secret", None).await;
    tcp.write_all(&wire::frame(1, Rpc::TimeoutNow as u16, b""))
        .await
        .unwrap();
    let (id, code, body) = read_answer(&mut tcp).await;
    assert_eq!((id, code), (0, 401), "{}", String::from_utf8_lossy(&body));
    assert!(closed(&mut tcp).await, "the refused stream is closed");

    // The right secret from a member of another cluster: 403.
    let mut tcp = hello(peer, SECRET, Some("another-cluster")).await;
    let (_, code, body) = read_answer(&mut tcp).await;
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("another-cluster"));
    assert!(closed(&mut tcp).await);

    // A first frame that is not a hello: refused as such.
    let mut tcp = TcpStream::connect(peer).await.unwrap();
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&wire::frame(1, Rpc::Vote as u16, b"x"));
    tcp.write_all(&bytes).await.unwrap();
    let (_, code, _) = read_answer(&mut tcp).await;
    assert_eq!(code, 400);
    assert!(closed(&mut tcp).await);

    let text = c.metrics_text(1).await;
    for reason in ["secret", "cluster", "hello"] {
        let line = format!("gridraft_peer_stream_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &line), 1.0, "{line}:\n{text}");
    }
    assert_eq!(metric(&text, "gridraft_peer_streams_open"), 0.0);

    // The right hello is accepted; an unknown request code is answered 404 and an undecodable
    // body 400, and the stream stays open for the next request.
    let mut tcp = hello(peer, SECRET, None).await;
    assert_eq!(read_answer(&mut tcp).await.1, OK);
    tcp.write_all(&wire::frame(5, 999, b"")).await.unwrap();
    assert_eq!(read_frame(&mut tcp).await.1, 404);
    tcp.write_all(&wire::frame(6, Rpc::Append as u16, b"\xff"))
        .await
        .unwrap();
    let (id, code, _) = read_frame(&mut tcp).await;
    assert_eq!((id, code), (6, 400));
    tcp.write_all(&wire::frame(7, Rpc::ReadIndex as u16, b""))
        .await
        .unwrap();
    let (id, code, body) = read_frame(&mut tcp).await;
    assert_eq!((id, code), (7, OK));
    let index: Result<u64, gridraft::peer::Reject> = bincode::deserialize(&body).unwrap();
    assert!(index.is_ok(), "the leader answers a read index: {index:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn members_on_http_and_members_on_streams_serve_one_cluster() {
    // Member 3 sends over HTTP, as a member of an earlier version does; the others open
    // streams to it and to each other.
    let c = TestCluster::builder(3)
        .tune(|s| {
            if s.id == 3 {
                s.peer_transport = "http".into();
            }
        })
        .start()
        .await;
    for (i, via) in [1, 2, 3].iter().cycle().take(12).enumerate() {
        let id = format!("mixed-{i}");
        assert_eq!(c.add(*via, &id, "http://node:5555").await.status(), 200);
        for reader in [1, 2, 3] {
            assert_eq!(c.get_status(reader, &id).await, 200, "{id} on {reader}");
        }
    }
    // No member has a stream from member 3; the others' streams are there.
    let leader = c.leader().await;
    assert_eq!(open_streams(&c).await, expected(&c, leader, &[3]));
    c.shutdown().await;
}

/// The value of the series `family{peer="addr",rpc="rpc"}` (a histogram's `_count`) on member
/// `id`, or 0.
async fn peer_series(c: &TestCluster, id: u64, family: &str, peer: u64, rpc: &str) -> f64 {
    let addr = c.members[&peer].peer.to_string();
    let name = format!("{family}{{peer=\"{addr}\",rpc=\"{rpc}\"}}");
    metric(&c.metrics_text(id).await, &name)
}

#[tokio::test]
async fn each_members_requests_are_timed_per_peer_and_the_unanswered_counted() {
    const TIMED: &str = "gridraft_peer_request_duration_seconds_count";
    const FAILED: &str = "gridraft_peer_request_failures_total";
    let c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let followers: Vec<u64> = c.running().into_iter().filter(|id| *id != leader).collect();
    let (f, g) = (followers[0], followers[1]);
    assert_eq!(c.add(f, "timed", "http://node:5555").await.status(), 200);
    assert_eq!(c.get_status(f, "timed").await, 200);
    // The follower forwarded the add and asked for a read index; the leader replicated it.
    assert!(peer_series(&c, f, TIMED, leader, "write").await >= 1.0);
    assert!(peer_series(&c, f, TIMED, leader, "read_index").await >= 1.0);
    for follower in [f, g] {
        assert!(peer_series(&c, leader, TIMED, follower, "append").await >= 1.0);
    }
    assert_eq!(peer_series(&c, leader, FAILED, g, "append").await, 0.0);
    // Cut off, a follower answers nothing: the leader's heartbeats to it fail and are counted,
    // and none of them is timed.
    c.isolate(g);
    let failed_at_least = |n: f64| {
        let c = &c;
        async move {
            eventually(
                Duration::from_secs(10),
                "the leader's failed appends to the cut-off member",
                || async { (peer_series(c, leader, FAILED, g, "append").await >= n).then_some(()) },
            )
            .await
        }
    };
    failed_at_least(3.0).await;
    let timed = peer_series(&c, leader, TIMED, g, "append").await;
    let failed = peer_series(&c, leader, FAILED, g, "append").await;
    failed_at_least(failed + 3.0).await;
    assert_eq!(peer_series(&c, leader, TIMED, g, "append").await, timed);
    c.heal(g);
    c.shutdown().await;
}
