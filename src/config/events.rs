//! `[events]`: the Selenium Grid event bus, resolved into the subscriber's own
//! [`EventBusSettings`] (see `crate::events`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::events::EventBusSettings;

/// The Selenium Grid event bus, named as Selenium names it (`[events]` in Selenium's TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventSettings {
    /// The bus's publish address (its XPUB), e.g. `tcp://bus:4442`; members subscribe here.
    /// Unset: no event bus (sessions then leave the map only by DELETE).
    pub publish_events: Option<String>,
    /// The bus's subscribe address (its XSUB), e.g. `tcp://bus:4443`.
    pub subscribe_events: Option<String>,
    /// Selenium's registration secret; events signed with another are dropped.
    pub registration_secret: Option<String>,
    pub registration_secret_file: Option<PathBuf>,
    /// Largest frame accepted from the bus, in bytes; a larger one costs the publisher its
    /// connection (libzmq `ZMQ_MAXMSGSIZE`).
    pub max_frame_bytes: usize,
    /// Bus messages queued for this member before libzmq stops reading (`ZMQ_RCVHWM`).
    pub receive_hwm: u32,
}

/// Bounds of `events.max-frame-bytes`: room for any real event, and no more than the largest
/// frame earlier versions accepted.
pub const EVENTS_FRAME_BYTES: std::ops::RangeInclusive<usize> = 65_536..=16 << 20;
/// Bounds of `events.receive-hwm` (0 would mean no limit to libzmq).
pub const EVENTS_RECEIVE_HWM: std::ops::RangeInclusive<u32> = 1..=100_000;

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            publish_events: None,
            subscribe_events: None,
            registration_secret: None,
            registration_secret_file: None,
            max_frame_bytes: crate::events::DEFAULT_MAX_FRAME_BYTES,
            receive_hwm: crate::events::DEFAULT_RECEIVE_HWM,
        }
    }
}

impl EventSettings {
    /// Checks the section; `None` without a bus (no `publish-events`).
    pub(super) fn resolve(&self, problems: &mut Vec<String>) -> Option<EventBusSettings> {
        let e = self;
        for (key, value) in [
            ("events.publish-events", &e.publish_events),
            ("events.subscribe-events", &e.subscribe_events),
        ] {
            if let Some(v) = value {
                if !v.starts_with("tcp://")
                    && !v.starts_with("ipc://")
                    && !v.starts_with("inproc://")
                {
                    problems.push(format!(
                        "{key}: {v:?} is not a ZeroMQ address such as tcp://host:4442"
                    ));
                }
            }
        }
        let secret = match (&e.registration_secret, &e.registration_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => s.trim_end_matches(['\n', '\r']).to_owned(),
                Err(err) => {
                    problems.push(format!(
                        "events.registration-secret-file: read {}: {err}",
                        path.display()
                    ));
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        if !EVENTS_FRAME_BYTES.contains(&e.max_frame_bytes) {
            problems.push(format!(
                "events.max-frame-bytes: {} is outside {}..={}",
                e.max_frame_bytes,
                EVENTS_FRAME_BYTES.start(),
                EVENTS_FRAME_BYTES.end()
            ));
        }
        if !EVENTS_RECEIVE_HWM.contains(&e.receive_hwm) {
            problems.push(format!(
                "events.receive-hwm: {} is outside {}..={}",
                e.receive_hwm,
                EVENTS_RECEIVE_HWM.start(),
                EVENTS_RECEIVE_HWM.end()
            ));
        }
        let publish_events = e.publish_events.clone()?;
        Some(EventBusSettings {
            publish_events,
            subscribe_events: e.subscribe_events.clone(),
            registration_secret: secret,
            max_frame_bytes: e.max_frame_bytes,
            receive_hwm: e.receive_hwm,
        })
    }
}
