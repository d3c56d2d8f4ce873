//! The real Selenium 4.48.0 `sessions` server (Java `LocalSessionMap`), started once per test
//! binary for the differential tests.
//!
//! It runs under a tiny `sh` supervisor whose stdin is a pipe held by this process: when the
//! test binary exits (statics are never dropped) or the guard is dropped, the pipe closes and the
//! supervisor kills Java, so no JVM outlives the tests.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::grid::{Conn, Request};

/// Where the jar is unless `GRIDRAFT_SELENIUM_JAR` says otherwise.
const DEFAULT_JAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/selenium/selenium-server-4.48.0.jar"
);
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct JavaServer {
    pub addr: SocketAddr,
    pub log: PathBuf,
    supervisor: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
}

static SHARED: OnceCell<JavaServer> = OnceCell::const_new();

impl JavaServer {
    /// The server shared by every test of this binary, started on first use.
    pub async fn shared() -> &'static JavaServer {
        SHARED.get_or_init(JavaServer::start).await
    }

    /// Starts `java -jar <jar> sessions` on free ports and waits for its `/readyz`.
    /// Panics (never skips) when Java or the jar is missing: CI installs both.
    pub async fn start() -> JavaServer {
        let jar = std::env::var_os("GRIDRAFT_SELENIUM_JAR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_JAR));
        assert!(
            jar.is_file(),
            "the Selenium server jar is missing at {} (set GRIDRAFT_SELENIUM_JAR to its path); \
             the differential tests need it and do not skip",
            jar.display()
        );
        match Command::new("java").arg("-version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "`java -version` failed ({}): {}; the differential tests need Java 17",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("`java` cannot be run ({e}); install Java 17: the differential tests need it and do not skip"),
        }
        let [http, publish, subscribe] = free_ports();
        let log = std::env::temp_dir().join(format!(
            "gridraft-differential-java-{}-{http}.log",
            std::process::id()
        ));
        let script = r#"java -jar "$1" sessions --port "$2" --publish-events "tcp://127.0.0.1:$3" --subscribe-events "tcp://127.0.0.1:$4" </dev/null >"$5" 2>&1 &
j=$!
read _ignored
kill "$j" 2>/dev/null
wait "$j""#;
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&jar)
            .args([http, publish, subscribe].map(|p| p.to_string()))
            .arg(&log)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh to supervise java");
        let stdin = supervisor.stdin.take();
        let server = JavaServer {
            addr: SocketAddr::from(([127, 0, 0, 1], http)),
            log,
            supervisor: Mutex::new(supervisor),
            stdin: Mutex::new(stdin),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut conn) = Conn::open(self.addr).await {
                let ready = tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.send(&Request::new("GET", "/readyz")),
                )
                .await;
                if ready.is_ok_and(|r| r.status == 204) {
                    return;
                }
            }
            let exited = self.supervisor.lock().unwrap().try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the Java sessions server did not become ready on {} ({}); its log:\n{}",
                self.addr,
                exited.map_or_else(
                    || format!("timeout after {START_TIMEOUT:?}"),
                    |s| format!("exited with {s}")
                ),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for JavaServer {
    fn drop(&mut self) {
        // Closing the pipe makes the supervisor kill Java and exit.
        if let Some(mut stdin) = self.stdin.lock().unwrap().take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.supervisor.lock().unwrap().wait();
    }
}

/// Three distinct free ports. Another process could take one before Java binds it; that shows
/// up as a clear start-up failure with Java's log.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    [port(0), port(1), port(2)]
}
