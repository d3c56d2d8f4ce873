//! The subscriber against a plain libzmq PUB socket bound by the test (no Java): delivery,
//! bad input on the wire, oversized frames, and the ways the thread ends.

#[path = "event_bus_common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use gridraft::events::{spawn_subscriber, EventBusSettings, EventMetrics, GridEvent};
use gridraft::session::RemovalReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Harness {
    context: zmq::Context,
    publisher: zmq::Socket,
    metrics: EventMetrics,
    rx: mpsc::Receiver<GridEvent>,
    shutdown: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Harness {
    /// Binds a PUB on an ephemeral port and points a subscriber at it.
    fn start() -> Self {
        init_tracing();
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB).unwrap();
        publisher.set_linger(0).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let metrics = EventMetrics::new(&prometheus::Registry::new());
        let (tx, rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let settings = EventBusSettings {
            publish_events: endpoint,
            subscribe_events: None,
            registration_secret: SECRET.into(),
        };
        let thread = spawn_subscriber(settings, tx, shutdown.clone(), metrics.clone());
        Self {
            context,
            publisher,
            metrics,
            rx,
            shutdown,
            thread,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        join_within(self.thread, Duration::from_secs(3)).await;
        drop(self.publisher);
        drop(self.context);
    }
}

async fn join_within(thread: std::thread::JoinHandle<()>, within: Duration) {
    let joined = tokio::task::spawn_blocking(move || thread.join());
    tokio::time::timeout(within, joined)
        .await
        .expect("subscriber thread ends promptly")
        .unwrap()
        .expect("subscriber thread did not panic");
}

fn closed(session: &str) -> String {
    format!(r#"{{"sessionId": "{session}", "reason": "TIMEOUT"}}"#)
}

#[tokio::test]
async fn events_are_delivered_and_bad_messages_only_counted() {
    let mut h = Harness::start();
    let first = Uuid::new_v4();
    let event = publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, first, &closed("a")),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        event,
        GridEvent::SessionClosed {
            event_id: first,
            session_id: "a".into(),
            reason: RemovalReason::Timeout
        }
    );
    assert!(h.metrics.is_connected());

    // None of these may reach the channel; each is counted by kind.
    let burned = Uuid::new_v4();
    let bad: Vec<Vec<Vec<u8>>> = vec![
        message("session-closed", SECRET, first, &closed("again")), // duplicate
        message("node-status", SECRET, Uuid::new_v4(), "{}"),
        message("made-up", SECRET, Uuid::new_v4(), "{}"),
        message("session-closed", "wrong", burned, &closed("b")),
        message("session-closed", SECRET, Uuid::new_v4(), "{not json"),
        message("node-removed", SECRET, Uuid::new_v4(), r#"{"nodeId": "x"}"#),
        vec![b"session-closed".to_vec(), b"\"s3cr3t\"".to_vec()],
        vec![b"session-closed".to_vec(); 7],
        vec![vec![0xff, 0xfe]; 4],
    ];
    for frames in &bad {
        h.publisher.send_multipart(frames, 0).unwrap();
    }
    // The correctly signed copy of the burned id is a duplicate too.
    h.publisher
        .send_multipart(message("session-closed", SECRET, burned, &closed("b")), 0)
        .unwrap();
    let marker = Uuid::new_v4();
    let data = r#"{"externalUri": "http://n:5555"}"#;
    h.publisher
        .send_multipart(message("node-restarted", SECRET, marker, data), 0)
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), h.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next,
        GridEvent::NodeRestarted {
            event_id: marker,
            node_uri: "http://n:5555".into()
        }
    );

    let m = &h.metrics;
    assert_eq!(m.messages("accepted", "session-closed"), 1);
    assert_eq!(m.messages("accepted", "node-restarted"), 1);
    assert_eq!(m.messages("duplicate", "event_id"), 2);
    assert_eq!(m.messages("ignored", "node-status"), 1);
    assert_eq!(m.messages("ignored", "other"), 2);
    assert_eq!(m.messages("rejected", "secret_mismatch"), 1);
    assert_eq!(m.messages("rejected", "data_json"), 1);
    assert_eq!(m.messages("rejected", "external_uri"), 1);
    assert_eq!(m.messages("rejected", "frame_count"), 2);
    assert_quiet(&mut h.rx, Duration::from_millis(300)).await;
    h.stop().await;
}

#[tokio::test]
async fn large_messages_pass_and_oversized_ones_cost_only_a_reconnect() {
    let mut h = Harness::start();
    let warm = Uuid::new_v4();
    publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, warm, "\"w\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;

    // 15 MiB of capabilities: under the 16 MiB limit, delivered normally.
    let big_id = Uuid::new_v4();
    let big = format!(
        r#"{{"capabilities": {{"blob": "{}"}}, "sessionId": "big", "reason": "QUIT_COMMAND"}}"#,
        "x".repeat(15 << 20)
    );
    h.publisher
        .send_multipart(message("session-closed", SECRET, big_id, &big), 0)
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), h.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_id(), big_id);

    // 17 MiB: libzmq refuses the frame and drops the connection; nothing panics, the
    // subscriber reconnects and later events still arrive.
    let huge = "y".repeat(17 << 20);
    h.publisher
        .send_multipart(
            message(
                "session-closed",
                SECRET,
                Uuid::new_v4(),
                &format!("\"{huge}\""),
            ),
            0,
        )
        .unwrap();
    let metrics = h.metrics.clone();
    wait_until("the subscriber reconnects", Duration::from_secs(30), || {
        metrics.reconnects() >= 1 && metrics.is_connected()
    })
    .await;
    let after = Uuid::new_v4();
    let event = publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, after, "\"z\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(event.event_id(), after);
    h.stop().await;
}

#[tokio::test]
async fn an_unusable_endpoint_ends_the_thread_without_panicking() {
    init_tracing();
    for endpoint in ["not an endpoint", "tcp://127.0.0.1:1\0", "tcp://"] {
        let (tx, _rx) = mpsc::channel(1);
        let settings = EventBusSettings {
            publish_events: endpoint.into(),
            subscribe_events: None,
            registration_secret: String::new(),
        };
        let metrics = EventMetrics::new(&prometheus::Registry::new());
        let thread = spawn_subscriber(settings, tx, CancellationToken::new(), metrics.clone());
        join_within(thread, Duration::from_secs(3)).await;
        assert!(!metrics.is_connected());
    }
}

#[tokio::test]
async fn a_dropped_receiver_stops_the_subscriber() {
    let mut h = Harness::start();
    publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, Uuid::new_v4(), "\"a\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;
    drop(h.rx);
    h.publisher
        .send_multipart(
            message("session-closed", SECRET, Uuid::new_v4(), "\"b\""),
            0,
        )
        .unwrap();
    join_within(h.thread, Duration::from_secs(5)).await;
    assert!(!h.metrics.is_connected());
}

#[tokio::test]
async fn shutdown_is_noticed_while_no_bus_is_reachable() {
    init_tracing();
    let (tx, _rx) = mpsc::channel(1);
    let settings = EventBusSettings {
        publish_events: format!("tcp://127.0.0.1:{}", free_port()),
        subscribe_events: None,
        registration_secret: String::new(),
    };
    let shutdown = CancellationToken::new();
    let metrics = EventMetrics::new(&prometheus::Registry::new());
    let thread = spawn_subscriber(settings, tx, shutdown.clone(), metrics.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!metrics.is_connected());
    shutdown.cancel();
    join_within(thread, Duration::from_secs(2)).await;
}

#[test]
fn settings_debug_redacts_the_secret() {
    let settings = EventBusSettings {
        publish_events: "tcp://bus:4442".into(),
        subscribe_events: Some("tcp://bus:4443".into()),
        registration_secret: "hunter2".into(),
    };
    let text = format!("{settings:?}");
    assert!(
        text.contains("tcp://bus:4442") && !text.contains("hunter2"),
        "{text}"
    );
}
