//! Servers a test owns so it can stop and restart them: a throwaway Postgres cluster and a
//! redis-server on free ports, and the real Java `sessions` server (`RedisBackedSessionMap`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::java::{own_bus_args, JavaProcess};
use crate::common::{eventually, free_port};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Postgres cluster of its own (initdb into a temporary directory, trust auth).
pub struct OwnPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl OwnPostgres {
    pub fn start() -> Self {
        // Callers checked `deps::postgres()`: the shared server proves the packages are
        // installed (the script ran).
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("postgresql is installed (scripts/start-test-services.sh)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()));
        }
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.as_pg(&[
            "initdb",
            "-D",
            &pg.data(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]);
        pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        run(cmd.args(&args[1..]).stdout(Stdio::null()));
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop(&self) {
        tracing::info!(port = self.port, "stopping postgres");
        self.as_pg(&["pg_ctl", "-D", &self.data(), "-w", "-m", "fast", "stop"]);
    }

    pub fn restart(&self) {
        tracing::info!(port = self.port, "starting postgres");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.as_pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            self.as_pg(&["pg_ctl", "-D", &self.data(), "-m", "immediate", "stop"])
        });
    }
}

/// A redis-server of its own, with an append-only file so a restart keeps the data.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server abruptly (SIGKILL); fsync-always keeps what it acknowledged.
    pub fn stop(&mut self) {
        tracing::info!(port = self.port, "killing redis");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        tracing::info!(port = self.port, "starting redis");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/start-test-services.sh installs it)");
        self.child = Some(child);
        let url = self.url();
        eventually(Duration::from_secs(20), "redis to answer", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut con = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .ok()
            }
        })
        .await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real Java `sessions` server (`RedisBackedSessionMap`) on a Redis port.
pub struct JavaSessions {
    pub port: u16,
    _java: JavaProcess,
}

impl JavaSessions {
    /// Callers have checked `deps::java()`, which gave them `jar`.
    pub async fn start(jar: &Path, redis_port: u16) -> Self {
        let port = free_port();
        let mut args: Vec<String> = [
            "sessions",
            "--sessions-implementation",
            "org.openqa.selenium.grid.sessionmap.redis.RedisBackedSessionMap",
            "--sessions-scheme",
            "redis",
            "--sessions-host",
            "127.0.0.1",
            "--sessions-port",
        ]
        .map(String::from)
        .into();
        args.extend([redis_port.to_string(), "--port".into(), port.to_string()]);
        args.extend(own_bus_args());
        let java = JavaProcess::start(jar, "redis-sessions", &args, port, "/status").await;
        JavaSessions { port, _java: java }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
