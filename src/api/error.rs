//! The only place that knows HTTP status codes and error bodies: the W3C error body exactly as
//! Selenium's `LocalSessionMap` server sends it on the public port (docs/compatibility.md#errors), and
//! the plain and JSON answers of the peer port.
//!
//! Handlers return [`ApiError`] (public port) or [`PeerError`] (peer port); each maps to its
//! answer through `IntoResponse`. Every 5xx the public port sends is logged here, once, at
//! WARN, with its route and the error's whole cause chain ([`FailureLog`]); a storm of the
//! same failure is one line, then one line every 30 s with a count.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::cluster::{self, NotReady};
use crate::raft::MemberId;
use crate::session::{w3c_error_body, Limit, Refused};
use crate::telemetry::repeat::{RepeatState, REPEAT_EVERY};

/// Why a public-port request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 `invalid session id`; the message is already formatted.
    #[error("{0}")]
    NoSuchSession(String),
    /// 500 `unknown error`: a body that is not a session (Selenium's own messages).
    #[error("{0}")]
    Unparsable(String),
    /// 500 `unknown error` naming the input limit the request broke. After a body over the
    /// limit the connection is closed, so the rest of that body is never read.
    #[error("{0}")]
    Refused(Refused),
    /// 500 `unknown error`: a quorum of these voters is low on disk space; adds are refused.
    #[error(
        "Unable to add session: the session map refuses new sessions while a quorum of its \
         members is low on disk space (members {}); lookups and removals still work",
        list(.0)
    )]
    NoSpace(Vec<MemberId>),
    /// 500 `unknown error`: the cluster could not do it (`Unable to <action>: <why>`).
    #[error("Unable to {action}")]
    Cluster {
        action: Action,
        #[source]
        source: cluster::Error,
    },
    /// 404 `unknown command` for a path or method no route serves.
    #[error("Unable to find handler for ({method}) {path}")]
    UnknownCommand { method: String, path: String },
    /// PUT, PATCH and TRACE: a bare 405, before routing.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `/readyz`: a bare 503.
    #[error("not ready")]
    NotReady(#[source] NotReady),
    /// `/healthz` once Raft stopped on this member: 503 `raft has stopped: <cause>`.
    #[error("raft has stopped: {0}")]
    RaftStopped(Arc<str>),
}

/// What a failed Grid request was doing, for its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    LookUp(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Add => f.write_str("add session"),
            Action::Remove => f.write_str("remove session"),
            Action::LookUp(id) => write!(f, "look up session {id}"),
        }
    }
}

fn list(members: &[MemberId]) -> String {
    let ids: Vec<String> = members.iter().map(u64::to_string).collect();
    ids.join(", ")
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::Refused(refused)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoSuchSession(_) | ApiError::UnknownCommand { .. } => StatusCode::NOT_FOUND,
            ApiError::Unparsable(_)
            | ApiError::Refused(_)
            | ApiError::NoSpace(_)
            | ApiError::Cluster { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotReady(_) | ApiError::RaftStopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable name for the kind of failure: identical failures of a route share one
    /// run of log lines.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::NoSuchSession(_) => "no_such_session",
            ApiError::Unparsable(_) => "unparsable",
            ApiError::Refused(r) => r.limit.label(),
            ApiError::NoSpace(_) => "no_space",
            ApiError::Cluster { source, .. } => source.kind(),
            ApiError::UnknownCommand { .. } => "unknown_command",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotReady(_) => "not_ready",
            ApiError::RaftStopped(_) => "raft_stopped",
        }
    }
}

const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response<Body> {
        let status = self.status();
        match &self {
            ApiError::NoSuchSession(message) => json_error(status, "invalid session id", message),
            ApiError::Cluster { source, .. } => {
                json_error(status, "unknown error", &format!("{self}: {source}"))
            }
            ApiError::Unparsable(_) | ApiError::NoSpace(_) => {
                json_error(status, "unknown error", &self.to_string())
            }
            ApiError::Refused(refused) => {
                let mut resp = json_error(status, "unknown error", &refused.message());
                if refused.limit == Limit::Body {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
            ApiError::UnknownCommand { .. } => {
                let body = w3c_error_body("unknown command", &self.to_string());
                bare(status, body)
            }
            ApiError::MethodNotAllowed => {
                let mut resp = bare(status, Body::empty());
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
            ApiError::NotReady(_) => bare(status, Body::empty()),
            ApiError::RaftStopped(_) => bare(status, self.to_string()),
        }
    }
}

fn json_error(status: StatusCode, error: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON_UTF8)
        .header(header::CACHE_CONTROL, "none")
        .body(Body::from(w3c_error_body(error, message)))
        .expect("static response parts are valid")
}

/// An answer with no headers of its own.
fn bare(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp
}

/// A 200 with the given body and no `Content-Type`, as the Java server answers session routes.
pub fn ok(body: impl Into<Body>) -> Response<Body> {
    Response::new(body.into())
}

/// A bare 204 (`/readyz` while ready).
pub fn no_content() -> Response<Body> {
    bare(StatusCode::NO_CONTENT, Body::empty())
}

/// Logs the public port's 5xx answers: the first of a run of identical failures (same route,
/// same kind) at once, then one line per [`REPEAT_EVERY`] with how many occurred since.
#[derive(Debug)]
pub struct FailureLog {
    every: Duration,
    runs: Mutex<HashMap<(&'static str, &'static str), RepeatState>>,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog::new(REPEAT_EVERY)
    }
}

impl FailureLog {
    pub fn new(every: Duration) -> Self {
        FailureLog {
            every,
            runs: Mutex::default(),
        }
    }

    /// The answer to `route`'s failure `e`; a 5xx is logged (see [`FailureLog`]).
    pub fn respond(&self, route: &'static str, e: ApiError) -> Response<Body> {
        let status = e.status();
        if status.is_server_error() {
            let due = {
                let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
                let run = runs.entry((route, e.kind())).or_default();
                run.failed(Instant::now(), self.every)
            };
            if let Some(failures) = due {
                tracing::warn!(
                    route,
                    status = status.as_u16(),
                    failures,
                    error = %Chain(&e),
                    "request failed"
                );
            }
        }
        e.into_response()
    }
}

/// Why a peer-port request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// 401: no or a wrong cluster secret.
    #[error("the cluster secret is required")]
    Unauthorized,
    /// 400: a body that does not decode.
    #[error("undecodable request: {0}")]
    Undecodable(bincode::Error),
    /// 500: an answer that does not encode.
    #[error("encode answer: {0}")]
    Encode(bincode::Error),
    /// An admin change refused: 503 without a leader, else 409. JSON `{"error": ...}`.
    #[error(transparent)]
    Admin(cluster::Error),
    /// 503: the cluster cannot serve the read now. JSON `{"error": ...}`.
    #[error(transparent)]
    Unavailable(cluster::Error),
    /// 403: a member-to-member request from a member of another cluster (ids differ; `None`
    /// is a cluster created by `serve`, which has no id).
    #[error(
        "refused: the request comes from a member of cluster id {}, this member belongs to \
         cluster id {} (a restored copy and its source never talk)",
        id_text(.theirs), id_text(.ours)
    )]
    ForeignCluster {
        theirs: Option<String>,
        ours: Option<String>,
    },
    /// 400: a query parameter that does not parse. JSON `{"error": ...}`.
    #[error("{0}")]
    BadQuery(String),
}

fn id_text(id: &Option<String>) -> String {
    id.as_deref()
        .map_or_else(|| "(none)".to_owned(), |id| format!("{id:?}"))
}

impl PeerError {
    pub fn status(&self) -> StatusCode {
        match self {
            PeerError::Unauthorized => StatusCode::UNAUTHORIZED,
            PeerError::Undecodable(_) | PeerError::BadQuery(_) => StatusCode::BAD_REQUEST,
            PeerError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PeerError::Admin(cluster::Error::NoLeader) | PeerError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PeerError::Admin(_) => StatusCode::CONFLICT,
            PeerError::ForeignCluster { .. } => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for PeerError {
    fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %Chain(&self), "peer request failed");
        }
        match &self {
            PeerError::Admin(e) | PeerError::Unavailable(e) => {
                let body = serde_json::json!({ "error": Chain(e).to_string() });
                (status, Json(body)).into_response()
            }
            PeerError::BadQuery(why) => {
                (status, Json(serde_json::json!({ "error": why }))).into_response()
            }
            _ => (status, format!("{self}\n")).into_response(),
        }
    }
}

/// An error and its causes, `: `-separated, for logs and the peer port's bodies.
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
