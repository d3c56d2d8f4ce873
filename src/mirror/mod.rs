//! Write-through mirrors: an optional copy of the session map in Postgres (`sessions_map`, as
//! Selenium's `JdbcBackedSessionMap` lays it out) and/or Redis (the keys of
//! `RedisBackedSessionMap`), so tools that read those stores keep working and a team can migrate
//! to gridraft and back (docs/compatibility.md#postgres-layout, #redis-layout).
//!
//! The Raft log is the truth and mirrors follow it: only the leader writes, in log order, from
//! the progress index replicated in the session map ([`runner`]). A batch is built from log
//! entries but written from the *current* applied map: every session an entry touched is
//! written as it is now (or deleted if it is gone). That makes every write idempotent, makes a
//! replay after a leader change harmless, and means a late replay can never bring a removed
//! session back. Nothing here is on the Grid's request path except the optional `sync` wait.
//!
//! This module must not touch sled and must not be called from `apply()`.

pub mod hub;
pub mod migrate;
pub mod postgres;
pub mod redis;
pub mod runner;
pub mod shadow;

use std::future::Future;
use std::time::Duration;

use crate::session::Session;

pub use hub::{MirrorHandle, Mirrors};

/// Which store a mirror writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MirrorKind {
    Postgres,
    Redis,
}

impl MirrorKind {
    /// The mirror's name in config, metrics, status and the replicated progress.
    pub fn name(&self) -> &'static str {
        match self {
            MirrorKind::Postgres => "postgres",
            MirrorKind::Redis => "redis",
        }
    }

    /// The store a URL points at, by its scheme.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(MirrorKind::Postgres),
            "redis" | "rediss" => Some(MirrorKind::Redis),
            _ => None,
        }
    }
}

/// `async`: Grid writes never wait for the mirror. `sync`: the leader waits after commit until
/// the mirror has the write, up to the configured timeout, then answers anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorMode {
    Async,
    Sync,
}

impl MirrorMode {
    pub fn name(&self) -> &'static str {
        match self {
            MirrorMode::Async => "async",
            MirrorMode::Sync => "sync",
        }
    }
}

/// One configured mirror, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub kind: MirrorKind,
    /// May carry a password: never log it; use [`redact_url`].
    pub url: String,
    pub mode: MirrorMode,
    pub sync_timeout: Duration,
    /// Redis over TLS (`rediss://`): the CA that signed the server's certificate (PEM); without
    /// it, the system's trust store. Postgres takes `sslrootcert` in its URL instead.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("mode", &self.mode)
            .field("sync_timeout", &self.sync_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The store cannot be reached or failed a request; retried with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// The store holds data in a layout gridraft must not write into; the mirror stops.
    #[error("{0}")]
    Incompatible(String),
}

impl MirrorError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, MirrorError::Incompatible(_))
    }
}

/// What one batch changes in a mirror, resolved against the current applied map.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MirrorBatch {
    /// Node URIs whose sessions a `RemoveByUri` removed (Postgres runs the Java delete by URI
    /// first; Redis has no index and relies on `deletes`, resolved by the runner).
    pub remove_uris: Vec<String>,
    /// Sessions to write as they are now (replacing whatever the store holds for the id).
    pub upserts: Vec<Session>,
    /// Session ids that are not in the map now.
    pub deletes: Vec<String>,
}

impl MirrorBatch {
    pub fn is_empty(&self) -> bool {
        self.remove_uris.is_empty() && self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// A store that mirrors the session map. Every method is idempotent.
pub trait Mirror: Sized + Send + 'static {
    /// Connects, creates the layout when missing and checks it when present
    /// ([`MirrorError::Incompatible`] if it cannot be written safely).
    /// `ca_file`: the CA of a TLS server (Redis; see [`MirrorConfig::ca_file`]).
    fn connect(
        url: &str,
        ca_file: Option<&std::path::Path>,
    ) -> impl Future<Output = Result<Self, MirrorError>> + Send;
    /// Applies one batch: URI deletes first, then deletes and upserts by id. Returns how many
    /// sessions the store cannot hold (they are deleted there instead, and logged).
    fn apply(
        &mut self,
        batch: &MirrorBatch,
    ) -> impl Future<Output = Result<usize, MirrorError>> + Send;
    /// Makes the store hold exactly `sessions` (used when the log needed was purged, and by
    /// `export --replace`). Returns how many sessions the store cannot hold.
    fn full_resync(
        &mut self,
        sessions: &[Session],
    ) -> impl Future<Output = Result<usize, MirrorError>> + Send;
    /// An identity of the server instance (Redis `run_id`), if it can lose data on restart:
    /// when it changes between two connections, the runner resynchronises the whole store.
    fn instance(&self) -> Option<&str> {
        None
    }
    /// Every session the store holds, read the way the Java reader reads it (for import).
    fn read_all(&mut self) -> impl Future<Output = Result<Vec<StoredSession>, MirrorError>> + Send;
}

/// A session as read from a Selenium store, before it is validated by the Grid API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub id: String,
    pub uri: String,
    /// Stored JSON texts, as found (the Java reader's defaults filled in for missing values).
    pub capabilities: String,
    pub stereotype: String,
    pub start: String,
    /// Why this record may not be what Java would read back (e.g. duplicate rows).
    pub note: Option<String>,
}

/// `url` with any password replaced by `<redacted>` (userinfo and `password=` query values).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{host}"),
            // `redis://secret@host` puts the password where the user would be.
            None if scheme.starts_with("redis") => format!("<redacted>@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => {
                        format!("{k}=<redacted>")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, want) in [
            (
                "postgres://sel:hunter2@db:5432/grid",
                "postgres://sel:<redacted>@db:5432/grid",
            ),
            (
                "redis://:hunter2@cache:6379/1",
                "redis://:<redacted>@cache:6379/1",
            ),
            ("redis://hunter2@cache", "redis://<redacted>@cache"),
            (
                "postgres://db/grid?user=a&password=hunter2",
                "postgres://db/grid?user=a&password=<redacted>",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("hunter2", "<redacted>"),
        ] {
            assert_eq!(redact_url(url), want);
            assert!(!redact_url(url).contains("hunter2"));
        }
    }

    #[test]
    fn mirror_settings_resolve_redact_and_follow_precedence() {
        use crate::cli::ServeArgs;
        use crate::config::{ConfigError, Settings};
        let file =
            std::env::temp_dir().join(format!("gridraft-mirror-url-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, "redis://:from-file@cache:6379/3\n").unwrap();
        let mut s: Settings = toml::from_str(
            "[mirror.postgres]\nurl = \"postgres://sel:hunter2@db/grid\"\nmode = \"sync\"\nsync-timeout = \"500ms\"\n\
             [mirror.redis]\nurl = \"redis://:toml-secret@cache\"\n",
        )
        .unwrap();
        let flags = ServeArgs {
            mirror_redis_url_file: Some(file.clone()),
            ..Default::default()
        };
        flags.apply(&mut s);
        let r = s.validate().unwrap();
        assert_eq!(r.mirrors.len(), 2);
        assert_eq!(r.mirrors[0].mode, MirrorMode::Sync);
        assert_eq!(r.mirrors[0].sync_timeout, Duration::from_millis(500));
        assert_eq!(
            r.mirrors[1].url, "redis://:from-file@cache:6379/3",
            "the env/flag file wins over the TOML url"
        );
        let text = s.to_redacted_toml();
        assert!(
            !text.contains("hunter2") && text.contains("sel:<redacted>@db"),
            "{text}"
        );
        assert!(!format!("{r:?}").contains("hunter2"));
        std::fs::remove_file(file).unwrap();

        s.mirror.postgres.url = Some("mysql://u:hunter2@db".into());
        s.mirror.redis.mode = "sometimes".into();
        let Err(ConfigError::Invalid(problems)) = s.validate() else {
            panic!("expected problems")
        };
        let text = problems.join("\n");
        assert!(
            text.contains("mirror.postgres.url") && text.contains("mirror.redis.mode"),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn kinds_come_from_the_scheme() {
        assert_eq!(
            MirrorKind::from_url("postgresql://x/y"),
            Some(MirrorKind::Postgres)
        );
        assert_eq!(MirrorKind::from_url("REDIS://x"), Some(MirrorKind::Redis));
        assert_eq!(MirrorKind::from_url("http://x"), None);
    }
}
