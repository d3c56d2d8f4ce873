//! The one test fixture every integration test uses:
//!
//! - [`cluster`]: [`TestCluster`], in-process members on 127.0.0.1:0 listeners with temporary
//!   data directories (a single member is a cluster of one), with kill, restart, isolate and
//!   heal;
//! - [`grid`]: a raw HTTP/1.1 client for the Grid contract tests and [`grid::SingleMember`];
//! - [`java`]: [`java::JavaProcess`], the one way tests run Java from Selenium's jar;
//! - [`deps`]: where Java, PostgreSQL and Redis are, and the skip rule when they are not
//!   (`GRIDRAFT_TEST_REQUIRE_ALL=1` turns a skip into a failure);
//! - [`disk`]: a fake free-space probe;
//! - [`certs`]: a CA and certificates made at run time, and an HTTPS client trusting them.
//!
//! Helpers specific to the mirror and event-bus tests live in `tests/mirror_common` and
//! `tests/event_bus_common`, on top of this.
#![allow(dead_code)] // each test binary uses a different subset

pub mod certs;
pub mod cluster;
pub mod deps;
pub mod disk;
pub mod grid;
pub mod java;

use std::future::Future;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use cluster::{TestCluster, TestMember, SECRET};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gridraft=info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago, for servers that need a number rather than port 0 (Java,
/// redis-server, PostgreSQL, a ZeroMQ endpoint). Another process could take it first; that
/// shows as a clear start-up failure.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

pub fn session_body(id: &str, node: &str) -> String {
    format!(
        r#"{{"capabilities": {{"browserName": "chrome", "timeouts": {{"pageLoad": 300000}}}}, "sessionId": "{id}", "start": "2024-05-01T10:20:30.123400Z", "stereotype": {{"browserName": "chrome"}}, "uri": "{node}"}}"#
    )
}
