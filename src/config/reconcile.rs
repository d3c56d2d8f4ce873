//! `[reconcile]`: the leader's periodic check of the Grid nodes that hold sessions (see
//! `crate::cluster::reconcile`), resolved into [`ReconcileConfig`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parse_duration;

/// Shortest accepted `interval`: every run asks every node with sessions.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Whether the leader reconciles. Unset: on when the event bus is configured (without a
    /// bus there is no registration secret, and nothing else removes sessions a node lost).
    pub enabled: Option<bool>,
    /// Time between two runs.
    pub interval: String,
    /// A session the reconciler has known for less than this is never removed.
    pub grace: String,
    /// A node that answered no status request for this long loses all its sessions.
    pub node_down_after: String,
    /// Log and count what would be removed; remove nothing.
    pub dry_run: bool,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            enabled: None,
            interval: "30s".into(),
            grace: "60s".into(),
            node_down_after: "5m".into(),
            dry_run: false,
        }
    }
}

/// `[reconcile]` after validation; `None` in [`super::Resolved`] when it is off. Its `Debug`
/// leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    pub interval: Duration,
    pub grace: Duration,
    pub node_down_after: Duration,
    pub dry_run: bool,
    /// Selenium's registration secret, sent to the nodes as `X-REGISTRATION-SECRET` (empty:
    /// not sent).
    pub registration_secret: String,
}

impl std::fmt::Debug for ReconcileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcileConfig")
            .field("interval", &self.interval)
            .field("grace", &self.grace)
            .field("node_down_after", &self.node_down_after)
            .field("dry_run", &self.dry_run)
            .field("registration_secret", &"<redacted>")
            .finish()
    }
}

impl ReconcileSettings {
    /// Checks the section. `bus_secret` is the event bus's registration secret, `None` without
    /// a bus.
    pub(super) fn resolve(
        &self,
        bus_secret: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<ReconcileConfig> {
        let mut duration = |key: &str, value: &str| {
            parse_duration(value).unwrap_or_else(|e| {
                problems.push(format!("reconcile.{key}: {e}"));
                MIN_INTERVAL
            })
        };
        let interval = duration("interval", &self.interval);
        let grace = duration("grace", &self.grace);
        let node_down_after = duration("node-down-after", &self.node_down_after);
        if interval < MIN_INTERVAL {
            problems.push(format!(
                "reconcile.interval: {:?} is below the shortest accepted, 100ms",
                self.interval
            ));
        }
        if node_down_after < interval {
            problems.push(format!(
                "reconcile.node-down-after: {:?} is shorter than reconcile.interval {:?}",
                self.node_down_after, self.interval
            ));
        }
        if !self.enabled.unwrap_or(bus_secret.is_some()) {
            return None;
        }
        Some(ReconcileConfig {
            interval,
            grace,
            node_down_after,
            dry_run: self.dry_run,
            registration_secret: bus_secret.unwrap_or_default().to_owned(),
        })
    }
}
