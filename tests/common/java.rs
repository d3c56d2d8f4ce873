//! Java from Selenium's jar: [`JavaProcess`] starts `java -jar <jar> <args>`, waits until its
//! HTTP port answers a readiness path, and kills it when dropped. [`JavaServer`] is the real
//! `sessions` server (Java `LocalSessionMap`) the differential tests share.
//!
//! Java runs under a tiny `sh` supervisor whose stdin is a pipe held by this process: when the
//! guard is dropped, or the test binary exits (statics are never dropped), the pipe closes and
//! the supervisor kills Java with SIGKILL, so no JVM outlives the tests.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::free_port;

/// Java start-up on a loaded two-core machine takes well over 10 s; be generous.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// One `java -jar` process; SIGKILLed when dropped.
pub struct JavaProcess {
    /// The HTTP port it was told to listen on.
    pub port: u16,
    /// Java's stdout and stderr.
    pub log: PathBuf,
    supervisor: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
}

impl JavaProcess {
    /// Starts `java -jar jar args...` (the args include the HTTP port `port`) and waits until
    /// `GET ready_path` on that port answers 2xx. `name` names the log file.
    pub async fn start(
        jar: &Path,
        name: &str,
        args: &[String],
        port: u16,
        ready_path: &str,
    ) -> JavaProcess {
        let log = std::env::temp_dir().join(format!(
            "gridraft-java-{name}-{}-{port}.log",
            std::process::id()
        ));
        let script = r#"log="$1"; shift
java "$@" </dev/null >"$log" 2>&1 &
j=$!
read _ignored
kill -KILL "$j" 2>/dev/null
wait "$j""#;
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&log)
            .arg("-jar")
            .arg(jar)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh to supervise java");
        let stdin = supervisor.stdin.take();
        let java = JavaProcess {
            port,
            log,
            supervisor: Mutex::new(supervisor),
            stdin: Mutex::new(stdin),
        };
        java.wait_ready(name, ready_path).await;
        java
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self, name: &str, path: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = http
                .get(self.url(path))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            let exited = self.supervisor.lock().unwrap().try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "Java {name} did not answer GET {path} on port {} ({}); its log:\n{}",
                self.port,
                exited.map_or_else(
                    || format!("timeout after {START_TIMEOUT:?}"),
                    |s| format!("exited with {s}")
                ),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for JavaProcess {
    fn drop(&mut self) {
        // Closing the pipe makes the supervisor kill Java and exit.
        if let Some(mut stdin) = self.stdin.lock().unwrap().take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.supervisor.lock().unwrap().wait();
    }
}

/// `--publish-events` and `--subscribe-events` on fresh loopback ports, for a Java component
/// that must bind an event bus of its own.
pub fn own_bus_args() -> Vec<String> {
    vec![
        "--publish-events".into(),
        format!("tcp://127.0.0.1:{}", free_port()),
        "--subscribe-events".into(),
        format!("tcp://127.0.0.1:{}", free_port()),
    ]
}

/// The real Selenium 4.48.0 `sessions` server, started once per test binary.
pub struct JavaServer {
    pub addr: SocketAddr,
    pub log: PathBuf,
    _java: JavaProcess,
}

static SHARED: OnceCell<JavaServer> = OnceCell::const_new();

impl JavaServer {
    /// The server shared by every test of this binary, started on first use. Callers have
    /// checked `deps::java()`.
    pub async fn shared(jar: &Path) -> &'static JavaServer {
        SHARED
            .get_or_init(|| async {
                let port = free_port();
                let mut args = vec!["sessions".into(), "--port".into(), port.to_string()];
                args.extend(own_bus_args());
                let java = JavaProcess::start(jar, "sessions", &args, port, "/readyz").await;
                JavaServer {
                    addr: java.addr(),
                    log: java.log.clone(),
                    _java: java,
                }
            })
            .await
    }
}
