//! The subscriber against a plain libzmq PUB socket bound by the test (no Java): delivery,
//! bad input on the wire, the frame size limit, the progress mark, and the ways the thread ends.

#[path = "event_bus_common/mod.rs"]
mod bus;
mod common;

use std::time::Duration;

use bus::*;
use common::{free_port, init_tracing};
use gridraft::events::{spawn_subscriber, EventBusSettings, EventMetrics, GridEvent, Received};
use gridraft::session::RemovalReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Harness {
    context: zmq::Context,
    publisher: zmq::Socket,
    metrics: EventMetrics,
    rx: mpsc::Receiver<Received>,
    mark: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Harness {
    /// Binds a PUB on an ephemeral port and points a subscriber with the default limits at it.
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    fn start_with(adjust: impl FnOnce(&mut EventBusSettings)) -> Self {
        init_tracing();
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB).unwrap();
        publisher.set_linger(0).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let metrics = EventMetrics::new(&prometheus::Registry::new());
        let (tx, rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let mut settings = settings(endpoint, SECRET);
        adjust(&mut settings);
        let (mark, marks) = mark();
        let thread = spawn_subscriber(settings, tx, marks, shutdown.clone(), metrics.clone());
        Self {
            context,
            publisher,
            metrics,
            rx,
            mark,
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
        next.event,
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
async fn frames_up_to_the_configured_limit_pass_and_larger_ones_cost_only_a_reconnect() {
    const LIMIT: usize = 256 << 10;
    let mut h = Harness::start_with(|s| s.max_frame_bytes = LIMIT);
    let warm = Uuid::new_v4();
    publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, warm, "\"w\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;

    // A data frame of exactly the limit is delivered normally.
    let big_id = Uuid::new_v4();
    let head = r#"{"sessionId": "big", "reason": "QUIT_COMMAND", "capabilities": {"blob": ""#;
    let tail = r#""}}"#;
    let big = format!(
        "{head}{}{tail}",
        "x".repeat(LIMIT - head.len() - tail.len())
    );
    assert_eq!(big.len(), LIMIT);
    h.publisher
        .send_multipart(message("session-closed", SECRET, big_id, &big), 0)
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), h.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.event.event_id(), big_id);

    // One byte more: libzmq refuses the frame and drops the connection; nothing panics, the
    // subscriber reconnects and later events still arrive.
    let over = format!("\"{}\"", "y".repeat(LIMIT - 1));
    assert_eq!(over.len(), LIMIT + 1);
    h.publisher
        .send_multipart(message("session-closed", SECRET, Uuid::new_v4(), &over), 0)
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
    assert_quiet(&mut h.rx, Duration::from_millis(300)).await;
    h.stop().await;
}

#[tokio::test]
async fn each_event_carries_the_mark_read_when_it_was_received() {
    let mut h = Harness::start();
    h.mark.send_replace(7);
    let first = Uuid::new_v4();
    publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, first, "\"a\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;
    h.mark.send_replace(42);
    let second = Uuid::new_v4();
    h.publisher
        .send_multipart(message("session-closed", SECRET, second, "\"b\""), 0)
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), h.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((received.event.event_id(), received.mark), (second, 42));
    h.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_default_limit_is_dropped_and_the_next_event_handled() {
    let mut h = Harness::start();
    publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, Uuid::new_v4(), "\"warm\""),
        &mut h.rx,
        Duration::from_secs(10),
    )
    .await;
    // 2 MiB of data: over the default 1 MiB frame limit, so libzmq refuses it unread.
    let oversized = Uuid::new_v4();
    let blob = format!(
        r#"{{"capabilities": {{"blob": "{}"}}, "sessionId": "big", "reason": "QUIT_COMMAND"}}"#,
        "x".repeat(2 << 20)
    );
    h.publisher
        .send_multipart(message("session-closed", SECRET, oversized, &blob), 0)
        .unwrap();
    let next = Uuid::new_v4();
    let event = publish_until_received(
        &h.publisher,
        &message("session-closed", SECRET, next, "\"after\""),
        &mut h.rx,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(event.event_id(), next, "the oversized event was delivered");
    assert_quiet(&mut h.rx, Duration::from_millis(300)).await;
    h.stop().await;
}

#[tokio::test]
async fn an_unusable_endpoint_ends_the_thread_without_panicking() {
    init_tracing();
    for endpoint in ["not an endpoint", "tcp://127.0.0.1:1\0", "tcp://"] {
        let (tx, _rx) = mpsc::channel(1);
        let settings = settings(endpoint.into(), "");
        let metrics = EventMetrics::new(&prometheus::Registry::new());
        let thread = spawn_subscriber(
            settings,
            tx,
            mark().1,
            CancellationToken::new(),
            metrics.clone(),
        );
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
    let settings = settings(format!("tcp://127.0.0.1:{}", free_port()), "");
    let shutdown = CancellationToken::new();
    let metrics = EventMetrics::new(&prometheus::Registry::new());
    let thread = spawn_subscriber(settings, tx, mark().1, shutdown.clone(), metrics.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!metrics.is_connected());
    shutdown.cancel();
    join_within(thread, Duration::from_secs(2)).await;
}

#[test]
fn settings_debug_redacts_the_secret() {
    let mut settings = settings("tcp://bus:4442".into(), "hunter2");
    settings.subscribe_events = Some("tcp://bus:4443".into());
    let text = format!("{settings:?}");
    assert!(
        text.contains("tcp://bus:4442") && !text.contains("hunter2"),
        "{text}"
    );
}
