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
    /// `ssl = on` with this certificate and key (copied into the cluster's directory).
    tls: bool,
}

impl OwnPostgres {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster that also accepts TLS (`ssl = on`) with `cert` and `key` (PEM).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Self {
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
        if let Some((cert, key)) = tls {
            // Postgres wants its key readable by its own user only.
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.path().join(to);
                std::fs::copy(from, &to).unwrap();
                run(Command::new("chmod").arg("600").arg(&to));
                if is_root() {
                    run(Command::new("chown").arg("postgres:").arg(&to));
                }
            }
        }
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            bin,
            tls: tls.is_some(),
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
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let dir = self.dir.path().display();
            opts += &format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            );
        }
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
    /// TLS only (`--port 0 --tls-port`), with this certificate, key and CA (PEM files).
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that speaks TLS only, with `cert` and `key`, its clients verifying it with `ca`
    /// (it asks no client certificate).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start_with(Some((cert.to_owned(), key.to_owned(), ca.to_owned()))).await
    }

    async fn start_with(tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client of this server (trusting its CA when it speaks TLS).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url()),
            Some((_, _, ca)) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            ),
        }
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
        let port = self.port.to_string();
        let ports: Vec<&std::ffi::OsStr> = match &self.tls {
            None => vec!["--port".as_ref(), port.as_ref()],
            Some((cert, key, ca)) => vec![
                "--port".as_ref(),
                "0".as_ref(),
                "--tls-port".as_ref(),
                port.as_ref(),
                "--tls-cert-file".as_ref(),
                cert.as_os_str(),
                "--tls-key-file".as_ref(),
                key.as_os_str(),
                "--tls-ca-cert-file".as_ref(),
                ca.as_os_str(),
                "--tls-auth-clients".as_ref(),
                "no".as_ref(),
            ],
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(ports)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/start-test-services.sh installs it)");
        self.child = Some(child);
        eventually(Duration::from_secs(20), "redis to answer", || {
            let client = self.client();
            async move {
                let mut con = client.ok()?.get_multiplexed_async_connection().await.ok()?;
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
