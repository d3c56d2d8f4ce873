//! The Postgres mirror: Selenium's `sessions_map` table (docs/compatibility.md#postgres-layout),
//! written as that section says: an upsert is `DELETE` then `INSERT` in one transaction (one
//! row per id, which the Java reader handles), removals are the Java deletes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::{redact_url, Mirror, MirrorBatch, MirrorError, StoredSession};
use crate::session::Session;

/// Selenium's DDL, verbatim (docs/compatibility.md#postgres-layout).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS sessions_map(
    session_ids varchar(256),
    session_caps text,
    session_uri varchar(256),
    session_stereotype text,
    session_start varchar(256)
 )";
const INSERT: &str = "insert into sessions_map (session_ids, session_uri, session_stereotype, session_caps, session_start) values ($1, $2, $3, $4, $5)";
const DELETE_ID: &str = "delete from sessions_map where session_ids = $1";
const DELETE_URI: &str = "delete from sessions_map where session_uri = $1";
const COLUMNS: [&str; 5] = [
    "session_ids",
    "session_caps",
    "session_uri",
    "session_stereotype",
    "session_start",
];
/// One request longer than this counts as a failure of the store (it is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PostgresMirror {
    conn: PgConnection,
    /// Longest value each varchar column accepts (`None` = unlimited): ids, uris, start.
    limits: [Option<usize>; 3],
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Unavailable(format!("postgres: {what}: {e}"))
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, MirrorError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| unavailable(what, e)),
        Err(_) => Err(unavailable(
            what,
            format!("no answer within {REQUEST_TIMEOUT:?}"),
        )),
    }
}

impl PostgresMirror {
    /// Creates `sessions_map` when missing, with indexes on the two columns the deletes use;
    /// a table that exists is only checked, never altered.
    async fn prepare(&mut self) -> Result<(), MirrorError> {
        let exists: bool = timed(
            "look up table sessions_map",
            sqlx::query_scalar("select to_regclass('sessions_map') is not null")
                .fetch_one(&mut self.conn),
        )
        .await?;
        if !exists {
            timed(
                "create table sessions_map",
                sqlx::query(CREATE_TABLE).execute(&mut self.conn),
            )
            .await?;
            for ddl in [
                "create index if not exists sessions_map_session_ids on sessions_map (session_ids)",
                "create index if not exists sessions_map_session_uri on sessions_map (session_uri)",
            ] {
                timed("create index", sqlx::query(ddl).execute(&mut self.conn)).await?;
            }
            tracing::info!("created table sessions_map");
        }
        self.check_columns().await
    }

    /// A table is compatible when every Selenium column exists with a text type that holds
    /// what Selenium writes, and every other column may be left out of an INSERT.
    async fn check_columns(&mut self) -> Result<(), MirrorError> {
        let rows = timed(
            "read the columns of sessions_map",
            sqlx::query(
                "select column_name::text, data_type::text, character_maximum_length, \
                 is_nullable::text, column_default::text \
                 from information_schema.columns \
                 where table_name = 'sessions_map' and table_schema = current_schema()",
            )
            .fetch_all(&mut self.conn),
        )
        .await?;
        let mut problems = Vec::new();
        let mut limits = [None; 3];
        for name in COLUMNS {
            let Some(row) = rows.iter().find(|r| r.get::<String, _>(0) == name) else {
                problems.push(format!("column {name} is missing"));
                continue;
            };
            let ty: String = row.get(1);
            let max: Option<i32> = row.get(2);
            if !matches!(ty.as_str(), "text" | "character varying") {
                problems.push(format!("column {name} has type {ty}, not text or varchar"));
            }
            let slot = match name {
                "session_ids" => Some(0),
                "session_uri" => Some(1),
                "session_start" => Some(2),
                _ => None,
            };
            if let Some(slot) = slot {
                limits[slot] = max.map(|m| m.max(0) as usize);
            }
        }
        if limits[2].is_some_and(|m| m < 40) {
            problems.push(
                "column session_start is shorter than a quoted instant (40 characters)".into(),
            );
        }
        for row in &rows {
            let name: String = row.get(0);
            let nullable: String = row.get(3);
            let default: Option<String> = row.get(4);
            if !COLUMNS.contains(&name.as_str()) && nullable == "NO" && default.is_none() {
                problems.push(format!(
                    "extra column {name} is NOT NULL without a default, so Selenium's INSERT fails"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(MirrorError::Incompatible(format!(
                "postgres table sessions_map is incompatible with Selenium's layout: {}",
                problems.join("; ")
            )));
        }
        self.limits = limits;
        Ok(())
    }

    /// Postgres refuses NUL characters and values longer than a varchar's limit; such a
    /// session is skipped (and counted by the caller) rather than blocking the mirror forever.
    pub fn fits(&self, s: &Session) -> bool {
        let start = s.start_json();
        let ok = |v: &str, limit: Option<usize>| {
            !v.contains('\0') && limit.is_none_or(|l| v.chars().count() <= l)
        };
        ok(&s.id, self.limits[0])
            && ok(&s.uri, self.limits[1])
            && ok(&start, self.limits[2])
            && !s.capabilities.contains('\0')
            && !s.stereotype.contains('\0')
    }

    /// The sessions the table can hold, and the ids of those it cannot (logged here).
    fn split_unfit<'a>(&self, sessions: &'a [Session]) -> (Vec<&'a Session>, Vec<String>) {
        let (fit, unfit): (Vec<&Session>, Vec<&Session>) =
            sessions.iter().partition(|s| self.fits(s));
        for s in &unfit {
            tracing::warn!(session = %s.id, "postgres cannot hold this session (NUL character or a value longer than its column); not mirrored");
        }
        (fit, unfit.into_iter().map(|s| s.id.clone()).collect())
    }
}

async fn insert(conn: &mut PgConnection, s: &Session) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT)
        .bind(&s.id)
        .bind(&s.uri)
        .bind(&s.stereotype)
        .bind(&s.capabilities)
        .bind(s.start_json())
        .execute(conn)
        .await
        .map(drop)
}

impl PostgresMirror {
    async fn open(url: &str) -> Result<Self, MirrorError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| {
                MirrorError::Incompatible(format!("postgres url {}: {e}", redact_url(url)))
            })?
            .log_statements(tracing::log::LevelFilter::Trace);
        let conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
                Ok(r) => r.map_err(|e| unavailable("connect", e))?,
                Err(_) => {
                    return Err(unavailable(
                        "connect",
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    ))
                }
            };
        Ok(PostgresMirror {
            conn,
            limits: [Some(256); 3],
        })
    }

    /// Connects to a store that must already have a compatible `sessions_map` (import).
    pub async fn connect_existing(url: &str) -> Result<Self, MirrorError> {
        let mut mirror = Self::open(url).await?;
        let exists: bool = timed(
            "look up table sessions_map",
            sqlx::query_scalar("select to_regclass('sessions_map') is not null")
                .fetch_one(&mut mirror.conn),
        )
        .await?;
        if !exists {
            return Err(MirrorError::Incompatible(
                "postgres has no table sessions_map".into(),
            ));
        }
        mirror.check_columns().await?;
        Ok(mirror)
    }
}

impl Mirror for PostgresMirror {
    /// TLS comes from the URL as libpq users write it (`sslmode`, `sslrootcert`).
    async fn connect(url: &str, _ca_file: Option<&std::path::Path>) -> Result<Self, MirrorError> {
        let mut mirror = Self::open(url).await?;
        mirror.prepare().await?;
        Ok(mirror)
    }

    async fn apply(&mut self, batch: &MirrorBatch) -> Result<usize, MirrorError> {
        let (upserts, unfit) = self.split_unfit(&batch.upserts);
        let work = async {
            let mut tx = self.conn.begin().await?;
            for uri in &batch.remove_uris {
                sqlx::query(DELETE_URI).bind(uri).execute(&mut *tx).await?;
            }
            for id in batch.deletes.iter().chain(&unfit) {
                sqlx::query(DELETE_ID).bind(id).execute(&mut *tx).await?;
            }
            for s in upserts {
                sqlx::query(DELETE_ID).bind(&s.id).execute(&mut *tx).await?;
                insert(&mut tx, s).await?;
            }
            tx.commit().await
        };
        timed("write a batch", work).await?;
        Ok(unfit.len())
    }

    async fn full_resync(&mut self, sessions: &[Session]) -> Result<usize, MirrorError> {
        let (sessions, unfit) = self.split_unfit(sessions);
        let work = async {
            let mut tx = self.conn.begin().await?;
            sqlx::query("delete from sessions_map")
                .execute(&mut *tx)
                .await?;
            for chunk in sessions.chunks(2000) {
                let col =
                    |f: fn(&Session) -> String| chunk.iter().map(|s| f(s)).collect::<Vec<_>>();
                sqlx::query(
                    "insert into sessions_map (session_ids, session_uri, session_stereotype, session_caps, session_start) \
                     select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
                )
                .bind(col(|s| s.id.clone()))
                .bind(col(|s| s.uri.clone()))
                .bind(col(|s| s.stereotype.clone()))
                .bind(col(|s| s.capabilities.clone()))
                .bind(col(|s| s.start_json()))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT * 10, work).await {
            Ok(r) => r.map_err(|e| unavailable("full resync", e))?,
            Err(_) => return Err(unavailable("full resync", "took too long")),
        }
        Ok(unfit.len())
    }

    async fn read_all(&mut self) -> Result<Vec<StoredSession>, MirrorError> {
        // `ctid` order is insertion order for an append-only table: with duplicate rows (Java
        // re-adds insert a second row) the last one is the newest.
        let rows = timed(
            "read sessions_map",
            sqlx::query(
                "select session_ids, session_uri, session_caps, session_stereotype, session_start \
                 from sessions_map order by ctid",
            )
            .fetch_all(&mut self.conn),
        )
        .await?;
        let mut out: Vec<StoredSession> = Vec::with_capacity(rows.len());
        let mut index = std::collections::HashMap::new();
        for row in rows {
            let id: Option<String> = row.get(0);
            let s = StoredSession {
                id: id.unwrap_or_default(),
                uri: row.get::<Option<String>, _>(1).unwrap_or_default(),
                // Java reads SQL NULL capabilities as empty ones.
                capabilities: row
                    .get::<Option<String>, _>(2)
                    .unwrap_or_else(|| "{}".into()),
                stereotype: row
                    .get::<Option<String>, _>(3)
                    .unwrap_or_else(|| "{}".into()),
                start: row
                    .get::<Option<String>, _>(4)
                    .unwrap_or_else(|| "0".into()),
                note: None,
            };
            match index.get(&s.id) {
                Some(&at) => {
                    let mut s = s;
                    s.note = Some("the id has several rows; the newest was loaded".into());
                    out[at] = s;
                }
                None => {
                    index.insert(s.id.clone(), out.len());
                    out.push(s);
                }
            }
        }
        Ok(out)
    }
}
