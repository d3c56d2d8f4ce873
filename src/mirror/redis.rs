//! The Redis mirror: the four string keys per session that Selenium's `RedisBackedSessionMap`
//! writes (docs/compatibility.md#redis-layout), with the exact value bytes: an upsert is one
//! `MSET` of the four keys, a removal one `DEL` of them. Removal by node URI is resolved by the
//! runner from gridraft's own state (never `KEYS`). No TTL is ever set.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::{redact_url, Mirror, MirrorBatch, MirrorError, StoredSession};
use crate::session::Session;

const SUFFIXES: [&str; 4] = [":uri", ":capabilities", ":stereotype", ":start"];
const SCAN_COUNT: usize = 1000;

pub struct RedisMirror {
    con: ConnectionManager,
    run_id: Option<String>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Unavailable(format!("redis: {what}: {e}"))
}

/// The four keys of a session, in the order the values are written.
pub fn keys(id: &str) -> [String; 4] {
    SUFFIXES.map(|suffix| format!("session:{id}{suffix}"))
}

/// The four `(key, value)` pairs Selenium writes for a session.
pub fn pairs(s: &Session) -> [(String, String); 4] {
    let [uri, caps, stereo, start] = keys(&s.id);
    [
        (caps, s.capabilities.clone()),
        (stereo, s.stereotype.clone()),
        (uri, s.uri.clone()),
        (start, s.start_json()),
    ]
}

/// The session id of a key Selenium writes, if it is one (`session:<id>:<field>`).
fn session_key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("session:")?;
    SUFFIXES.iter().find_map(|s| rest.strip_suffix(s))
}

fn wrong_type(key: &str, ty: &str) -> MirrorError {
    MirrorError::Incompatible(format!(
        "redis key {key:?} holds a {ty}, but Selenium's RedisBackedSessionMap keeps sessions in string keys"
    ))
}

impl RedisMirror {
    /// Every key of the Selenium layout in the database (SCAN, not KEYS: it does not block).
    async fn scan_session_keys(&mut self, pattern: &str) -> Result<Vec<String>, MirrorError> {
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut self.con)
                .await
                .map_err(|e| unavailable("scan", e))?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| String::from_utf8(k).ok())
                    .filter(|k| session_key_id(k).is_some()),
            );
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Fails with [`MirrorError::Incompatible`] if any of `keys` exists with a non-string type.
    async fn check_types(&mut self, keys: &[String]) -> Result<(), MirrorError> {
        for chunk in keys.chunks(SCAN_COUNT) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = pipe
                .query_async(&mut self.con)
                .await
                .map_err(|e| unavailable("check key types", e))?;
            if let Some((k, ty)) = chunk
                .iter()
                .zip(&types)
                .find(|(_, t)| !matches!(t.as_str(), "string" | "none"))
            {
                return Err(wrong_type(k, ty));
            }
        }
        Ok(())
    }

    async fn write(&mut self, deletes: &[String], upserts: &[Session]) -> Result<(), MirrorError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in deletes {
            pipe.del(&keys(id)).ignore();
        }
        for s in upserts {
            pipe.mset(&pairs(s)).ignore();
        }
        pipe.query_async::<()>(&mut self.con)
            .await
            .map_err(|e| unavailable("write a batch", e))
    }
}

impl Mirror for RedisMirror {
    async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, MirrorError> {
        let client = match ca_file {
            None => redis::Client::open(url),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    MirrorError::Unavailable(format!("read the CA file {}: {e}", path.display()))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(url, certs)
            }
        }
        .map_err(|e| MirrorError::Incompatible(format!("redis url {}: {e}", redact_url(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(1);
        let con = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let mut mirror = RedisMirror { con, run_id: None };
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut mirror.con)
            .await
            .map_err(|e| unavailable("INFO server", e))?;
        mirror.run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned());
        let existing = mirror.scan_session_keys("session:*").await?;
        mirror.check_types(&existing).await?;
        Ok(mirror)
    }

    fn instance(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    async fn apply(&mut self, batch: &MirrorBatch) -> Result<usize, MirrorError> {
        // MSET would silently replace a key of another type; refuse instead.
        let touched: Vec<String> = batch.upserts.iter().flat_map(|s| keys(&s.id)).collect();
        self.check_types(&touched).await?;
        for chunk in batch.deletes.chunks(500) {
            self.write(chunk, &[]).await?;
        }
        for chunk in batch.upserts.chunks(500) {
            self.write(&[], chunk).await?;
        }
        Ok(0)
    }

    async fn full_resync(&mut self, sessions: &[Session]) -> Result<usize, MirrorError> {
        let existing = self.scan_session_keys("session:*").await?;
        self.check_types(&existing).await?;
        let wanted: HashSet<String> = sessions.iter().flat_map(|s| keys(&s.id)).collect();
        let stale: Vec<&String> = existing.iter().filter(|k| !wanted.contains(*k)).collect();
        for chunk in stale.chunks(SCAN_COUNT) {
            let _: () = self
                .con
                .del(chunk)
                .await
                .map_err(|e| unavailable("delete stale keys", e))?;
        }
        for chunk in sessions.chunks(500) {
            self.write(&[], chunk).await?;
        }
        Ok(0)
    }

    async fn read_all(&mut self) -> Result<Vec<StoredSession>, MirrorError> {
        let uri_keys = self.scan_session_keys("session:*:uri").await?;
        let mut out = Vec::with_capacity(uri_keys.len());
        for chunk in uri_keys.chunks(250) {
            let ids: Vec<&str> = chunk
                .iter()
                .filter_map(|k| k.strip_prefix("session:")?.strip_suffix(":uri"))
                .collect();
            let all_keys: Vec<String> = ids.iter().flat_map(|id| keys(id)).collect();
            self.check_types(&all_keys).await?;
            let values: Vec<Option<String>> = self
                .con
                .mget(&all_keys)
                .await
                .map_err(|e| unavailable("read sessions", e))?;
            for (id, v) in ids.iter().zip(values.chunks(4)) {
                // A missing `:uri` means "not found" to Java (the key vanished since the scan).
                let Some(uri) = v[0].clone() else { continue };
                out.push(StoredSession {
                    id: (*id).to_owned(),
                    uri,
                    // Java reads a missing capabilities/stereotype as `{}`, a missing start as
                    // the epoch.
                    capabilities: v[1].clone().unwrap_or_else(|| "{}".into()),
                    stereotype: v[2].clone().unwrap_or_else(|| "{}".into()),
                    start: v[3].clone().unwrap_or_else(|| "0".into()),
                    note: None,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_recognised_with_any_id() {
        assert_eq!(session_key_id("session:abc:uri"), Some("abc"));
        assert_eq!(session_key_id("session:a:b:start"), Some("a:b"));
        assert_eq!(session_key_id("session:x:other"), None);
        assert_eq!(session_key_id("sessions:x:uri"), None);
        assert_eq!(keys("a b")[0], "session:a b:uri");
    }
}
