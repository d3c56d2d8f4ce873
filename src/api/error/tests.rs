use std::io;
use std::time::Duration;

use axum::http::header;
use tracing_subscriber::fmt::MakeWriter;

use super::*;
use crate::cluster::error::{Op, Queue, Stopped};

type Headers = Vec<(String, String)>;
/// Status, headers and body of an answer.
type Parts = (u16, Headers, String);

async fn parts(resp: Response<Body>) -> Parts {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn w3c_headers() -> Headers {
    vec![
        (
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ),
        ("cache-control".into(), "none".into()),
    ]
}

fn cluster(action: Action, source: cluster::Error) -> ApiError {
    ApiError::Cluster { action, source }
}

#[tokio::test]
async fn every_public_error_has_its_status_headers_and_w3c_body() {
    let timeout = cluster::Error::Timeout {
        op: Op::Read,
        after: Duration::from_secs(5),
        last: Some(Box::new(cluster::Error::NoQuorum)),
    };
    let cases: Vec<(ApiError, u16, Headers, String)> = vec![
        (
            ApiError::NoSuchSession("Unable to find session with ID: a".into()),
            404,
            w3c_headers(),
            w3c_error_body("invalid session id", "Unable to find session with ID: a"),
        ),
        (
            ApiError::Unparsable("Session to add must be set".into()),
            500,
            w3c_headers(),
            w3c_error_body("unknown error", "Session to add must be set"),
        ),
        (
            ApiError::NoSpace(vec![1, 2]),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to add session: the session map refuses new sessions while a quorum of \
                 its members is low on disk space (members 1, 2); lookups and removals still work",
            ),
        ),
        (
            cluster(Action::Add, cluster::Error::NoQuorum),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to add session: no quorum: this member cannot reach a majority of the cluster",
            ),
        ),
        (
            cluster(Action::LookUp("s-1".into()), timeout),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to look up session s-1: no leader confirmed a read index within 5s",
            ),
        ),
        (
            cluster(
                Action::Remove,
                cluster::Error::QueueFull {
                    queue: Queue::Write,
                    limit: 10000,
                },
            ),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to remove session: too many pending writes: the write queue is full \
                 (grid.max-pending-writes = 10000)",
            ),
        ),
        (
            cluster(
                Action::Add,
                cluster::Error::TooLarge {
                    bytes: 20_000_000,
                    limit: 16_777_216,
                },
            ),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to add session: the write is 20000000 bytes, over the 16777216 bytes one \
                 log entry may hold",
            ),
        ),
        (
            cluster(
                Action::Add,
                cluster::Error::Stopped(Stopped::Recorded("storage error: disk full".into())),
            ),
            500,
            w3c_headers(),
            w3c_error_body(
                "unknown error",
                "Unable to add session: raft has stopped: storage error: disk full",
            ),
        ),
        (
            ApiError::UnknownCommand {
                method: "GET".into(),
                path: "/nope".into(),
            },
            404,
            vec![],
            w3c_error_body("unknown command", "Unable to find handler for (GET) /nope"),
        ),
        (
            ApiError::MethodNotAllowed,
            405,
            vec![("connection".into(), "close".into())],
            String::new(),
        ),
        (
            ApiError::NotReady(NotReady::NoLeader),
            503,
            vec![],
            String::new(),
        ),
        (
            ApiError::RaftStopped("storage error: disk full".into()),
            503,
            vec![],
            "raft has stopped: storage error: disk full".into(),
        ),
    ];
    for (error, status, headers, body) in cases {
        let what = format!("{error:?}");
        assert_eq!(
            parts(error.into_response()).await,
            (status, headers, body),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_closes_the_connection_and_other_limits_do_not() {
    let body = Refused {
        limit: Limit::Body,
        value: 1024,
    };
    let (status, headers, _) = parts(ApiError::Refused(body).into_response()).await;
    assert_eq!(status, 500);
    assert!(headers.contains(&("connection".into(), "close".into())));
    let id = Refused {
        limit: Limit::SessionId,
        value: 1024,
    };
    let (status, headers, text) = parts(ApiError::Refused(id).into_response()).await;
    assert_eq!(status, 500);
    assert_eq!(headers, w3c_headers());
    assert_eq!(text, w3c_error_body("unknown error", &id.message()));
}

#[tokio::test]
async fn peer_errors_have_their_status_and_membership_without_a_leader_is_503() {
    let cases = [
        (PeerError::Unauthorized, 401),
        (PeerError::Admin(cluster::Error::NoLeader), 503),
        (PeerError::Admin(cluster::Error::AlreadyInitialized), 409),
        (PeerError::Admin(cluster::Error::NoQuorum), 409),
        (PeerError::Unavailable(cluster::Error::NoQuorum), 503),
    ];
    for (error, status) in cases {
        assert_eq!(error.into_response().status().as_u16(), status);
    }
    let resp = PeerError::Admin(cluster::Error::NoLeader).into_response();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let (_, _, body) = parts(resp).await;
    assert_eq!(
        body,
        r#"{"error":"no leader is known; try again after the election"}"#
    );
}

#[tokio::test]
async fn a_request_from_another_cluster_is_a_403_naming_both_cluster_ids() {
    let resp = PeerError::ForeignCluster {
        theirs: None,
        ours: Some("b-1".into()),
    }
    .into_response();
    assert_eq!(resp.status(), 403);
    let (_, _, body) = parts(resp).await;
    assert_eq!(
        body,
        "refused: the request comes from a member of cluster id (none), this member belongs to \
         cluster id \"b-1\" (a restored copy and its source never talk)\n"
    );
    let admin = PeerError::Admin(cluster::Error::ForeignMember {
        addr: "peer-4:7556".into(),
        theirs: Some("b-1".into()),
        ours: None,
    });
    assert_eq!(admin.into_response().status(), 409);
}

/// Collects what a `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

#[test]
fn a_5xx_is_logged_once_with_its_route_and_cause_chain_and_a_storm_once_with_a_count() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let log = FailureLog::new(Duration::from_secs(3600));
    let timeout = || {
        cluster(
            Action::Add,
            cluster::Error::Timeout {
                op: Op::Write,
                after: Duration::from_secs(5),
                last: Some(Box::new(cluster::Error::NoLeader)),
            },
        )
    };
    tracing::subscriber::with_default(subscriber, || {
        let resp = log.respond("add", timeout());
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    });
    let lines = captured.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    for part in [
        "WARN",
        "request failed",
        "route=\"add\"",
        "status=500",
        "failures=1",
        "Unable to add session: no leader could commit the write within 5s: no leader is known",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }

    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..100 {
            log.respond("add", timeout());
        }
        log.respond("get", ApiError::NoSuchSession("gone".into()));
        log.respond("delete", cluster(Action::Remove, cluster::Error::NoQuorum));
    });
    let lines = captured.lines();
    assert_eq!(
        lines.len(),
        2,
        "the storm repeats a failure already logged, a 404 is not logged, another route's \
         failure is: {lines:#?}"
    );
    assert!(lines[1].contains("route=\"delete\""), "{}", lines[1]);
}
