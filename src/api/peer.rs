//! The peer listener: Raft RPC, write forwarding, ReadIndex, admin and `/metrics`. Every route
//! requires `Authorization: Bearer <cluster secret>`; without it the answer is 401 and nothing
//! changes. A cluster with peer TLS may have no secret: the handshake's client certificate is
//! then the only check. Raft and forwarding bodies are bincode; admin bodies are JSON.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{Chain, PeerError};
use super::AppState;
use crate::backup::{self, BackupHeader};
use crate::cluster::error::Queue;
use crate::cluster::membership::{ADD_PATH, REMOVE_PATH};
use crate::cluster::{self};
use crate::map::Proposal;
use crate::peer::wire::Rpc;
use crate::peer::{self, AddMember, LookupKind, PeerInfo, ReadIndexFrom, Reject, RemoveMember};
use crate::raft::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::raft::{internals, MemberId, TypeConfig};

pub fn router(state: Arc<AppState>) -> Router {
    // The routes only members call: a request from another cluster is refused before them.
    let between_members = Router::new()
        .route(APPEND_PATH, route(Rpc::Append))
        .route(VOTE_PATH, route(Rpc::Vote))
        .route(SNAPSHOT_PATH, route(Rpc::Snapshot))
        .route(peer::WRITE_PATH, route(Rpc::Write))
        .route(peer::READ_INDEX_PATH, route(Rpc::ReadIndex))
        .route(peer::LOOKUP_PATH, route(Rpc::Lookup))
        .route(peer::TIMEOUT_NOW_PATH, route(Rpc::TimeoutNow))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_same_cluster,
        ));
    Router::new()
        .merge(between_members)
        .route(peer::INFO_PATH, get(info))
        .route(peer::BACKUP_PATH, get(backup))
        .route("/admin/status", get(status))
        .route("/admin/init", post(init))
        .route(ADD_PATH, post(add_member))
        .route(REMOVE_PATH, post(remove_member))
        .route(crate::mirror::migrate::SESSIONS_PATH, get(sessions))
        .route(REMOVALS_PATH, get(removals))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(state)
}

async fn require_secret(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if state.secret.is_empty() {
        // No secret: peer TLS, whose handshake checked the client's certificate, is the guard.
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), state.secret.as_bytes()) => next.run(req).await,
        _ => PeerError::Unauthorized.into_response(),
    }
}

/// Refuses a member-to-member request whose cluster id (or its absence) differs from this
/// member's: a member of a restored cluster and one of the cluster it was copied from share
/// the secret, and must never vote for, replicate to or forward to each other.
async fn require_same_cluster(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let theirs = req
        .headers()
        .get(peer::CLUSTER_ID_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match same_cluster(&state, theirs, req.uri().path()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Whether a request (on `path`, or a peer stream's hello) comes from this member's cluster;
/// a refusal is logged once per run with a count.
pub(super) fn same_cluster(
    state: &AppState,
    theirs: Option<String>,
    path: &str,
) -> Result<(), PeerError> {
    let ours = state.cluster_id.as_deref();
    if theirs.as_deref() == ours {
        return Ok(());
    }
    if let Some(count) = state.foreign_cluster_log.failed() {
        tracing::warn!(
            path,
            theirs = theirs.as_deref().unwrap_or("(none)"),
            ours = ours.unwrap_or("(none)"),
            count,
            "refused a request from a member of another cluster"
        );
    }
    Err(PeerError::ForeignCluster {
        theirs,
        ours: ours.map(str::to_owned),
    })
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, PeerError> {
    bincode::deserialize(body).map_err(PeerError::Undecodable)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PeerError> {
    bincode::serialize(value).map_err(PeerError::Encode)
}

/// The wire form of a cluster error answered to a forwarded request (the peer client converts
/// it back, see `cluster::Error::from_peer`). `Reject`'s variants keep their order: members of
/// two versions talk during a rolling upgrade.
fn reject(e: cluster::Error) -> Reject {
    match e {
        cluster::Error::NotLeader { leader } => Reject::NotLeader { leader },
        cluster::Error::QueueFull {
            queue: Queue::Write,
            limit,
        } => Reject::QueueFull {
            limit: limit as u64,
        },
        other => Reject::Failed(Chain(&other).to_string()),
    }
}

/// Answers a member-to-member request (from its HTTP route or a peer stream): the bincode body
/// of the answer.
pub(super) async fn answer(s: &AppState, rpc: Rpc, body: Bytes) -> Result<Vec<u8>, PeerError> {
    match rpc {
        Rpc::Append => append(s, &body).await,
        Rpc::Vote => {
            let req: VoteRequest<u64> = decode(&body)?;
            note_sender(s, &req.vote);
            encode(&s.cluster.raft.vote(req).await)
        }
        Rpc::Snapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(&body)?;
            note_sender(s, &req.vote);
            encode(&s.cluster.raft.install_snapshot(req).await)
        }
        Rpc::Write => forward_write(s, &body).await,
        Rpc::ReadIndex => answer_read_index(s, &body).await,
        Rpc::Lookup => lookup(s, &body).await,
        Rpc::TimeoutNow => {
            let result: Result<(), Reject> = s
                .cluster
                .raft
                .trigger()
                .elect()
                .await
                .map_err(|e| Reject::Failed(Chain(&e).to_string()));
            encode(&result)
        }
    }
}

/// The HTTP route of a member-to-member request.
fn route(rpc: Rpc) -> axum::routing::MethodRouter<Arc<AppState>> {
    post(
        move |State(s): State<Arc<AppState>>, body: Bytes| async move {
            answer(&s, rpc, body)
                .await
                .map(|bytes| Body::from(bytes).into_response())
        },
    )
}

/// A Raft RPC from a leader or candidate: it is reachable.
fn note_sender(s: &AppState, vote: &openraft::Vote<MemberId>) {
    if let Some(from) = vote.leader_id().voted_for() {
        s.cluster.contacts.note(from);
    }
}

async fn append(s: &AppState, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let req: AppendEntriesRequest<TypeConfig> = decode(body)?;
    note_sender(s, &req.vote);
    if s.cluster.health.stopped().is_some() {
        // The answer openraft gives, without the error line it logs for every request (every
        // heartbeat) that reaches a stopped core.
        let stopped: Result<AppendEntriesResponse<MemberId>, _> =
            Err(RaftError::<MemberId>::Fatal(Fatal::Stopped));
        return encode(&stopped);
    }
    encode(&s.cluster.raft.append_entries(req).await)
}

/// A follower's forwarded write: committed here, on the leader.
async fn forward_write(s: &AppState, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let p: Proposal = decode(body)?;
    let result = match s.cluster.check_leader() {
        Ok(()) => s.cluster.commit(p, s.cluster.settings.write_timeout).await,
        Err(e) => Err(e),
    };
    encode(&result.map_err(reject))
}

/// A follower's ReadIndex request, answered by the leader.
async fn answer_read_index(s: &AppState, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let from = if body.is_empty() {
        None
    } else {
        Some(ReadIndexFrom::decode(body).map_err(PeerError::Undecodable)?)
    };
    let result = match s.cluster.check_leader() {
        Ok(()) => s.cluster.answer_read_index(from).await,
        Err(e) => Err(e),
    };
    let (result, stamp) = match result {
        Ok((index, stamp)) => (Ok(index), Some(stamp)),
        Err(e) => (Err(reject(e)), None),
    };
    peer::encode_read_index_answer(&result, stamp).map_err(PeerError::Encode)
}

/// A lookup forwarded in read mode `leader`: a read barrier here, then the local map.
async fn lookup(s: &AppState, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let (id, kind): (String, LookupKind) = decode(body)?;
    let result = match s.cluster.check_leader() {
        Ok(()) => s.cluster.read_barrier().await,
        Err(e) => Err(e),
    };
    encode(
        &result
            .map(|()| s.cluster.lookup_here(&id, kind))
            .map_err(reject),
    )
}

async fn info(State(s): State<Arc<AppState>>) -> Json<PeerInfo> {
    Json(PeerInfo {
        node_id: s.cluster.id(),
        cluster: s.cluster_name.clone(),
        initialized: s.cluster.raft.is_initialized().await.unwrap_or(false),
        cluster_id: s.cluster_id.as_deref().map(str::to_owned),
    })
}

/// A backup file (`crate::backup`) of the whole map, taken after a read barrier and streamed
/// as it is encoded.
async fn backup(State(s): State<Arc<AppState>>) -> Result<Response, PeerError> {
    let (map, index, term) = s
        .cluster
        .backup_image()
        .await
        .map_err(PeerError::Unavailable)?;
    let header = BackupHeader {
        format_version: backup::FORMAT_VERSION,
        backup_id: uuid::Uuid::new_v4().to_string(),
        cluster_name: s.cluster_name.clone(),
        cluster_id: s.cluster_id.as_deref().map(str::to_owned),
        member: s.cluster.id(),
        index,
        term,
        sessions: map.len() as u64,
        created: crate::session::format_instant_nanos(now_nanos()),
    };
    tracing::info!(index, sessions = map.len(), backup = %header.backup_id, "serving a backup");
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(backup::stream(header, map)),
    )
        .into_response())
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

async fn status(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(member_status(&s))
}

/// `/admin/status`: the cluster's view from this member plus its event-bus subscriber.
pub(super) fn member_status(s: &AppState) -> serde_json::Value {
    let mut status = s.cluster.status();
    let bus = match &s.events {
        None => serde_json::json!({ "configured": false }),
        Some(m) => serde_json::json!({
            "configured": true,
            "connected": m.is_connected(),
            "reconnects": m.reconnects(),
            "last_message_unix_ms": m.last_message_ms(),
        }),
    };
    if let Some(map) = status.as_object_mut() {
        map.insert("event_bus".to_owned(), bus);
    }
    status
}

/// Every live session, read after a read barrier (for `gridraft export`).
async fn sessions(State(s): State<Arc<AppState>>) -> Result<Response, PeerError> {
    s.cluster
        .read_barrier()
        .await
        .map_err(PeerError::Unavailable)?;
    let map = s.cluster.reader.snapshot();
    let sessions: Vec<_> = map.sessions().collect();
    Ok(
        Json(serde_json::json!({ "live_sessions": sessions.len(), "sessions": sessions }))
            .into_response(),
    )
}

/// The removal history route.
pub const REMOVALS_PATH: &str = "/admin/removals";

/// The removal history, newest first, as this member's map holds it (no read barrier: it is a
/// record for operators, and answers on a member cut off from the others too). Query: `since`
/// (RFC 3339, or milliseconds since the Unix epoch) and `node` (an exact node URI), both
/// optional and percent-decoded.
async fn removals(
    State(s): State<Arc<AppState>>,
    uri: axum::http::Uri,
) -> Result<Response, PeerError> {
    let (since, node) = removals_query(uri.query().unwrap_or(""))?;
    let removals = s.cluster.reader.removals(since, node.as_deref());
    Ok(Json(serde_json::json!({ "count": removals.len(), "removals": removals })).into_response())
}

/// `since` in milliseconds since the epoch and `node`, from the query string.
fn removals_query(query: &str) -> Result<(Option<i64>, Option<String>), PeerError> {
    let (mut since, mut node) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| PeerError::BadQuery(format!("{key}: not UTF-8 once percent-decoded")))?
            .into_owned();
        match key {
            "since" => {
                let nanos = crate::session::parse_start(&serde_json::Value::String(value.clone()))
                    .ok_or_else(|| {
                        PeerError::BadQuery(format!(
                            "since: {value:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor milliseconds since the Unix epoch"
                        ))
                    })?;
                since = Some(i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX));
            }
            "node" => node = Some(value),
            other => {
                return Err(PeerError::BadQuery(format!(
                    "unknown parameter {other:?} (known: since, node)"
                )))
            }
        }
    }
    Ok((since, node))
}

async fn init(State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, PeerError> {
    s.cluster
        .initialize_from_static_members()
        .await
        .map_err(PeerError::Admin)?;
    Ok(Json(s.cluster.status()))
}

async fn add_member(
    State(s): State<Arc<AppState>>,
    Json(req): Json<AddMember>,
) -> Result<Json<serde_json::Value>, PeerError> {
    s.cluster
        .add_member(&req)
        .await
        .map(Json)
        .map_err(PeerError::Admin)
}

async fn remove_member(
    State(s): State<Arc<AppState>>,
    Json(req): Json<RemoveMember>,
) -> Result<Json<serde_json::Value>, PeerError> {
    s.cluster
        .remove_member(&req)
        .await
        .map(Json)
        .map_err(PeerError::Admin)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let m = s.cluster.raft.metrics().borrow().clone();
    let g = &s.metrics;
    g.term.set(m.current_term as i64);
    g.leader
        .set(m.current_leader.map(|l| l as i64).unwrap_or(-1));
    g.is_leader.set(i64::from(m.current_leader == Some(m.id)));
    g.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
    g.applied_index
        .set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
    let committed = internals::committed_index(&s.cluster.raft).await;
    g.committed_index
        .set(committed.ok().flatten().unwrap_or(0) as i64);
    g.snapshot_index
        .set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
    g.live_sessions.set(s.cluster.reader.len() as i64);
    g.ready.set(i64::from(s.cluster.is_ready()));
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    s.cluster
        .mirrors
        .update_metrics(g, applied, &s.cluster.reader.snapshot());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
