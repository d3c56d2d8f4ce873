//! One scenario of the differential event tests: a three-member gridraft cluster and the shared
//! Java server on one bus, a publisher, the sessions it added and what it expects of each; and
//! the waiting and comparing described in the test binary's documentation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gridraft::config::EventSettings;
use gridraft::session::{format_instant_nanos, parse_start, RemovalReason};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{self, session_body, TestCluster};
use crate::java::JavaWorld;
use crate::payloads::{closed, frames, signed};
use crate::SECRET;

/// How long a scenario waits for the expected end state (events take about a second).
const SETTLE: Duration = Duration::from_secs(90);
/// How long the sentinel may take to be handled by Java and every member.
const SENTINEL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Expect {
    /// 200: still in the map.
    Live,
    /// 404 quoting this removal reason and node.
    Removed { reason: RemovalReason, node: String },
    /// 404 with the plain message: never added, never removed.
    Unknown,
}

/// One answer to `GET /se/grid/session/{id}`, as compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Found(Value),
    NotFound(String),
    Other(u16, String),
    /// No HTTP answer at all.
    Failed(String),
}

impl Answer {
    /// Short enough for a report line: a found session shows its node and a prefix of its body.
    fn show(&self) -> String {
        match self {
            Answer::Found(body) => {
                let text = body.to_string();
                let cut: String = text.chars().take(100).collect();
                format!(
                    "200 node {} body {cut}{}",
                    body["value"]["uri"],
                    if cut.len() < text.len() { "..." } else { "" }
                )
            }
            Answer::NotFound(m) => format!("404 {m:?}"),
            Answer::Other(status, body) => format!("{status} {body:?}"),
            Answer::Failed(e) => format!("no answer: {e}"),
        }
    }

    fn matches(&self, id: &str, expect: &Expect) -> bool {
        match (self, expect) {
            (Answer::Found(_), Expect::Live) => true,
            (Answer::NotFound(m), Expect::Unknown) => *m == format!("Unable to find session with ID: {id}"),
            (Answer::NotFound(m), Expect::Removed { reason, node }) => {
                *m == format!(
                    "Unable to find session with ID: {id}. Session was removed at <instant> (<age>), reason: {}, node: {node}",
                    reason.text()
                )
            }
            _ => false,
        }
    }
}

/// Cuts Java's build-info suffix and replaces the removal instant and age (see `tests/event_differential.rs`).
fn normalise_message(message: &str) -> String {
    let message = message.split("\nBuild info: ").next().unwrap_or_default();
    const AT: &str = "Session was removed at ";
    let Some(start) = message.find(AT).map(|i| i + AT.len()) else {
        return message.to_owned();
    };
    let rest = &message[start..];
    let Some((instant, after)) = rest.split_once(" (") else {
        return format!("{message} [no age]");
    };
    let Some((age, tail)) = after.split_once(')') else {
        return format!("{message} [unterminated age]");
    };
    let instant_ok =
        parse_start(&Value::from(instant)).is_some_and(|t| format_instant_nanos(t) == instant);
    let age_ok = age == "1 second ago"
        || age
            .strip_suffix(" seconds ago")
            .is_some_and(|n| !n.is_empty() && n != "1" && n.bytes().all(|b| b.is_ascii_digit()));
    format!(
        "{}{} ({}){tail}",
        &message[..start],
        if instant_ok { "<instant>" } else { instant },
        if age_ok { "<age>" } else { age }
    )
}

async fn read_answer(http: &reqwest::Client, base: &str, id: &str) -> Answer {
    let url = format!("{base}/se/grid/session/{id}");
    let response = match http.get(&url).timeout(Duration::from_secs(30)).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body: Option<Value> = serde_json::from_str(&text).ok();
    match (status, body) {
        (200, Some(body)) => Answer::Found(body),
        (404, Some(body)) => match body["value"]["message"].as_str() {
            Some(m) if body["value"]["error"] == "invalid session id" => {
                Answer::NotFound(normalise_message(m))
            }
            _ => Answer::Other(404, text),
        },
        _ => Answer::Other(status, text),
    }
}

// ---------------------------------------------------------------------------------------------
// One scenario: a gridraft cluster, a publisher on the bus, the sessions it added and expects.
// ---------------------------------------------------------------------------------------------

/// Serialises the tests: the Java server and bus are shared (see `tests/event_differential.rs`).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Scenario {
    tag: &'static str,
    started: Instant,
    java: &'static JavaWorld,
    pub cluster: TestCluster,
    http: reqwest::Client,
    _context: zmq::Context,
    publisher: zmq::Socket,
    expected: BTreeMap<String, Expect>,
    /// Ids where gridraft deliberately differs: (what Java does, what gridraft does).
    diverging: BTreeMap<String, (Expect, Expect)>,
    published: usize,
    sentinels: usize,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    /// Starts Java (once), a three-member cluster subscribed to the same bus, a publisher, and
    /// waits until Java and every member receive what the publisher sends.
    /// `None` (the test skips) without Java or the jar; see `common::deps`.
    pub async fn start(tag: &'static str) -> Option<Self> {
        let jar = common::deps::java()?;
        let serial = SERIAL.lock().await;
        common::init_tracing();
        let started = Instant::now();
        let java = JavaWorld::shared(&jar).await;
        let cluster = TestCluster::builder(3)
            .events(EventSettings {
                publish_events: Some(format!("tcp://127.0.0.1:{}", java.publish)),
                subscribe_events: Some(format!("tcp://127.0.0.1:{}", java.subscribe)),
                registration_secret: Some(SECRET.into()),
                ..EventSettings::default()
            })
            .start()
            .await;
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB).unwrap();
        publisher.set_linger(0).unwrap();
        publisher
            .connect(&format!("tcp://127.0.0.1:{}", java.subscribe))
            .unwrap();
        let mut s = Scenario {
            tag,
            started,
            java,
            cluster,
            http: reqwest::Client::new(),
            _context: context,
            publisher,
            expected: BTreeMap::new(),
            diverging: BTreeMap::new(),
            published: 0,
            sentinels: 0,
            _serial: serial,
        };
        s.phase("java and gridraft up; waiting until both hear the publisher");
        s.warm_up().await;
        s.phase("java and every member receive the publisher's events");
        Some(s)
    }

    pub fn phase(&self, what: &str) {
        println!(
            "[{} {:>6.1}s] {what}",
            self.tag,
            self.started.elapsed().as_secs_f64()
        );
        tracing::info!(scenario = self.tag, "{what}");
    }

    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn java_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.java.sessions)
    }

    fn member_base(&self, member: u64) -> String {
        format!("http://{}", self.cluster.members[&member].public)
    }

    /// POSTs the session to Java and to one gridraft member (round robin over running ones).
    pub async fn add(&mut self, id: &str, node: &str) {
        let running = self.cluster.running();
        let via = running[self.expected.len() % running.len()];
        for base in [self.java_base(), self.member_base(via)] {
            let response = self
                .http
                .post(format!("{base}/se/grid/session"))
                .body(session_body(id, node))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "POST {id} to {base}");
        }
        self.expected.insert(id.to_owned(), Expect::Live);
    }

    pub fn expect(&mut self, id: &str, expect: Expect) {
        self.expected.insert(id.to_owned(), expect);
    }

    /// Marks `id` as a documented divergence: Java ends as `java`, every member as `gridraft`.
    pub fn diverge(&mut self, id: String, (java, gridraft): (Expect, Expect)) {
        self.expected.remove(&id);
        self.diverging.insert(id, (java, gridraft));
    }

    pub fn send(&mut self, frames: &[Vec<u8>]) {
        self.publisher.send_multipart(frames, 0).unwrap();
        self.published += 1;
    }

    /// Publishes one well-formed, correctly signed event with a fresh id; returns the id.
    pub fn publish(&mut self, name: &str, data: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.send(&frames(name, &signed(SECRET), &id.to_string(), data));
        id
    }

    /// Three one-frame messages that put Java's frame reader back in step (see `tests/event_differential.rs`).
    pub fn pad(&mut self) {
        for _ in 0..3 {
            self.send(&[b"pad".to_vec()]);
        }
    }

    /// The marker count of every running member.
    async fn markers(&self) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        for id in self.cluster.running() {
            let n = self
                .member_counter(id, "ignored", "node-drain-complete")
                .await;
            out.insert(id, n);
        }
        out
    }

    /// One series of `gridraft_event_bus_messages_total` from a member's `/metrics`.
    async fn member_counter(&self, member: u64, outcome: &str, kind: &str) -> u64 {
        let url = format!("http://{}/metrics", self.cluster.members[&member].peer);
        let Ok(response) = self
            .http
            .get(url)
            .bearer_auth(common::SECRET)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            return 0;
        };
        let text = response.text().await.unwrap_or_default();
        let (outcome, kind) = (format!("outcome=\"{outcome}\""), format!("kind=\"{kind}\""));
        text.lines()
            .filter(|l| l.starts_with("gridraft_event_bus_messages_total{"))
            .filter(|l| l.contains(&outcome) && l.contains(&kind))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// The slow-joiner wait: a subscription travels SUB -> bus XPUB -> bus XSUB -> our PUB, and
    /// until it arrives our PUB drops what it sends. Re-publishes a `session-closed` for a
    /// warm-up session (fresh id each time) and a marker until Java has removed the session and
    /// every member has counted a marker.
    async fn warm_up(&mut self) {
        let session = self.id("warmup");
        self.add(&session, "http://warmup:5555").await;
        self.expected.remove(&session);
        let deadline = Instant::now() + SETTLE;
        let data = serde_json::to_string(&session).unwrap();
        loop {
            self.publish("session-closed", &data);
            self.publish("node-drain-complete", "{}");
            tokio::time::sleep(Duration::from_millis(250)).await;
            let java_done = matches!(
                read_answer(&self.http, &self.java_base(), &session).await,
                Answer::NotFound(_)
            );
            let members_done = self.markers().await.values().all(|n| *n >= 1);
            if java_done && members_done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the publisher's events never reached {} within {SETTLE:?}; java log: {}",
                if java_done {
                    "every gridraft member"
                } else {
                    "the Java sessions server"
                },
                self.java.server.log.display()
            );
        }
    }

    /// Every answer for `id`: Java's first, then each running member's.
    async fn answers(&self, id: &str) -> Vec<(String, Answer)> {
        let mut out = vec![(
            "java".to_owned(),
            read_answer(&self.http, &self.java_base(), id).await,
        )];
        for member in self.cluster.running() {
            out.push((
                format!("gridraft member {member}"),
                read_answer(&self.http, &self.member_base(member), id).await,
            ));
        }
        out
    }

    async fn all_as_expected(&self) -> bool {
        for (id, expect) in &self.expected {
            if !self
                .answers(id)
                .await
                .iter()
                .all(|(_, a)| a.matches(id, expect))
            {
                return false;
            }
        }
        for (id, (java, gridraft)) in &self.diverging {
            let answers = self.answers(id).await;
            if !answers[0].1.matches(id, java)
                || !answers[1..].iter().all(|(_, a)| a.matches(id, gridraft))
            {
                return false;
            }
        }
        true
    }

    /// Publishes the sentinel and the marker, and waits until Java and every running member
    /// have handled them (see `tests/event_differential.rs`). Re-publishes with fresh ids every 10 s. An error says
    /// who did not handle it; the caller still compares, which says more.
    async fn sentinel(&mut self) -> Result<(), String> {
        self.sentinels += 1;
        let session = self.id(&format!("sentinel-{}", self.sentinels));
        self.add(&session, "http://sentinel:5555").await;
        self.expected.remove(&session);
        let before = self.markers().await;
        let deadline = Instant::now() + SENTINEL;
        let data = closed(&session, "QUIT_COMMAND", "http://sentinel:5555");
        loop {
            self.publish("session-closed", &data);
            self.publish("node-drain-complete", "{}");
            let republish = Instant::now() + Duration::from_secs(10);
            while Instant::now() < republish {
                let gone = self
                    .answers(&session)
                    .await
                    .iter()
                    .all(|(_, a)| matches!(a, Answer::NotFound(_)));
                let now = self.markers().await;
                let counted = now
                    .iter()
                    .all(|(m, n)| *n > before.get(m).copied().unwrap_or(0));
                if gone && counted {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the sentinel {session} was not handled everywhere within {SENTINEL:?}: \
                         removed on java and every member: {gone}; markers before {before:?}, \
                         now {now:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits for the expected end state (with a deadline, then carries on to report), then for
    /// the sentinel, then compares every id on Java and on every running member.
    pub async fn settle_and_compare(&mut self) {
        self.phase(&format!(
            "{} messages published; waiting for the expected state",
            self.published
        ));
        let deadline = Instant::now() + SETTLE;
        while !self.all_as_expected().await {
            if Instant::now() >= deadline {
                self.phase("the expected state was not reached; comparing anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut diffs = Vec::new();
        match self.sentinel().await {
            Ok(()) => self.phase("sentinel handled by java and every member; comparing"),
            Err(e) => diffs.push(e),
        }
        for (id, expect) in &self.expected {
            let answers = self.answers(id).await;
            let (_, java) = &answers[0];
            for (who, answer) in &answers[1..] {
                if answer != java {
                    diffs.push(format!(
                        "{id}: java {}\n        {who} {}",
                        java.show(),
                        answer.show()
                    ));
                }
            }
            for (who, answer) in &answers {
                if !answer.matches(id, expect) {
                    diffs.push(format!(
                        "{id}: {who} {}, expected {expect:?}",
                        answer.show()
                    ));
                }
            }
        }
        for (id, (java_expect, gridraft_expect)) in &self.diverging {
            for (who, answer) in self.answers(id).await {
                let expect = if who == "java" {
                    java_expect
                } else {
                    gridraft_expect
                };
                if !answer.matches(id, expect) {
                    diffs.push(format!(
                        "{id} (documented divergence): {who} {}, expected {expect:?}",
                        answer.show()
                    ));
                }
            }
        }
        let kill_note = if self.cluster.running().len() < self.cluster.members.len() {
            " (running members only)"
        } else {
            ""
        };
        self.phase(&format!(
            "compared {} ids on java and {} members{kill_note}: {} differences",
            self.expected.len() + self.diverging.len(),
            self.cluster.running().len(),
            diffs.len()
        ));
        assert!(
            diffs.is_empty(),
            "{} differences (java log: {}):\n    {}",
            diffs.len(),
            self.java.server.log.display(),
            diffs.join("\n    ")
        );
    }

    pub async fn finish(self) {
        self.phase("done");
        self.cluster.shutdown().await;
    }
}
