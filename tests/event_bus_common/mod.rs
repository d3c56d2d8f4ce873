//! Helpers shared by the event-bus integration tests: a zmq publisher that speaks the bus's
//! four-frame messages, a guard around the real Java event bus, and waiting with timeouts
//! instead of fixed sleeps.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridraft::events::{EventBusSettings, GridEvent, Received};
use tokio::sync::mpsc::Receiver;
use tokio::sync::watch;

pub const SECRET: &str = "s3cr3t";
/// Where the Selenium server jar is; `GRIDRAFT_SELENIUM_JAR` overrides (CI lays shared/ elsewhere).
pub fn jar() -> String {
    std::env::var("GRIDRAFT_SELENIUM_JAR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/selenium/selenium-server-4.48.0.jar"
        )
        .into()
    })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gridraft=debug,info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A port that was free a moment ago (the Java bus needs numbers, not port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

/// `java -jar selenium-server event-bus` on loopback, killed (SIGKILL) when dropped.
pub struct JavaBus {
    child: Child,
    pub http_port: u16,
    pub log: PathBuf,
}

impl JavaBus {
    pub fn start(publish_port: u16, subscribe_port: u16, http_port: u16, log_name: &str) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(log_name);
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("java")
            .args(["-jar", &jar(), "event-bus", "--host", "127.0.0.1"])
            .args([
                "--publish-events",
                &format!("tcp://127.0.0.1:{publish_port}"),
            ])
            .args([
                "--subscribe-events",
                &format!("tcp://127.0.0.1:{subscribe_port}"),
            ])
            .args(["--port", &http_port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("java is installed");
        Self {
            child,
            http_port,
            log,
        }
    }

    /// Polls `/readyz` until it answers 2xx.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("event bus exited with {status}; see {}", self.log.display());
            }
            if http_status(self.http_port, "/readyz").is_some_and(|s| (200..300).contains(&s)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "event bus not ready; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for JavaBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; the status code, or None if nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
