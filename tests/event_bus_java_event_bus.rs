//! Against the real Selenium 4.48.0 `event-bus` (Java 17): events published through the bus's
//! XSUB reach the subscriber, also after the bus's first two ZMTP PINGs (sent 60 s and 120 s
//! after our connect, which a client without ZMTP 3.1 heartbeats fails on) and after the bus is
//! killed and restarted on the same ports. Takes about 2.5 minutes by design, so it runs only
//! in the full tier: with `GRIDRAFT_TEST_REQUIRE_ALL=1` (scripts/test.sh, CI); plain
//! `cargo test` prints a SKIPPED line for it (`common::deps::full_tier`).

#[path = "event_bus_common/mod.rs"]
mod bus;
mod common;

use std::time::{Duration, Instant};

use bus::*;
use common::{free_port, init_tracing};
use gridraft::events::{spawn_subscriber, EventMetrics, GridEvent};
use gridraft::session::RemovalReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const EVENT_WITHIN: Duration = Duration::from_secs(15);

/// Builds the event expected for a published id.
type Want = fn(Uuid) -> GridEvent;

fn phase(started: Instant, what: &str) {
    println!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_run_real_java_bus_delivers_past_zmtp_pings_and_across_a_bus_restart() {
    if !common::deps::full_tier("about 2.5 minutes") {
        return;
    }
    let Some(jar) = common::deps::java() else {
        return;
    };
    init_tracing();
    let started = Instant::now();
    let (publish_port, subscribe_port, http_port) = (free_port(), free_port(), free_port());
    let bus = java_bus(&jar, publish_port, subscribe_port, http_port).await;
    phase(started, "java event bus ready");

    let metrics = EventMetrics::new(&prometheus::Registry::new());
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let mut settings = settings(format!("tcp://127.0.0.1:{publish_port}"), SECRET);
    settings.subscribe_events = Some(format!("tcp://127.0.0.1:{subscribe_port}"));
    let (_mark, marks) = mark();
    let thread = spawn_subscriber(settings, tx, marks, shutdown.clone(), metrics.clone());
    let m = metrics.clone();
    wait_until("the subscriber connects", Duration::from_secs(20), || {
        m.is_connected()
    })
    .await;
    let connected_at = Instant::now();
    phase(
        started,
        "subscriber connected (the bus PINGs it at +60 s and +120 s)",
    );

    // The component side of the bus (docs/compatibility.md#sockets): a PUB connected to the
    // bus's XSUB.
    let context = zmq::Context::new();
    let publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_linger(0).unwrap();
    publisher
        .connect(&format!("tcp://127.0.0.1:{subscribe_port}"))
        .unwrap();

    let expect = |name: &str, data: String, want: Want| {
        let id = Uuid::new_v4();
        (message(name, SECRET, id, &data), want(id))
    };
    let session_closed = |session: &str, reason: &str| {
        format!(
            r#"{{"capabilities": {{"browserName": "chrome"}},"nodeUri": "http:\u002f\u002fn:5555","reason": "{reason}","sessionId": "{session}"}}"#
        )
    };

    // Phase 1, right away: an object session-closed, plus traffic that must not get through.
    let (frames, want) = expect(
        "session-closed",
        session_closed("s1", "QUIT_COMMAND"),
        |id| GridEvent::SessionClosed {
            event_id: id,
            session_id: "s1".into(),
            reason: RemovalReason::QuitCommand,
        },
    );
    let got = publish_until_received(&publisher, &frames, &mut rx, EVENT_WITHIN).await;
    assert_eq!(got, want);
    phase(
        started,
        &format!(
            "+{:>5.1}s after connect: received {got:?}",
            connected_at.elapsed().as_secs_f64()
        ),
    );
    publisher
        .send_multipart(message("node-heartbeat", SECRET, Uuid::new_v4(), "{}"), 0)
        .unwrap();
    publisher
        .send_multipart(
            message("session-closed", "wrong", Uuid::new_v4(), "\"s9\""),
            0,
        )
        .unwrap();
    let m = metrics.clone();
    wait_until("bad traffic is counted", Duration::from_secs(5), || {
        m.messages("ignored", "node-heartbeat") >= 1
            && m.messages("rejected", "secret_mismatch") >= 1
    })
    .await;
    assert_quiet(&mut rx, Duration::from_millis(500)).await;

    let node_status = r#"{"availability": "UP","externalUri": "http:\u002f\u002fnode-a:5555","maxSessions": 1,"nodeId": "af914115-8f90-482f-8113-04d1a6cf3bb6","slots": []}"#;
    let schedule: [(u64, &str, String, Want); 3] = [
        (20, "node-removed", node_status.to_owned(), |id| {
            GridEvent::NodeRemoved {
                event_id: id,
                node_uri: "http://node-a:5555".into(),
            }
        }),
        (70, "session-closed", "\"s2\"".to_owned(), |id| {
            GridEvent::SessionClosed {
                event_id: id,
                session_id: "s2".into(),
                reason: RemovalReason::QuitCommand,
            }
        }),
        (130, "node-restarted", node_status.to_owned(), |id| {
            GridEvent::NodeRestarted {
                event_id: id,
                node_uri: "http://node-a:5555".into(),
            }
        }),
    ];
    for (at, name, data, want) in schedule {
        tokio::time::sleep_until((connected_at + Duration::from_secs(at)).into()).await;
        let (frames, want) = expect(name, data, want);
        let got = publish_until_received(&publisher, &frames, &mut rx, EVENT_WITHIN).await;
        assert_eq!(got, want);
        phase(
            started,
            &format!(
                "+{:>5.1}s after connect: received {got:?}",
                connected_at.elapsed().as_secs_f64()
            ),
        );
        assert!(metrics.is_connected());
        assert_eq!(
            metrics.reconnects(),
            0,
            "the PINGs must not cost the connection"
        );
    }

    // Phase 3: kill -9 the bus, restart it on the same ports; libzmq reconnects both sides.
    drop(bus);
    phase(started, "java event bus killed");
    let m = metrics.clone();
    wait_until(
        "the subscriber notices the bus is gone",
        Duration::from_secs(10),
        || !m.is_connected(),
    )
    .await;
    phase(started, "subscriber disconnected");
    let bus = java_bus(&jar, publish_port, subscribe_port, http_port).await;
    phase(started, "java event bus restarted");
    let m = metrics.clone();
    wait_until("the subscriber reconnects", Duration::from_secs(30), || {
        m.is_connected()
    })
    .await;
    assert_eq!(metrics.reconnects(), 1);
    phase(started, "subscriber reconnected");
    let (frames, want) = expect("session-closed", session_closed("s3", "TIMEOUT"), |id| {
        GridEvent::SessionClosed {
            event_id: id,
            session_id: "s3".into(),
            reason: RemovalReason::Timeout,
        }
    });
    let got = publish_until_received(&publisher, &frames, &mut rx, EVENT_WITHIN).await;
    assert_eq!(got, want);
    phase(started, &format!("after restart: received {got:?}"));

    shutdown.cancel();
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .expect("no panic");
    assert!(!metrics.is_connected());
    phase(
        started,
        &format!(
            "done: accepted {} (session-closed {}, node-removed {}, node-restarted {}), duplicates {}, reconnects {}",
            metrics.messages("accepted", "session-closed")
                + metrics.messages("accepted", "node-removed")
                + metrics.messages("accepted", "node-restarted"),
            metrics.messages("accepted", "session-closed"),
            metrics.messages("accepted", "node-removed"),
            metrics.messages("accepted", "node-restarted"),
            metrics.messages("duplicate", "event_id"),
            metrics.reconnects(),
        ),
    );
    drop(bus);
}
