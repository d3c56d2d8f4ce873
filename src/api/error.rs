//! The only place that knows HTTP status codes and the W3C error body, exactly as Selenium's
//! `LocalSessionMap` server sends them (docs/compatibility.md#errors).

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use crate::session::{w3c_error_body, Limit, Refused};

#[derive(Debug)]
pub enum ApiError {
    /// 404 `invalid session id`; the message is already formatted.
    NoSuchSession(String),
    /// 500 `unknown error`.
    Unknown(String),
    /// 404 `unknown command` for a path or method no route serves.
    UnknownCommand { method: String, path: String },
    /// PUT, PATCH and TRACE: a bare 405, before routing.
    MethodNotAllowed,
    /// 500 `unknown error` naming the input limit the request broke. After a body over the
    /// limit the connection is closed, so the rest of that body is never read.
    Refused(Refused),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::Refused(refused)
    }
}

const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

impl ApiError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            ApiError::NoSuchSession(message) => {
                json_error(StatusCode::NOT_FOUND, "invalid session id", &message)
            }
            ApiError::Unknown(message) => {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "unknown error", &message)
            }
            ApiError::UnknownCommand { method, path } => {
                let body = w3c_error_body(
                    "unknown command",
                    &format!("Unable to find handler for ({method}) {path}"),
                );
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from(body))
                    .expect("static response parts are valid")
            }
            ApiError::Refused(refused) => {
                let mut resp = json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown error",
                    &refused.message(),
                );
                if refused.limit == Limit::Body {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
            ApiError::MethodNotAllowed => Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::CONNECTION, "close")
                .body(Body::empty())
                .expect("static response parts are valid"),
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

/// A 200 with the given body and no `Content-Type`, as the Java server answers session routes.
pub fn ok(body: impl Into<Body>) -> Response<Body> {
    Response::new(body.into())
}
