//! The four Grid operations, how each is sent to the Grid's session map or to etcd, and how its
//! answer is checked.

use crate::doc::SessionDoc;
use crate::http::Conn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Get,
    Uri,
    Delete,
}

pub(crate) const OPS: [Op; 4] = [Op::Add, Op::Get, Op::Uri, Op::Delete];

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Get => "get",
            Op::Uri => "uri",
            Op::Delete => "delete",
        }
    }
}

/// Sends `op` for `doc` and checks the answer; `Err` is a description of what was wrong.
pub(crate) async fn perform(
    conn: &mut Conn,
    etcd: bool,
    op: Op,
    doc: &SessionDoc,
) -> Result<(), Failure> {
    let id = percent_encode(&doc.id);
    let answer = if etcd {
        let (path, body) = match op {
            Op::Add => ("/v3/kv/put", doc.add_body.clone()),
            Op::Get | Op::Uri => (
                "/v3/kv/range",
                format!("{{\"key\":\"{}\"}}", doc.etcd_key).into_bytes(),
            ),
            Op::Delete => (
                "/v3/kv/deleterange",
                format!("{{\"key\":\"{}\"}}", doc.etcd_key).into_bytes(),
            ),
        };
        conn.request("POST", path, Some(&body), true).await
    } else {
        match op {
            Op::Add => {
                conn.request("POST", "/se/grid/session", Some(&doc.add_body), false)
                    .await
            }
            Op::Get => {
                conn.request("GET", &format!("/se/grid/session/{id}"), None, false)
                    .await
            }
            Op::Uri => {
                conn.request("GET", &format!("/se/grid/session/{id}/uri"), None, false)
                    .await
            }
            Op::Delete => {
                conn.request("DELETE", &format!("/se/grid/session/{id}"), None, false)
                    .await
            }
        }
    }
    .map_err(Failure::Io)?;
    if answer.status == 404 && matches!(op, Op::Get | Op::Uri) {
        return Err(Failure::Missing(format!("{} {}: 404", op.name(), doc.id)));
    }
    if answer.status != 200 {
        return Err(Failure::Status(format!(
            "{} {}: status {}: {}",
            op.name(),
            doc.id,
            answer.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
        )));
    }
    let body = answer.body;
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    let ok = match (etcd, op) {
        (false, Op::Add) => has(b"\"value\"") && has(b"true"),
        (false, Op::Get) => has(doc.token.as_bytes()) && has(format!("\"{}\"", doc.id).as_bytes()),
        (false, Op::Uri) => has(doc.uri_marker.as_bytes()),
        (false, Op::Delete) => body.is_empty(),
        (true, Op::Add | Op::Delete) => has(b"\"header\""),
        (true, Op::Get | Op::Uri) => {
            if !has(b"\"kvs\"") {
                return Err(Failure::Missing(format!(
                    "{} {}: no kvs",
                    op.name(),
                    doc.id
                )));
            }
            has(doc.etcd_value.as_bytes())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::Wrong(format!(
            "{} {}: unexpected answer: {}",
            op.name(),
            doc.id,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )))
    }
}

fn percent_encode(id: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).into()
}

pub(crate) enum Failure {
    Io(String),
    Status(String),
    Missing(String),
    Wrong(String),
}
