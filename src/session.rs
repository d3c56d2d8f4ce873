//! Temporary stand-in for the session domain type; replaced by the full parser.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub uri: String,
    pub start: String,
    pub capabilities: String,
    pub stereotype: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("Session to add must be set")]
    NullBody,
    #[error("Unable to parse")]
    Unparsable,
}

pub fn parse_add_body(body: &[u8]) -> Result<Session, AddError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| AddError::Unparsable)?;
    if v.is_null() {
        return Err(AddError::NullBody);
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned).ok_or(AddError::Unparsable);
    Ok(Session {
        id: s("sessionId")?,
        uri: s("uri")?,
        start: s("start")?,
        capabilities: v.get("capabilities").ok_or(AddError::Unparsable)?.to_string(),
        stereotype: v.get("stereotype").ok_or(AddError::Unparsable)?.to_string(),
    })
}

impl Session {
    pub fn render_get_body(&self) -> String {
        format!(
            "{{\"value\": {{\"capabilities\": {}, \"sessionId\": {:?}, \"start\": {:?}, \"stereotype\": {}, \"uri\": {:?}}}}}",
            self.capabilities, self.id, self.start, self.stereotype, self.uri
        )
    }
    pub fn render_uri_body(&self) -> String {
        format!("{{\"value\": {:?}}}", self.uri)
    }
    pub fn start_json(&self) -> String {
        format!("\"{}\"", self.start)
    }
}

pub fn format_instant_nanos(nanos: i128) -> String {
    format!("{nanos}")
}

pub fn w3c_error_body(error: &str, message: &str) -> String {
    serde_json::json!({"value": {"stacktrace": "", "error": error, "message": message}}).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    QuitCommand,
    Timeout,
    NodeRemoved,
    NodeRestarted,
}

impl RemovalReason {
    pub fn text(&self) -> &'static str {
        match self {
            RemovalReason::QuitCommand => "session closed normally (QUIT command)",
            RemovalReason::Timeout => "session timed out due to inactivity",
            RemovalReason::NodeRemoved => "node was removed from the grid",
            RemovalReason::NodeRestarted => "node was restarted",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "QUIT_COMMAND" => Some(Self::QuitCommand),
            "TIMEOUT" => Some(Self::Timeout),
            "NODE_REMOVED" => Some(Self::NodeRemoved),
            "NODE_RESTARTED" => Some(Self::NodeRestarted),
            _ => None,
        }
    }
}

pub fn not_found_message(
    id: &str,
    removal: Option<(&i128, RemovalReason, &str)>,
    now_nanos: i128,
) -> String {
    match removal {
        None => format!("Unable to find session with ID: {id}"),
        Some((at, reason, node)) => {
            let secs = (now_nanos - at) / 1_000_000_000;
            format!(
                "Unable to find session with ID: {id}. Session was removed at {} ({secs} seconds ago), reason: {}, node: {node}",
                format_instant_nanos(*at),
                reason.text()
            )
        }
    }
}
