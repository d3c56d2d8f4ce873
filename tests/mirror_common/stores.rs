//! Reading the real stores back, and comparing them with the Raft state row by row, key by key.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use gridraft::map::SessionMap;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row};

use crate::common::deps::{env_url, POSTGRES_VAR, REDIS_VAR};
use crate::common::{eventually, TestCluster};

/// A fresh, empty database on the test Postgres, named after the test.
pub async fn fresh_pg_database(name: &str) -> String {
    let base = env_url(POSTGRES_VAR);
    let mut admin = connect_pg(&base).await;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("a postgres URL with a database");
    format!("{prefix}/{name}")
}

pub async fn connect_pg(url: &str) -> PgConnection {
    PgConnectOptions::from_str(url)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to the test postgres: {e}"))
}

/// A Redis database (0..63) of the test Redis, emptied.
pub async fn fresh_redis_db(db: u32) -> String {
    let url = format!("{}/{db}", env_url(REDIS_VAR).trim_end_matches('/'));
    let mut con = redis_con(&url).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut con).await.unwrap();
    url
}

pub async fn redis_con(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to the test redis: {e}"))
}

/// `sessions_map` as the Java layout stores it: id → (uri, stereotype, caps, start).
pub type Rows = BTreeMap<String, (String, String, String, String)>;

pub fn expected_rows(map: &SessionMap) -> Rows {
    map.sessions()
        .map(|s| {
            (
                s.id.clone(),
                (
                    s.uri.clone(),
                    s.stereotype.clone(),
                    s.capabilities.clone(),
                    s.start_json(),
                ),
            )
        })
        .collect()
}

/// Every row, failing on an id with more than one row (gridraft writes one row per id).
pub async fn read_rows(url: &str) -> Result<Rows, String> {
    let mut con = PgConnectOptions::from_str(url)
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let rows = sqlx::query("select session_ids, session_uri, session_stereotype, session_caps, session_start from sessions_map")
        .fetch_all(&mut con)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Rows::new();
    for r in rows {
        let id: String = r.get(0);
        let row = (r.get(1), r.get(2), r.get(3), r.get(4));
        if out.insert(id.clone(), row).is_some() {
            return Err(format!("session {id} has more than one row"));
        }
    }
    Ok(out)
}

pub fn expected_keys(map: &SessionMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in map.sessions() {
        out.insert(format!("session:{}:uri", s.id), s.uri.clone());
        out.insert(
            format!("session:{}:capabilities", s.id),
            s.capabilities.clone(),
        );
        out.insert(format!("session:{}:stereotype", s.id), s.stereotype.clone());
        out.insert(format!("session:{}:start", s.id), s.start_json());
    }
    out
}

/// Every key of the database with its value; fails on a key that is not a string or has a TTL.
pub async fn read_keys(url: &str) -> Result<BTreeMap<String, String>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if ty != "string" || ttl != -1 {
            return Err(format!("key {k} is a {ty} with ttl {ttl}"));
        }
        let v: Option<String> = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = v {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Describes the first differences between two maps, for failure messages.
pub fn diff<V: PartialEq + std::fmt::Debug>(
    want: &BTreeMap<String, V>,
    got: &BTreeMap<String, V>,
) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing {k}")),
            Some(g) if g != v => out.push(format!("differs {k}: want {v:?} got {g:?}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("extra {k}"));
    }
    out.truncate(5);
    out.join("\n")
}

/// Waits until the Postgres mirror equals `map`, row by row.
pub async fn wait_rows_equal(url: &str, map: &SessionMap, timeout: Duration) -> Rows {
    wait_store_equal("postgres", expected_rows(map), timeout, || read_rows(url)).await
}

/// Waits until the Redis mirror equals `map`, key by key (and holds no other key).
pub async fn wait_keys_equal(
    url: &str,
    map: &SessionMap,
    timeout: Duration,
) -> BTreeMap<String, String> {
    wait_store_equal("redis", expected_keys(map), timeout, || read_keys(url)).await
}

/// Reads a store every 200 ms until it equals `want`; fails with the last difference.
async fn wait_store_equal<V, F, Fut>(
    store: &str,
    want: BTreeMap<String, V>,
    timeout: Duration,
    read: F,
) -> BTreeMap<String, V>
where
    V: PartialEq + std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<String, V>, String>>,
{
    let mut last = String::new();
    let result = tokio::time::timeout(timeout, async {
        loop {
            match read().await {
                Ok(got) if got == want => return got,
                Ok(got) => last = diff(&want, &got),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    result.unwrap_or_else(|_| {
        panic!("{store} mirror never equalled the Raft state within {timeout:?}:\n{last}")
    })
}

/// Waits until member `id`'s runner has written everything its member has applied.
pub async fn wait_caught_up(c: &TestCluster, id: u64, kind: gridraft::mirror::MirrorKind) {
    let handle = c.mirror_handle(id, kind);
    eventually(
        Duration::from_secs(60),
        "the mirror to catch up with the log",
        || async {
            let applied = c
                .member(id)
                .cluster
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map(|l| l.index)
                .unwrap_or(0);
            (handle.position() >= applied).then_some(())
        },
    )
    .await;
}
