//! The public listener: Selenium's SessionMap routes plus `/status`, `/readyz` and `/healthz`,
//! answered exactly as Java's `LocalSessionMap` server answers them (docs/compatibility.md,
//! "HTTP" and "Routes"), and gridraft's own status page `/ui` (`super::ui`).
//!
//! Routing is done by hand rather than with axum's router because the contract's rules are
//! unusual: the whole path is percent-decoded before matching (so `%2F` splits segments), HEAD
//! is a GET without a body, PUT/PATCH/TRACE are refused before routing, and any other miss is a
//! W3C `unknown command` 404 naming the method and path.
//!
//! Input is bounded before it costs anything (docs/api.md "Limits"): a body is read only up to
//! `grid.max-body-bytes` (not at all when its `Content-Length` is larger), an id in a path is
//! checked before any lookup or proposal, and the session limits apply while the body is parsed.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;

use super::error::{no_content, ok, Action, ApiError};
use super::AppState;
use crate::map::TOMBSTONE_TTL_NANOS;
use crate::map::{now_nanos, Op, Proposal};
use crate::peer::{LookupKind, PeerLookup, Removed};
use crate::session::{
    not_found_message, parse_add_body_within, AddError, Limit, Refused, RemovalReason,
};

const ADDED: &str = "{\n  \"value\": true\n}";

/// The routes a request can resolve to.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Add,
    Get(String),
    GetUri(String),
    Delete(String),
    Status,
    Readyz,
    Healthz,
    Ui,
}

impl Route {
    /// The session id in the path, if the route has one.
    fn id(&self) -> Option<&str> {
        match self {
            Route::Get(id) | Route::GetUri(id) | Route::Delete(id) => Some(id),
            _ => None,
        }
    }

    /// The route's number and label for [`crate::telemetry::Metrics::request_done`].
    fn series(&self) -> (usize, &'static str) {
        match self {
            Route::Add => (0, "add"),
            Route::Get(_) => (1, "get"),
            Route::GetUri(_) => (2, "get_uri"),
            Route::Delete(_) => (3, "delete"),
            Route::Status => (4, "status"),
            Route::Readyz => (5, "readyz"),
            Route::Healthz => (6, "healthz"),
            Route::Ui => (7, "ui"),
        }
    }
}

/// Resolves a method (HEAD already mapped to GET) and a raw path to a route.
fn resolve(method: &Method, raw_path: &str) -> Option<Route> {
    // A path without `%` decodes to itself: most of the Grid's, and no UTF-8 check again then.
    let path = if raw_path.contains('%') {
        percent_decode_str(raw_path).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(raw_path)
    };
    if let Some(rest) = path.strip_prefix("/se/grid/session") {
        return match (method, rest) {
            (&Method::POST, "") => Some(Route::Add),
            (_, "") => None,
            (_, rest) => {
                // The id segment must be non-empty (`/se/grid/session/`, `.../session//uri`).
                let rest = rest
                    .strip_prefix('/')
                    .filter(|r| !r.is_empty() && !r.starts_with('/'))?;
                match rest.split_once('/') {
                    None if *method == Method::GET => Some(Route::Get(rest.to_owned())),
                    None if *method == Method::DELETE => Some(Route::Delete(rest.to_owned())),
                    Some((id, "uri")) if *method == Method::GET => {
                        Some(Route::GetUri(id.to_owned()))
                    }
                    _ => None,
                }
            }
        };
    }
    match (method, path.as_ref()) {
        (&Method::GET, "/status") => Some(Route::Status),
        (&Method::GET, "/readyz") => Some(Route::Readyz),
        (&Method::GET, "/healthz") => Some(Route::Healthz),
        (&Method::GET, "/ui" | "/ui/") => Some(Route::Ui),
        _ => None,
    }
}

/// Answers one request on the public port (`super::conn::App::Grid`).
pub(crate) async fn handle(state: Arc<AppState>, req: Request) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    if matches!(method, Method::PUT | Method::PATCH | Method::TRACE) {
        return ApiError::MethodNotAllowed.into_response();
    }
    let routed_method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let raw_path = req.uri().path().to_owned();
    let route =
        resolve(&routed_method, &raw_path).filter(|r| *r != Route::Ui || state.ui.enabled());
    let Some(route) = route else {
        state
            .metrics
            .requests
            .with_label_values(&["unknown", "404"])
            .inc();
        // Java names the method it routed (HEAD is routed as GET) and the decoded path.
        return ApiError::UnknownCommand {
            method: routed_method.to_string(),
            path: percent_decode_str(&raw_path)
                .decode_utf8_lossy()
                .into_owned(),
        }
        .into_response();
    };
    let (index, label) = route.series();
    let response = match route.id().map(|id| state.session_limits.check_id(id)) {
        Some(Err(refused)) => Err(refused.into()),
        _ => route_to(&state, route, req).await,
    };
    if let Err(ApiError::Refused(refused)) = &response {
        state
            .metrics
            .refused_requests
            .with_label_values(&[refused.limit.label()])
            .inc();
    }
    // The one place a public-port error becomes an answer (and a 5xx a log line).
    let response = response.unwrap_or_else(|e| state.failures.respond(label, e));
    state.metrics.request_done(
        index,
        label,
        response.status().as_str(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn route_to(
    state: &AppState,
    route: Route,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    match route {
        Route::Add => add(state, req).await,
        Route::Get(id) => lookup(state, &id, LookupKind::Session).await,
        Route::GetUri(id) => lookup(state, &id, LookupKind::Uri).await,
        Route::Delete(id) => delete(state, id).await,
        Route::Status => Ok(status(state)),
        Route::Readyz => readyz(state),
        Route::Healthz => healthz(state),
        Route::Ui => Ok(super::ui::page(state).await),
    }
}

async fn add(state: &AppState, req: Request) -> Result<Response<Body>, ApiError> {
    if let Some(low) = state.cluster.nospace_alarm() {
        return Err(ApiError::NoSpace(low));
    }
    let body = read_body(req, state.max_body_bytes).await?;
    let session = parse_add_body_within(&body, &state.session_limits).map_err(|e| match e {
        AddError::Refused(refused) => ApiError::Refused(refused),
        other => ApiError::Unparsable(other.message(&body)),
    })?;
    drop(body);
    let proposal = Proposal {
        at: now_nanos(),
        event_id: None,
        op: Op::add(session),
    };
    state
        .cluster
        .propose(proposal)
        .await
        .map_err(|source| ApiError::Cluster {
            action: Action::Add,
            source,
        })?;
    Ok(ok(ADDED))
}

/// The whole body, or a refusal as soon as it is known to pass `limit`: at once when its
/// `Content-Length` says so (nothing of it is read), else when the bytes read pass the limit.
/// Either way the connection is closed after the answer, so the rest is never read.
async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let over = Refused {
        limit: Limit::Body,
        value: limit,
    };
    let announced = content_length(req.headers());
    if announced.is_some_and(|len| len > limit) {
        return Err(over.into());
    }
    let mut body = req.into_body();
    let mut out = Vec::with_capacity(announced.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::Unparsable(format!("Unable to parse: request body unreadable ({e})"))
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(over.into());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// hyper has already refused a request whose `Content-Length` is malformed or repeated with
/// different values.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn delete(state: &AppState, id: String) -> Result<Response<Body>, ApiError> {
    let proposal = Proposal {
        at: now_nanos(),
        event_id: None,
        op: Op::Remove {
            id,
            reason: RemovalReason::QuitCommand,
        },
    };
    state
        .cluster
        .propose(proposal)
        .await
        .map_err(|source| ApiError::Cluster {
            action: Action::Remove,
            source,
        })?;
    Ok(ok(Body::empty()))
}

async fn lookup(state: &AppState, id: &str, kind: LookupKind) -> Result<Response<Body>, ApiError> {
    let found = state
        .cluster
        .lookup(id, kind)
        .await
        .map_err(|source| ApiError::Cluster {
            action: Action::LookUp(id.to_owned()),
            source,
        })?;
    match found {
        PeerLookup::Found(body) => Ok(ok(body)),
        PeerLookup::Removed(t) => Err(ApiError::NoSuchSession(removed_message(id, &t))),
        PeerLookup::Missing => Err(ApiError::NoSuchSession(not_found_message(id, None, 0))),
    }
}

/// The 404 message for a removed session; after 60 minutes (by this member's clock) the plain
/// message, as Java's cache expiry gives.
pub fn removed_message(id: &str, t: &Removed) -> String {
    let now = now_nanos();
    if now.saturating_sub(t.removed_at) >= TOMBSTONE_TTL_NANOS {
        return not_found_message(id, None, 0);
    }
    not_found_message(
        id,
        Some((&i128::from(t.removed_at), t.reason, t.node.as_str())),
        i128::from(now),
    )
}

fn status(state: &AppState) -> Response<Body> {
    let body = match state.cluster.readiness() {
        Ok(()) => "{\n  \"value\": {\n    \"message\": \"Session map is ready.\",\n    \"ready\": true\n  }\n}".to_owned(),
        Err(why) => {
            let mut message = String::new();
            crate::json::write_string(&format!("Session map is not ready: {why}."), &mut message);
            format!("{{\n  \"value\": {{\n    \"message\": {message},\n    \"ready\": false\n  }}\n}}")
        }
    };
    let mut resp = ok(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// Liveness: 503 once Raft has stopped on this member (it serves nothing any more and must be
/// restarted), else 200 `ok`.
fn healthz(state: &AppState) -> Result<Response<Body>, ApiError> {
    match state.cluster.health.stopped() {
        None => Ok(ok("ok")),
        Some(cause) => Err(ApiError::RaftStopped(cause)),
    }
}

fn readyz(state: &AppState) -> Result<Response<Body>, ApiError> {
    let readiness = state.cluster.readiness();
    state.metrics.ready.set(i64::from(readiness.is_ok()));
    readiness.map_err(ApiError::NotReady)?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_before_matching() {
        assert_eq!(
            resolve(&Method::GET, "/se/grid/session/a%20b"),
            Some(Route::Get("a b".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/se/grid/session/a+b"),
            Some(Route::Get("a+b".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/se/grid/session/%C3%BC/uri"),
            Some(Route::GetUri("ü".into()))
        );
        assert_eq!(resolve(&Method::GET, "/se/grid/session/a%2Fb"), None);
        assert_eq!(
            resolve(&Method::GET, "/se/grid/session/a%2Furi"),
            Some(Route::GetUri("a".into()))
        );
    }

    #[test]
    fn only_exact_paths_and_methods_match() {
        for (m, p) in [
            (Method::GET, "/STATUS"),
            (Method::GET, "/status/"),
            (Method::GET, "/se/grid/session/"),
            (Method::DELETE, "/se/grid/session/"),
            (Method::GET, "/se/grid/session//uri"),
            (Method::GET, "/se/grid/session"),
            (Method::GET, "/se/grid//session/x"),
            (Method::POST, "/se/grid/session/x"),
            (Method::DELETE, "/status"),
            (Method::POST, "/status"),
            (Method::OPTIONS, "/status"),
            (Method::DELETE, "/se/grid/session/x/uri"),
        ] {
            assert_eq!(resolve(&m, p), None, "{m} {p}");
        }
        assert_eq!(resolve(&Method::POST, "/se/grid/session"), Some(Route::Add));
        assert_eq!(
            resolve(&Method::DELETE, "/se/grid/session/x"),
            Some(Route::Delete("x".into()))
        );
    }
}
