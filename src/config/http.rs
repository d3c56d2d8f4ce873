//! `[http]`: the deadlines and connection caps of both listeners (see `crate::api::server`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parse_duration;

/// `[http]`: how long a client may take and how many connections each listener holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpSettings {
    /// Time to send a request's header: from the accept for a connection's first request,
    /// from its first byte for later ones. Both listeners.
    pub header_read_timeout: String,
    /// Time to send a request's body, from the end of its header. Both listeners.
    pub body_read_timeout: String,
    /// How long a kept-alive connection may wait for its next request. Both listeners.
    pub idle_timeout: String,
    /// Concurrent connections on the public listener (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Concurrent connections on the peer listener.
    pub peer_max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: "10s".into(),
            body_read_timeout: "30s".into(),
            idle_timeout: "120s".into(),
            max_connections: 10_000,
            peer_max_connections: 1024,
        }
    }
}

/// `[http]` after validation.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub peer_max_connections: usize,
}

impl HttpSettings {
    /// Checks the section, adding every problem to `problems`.
    pub(super) fn resolve(&self, problems: &mut Vec<String>) -> HttpLimits {
        let h = self;
        let mut duration = |key: &str, value: &str| -> Duration {
            match parse_duration(value) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push(format!("http.{key}: must be above zero"));
                    Duration::ZERO
                }
                Err(e) => {
                    problems.push(format!("http.{key}: {e}"));
                    Duration::ZERO
                }
            }
        };
        let limits = HttpLimits {
            header_read_timeout: duration("header-read-timeout", &h.header_read_timeout),
            body_read_timeout: duration("body-read-timeout", &h.body_read_timeout),
            idle_timeout: duration("idle-timeout", &h.idle_timeout),
            max_connections: h.max_connections,
            peer_max_connections: h.peer_max_connections,
        };
        for (key, value) in [
            ("max-connections", h.max_connections),
            ("peer-max-connections", h.peer_max_connections),
        ] {
            if value == 0 {
                problems.push(format!("http.{key}: must be at least 1"));
            }
        }
        limits
    }
}
