//! A listener whose accepts fail for want of a file descriptor backs off and logs the streak
//! once with a count. A test binary of its own: it lowers the whole process's open-file limit
//! and installs its own log subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// A log line's message and its `failures` field.
type Line = (String, Option<u64>);

/// The `accepting connections ...` log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Line>>>);

impl Captured {
    fn lines(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    failures: Option<u64>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "failures" {
            self.failures = Some(value);
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message.starts_with("accepting connections") {
            self.0
                .lock()
                .unwrap()
                .push((fields.message, fields.failures));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_failing_for_want_of_descriptors_back_off_and_are_logged_once_per_streak() {
    let captured = Captured::default();
    tracing_subscriber::registry()
        .with(captured.clone())
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .init();
    rlimit::Resource::NOFILE.set(1024, 1024).unwrap();
    let c = TestCluster::start(1).await;
    let public = c.members[&1].public;

    tracing::info!("phase: take every free descriptor, then connect with the last one");
    let mut hoard = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hoard.push(f);
    }
    hoard.pop();
    let mut stream = TcpStream::connect(public).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the failed accept logged",
        || async { (!captured.lines().is_empty()).then_some(()) },
    )
    .await;
    // The window in which a spinning accept loop would fail (and log) thousands of times.
    tokio::time::sleep(Duration::from_secs(1)).await;

    tracing::info!("phase: descriptors free again");
    drop(hoard);
    let lines = eventually(Duration::from_secs(5), "the recovery logged", || async {
        let lines = captured.lines();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(
        lines.len(),
        2,
        "one line when the streak starts, one when it ends: {lines:?}"
    );
    assert_eq!(lines[0].0, "accepting connections failed; backing off");
    assert_eq!(lines[1].0, "accepting connections again");
    let failures = lines[1].1.expect("a failure count");
    // 5 ms doubling to 1 s: about ten attempts in the window.
    assert!((1..50).contains(&failures), "{failures} failed accepts");

    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    c.shutdown().await;
}
