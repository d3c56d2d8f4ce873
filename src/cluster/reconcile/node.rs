//! Asking one Grid node which sessions it holds: `GET {node}/se/grid/node/status`, the route the
//! distributor polls. A Selenium 4.48 node answers it without the registration secret (its
//! session routes require it as `X-REGISTRATION-SECRET`); the secret is sent anyway when one is
//! configured, as the distributor does for the routes that ask for it. The answer is the node's
//! `NodeStatus`: `slots[].session` is `null` for an idle slot, else a session with `sessionId`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

/// The path of the node's own status (not `/status`, which wraps it in `value.node`).
pub const STATUS_PATH: &str = "/se/grid/node/status";
/// The header Selenium's nodes read the registration secret from.
pub const SECRET_HEADER: &str = "X-REGISTRATION-SECRET";
/// Largest status answer read; a node with hundreds of slots answers far less.
pub const MAX_STATUS_BYTES: usize = 8 << 20;

/// What asking a node gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The ids of the sessions the node holds.
    Holds(HashSet<String>),
    /// No answer in time, a refused connection, or an HTTP error status.
    Unreachable(String),
    /// An answer that is not a node status.
    BadAnswer(String),
    /// A URI the reconciler does not ask (not `http://`).
    Skipped,
}

impl Check {
    /// The `outcome` label of `gridraft_reconcile_node_checks_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Check::Holds(_) => "answered",
            Check::Unreachable(_) => "unreachable",
            Check::BadAnswer(_) => "bad_answer",
            Check::Skipped => "skipped",
        }
    }
}

/// Asks the node at `node_uri` (as the map holds it) for its sessions, within `timeout`.
pub async fn check(
    http: &reqwest::Client,
    node_uri: &str,
    secret: &str,
    timeout: Duration,
) -> Check {
    if !node_uri.starts_with("http://") {
        return Check::Skipped;
    }
    let url = format!("{}{STATUS_PATH}", node_uri.trim_end_matches('/'));
    let mut req = http.get(&url).timeout(timeout);
    if !secret.is_empty() {
        req = req.header(SECRET_HEADER, secret);
    }
    let answer = tokio::time::timeout(timeout, async {
        let mut resp = req
            .send()
            .await
            .map_err(|e| Check::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Check::Unreachable(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Check::Unreachable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_STATUS_BYTES {
                return Err(Check::BadAnswer(format!(
                    "status answer over {MAX_STATUS_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
    .await;
    match answer {
        Err(_) => Check::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(failed)) => failed,
        Ok(Ok(body)) => parse_status(&body),
    }
}

/// The sessions a node's status lists.
pub fn parse_status(body: &[u8]) -> Check {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Check::BadAnswer(format!("not JSON: {e}")),
    };
    let Some(slots) = value.get("slots").and_then(Value::as_array) else {
        return Check::BadAnswer("no slots in the node status".into());
    };
    let mut held = HashSet::new();
    for slot in slots {
        match slot.get("session") {
            None | Some(Value::Null) => {}
            Some(session) => match session.get("sessionId").and_then(Value::as_str) {
                Some(id) => {
                    held.insert(id.to_owned());
                }
                None => return Check::BadAnswer("a busy slot without a sessionId".into()),
            },
        }
    }
    Check::Holds(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_status_gives_the_ids_of_its_busy_slots() {
        // The shape a 4.48 node answers on /se/grid/node/status (abridged).
        let body = br#"{"availability": "UP", "externalUri": "http:\u002f\u002f127.0.0.1:25555",
            "slots": [
              {"id": {"hostId": "h", "id": "1"}, "lastStarted": "1970-01-01T00:00:00Z", "session": null, "stereotype": {}},
              {"id": {"hostId": "h", "id": "2"}, "session": {"sessionId": "abc", "uri": "http://x", "capabilities": {}}, "stereotype": {}}
            ]}"#;
        assert_eq!(
            parse_status(body),
            Check::Holds(HashSet::from(["abc".to_owned()]))
        );
    }

    #[test]
    fn anything_but_a_node_status_is_a_bad_answer() {
        for body in [
            &b"<html>"[..],
            br#"{"value": {"ready": true}}"#,
            br#"{"slots": [{"session": {"uri": "http://x"}}]}"#,
        ] {
            assert!(
                matches!(parse_status(body), Check::BadAnswer(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
