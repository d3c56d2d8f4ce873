//! HTTPS on the public port (`[tls]`): the Grid's routes over TLS, plain HTTP refused, client
//! certificates checked against the client CA (none, another CA's, an expired one), a renewed
//! certificate taken without a restart, and files that do not load refused at start. Every
//! certificate is made at run time (`common::certs`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::certs::{self, Ca};
use common::cluster::TestCluster;
use common::{eventually, session_body};
use gridraft::tls::TlsFiles;

/// The value of a metric line `name` (labels included) in Prometheus text, or 0.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const FAILURES: &str = "gridraft_tls_handshake_failures_total{listener=\"public\"}";

/// A one-member cluster whose public port serves HTTPS with `cert` and `key` (and checks client
/// certificates against `client_ca`).
async fn https_member(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>) -> TestCluster {
    TestCluster::builder(1)
        .tls(TlsFiles {
            cert,
            key,
            client_ca,
        })
        .start()
        .await
}

/// `GET /readyz` on member 1 through `client`: its status, or `None` when no answer came.
async fn readyz(c: &TestCluster, client: &reqwest::Client) -> Option<u16> {
    let answer = client.get(c.https_url(1, "/readyz")).send().await;
    answer.ok().map(|a| a.status().as_u16())
}

/// Adds session `id` through member 1 with `client`; its status.
async fn add(c: &TestCluster, client: &reqwest::Client, id: &str) -> u16 {
    let answer = client
        .post(c.https_url(1, "/se/grid/session"))
        .body(session_body(id, "http://node:5555"))
        .send()
        .await
        .unwrap();
    answer.status().as_u16()
}

#[tokio::test]
async fn the_public_port_serves_the_grid_over_https_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft test CA");
    let (cert, key) = ca.leaf("member", false).write(dir.path(), "member");
    let c = https_member(cert, key, None).await;
    let https = certs::client(&ca.pem(), None);
    assert_eq!(add(&c, &https, "tls-1").await, 200);
    let get = https
        .get(c.https_url(1, "/se/grid/session/tls-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert!(get
        .text()
        .await
        .unwrap()
        .contains("\"sessionId\": \"tls-1\""));
    assert_eq!(readyz(&c, &https).await, Some(204));

    // Plain HTTP gets no answer (the bytes are not a TLS hello), and is counted.
    let plain = c.http.get(c.url(1, "/readyz")).send().await;
    assert!(plain.is_err(), "plain HTTP on the HTTPS port: {plain:?}");
    // A client that does not trust the member's CA refuses the member.
    let stranger = certs::client(&Ca::new("another CA").pem(), None);
    assert_eq!(readyz(&c, &stranger).await, None, "a client of another CA");

    // `gridraft probe`, the container health check, given the CA (and only then).
    let ca_file = certs::write(dir.path(), "ca.pem", &ca.pem());
    let url = c.https_url(1, "/readyz");
    let probe = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_gridraft"))
            .arg("probe")
            .args(args)
            .output()
            .await
            .unwrap()
            .status
            .success()
    };
    let ca_arg = ca_file.display().to_string();
    assert!(
        probe(vec![
            "--url".into(),
            url.clone(),
            "--ca-file".into(),
            ca_arg
        ])
        .await
    );
    assert!(!probe(vec!["--url".into(), url]).await);

    let text = c.metrics_text(1).await;
    assert!(metric(&text, FAILURES) >= 3.0, "{text}");
    // The port still serves.
    assert_eq!(readyz(&c, &https).await, Some(204));
    c.shutdown().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_valid_certificate_of_that_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft test CA");
    let (cert, key) = ca.leaf("member", false).write(dir.path(), "member");
    let client_ca = certs::write(dir.path(), "clients.pem", &ca.pem());
    let c = https_member(cert, key, Some(client_ca)).await;
    let other = Ca::new("another CA");
    let refused = [
        ("no certificate", certs::client(&ca.pem(), None)),
        (
            "a certificate of another CA",
            certs::client(&ca.pem(), Some(&other.leaf("router", false))),
        ),
        (
            "an expired certificate",
            certs::client(&ca.pem(), Some(&ca.leaf("router", true))),
        ),
    ];
    for (what, client) in &refused {
        assert_eq!(readyz(&c, client).await, None, "{what}");
    }
    let router = certs::client(&ca.pem(), Some(&ca.leaf("router", false)));
    assert_eq!(readyz(&c, &router).await, Some(204));
    assert_eq!(add(&c, &router, "mtls-1").await, 200);
    let text = c.metrics_text(1).await;
    assert!(metric(&text, FAILURES) >= 3.0, "{text}");
    c.shutdown().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_used_by_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let (cert, key) = old_ca.leaf("member", false).write(dir.path(), "member");
    let c = https_member(cert.clone(), key.clone(), None).await;
    let trusts_old = certs::client(&old_ca.pem(), None);
    let trusts_new_ca = Ca::new("new CA");
    let trusts_new = certs::client(&trusts_new_ca.pem(), None);
    assert_eq!(readyz(&c, &trusts_old).await, Some(204));
    assert_eq!(readyz(&c, &trusts_new).await, None);

    // A file that does not load is refused, and the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(gridraft::tls::RELOAD_CHECK * 2).await;
    assert_eq!(readyz(&c, &trusts_old).await, Some(204));

    // The renewed pair (as cert-manager writes it) is taken for new connections.
    let renewed = trusts_new_ca.leaf("member", false);
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    eventually(
        Duration::from_secs(20),
        "the renewed certificate",
        || async { (readyz(&c, &trusts_new).await == Some(204)).then_some(()) },
    )
    .await;
    assert_eq!(readyz(&c, &trusts_old).await, None);
    c.shutdown().await;
}

#[tokio::test]
async fn tls_files_that_do_not_make_a_configuration_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gridraft test CA");
    let (cert, _) = ca.leaf("member", false).write(dir.path(), "member");
    let (_, other_key) = ca.leaf("other", false).write(dir.path(), "other");
    let missing = dir.path().join("missing.key");
    for (key, expected) in [(missing.clone(), "missing.key"), (other_key, "member.crt")] {
        let files = TlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
        };
        let error = match gridraft::tls::ServerTls::load(files) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(expected), "{error}");
    }

    // An incomplete [tls] section is a configuration error.
    let settings = gridraft::config::Settings {
        tls: gridraft::config::TlsSettings {
            cert_file: Some(cert),
            key_file: None,
            client_ca_file: None,
        },
        ..Default::default()
    };
    let error = settings.validate().unwrap_err().to_string();
    assert!(
        error.contains("tls.cert-file is set without tls.key-file"),
        "{error}"
    );
}
