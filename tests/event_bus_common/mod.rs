//! What only the event-bus tests need, on top of `tests/common`: a zmq publisher that speaks the
//! bus's four-frame messages (docs/compatibility.md), the real Java event bus (through
//! `common::java::JavaProcess`), and waiting on the subscriber with timeouts instead of fixed
//! sleeps.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::{Duration, Instant};

use gridraft::events::{EventBusSettings, GridEvent, Received};
use tokio::sync::mpsc::Receiver;
use tokio::sync::watch;

use crate::common::java::JavaProcess;

pub const SECRET: &str = "s3cr3t";

/// Subscriber settings with the default limits.
pub fn settings(publish_events: String, secret: &str) -> EventBusSettings {
    EventBusSettings {
        publish_events,
        subscribe_events: None,
        registration_secret: secret.into(),
        max_frame_bytes: gridraft::events::DEFAULT_MAX_FRAME_BYTES,
        receive_hwm: gridraft::events::DEFAULT_RECEIVE_HWM,
    }
}

/// A progress mark for the subscriber to stamp events with; keep the sender to move it.
pub fn mark() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    watch::channel(0)
}

/// One event as the Java `UnboundZmqEventBus.fire` sends it: exactly 4 frames.
pub fn message(name: &str, secret: &str, id: uuid::Uuid, data: &str) -> Vec<Vec<u8>> {
    vec![
        name.as_bytes().to_vec(),
        serde_json::to_vec(secret).unwrap(),
        id.to_string().into_bytes(),
        data.as_bytes().to_vec(),
    ]
}

/// Sends `frames` again every 250 ms until the subscriber delivers an event (re-sending the same
/// id is safe: the copies are dropped as duplicates). This covers the slow-joiner window and a
/// publisher or subscriber still reconnecting.
pub async fn publish_until_received(
    publisher: &zmq::Socket,
    frames: &[Vec<u8>],
    rx: &mut Receiver<Received>,
    within: Duration,
) -> GridEvent {
    let deadline = Instant::now() + within;
    loop {
        publisher.send_multipart(frames, 0).unwrap();
        match tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
            Ok(Some(received)) => return received.event,
            Ok(None) => panic!("subscriber closed its channel"),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => panic!(
                "no event within {within:?} for {:?}",
                String::from_utf8_lossy(&frames[0])
            ),
        }
    }
}

/// Polls `check` every 50 ms; panics with `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts nothing (more) is delivered for a short while.
pub async fn assert_quiet(rx: &mut Receiver<Received>, for_: Duration) {
    if let Ok(event) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("unexpected delivery: {event:?}");
    }
}

/// `java -jar selenium-server event-bus` on loopback, ready; killed (SIGKILL) when dropped.
/// Callers have checked `deps::java()`, which gave them `jar`.
pub async fn java_bus(jar: &Path, publish: u16, subscribe: u16, http: u16) -> JavaProcess {
    let args: Vec<String> = vec![
        "event-bus".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        http.to_string(),
        "--publish-events".into(),
        format!("tcp://127.0.0.1:{publish}"),
        "--subscribe-events".into(),
        format!("tcp://127.0.0.1:{subscribe}"),
    ];
    JavaProcess::start(jar, "event-bus", &args, http, "/readyz").await
}
