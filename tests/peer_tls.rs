//! Mutual TLS on the peer port (`[peer-tls]`): members replicate, forward and read over TLS
//! streams without a cluster secret; a peer whose certificate is not signed by the peer CA, an
//! expired one, a client without a certificate and plain TCP are refused in the handshake and
//! counted; a member checks the certificate of the member it connects to; the secret is still
//! checked when one is configured; and renewed files are used by new connections without a
//! restart. Every certificate is made at run time (`common::certs`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{Ca, Leaf};
use common::cluster::{TestCluster, SECRET};
use common::eventually;
use gridraft::cli::{peer_client, PeerTlsArgs};
use gridraft::peer::client::PeerClient;
use gridraft::tls::{PeerTls, Reload, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The value of a metric line `name` (labels included) in Prometheus text, or 0.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const FAILURES: &str = "gridraft_tls_handshake_failures_total{listener=\"peer\"}";
const STREAMS: &str = "gridraft_peer_streams_open";

/// A certificate and key from `ca` written into `dir` as `<stem>.crt` and `<stem>.key`, with
/// `ca_file` as the peer CA.
fn leaf_files(dir: &Path, ca: &Ca, ca_file: &Path, stem: &str, expired: bool) -> TlsFiles {
    let (cert, key) = ca.leaf(stem, expired).write(dir, stem);
    TlsFiles {
        cert,
        key,
        client_ca: Some(ca_file.to_owned()),
    }
}

/// The CA's PEM in `dir/<stem>.pem`.
fn ca_file(dir: &Path, ca: &Ca, stem: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{stem}.pem"));
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

/// Peer TLS files for members 1..=n, each with a certificate of its own from `ca`.
fn member_files(dir: &Path, ca: &Ca, n: u64) -> BTreeMap<u64, TlsFiles> {
    let ca_path = ca_file(dir, ca, "peer-ca");
    (1..=n)
        .map(|id| {
            (
                id,
                leaf_files(dir, ca, &ca_path, &format!("member-{id}"), false),
            )
        })
        .collect()
}

/// A member's client of peer ports with `files` (and the secret, when given).
fn client(files: &TlsFiles, secret: Option<&str>) -> PeerClient {
    let tls = Arc::new(PeerTls::load(files.clone()).expect("client files load"));
    PeerClient::new(reqwest::Client::new(), Arc::from(secret.unwrap_or("")))
        .with_tls(tls)
        .with_streams()
}

fn cli_args(files: &TlsFiles) -> PeerTlsArgs {
    PeerTlsArgs {
        peer_tls_ca_file: files.client_ca.clone(),
        peer_tls_cert_file: Some(files.cert.clone()),
        peer_tls_key_file: Some(files.key.clone()),
    }
}

async fn failures(c: &TestCluster, id: u64) -> f64 {
    metric(&c.metrics_text(id).await, FAILURES)
}

#[tokio::test]
async fn members_with_peer_tls_and_no_secret_replicate_forward_and_read_on_tls_streams() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft peer CA");
    let files = member_files(dir.path(), &ca, 3);
    let c = TestCluster::builder(3)
        .peer_tls(files.clone())
        .tune(|s| s.cluster_secret = None)
        .start()
        .await;
    let leader = c.leader().await;
    let followers: Vec<u64> = c.running().into_iter().filter(|id| *id != leader).collect();
    // Writes through followers are forwarded, reads through them ask for a read index.
    for (i, via) in followers.iter().cycle().take(10).enumerate() {
        let id = format!("tls-{i}");
        assert_eq!(c.add(*via, &id, "http://node:5555").await.status(), 200);
        for reader in c.running() {
            assert_eq!(c.get_status(reader, &id).await, 200, "{id} on {reader}");
        }
    }
    // On streams: one from each follower at the leader, one from the leader at each follower.
    assert_eq!(metric(&c.metrics_text(leader).await, STREAMS), 2.0);
    for f in &followers {
        assert_eq!(metric(&c.metrics_text(*f).await, STREAMS), 1.0);
        assert_eq!(failures(&c, *f).await, 0.0, "no handshake failed");
    }

    // `gridraft cluster status` with the peer TLS options and no secret.
    let cli = peer_client(None, None, &cli_args(&files[&1])).expect("a client from the options");
    let status = cli
        .admin(
            &c.members[&2].peer.to_string(),
            reqwest::Method::GET,
            "/admin/status",
            None::<&()>,
        )
        .await
        .expect("status over TLS");
    assert_eq!(status["leader"], serde_json::json!(leader), "{status}");
    // Without the TLS options the command needs a secret, and says so.
    let missing = peer_client(None, None, &PeerTlsArgs::default()).err();
    assert!(
        missing.is_some_and(|e| e.contains("GRIDRAFT_CLUSTER_SECRET")),
        "a client with neither a secret nor TLS is refused"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn peers_without_a_certificate_of_the_peer_ca_are_refused_in_the_handshake_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft peer CA");
    let files = member_files(dir.path(), &ca, 1);
    let c = TestCluster::builder(1)
        .peer_tls(files.clone())
        .start()
        .await;
    let peer = c.members[&1].peer.to_string();
    let ca_path = files[&1].client_ca.clone().unwrap();
    let timeout = Duration::from_secs(5);
    let mut refused = 0.0;

    // The member's own files (and the secret it has) are served: the control case.
    let good = client(&files[&1], Some(SECRET));
    good.ask_read_index(&peer, None, timeout)
        .await
        .expect("a read index on a TLS stream");
    assert_eq!(failures(&c, 1).await, refused);

    // A certificate from another CA, an expired one from the right CA: refused in the
    // handshake, on a stream and over HTTP alike.
    let rogue = Ca::new("another CA");
    let rogue_ca = ca_file(dir.path(), &rogue, "rogue-ca");
    let expired = leaf_files(dir.path(), &ca, &ca_path, "expired", true);
    let mut other_ca = leaf_files(dir.path(), &rogue, &rogue_ca, "rogue", false);
    // It trusts the member's CA, so the refusal is the member's, not its own.
    other_ca.client_ca = Some(ca_path.clone());
    for (what, bad) in [("another CA", &other_ca), ("expired", &expired)] {
        let bad = client(bad, Some(SECRET));
        let e = bad.ask_read_index(&peer, None, timeout).await.unwrap_err();
        assert!(e.to_string().contains("TLS"), "{what}: {e}");
        refused += 1.0;
        let e = bad.info(&peer).await.unwrap_err();
        assert!(
            !matches!(e, gridraft::peer::ClientError::Status { .. }),
            "{what}: {e}"
        );
        refused += 1.0;
        assert_eq!(failures(&c, 1).await, refused, "{what}");
    }

    // A client that trusts the CA but presents no certificate.
    let no_cert = reqwest::Client::builder()
        .use_preconfigured_tls(gridraft::tls::client_config(&ca_path, None).unwrap())
        .build()
        .unwrap();
    let answer = no_cert
        .get(format!("https://{peer}/metrics"))
        .bearer_auth(SECRET)
        .send()
        .await;
    assert!(answer.is_err(), "no client certificate: {answer:?}");
    refused += 1.0;
    // Plain HTTP on the TLS port.
    let answer = reqwest::Client::new()
        .get(format!("http://{peer}/metrics"))
        .bearer_auth(SECRET)
        .timeout(timeout)
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |a| !a.status().is_success()),
        "plain HTTP: {answer:?}"
    );
    refused += 1.0;
    eventually(Duration::from_secs(5), "every refusal counted", || async {
        (failures(&c, 1).await == refused).then_some(())
    })
    .await;

    // A member checks the certificate of the member it connects to: one whose CA file has
    // only another CA refuses this member's certificate (its own is of the right CA).
    let mut distrusting = leaf_files(dir.path(), &ca, &ca_path, "distrusting", false);
    distrusting.client_ca = Some(rogue_ca);
    let e = client(&distrusting, Some(SECRET))
        .ask_read_index(&peer, None, timeout)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");

    // With a secret configured it is still checked, after the handshake.
    let e = client(&files[&1], Some("not-the-cluster-secret"))
        .ask_read_index(&peer, None, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(e, gridraft::peer::ClientError::Status { status: 401, .. }),
        "{e}"
    );
    c.shutdown().await;
}

/// The certificate member `addr`'s peer port presents to a new connection now.
async fn presented(addr: &str, files: &TlsFiles) -> CertificateDer<'static> {
    let tls = PeerTls::load(files.clone()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = gridraft::tls::server_name(addr).unwrap();
    let stream = tls.connector().connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn renewed_peer_certificates_are_used_by_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft peer CA");
    let files = member_files(dir.path(), &ca, 3);
    let mut c = TestCluster::builder(3)
        .peer_tls(files.clone())
        .tune(|s| s.cluster_secret = None)
        .start()
        .await;
    let addr = c.members[&1].peer.to_string();
    let before = presented(&addr, &files[&2]).await;
    // What member 1 presents when it connects: its client side follows the files too.
    let own = PeerTls::load(files[&1].clone()).unwrap();
    let resolver = own.http_client_config().client_auth_cert_resolver;
    let client_cert = || resolver.resolve(&[], &[]).unwrap().cert[0].clone();
    assert_eq!(client_cert(), before);

    // Member 1's files are replaced by a renewed pair; no signal, no restart.
    let renewed = ca.leaf("member-1-renewed", false);
    renewed.write(dir.path(), "member-1");
    eventually(
        Duration::from_secs(15),
        "the renewed certificate on new connections",
        || async {
            let now = presented(&addr, &files[&2]).await;
            (now == der(&renewed)).then_some(())
        },
    )
    .await;
    assert_ne!(before, der(&renewed));
    assert!(own.reload(false), "the client side sees the change");
    assert_eq!(client_cert(), der(&renewed));

    // The cluster goes on: writes through every member, on the streams open before the
    // renewal and on the new ones a restarted member opens.
    for via in c.running() {
        let id = format!("renewed-{via}");
        assert_eq!(c.add(via, &id, "http://node:5555").await.status(), 200);
    }
    let restarted = if c.leader().await == 2 { 3 } else { 2 };
    c.restart_and_write(restarted, "after-restart").await;
    for reader in c.running() {
        assert_eq!(failures(&c, reader).await, 0.0, "member {reader}");
    }
    c.shutdown().await;
}
