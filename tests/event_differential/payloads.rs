//! Event payloads built like the ones a real 4.48.0 Grid sends
//! (docs/compatibility.md#events-consumed), and the four frames of a message
//! (docs/compatibility.md#message-framing).

use serde_json::json;
use uuid::Uuid;

/// A `SessionClosedData` object as a node fires it.
pub fn closed(session: &str, reason: &str, node_uri: &str) -> String {
    json!({
        "capabilities": {"acceptInsecureCerts": false, "browserName": "chrome", "platformName": "linux"},
        "endTime": "2026-11-23T15:50:13.721713058Z",
        "nodeId": Uuid::new_v4().to_string(),
        "nodeUri": node_uri,
        "reason": reason,
        "sessionId": session,
        "startTime": "2026-11-23T15:50:11.868964213Z",
    })
    .to_string()
}

/// A complete `NodeStatus` (Java drops incomplete ones): UUID node and slot ids, one idle slot
/// and one busy slot per listed session. A listed session's `uri` is the node's local driver
/// service, as in a real node's own `node-removed` (docs/compatibility.md#events-consumed:
/// never match on it).
pub fn node_status(external_uri: &str, listed: &[&str]) -> String {
    let node_id = Uuid::new_v4().to_string();
    let stereotype = json!({"browserName": "chrome", "platformName": "linux", "se:webDriverExecutable": "/usr/bin/chromedriver"});
    let mut slots = vec![json!({
        "id": {"hostId": node_id, "id": Uuid::new_v4().to_string()},
        "lastStarted": "1970-01-01T00:00:00Z",
        "session": null,
        "stereotype": stereotype,
    })];
    for session in listed {
        slots.push(json!({
            "id": {"hostId": node_id, "id": Uuid::new_v4().to_string()},
            "lastStarted": "2026-11-23T16:07:31.330985143Z",
            "session": {
                "capabilities": {"browserName": "chrome", "platformName": "linux"},
                "sessionId": session,
                "start": "2026-11-23T16:07:31.330985143Z",
                "stereotype": stereotype,
                "uri": "http://localhost:26483",
            },
            "stereotype": stereotype,
        }));
    }
    json!({
        "availability": "UP",
        "externalUri": external_uri,
        "heartbeatPeriod": 60000,
        "maxSessions": slots.len(),
        "nodeId": node_id,
        "osInfo": {"arch": "amd64", "name": "Linux", "version": "6.1.0"},
        "sessionTimeout": 300000,
        "slots": slots,
        "version": "4.48.0 (revision 27f5213 27f5213055e28398a5105b7892b7a3bb2012a6ef)",
    })
    .to_string()
}

pub fn frames(name: &str, secret_frame: &str, id: &str, data: &str) -> Vec<Vec<u8>> {
    [name, secret_frame, id, data]
        .iter()
        .map(|f| f.as_bytes().to_vec())
        .collect()
}

/// Frame 2 as Java writes it: the secret as a JSON string.
pub fn signed(secret: &str) -> String {
    serde_json::to_string(secret).unwrap()
}
