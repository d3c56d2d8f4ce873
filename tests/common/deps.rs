//! What the tests outside the fast loop need from the machine (Java with Selenium's jar, a
//! PostgreSQL, a Redis), found in one place, and the rule for when it is missing: the test
//! prints one line saying it is skipped and why, and returns; with
//! `GRIDRAFT_TEST_REQUIRE_ALL=1` (scripts/test.sh, CI) it fails instead, so nothing is ever
//! skipped silently where everything is installed.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The variable that turns a missing dependency from a skip into a failure.
pub const REQUIRE_ALL: &str = "GRIDRAFT_TEST_REQUIRE_ALL";
/// The Selenium server jar's path (default: `../shared/selenium/` beside the clone).
pub const JAR_VAR: &str = "GRIDRAFT_SELENIUM_JAR";
/// A PostgreSQL database URL the mirror tests may create databases on.
pub const POSTGRES_VAR: &str = "GRIDRAFT_TEST_POSTGRES_URL";
/// A Redis URL whose numbered databases the mirror tests may empty.
pub const REDIS_VAR: &str = "GRIDRAFT_TEST_REDIS_URL";

const HOW: &str = "eval \"$(scripts/start-test-services.sh)\" installs and starts them";

/// Whether every dependency is required (`GRIDRAFT_TEST_REQUIRE_ALL=1`): the full tier.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1")
}

/// Reports a missing dependency: fails the test under [`REQUIRE_ALL`], otherwise prints one
/// line past the test harness's capture, so that it shows in a plain `cargo test`.
fn missing(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        !require_all(),
        "{test}: {why}, and {REQUIRE_ALL}=1 forbids skipping"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Whether a test that takes minutes by design runs: only in the full tier
/// (`GRIDRAFT_TEST_REQUIRE_ALL=1`, as scripts/test.sh and CI run). Otherwise it prints one
/// SKIPPED line saying so, keeping plain `cargo test` fast even where Java is installed.
pub fn full_tier(takes: &str) -> bool {
    if !require_all() {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: takes {takes}; runs with {REQUIRE_ALL}=1 (scripts/test.sh)"
        );
    }
    require_all()
}

/// Where the Selenium server jar is, if it is there.
pub fn selenium_jar() -> Option<PathBuf> {
    let jar = match std::env::var(JAR_VAR) {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/selenium/selenium-server-4.48.0.jar"),
    };
    jar.is_file().then_some(jar)
}

fn java_runs() -> bool {
    Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The jar when Java and the jar are both there; `None` after reporting (see [`missing`]).
pub fn java() -> Option<PathBuf> {
    let Some(jar) = selenium_jar() else {
        missing(&format!(
            "no Selenium server jar (set {JAR_VAR} to selenium-server-4.48.0.jar)"
        ));
        return None;
    };
    if !java_runs() {
        missing("`java -version` does not run (install Java 17)");
        return None;
    }
    Some(jar)
}

/// The test PostgreSQL's URL when it is set and something listens there.
pub fn postgres() -> Option<String> {
    service(POSTGRES_VAR, 5432)
}

/// The test Redis's URL when it is set and something listens there.
pub fn redis() -> Option<String> {
    service(REDIS_VAR, 6379)
}

fn service(var: &str, default_port: u16) -> Option<String> {
    let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
        missing(&format!("{var} is not set ({HOW})"));
        return None;
    };
    if !listening(&url, default_port) {
        missing(&format!("nothing answers at {var}={url} ({HOW})"));
        return None;
    }
    Some(url)
}

/// Whether a TCP connection to the URL's host and port opens.
fn listening(url: &str, default_port: u16) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(default_port);
    (host.as_str(), port)
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// A required environment variable's value (the guards above have checked it).
pub fn env_url(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set ({HOW})"))
}
