//! The Java side of the differential event tests: a real Selenium `event-bus` and a real
//! `sessions` server (`LocalSessionMap`) subscribed to it, started once per test binary.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::{bus, SECRET};

/// Java start-up on a loaded two-core machine takes well over 10 s; be generous.
const JAVA_START: Duration = Duration::from_secs(180);

/// A `java -jar` process under a `sh` supervisor whose stdin is a pipe held here: when this
/// process exits (statics are never dropped) the pipe closes and the supervisor kills Java.
pub struct Supervised {
    _supervisor: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
    pub log: PathBuf,
}

impl Supervised {
    fn start(name: &str, args: &[String]) -> Self {
        let jar = bus::jar();
        assert!(
            std::path::Path::new(&jar).is_file(),
            "the Selenium server jar is missing at {jar} (set GRIDRAFT_SELENIUM_JAR); \
             the differential event tests need it and do not skip"
        );
        let log = std::env::temp_dir().join(format!(
            "gridraft-event-differential-{name}-{}.log",
            std::process::id()
        ));
        let script = r#"log="$1"; shift
java "$@" </dev/null >"$log" 2>&1 &
j=$!
read _ignored
kill "$j" 2>/dev/null
wait "$j""#;
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&log)
            .args(["-jar", &jar])
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh to supervise java");
        let stdin = supervisor.stdin.take().expect("stdin is piped");
        Self {
            _supervisor: Mutex::new(supervisor),
            _stdin: Mutex::new(stdin),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct JavaWorld {
    /// The bus's XPUB (`--publish-events`): subscribers connect here.
    pub publish: u16,
    /// The bus's XSUB (`--subscribe-events`): publishers connect here.
    pub subscribe: u16,
    /// The Java `sessions` server's HTTP port.
    pub sessions: u16,
    _bus: Supervised,
    pub server: Supervised,
}

static JAVA: OnceCell<JavaWorld> = OnceCell::const_new();

impl JavaWorld {
    pub async fn shared() -> &'static JavaWorld {
        JAVA.get_or_init(JavaWorld::start).await
    }

    async fn start() -> JavaWorld {
        let (publish, subscribe, bus_http, sessions) = (
            bus::free_port(),
            bus::free_port(),
            bus::free_port(),
            bus::free_port(),
        );
        let pub_addr = format!("tcp://127.0.0.1:{publish}");
        let sub_addr = format!("tcp://127.0.0.1:{subscribe}");
        let bus = Supervised::start(
            "event-bus",
            &[
                "event-bus".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                bus_http.to_string(),
                "--publish-events".into(),
                format!("tcp://127.0.0.1:{publish}"),
                "--subscribe-events".into(),
                format!("tcp://127.0.0.1:{subscribe}"),
            ],
        );
        wait_http_ready(bus_http, &bus, "the Java event bus").await;
        let server = Supervised::start(
            "sessions",
            &[
                "sessions".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                sessions.to_string(),
                "--publish-events".into(),
                pub_addr,
                "--subscribe-events".into(),
                sub_addr,
                "--bind-bus".into(),
                "false".into(),
                "--registration-secret".into(),
                SECRET.into(),
            ],
        );
        wait_http_ready(sessions, &server, "the Java sessions server").await;
        JavaWorld {
            publish,
            subscribe,
            sessions,
            _bus: bus,
            server,
        }
    }
}

async fn wait_http_ready(port: u16, process: &Supervised, what: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + JAVA_START;
    loop {
        let answer = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready on port {port} after {JAVA_START:?}; its log:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
