//! A member that cannot reach its peers stays quiet and cheap: its retries back off, a repeated
//! failure is logged once and then now and then, and it refuses requests promptly instead of
//! holding them for the whole timeout.
//!
//! This binary installs its own tracing subscriber (the production default filter,
//! `gridraft=info,openraft=warn`) that counts what would be written, so the tests share one
//! global counter and run one at a time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{eventually, TestCluster};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const NODE: &str = "http://10.0.0.5:5555";

/// What the members would have written to their log.
#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    lines: AtomicU64,
    warn_or_worse: AtomicU64,
    /// The first WARN and ERROR messages since the last reset, for failure messages.
    samples: Mutex<Vec<String>>,
    /// The first messages at any level since the last reset.
    messages: Mutex<Vec<String>>,
}

static COUNTS: OnceLock<Counts> = OnceLock::new();
/// The counter is global: tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn counts() -> &'static Counts {
    COUNTS.get_or_init(|| {
        tracing_subscriber::registry()
            .with(EnvFilter::new("gridraft=info,openraft=warn"))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(|| CountingWriter),
            )
            .with(LevelCounter)
            .init();
        Counts::default()
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Snapshot {
    bytes: u64,
    lines: u64,
    warn_or_worse: u64,
}

impl Counts {
    fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.lines.store(0, Ordering::Relaxed);
        self.warn_or_worse.store(0, Ordering::Relaxed);
        self.samples.lock().unwrap().clear();
        self.messages.lock().unwrap().clear();
    }

    fn logged(&self, message: &str) -> bool {
        self.messages.lock().unwrap().iter().any(|m| m == message)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            lines: self.lines.load(Ordering::Relaxed),
            warn_or_worse: self.warn_or_worse.load(Ordering::Relaxed),
        }
    }

    fn samples(&self) -> String {
        self.samples.lock().unwrap().join("\n  ")
    }
}

/// Counts the formatted output instead of writing it.
struct CountingWriter;

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = COUNTS.get() {
            c.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            let lines = buf.iter().filter(|b| **b == b'\n').count();
            c.lines.fetch_add(lines as u64, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts events at WARN and ERROR and keeps a few of them.
struct LevelCounter;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

struct OnlyMessage(String);

impl Visit for OnlyMessage {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for LevelCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        let Some(c) = COUNTS.get() else { return };
        {
            let mut messages = c.messages.lock().unwrap();
            if messages.len() < 1000 {
                let mut m = OnlyMessage(String::new());
                event.record(&mut m);
                messages.push(m.0);
            }
        }
        if level > Level::WARN {
            return;
        }
        c.warn_or_worse.fetch_add(1, Ordering::Relaxed);
        let mut samples = c.samples.lock().unwrap();
        if samples.len() < 12 {
            let mut m = Message(String::new());
            event.record(&mut m);
            samples.push(format!("{level} {}: {}", event.metadata().target(), m.0));
        }
    }
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap(), started.elapsed())
}

/// What an idle quorum-less member may write a second (the target is 50 KB in 30 s, 1.7 KB a
/// second; before backoff it wrote 2 000 lines and 800 KB a second).
const MAX_LINES_PER_SECOND: f64 = 5.0;
const MAX_BYTES_PER_SECOND: f64 = 1_200.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_followers_are_both_killed_stays_quiet() {
    let _turn = SERIAL.lock().await;
    let counts = counts();
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let first = c.add(leader, "q-1", NODE).await;
    assert_eq!(first.status(), 200, "{}", first.text().await.unwrap());

    tracing::info!("phase: kill both followers");
    for id in (1..=3).filter(|id| *id != leader) {
        c.kill(id).await;
    }
    eventually(
        Duration::from_secs(10),
        "the leader to leave the balancer",
        || async {
            let code = c.http.get(c.url(leader, "/readyz")).send().await.ok()?;
            (code.status() == 503).then_some(())
        },
    )
    .await;

    tracing::info!("phase: idle");
    // Past the first, short retry delays; then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Duration::from_secs(8);
    counts.reset();
    tokio::time::sleep(idle).await;
    let seen = counts.snapshot();
    let secs = idle.as_secs_f64();
    eprintln!(
        "idle quorum-less leader over {idle:?}: {seen:?}\n  {}",
        counts.samples()
    );
    assert!(
        seen.lines as f64 <= MAX_LINES_PER_SECOND * secs
            && seen.bytes as f64 <= MAX_BYTES_PER_SECOND * secs,
        "an idle leader without a quorum wrote {} lines ({} bytes, {} at WARN or ERROR) in \
         {idle:?}; first ones:\n  {}",
        seen.lines,
        seen.bytes,
        seen.warn_or_worse,
        counts.samples()
    );

    tracing::info!("phase: requests are refused promptly");
    // Far below the 15 s read and write timeouts of the test cluster.
    let prompt = Duration::from_secs(2);
    let (code, _, _) = status_of(c.http.get(c.url(leader, "/readyz"))).await;
    assert_eq!(code, 503, "readyz of a leader without a quorum");
    let (code, body, took) = status_of(c.http.get(c.url(leader, "/se/grid/session/q-1"))).await;
    assert_eq!(code, 500, "a read without a quorum: {body}");
    assert!(took < prompt, "the read took {took:?}: {body}");
    assert!(
        body.contains("quorum"),
        "the read's error names the cause: {body}"
    );
    let add = c
        .http
        .post(c.url(leader, "/se/grid/session"))
        .body(common::session_body("q-2", NODE));
    let (code, body, took) = status_of(add).await;
    assert_eq!(code, 500, "a write without a quorum: {body}");
    assert!(took < prompt, "the write took {took:?}: {body}");
    assert!(
        body.contains("quorum"),
        "the write's error names the cause: {body}"
    );
    let seen = counts.snapshot();
    assert!(
        seen.lines < 40,
        "refusing two requests wrote {} lines:\n  {}",
        seen.lines,
        counts.samples()
    );

    tracing::info!("phase: the followers return and the cluster serves again");
    let returned = Instant::now();
    for id in (1..=3).filter(|id| *id != leader) {
        c.restart(id).await;
    }
    // The longest replication backoff (5 s) plus an election, with room for a slow machine.
    eventually(
        Duration::from_secs(15),
        "a write to commit again",
        || async {
            let leader = c.wait_for_leader(Duration::from_secs(15)).await;
            let resp = c.add(leader, "q-3", NODE).await;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    eprintln!(
        "serving again {:?} after the followers returned",
        returned.elapsed()
    );
    for id in 1..=3 {
        c.wait_caught_up(id).await;
        assert_eq!(c.get_status(id, "q-1").await, 200, "q-1 on member {id}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_every_member_at_once_does_not_flood_the_log() {
    let _turn = SERIAL.lock().await;
    let counts = counts();
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    assert_eq!(c.add(leader, "s-1", NODE).await.status(), 200);

    tracing::info!("phase: stop all three at once");
    counts.reset();
    let started = Instant::now();
    let members: Vec<_> = c
        .members
        .values_mut()
        .map(|m| m.member.take().unwrap())
        .collect();
    futures::future::join_all(members.into_iter().map(|m| m.stop())).await;
    let took = started.elapsed();
    let seen = counts.snapshot();
    assert!(
        counts.logged("no member left to hand leadership over to"),
        "the leader waited for a handover nobody could take"
    );
    eprintln!("orderly stop of three members in {took:?}: {seen:?}");
    // Start and stop steps at INFO are a few dozen lines; before backoff the leader's
    // handover window alone wrote tens of thousands.
    assert!(
        seen.lines <= 150 && seen.warn_or_worse <= 30,
        "stopping three members wrote {} lines ({} at WARN or ERROR, {} bytes) in {took:?}; \
         first ones:\n  {}",
        seen.lines,
        seen.warn_or_worse,
        seen.bytes,
        counts.samples()
    );
}

/// A leader whose writes cannot commit (both followers gone, and elections so slow that it does
/// not know yet) fills its write queue; the next write is refused at once, naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_write_queue_refuses_the_next_write_at_once_naming_the_limit() {
    let _turn = SERIAL.lock().await;
    counts();
    let mut c = TestCluster::builder(3)
        .tune(|s| {
            s.grid.max_pending_writes = 1;
            s.grid.write_timeout = "5s".into();
            s.raft.heartbeat_interval = "200ms".into();
            s.raft.election_timeout_min = "4s".into();
            s.raft.election_timeout_max = "8s".into();
        })
        .start()
        .await;
    let leader = c.leader().await;
    assert_eq!(c.add(leader, "f-0", NODE).await.status(), 200);
    for id in (1..=3).filter(|id| *id != leader) {
        c.kill(id).await;
    }

    tracing::info!("phase: two batches that cannot commit take both proposal slots");
    let last_log = |c: &TestCluster| {
        c.member(leader)
            .cluster
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0)
    };
    let mut stuck = Vec::new();
    for n in 1..=2 {
        let before = last_log(&c);
        let add = c
            .http
            .post(c.url(leader, "/se/grid/session"))
            .body(common::session_body(&format!("f-{n}"), NODE));
        stuck.push(tokio::spawn(add.send()));
        eventually(Duration::from_secs(5), "the batch in the log", || async {
            (last_log(&c) > before).then_some(())
        })
        .await;
    }

    tracing::info!("phase: one write waits for a slot, one fills the queue, the rest are refused");
    let adds = (3..=6).map(|n| {
        let add = c
            .http
            .post(c.url(leader, "/se/grid/session"))
            .body(common::session_body(&format!("f-{n}"), NODE));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = add.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.text().await.unwrap(), started.elapsed())
        })
    });
    let mut refused = Vec::new();
    for handle in adds.collect::<Vec<_>>() {
        let (code, body, took) = handle.await.unwrap();
        if body.contains("queue is full") {
            refused.push((code, body, took));
        }
    }
    assert!(
        refused.len() >= 2,
        "of four writes beyond a queue of one, {} were refused",
        refused.len()
    );
    for (code, body, took) in &refused {
        assert_eq!(*code, 500, "{body}");
        assert!(body.contains("\"error\": \"unknown error\""), "{body}");
        assert!(body.contains("grid.max-pending-writes = 1"), "{body}");
        assert!(*took < Duration::from_secs(1), "refused after {took:?}");
    }
    assert!(c.member(leader).cluster.queue_full.write.get() >= 2);
    drop(stuck);
    c.kill(leader).await;
}

/// Stopping every member at once, the leader stops at once as nobody can take over; stopping
/// the leader alone, it still waits until another member leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_still_hands_over_to_members_that_run() {
    let _turn = SERIAL.lock().await;
    let counts = counts();
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    counts.reset();
    c.stop(leader).await;
    assert!(
        counts.logged("leadership handed over"),
        "the leader stopped without handing over: {:?}\n  {}",
        counts.messages.lock().unwrap(),
        counts.samples()
    );
    assert!(!counts.logged("no member left to hand leadership over to"));
    c.shutdown().await;
}
