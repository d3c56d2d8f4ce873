//! Migration in both directions between a Selenium store and a cluster.
//!
//! `import` reads a store the way the Java reader does and POSTs every session to the cluster's
//! public Grid API, so it goes through Raft and the Grid's own validation like any other add;
//! running it twice changes nothing. `export` lists the cluster's sessions on the peer port and
//! writes them with the mirror code, in the exact layout.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::postgres::PostgresMirror;
use super::redis::RedisMirror;
use super::{redact_url, Mirror, MirrorBatch, MirrorError, MirrorKind, StoredSession};
use crate::peer::PeerClient;
use crate::session::{parse_add_body, AddError, Session};

/// Peer route listing every live session (JSON `{"applied_index": n, "sessions": [...]}`).
pub const SESSIONS_PATH: &str = "/admin/sessions";
const PARALLEL: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0:?} is neither a postgres:// nor a redis:// URL")]
    Scheme(String),
    #[error(transparent)]
    Store(#[from] MirrorError),
    #[error("list the cluster's sessions: {0}")]
    Cluster(#[from] crate::peer::ClientError),
    #[error("the cluster's session list is malformed: {0}")]
    Listing(String),
}

/// What an import did, per session id.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub loaded: Vec<String>,
    pub skipped: Vec<(String, String)>,
    /// Loaded, but with a remark (e.g. the store had duplicate rows for the id).
    pub notes: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct ExportSummary {
    pub written: usize,
    /// Sessions the store cannot hold (Postgres: NUL characters or over-long values).
    pub skipped: usize,
    pub replaced_store: bool,
}

fn kind(url: &str) -> Result<MirrorKind, MigrateError> {
    MirrorKind::from_url(url).ok_or_else(|| MigrateError::Scheme(redact_url(url)))
}

/// Reads every session of a Selenium store.
pub async fn read_store(url: &str) -> Result<Vec<StoredSession>, MigrateError> {
    Ok(match kind(url)? {
        MirrorKind::Postgres => {
            PostgresMirror::connect_existing(url)
                .await?
                .read_all()
                .await?
        }
        MirrorKind::Redis => RedisMirror::connect(url, None).await?.read_all().await?,
    })
}

/// The body of `POST /se/grid/session` that re-adds a stored session.
pub fn add_body(s: &StoredSession) -> Result<String, String> {
    let parse = |what: &str, text: &str| -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("stored {what} is not JSON: {e}"))
    };
    let mut body = Map::new();
    body.insert(
        "capabilities".into(),
        parse("capabilities", &s.capabilities)?,
    );
    body.insert("sessionId".into(), Value::String(s.id.clone()));
    body.insert("start".into(), parse("start", &s.start)?);
    body.insert("stereotype".into(), parse("stereotype", &s.stereotype)?);
    body.insert("uri".into(), Value::String(s.uri.clone()));
    Ok(Value::Object(body).to_string())
}

/// Imports the store at `from` through the Grid API at `to` (`http://member:5556`).
pub async fn import(from: &str, to: &str) -> Result<ImportSummary, MigrateError> {
    let stored = read_store(from).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client with a timeout builds");
    let base: Arc<str> = Arc::from(to.trim_end_matches('/'));
    let results: Vec<(StoredSession, Result<Option<String>, String>)> = stream::iter(stored)
        .map(|s| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = import_one(&http, &base, &s).await;
                (s, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut summary = ImportSummary::default();
    for (s, r) in results {
        match r {
            Ok(None) => {
                if let Some(note) = &s.note {
                    summary.notes.push((s.id.clone(), note.clone()));
                }
                summary.loaded.push(s.id);
            }
            Ok(Some(reason)) | Err(reason) => summary.skipped.push((s.id, reason)),
        }
    }
    summary.loaded.sort();
    summary.skipped.sort();
    Ok(summary)
}

/// `Ok(None)`: loaded; `Ok(Some(reason))`: nothing to do; `Err(reason)`: refused or failed.
async fn import_one(
    http: &reqwest::Client,
    base: &str,
    s: &StoredSession,
) -> Result<Option<String>, String> {
    let body = add_body(s)?;
    let session = parse_add_body(body.as_bytes()).map_err(|e| match e {
        AddError::Refused(refused) => format!("the Grid API would refuse it: {refused}"),
        _ => "the Grid API would refuse it (invalid uri, start or capabilities)".to_owned(),
    })?;
    if s.id.is_empty() {
        return Err("empty session id (unreachable through the Grid API)".into());
    }
    if !s.id.contains('/') {
        let path = percent_encoding::utf8_percent_encode(&s.id, percent_encoding::NON_ALPHANUMERIC);
        let current = http
            .get(format!("{base}/se/grid/session/{path}"))
            .send()
            .await;
        if let Ok(resp) = current {
            if resp.status().is_success()
                && resp.bytes().await.ok().as_deref() == Some(session.render_get_body().as_bytes())
            {
                return Ok(Some("already in the cluster, identical".into()));
            }
        }
    }
    let resp = http
        .post(format!("{base}/se/grid/session"))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST failed: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(None);
    }
    let text = resp.text().await.unwrap_or_default();
    Err(format!("the cluster answered {status}: {}", text.trim()))
}

/// Every live session of the cluster, read linearizably through a member's peer port.
pub async fn list_cluster(client: &PeerClient, peer: &str) -> Result<Vec<Session>, MigrateError> {
    let v = client
        .admin(peer, reqwest::Method::GET, SESSIONS_PATH, None::<&()>)
        .await?;
    let sessions = v.get("sessions").cloned().unwrap_or(Value::Null);
    serde_json::from_value(sessions).map_err(|e| MigrateError::Listing(e.to_string()))
}

/// Writes `sessions` into the store at `to`; with `replace`, the store then holds exactly them.
pub async fn export(
    sessions: &[Session],
    to: &str,
    replace: bool,
) -> Result<ExportSummary, MigrateError> {
    let skipped = match kind(to)? {
        MirrorKind::Postgres => {
            write(PostgresMirror::connect(to, None).await?, sessions, replace).await?
        }
        MirrorKind::Redis => {
            write(RedisMirror::connect(to, None).await?, sessions, replace).await?
        }
    };
    Ok(ExportSummary {
        written: sessions.len() - skipped,
        skipped,
        replaced_store: replace,
    })
}

async fn write<M: Mirror>(
    mut store: M,
    sessions: &[Session],
    replace: bool,
) -> Result<usize, MirrorError> {
    if replace {
        return store.full_resync(sessions).await;
    }
    let mut skipped = 0;
    for chunk in sessions.chunks(500) {
        let batch = MirrorBatch {
            upserts: chunk.to_vec(),
            ..Default::default()
        };
        skipped += store.apply(&batch).await?;
    }
    Ok(skipped)
}

/// `gridraft import`: runs [`import`] and prints a summary (the URL is never printed).
pub async fn import_command(args: &crate::cli::ImportArgs) -> Result<(), MigrateError> {
    let summary = import(&args.from, &args.to).await?;
    println!(
        "imported from {} into {}: {} loaded, {} skipped",
        redact_url(&args.from),
        args.to,
        summary.loaded.len(),
        summary.skipped.len()
    );
    for (id, note) in &summary.notes {
        println!("  loaded {id}: {note}");
    }
    for (id, reason) in &summary.skipped {
        println!("  skipped {id}: {reason}");
    }
    Ok(())
}

/// `gridraft export`: lists the cluster's sessions and writes them to the store.
pub async fn export_command(args: &crate::cli::ExportArgs) -> Result<(), MigrateError> {
    let client = args.member.client().map_err(MigrateError::Listing)?;
    let sessions = list_cluster(&client, &args.member.peer).await?;
    let summary = export(&sessions, &args.to, args.replace).await?;
    println!(
        "exported {} sessions to {} ({} the store cannot hold){}",
        summary.written,
        redact_url(&args.to),
        summary.skipped,
        if summary.replaced_store {
            "; sessions not in the cluster were deleted"
        } else {
            ""
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sessions_become_grid_add_bodies() {
        let s = StoredSession {
            id: "abc".into(),
            uri: "http://n:5555".into(),
            capabilities: "{\n  \"browserName\": \"chrome\",\n  \"u\": \"http:\\u002f\\u002fa\"\n}"
                .into(),
            stereotype: "{}".into(),
            start: "\"2024-05-01T10:20:30.123400Z\"".into(),
            note: None,
        };
        let session = parse_add_body(add_body(&s).unwrap().as_bytes()).unwrap();
        assert_eq!(session.capabilities, s.capabilities);
        assert_eq!(session.start_json(), s.start);
        let bad = StoredSession {
            start: "2024-05-01T10:20:30Z".into(),
            ..s
        };
        assert!(add_body(&bad).is_err());
    }
}
