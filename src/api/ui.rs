//! The status page, `GET /ui` on the public port: the members (role, term, applied index, lag,
//! readiness, event bus), the live sessions per Grid node, the removal history and the mirrors,
//! as one server-rendered HTML document (the markup is [`render`]'s).
//!
//! Gathering owns the costs. The other members are asked for `/admin/status` on their peer
//! ports concurrently, each with [`PEER_TIMEOUT`], so a dead or cut-off member shows as down
//! and never delays the page by more. The map is read from an O(1) snapshot (no lock is held
//! while the page is built) and walked on a blocking thread. A rendering is reused for
//! [`FRESH_FOR`], and only one is built at a time, so however often the page is loaded it costs
//! at most one round of peer requests and one walk of the map per second. Capabilities are
//! never read: only ids, node URIs and start times leave the map.

mod render;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response};
use bytes::Bytes;
use serde_json::Value;

use super::error::ok;
use super::AppState;
use crate::map::{now_nanos, SessionMap, Tombstone};
use crate::session::format_instant_nanos;
use render::{
    EventBusView, MemberRow, MemberState, MemberView, MirrorRow, NodeRow, Page, RemovalRow,
    SessionsView,
};

/// A member's id (`crate::raft::MemberId`; the page reads it from status documents).
type MemberId = u64;

/// How long another member has to answer before it is shown as down.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one rendering is served again.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Grid nodes listed; the rest are counted.
const MAX_NODES: usize = 100;
/// Session ids listed per Grid node, newest first.
const SESSIONS_PER_NODE: usize = 10;
/// Removals listed, newest first.
const MAX_REMOVALS: usize = 50;

/// Whether the page is served (`ui.enabled`), and its last rendering with when it was made.
/// The lock is taken only by `/ui` requests.
pub struct StatusPage {
    enabled: bool,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl StatusPage {
    pub fn new(enabled: bool) -> Self {
        StatusPage {
            enabled,
            last: Default::default(),
        }
    }

    /// False when `ui.enabled` is off: `/ui` is then an unknown path.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

/// Answers `GET /ui`.
pub async fn page(state: &AppState) -> Response<Body> {
    let mut last = state.ui.last.lock().await;
    let html = match &*last {
        Some((at, html)) if at.elapsed() < FRESH_FOR => html.clone(),
        _ => {
            let html = Bytes::from(build(state).await);
            *last = Some((Instant::now(), html.clone()));
            html
        }
    };
    drop(last);
    let mut resp = ok(html);
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn build(state: &AppState) -> String {
    // This member's own status names the leader and the members to ask.
    let local = super::peer::member_status(state);
    let leader = local["leader"].as_u64();
    let statuses = gather(state, local).await;
    let map = state.cluster.reader.snapshot();
    let walked = tokio::task::spawn_blocking(move || (sessions_view(&map), removals(&map))).await;
    let (sessions, (removals, removals_left_out)) = match walked {
        Ok(v) => v,
        // Only a bug panics there; the page's task ends the same way it would inline.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let leader_status = statuses
        .iter()
        .find(|(id, _, _)| Some(*id) == leader)
        .and_then(|(_, _, s)| s.as_ref().ok());
    let mirrors = leader_status
        .or_else(|| {
            let me = state.cluster.id();
            statuses
                .iter()
                .find(|(id, _, _)| *id == me)
                .and_then(|(_, _, s)| s.as_ref().ok())
        })
        .map(mirror_rows)
        .unwrap_or_default();
    let members = member_rows(&statuses, leader_status);
    render::page(&Page {
        cluster_name: state.cluster_name.clone(),
        rendered_by: state.cluster.id(),
        generated_at: format_instant_nanos(i128::from(now_nanos())),
        leader,
        members,
        sessions,
        removals,
        removals_left_out,
        mirrors,
    })
}

/// Every member's `/admin/status` in id order: this member's own is `local`, whose `nodes`
/// (id to peer address) lists the others.
async fn gather(state: &AppState, local: Value) -> Vec<(MemberId, String, Result<Value, String>)> {
    let me = state.cluster.id();
    let nodes: BTreeMap<MemberId, String> = local["nodes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, addr)| Some((id.parse().ok()?, addr.as_str()?.to_owned())))
        .collect();
    let local = &local;
    let asks = nodes.into_iter().map(|(id, addr)| async move {
        if id == me {
            return (id, addr, Ok(local.clone()));
        }
        let ask =
            state
                .cluster
                .peers
                .admin(&addr, reqwest::Method::GET, "/admin/status", None::<&()>);
        let answer = match tokio::time::timeout(PEER_TIMEOUT, ask).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(root_cause(&e)),
            Err(_) => Err(format!("no answer within {PEER_TIMEOUT:?}")),
        };
        (id, addr, answer)
    });
    futures::future::join_all(asks).await
}

/// The innermost cause ("Connection refused (os error 111)"): the HTTP client's outer layers
/// repeat the URL and say little.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn member_rows(
    statuses: &[(MemberId, String, Result<Value, String>)],
    leader: Option<&Value>,
) -> Vec<MemberRow> {
    // Lag is measured against the leader's log, or the most advanced member without one.
    let reference = leader
        .and_then(|s| s["last_log_index"].as_u64())
        .or_else(|| {
            statuses
                .iter()
                .filter_map(|(_, _, s)| s.as_ref().ok()?["last_applied"].as_u64())
                .max()
        });
    let now_ms = now_nanos() / 1_000_000;
    statuses
        .iter()
        .map(|(id, addr, status)| MemberRow {
            id: *id,
            addr: addr.clone(),
            state: match status {
                Err(why) => MemberState::Down {
                    why: why.clone(),
                    matched: leader.and_then(|l| l["replication"][id.to_string()].as_u64()),
                },
                Ok(s) => {
                    let applied = s["last_applied"].as_u64().unwrap_or(0);
                    MemberState::Up(MemberView {
                        role: s["state"].as_str().unwrap_or("?").to_owned(),
                        term: s["term"].as_u64().unwrap_or(0),
                        applied,
                        lag: reference.map(|r| r.saturating_sub(applied)),
                        ready: s["ready"].as_bool().unwrap_or(false),
                        not_ready: s["not_ready"].as_str().map(str::to_owned),
                        event_bus: event_bus_view(&s["event_bus"], now_ms),
                    })
                }
            },
        })
        .collect()
}

fn event_bus_view(bus: &Value, now_ms: i64) -> EventBusView {
    match bus["configured"].as_bool() {
        None => EventBusView::Unknown,
        Some(false) => EventBusView::NotConfigured,
        Some(true) => EventBusView::Configured {
            connected: bus["connected"].as_bool().unwrap_or(false),
            reconnects: bus["reconnects"].as_u64().unwrap_or(0),
            last_message_age_s: bus["last_message_unix_ms"]
                .as_i64()
                .map(|at| (now_ms.saturating_sub(at).max(0) / 1000) as u64),
        },
    }
}

fn mirror_rows(status: &Value) -> Vec<MirrorRow> {
    let Some(mirrors) = status["mirrors"].as_object() else {
        return Vec::new();
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    mirrors
        .iter()
        .map(|(name, m)| MirrorRow {
            name: name.clone(),
            url: text(&m["url"]),
            mode: text(&m["mode"]),
            state: text(&m["state"]),
            state_for_seconds: m["state_for_seconds"].as_u64().unwrap_or(0),
            mirrored_index: m["mirrored_index"].as_u64().unwrap_or(0),
            lag_entries: m["lag_entries"].as_u64().unwrap_or(0),
            lag_seconds: m["lag_seconds"].as_f64(),
            error: m["error"].as_str().map(str::to_owned),
        })
        .collect()
}

/// Live sessions per Grid node in URI order, each node's newest (last added) first.
fn sessions_view(map: &SessionMap) -> SessionsView {
    let mut nodes: BTreeMap<&str, (usize, Newest)> = BTreeMap::new();
    for r in map.records() {
        let (count, newest) = nodes.entry(&r.uri).or_default();
        *count += 1;
        newest.push((r.added, &r.id, &r.start));
        if newest.len() >= 2 * SESSIONS_PER_NODE {
            keep_newest(newest);
        }
    }
    let nodes_left_out = nodes.len().saturating_sub(MAX_NODES);
    let nodes = nodes
        .into_iter()
        .take(MAX_NODES)
        .map(|(uri, (count, mut newest))| {
            keep_newest(&mut newest);
            NodeRow {
                uri: uri.to_owned(),
                count,
                sessions: newest
                    .into_iter()
                    .map(|(_, id, start)| (id.to_owned(), start.to_owned()))
                    .collect(),
            }
        })
        .collect();
    SessionsView {
        total: map.len(),
        nodes,
        nodes_left_out,
    }
}

/// A node's newest sessions so far: (log index that added it, id, start).
type Newest<'a> = Vec<(u64, &'a str, &'a str)>;

fn keep_newest(sessions: &mut Newest) {
    sessions.sort_unstable_by(|a, b| b.cmp(a));
    sessions.truncate(SESSIONS_PER_NODE);
}

/// The newest remembered removals, newest first, and how many older ones are not shown.
fn removals(map: &SessionMap) -> (Vec<RemovalRow>, usize) {
    let mut newest = BinaryHeap::with_capacity(MAX_REMOVALS + 1);
    let mut total = 0;
    for (id, t) in map.tombstones() {
        total += 1;
        newest.push(Reverse(ByTime(t.removed_at, id, t)));
        if newest.len() > MAX_REMOVALS {
            newest.pop();
        }
    }
    let rows: Vec<RemovalRow> = newest
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse(ByTime(at, id, t))| RemovalRow {
            session_id: id.to_owned(),
            node: t.node.clone(),
            reason: t.reason.text(),
            source: t.source.name(),
            removed_at: format_instant_nanos(i128::from(at)),
        })
        .collect();
    let left_out = total - rows.len();
    (rows, left_out)
}

/// A removal ordered by its time (then its id) alone.
struct ByTime<'a>(i64, &'a str, &'a Tombstone);

impl PartialEq for ByTime<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}

impl Eq for ByTime<'_> {}

impl PartialOrd for ByTime<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByTime<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

#[cfg(test)]
mod tests;
