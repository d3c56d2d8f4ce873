//! Prometheus series of the event-bus subscriber. Owns names and labels only; deciding what to
//! count is the subscriber's job.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::Decoded;

/// Counters and gauges of one subscriber; cheap to clone (the series are shared).
///
/// * `gridraft_event_bus_messages_total{outcome, kind}`: every received message, with `outcome`
///   one of `accepted` (kind = event name), `ignored` (kind = a known Selenium event name or
///   `other`), `duplicate` (kind = `event_id`) or `rejected` (kind = [`super::Rejection::kind`]).
/// * `gridraft_event_bus_connected`: 1 while the ZMTP session with the bus is up.
/// * `gridraft_event_bus_reconnects_total`: sessions established after the first one.
///
/// It also remembers when the last message of any kind arrived (for the status page and
/// `/admin/status`), which no series carries.
#[derive(Clone)]
pub struct EventMetrics {
    messages: IntCounterVec,
    connected: IntGauge,
    reconnects: IntCounter,
    /// Unix milliseconds of the last message received; 0 if none yet.
    last_message_ms: Arc<AtomicI64>,
}

impl EventMetrics {
    /// Creates the series and registers them. A registry that already holds them (two members
    /// in one test process) keeps the first set; this one still counts, just unexported, which
    /// beats failing a member's start over metrics.
    pub fn new(registry: &Registry) -> Self {
        let messages = IntCounterVec::new(
            Opts::new(
                "gridraft_event_bus_messages_total",
                "Messages received from the Selenium event bus, by outcome and kind.",
            ),
            &["outcome", "kind"],
        )
        .expect("static metric options are valid");
        let connected = IntGauge::new(
            "gridraft_event_bus_connected",
            "1 while connected to the Selenium event bus, else 0.",
        )
        .expect("static metric options are valid");
        let reconnects = IntCounter::new(
            "gridraft_event_bus_reconnects_total",
            "Connections to the Selenium event bus re-established after a disconnect.",
        )
        .expect("static metric options are valid");
        for collector in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connected.clone()),
            Box::new(reconnects.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "event bus metric not registered");
            }
        }
        Self {
            messages,
            connected,
            reconnects,
            last_message_ms: Arc::default(),
        }
    }

    /// Counts one decoded message under its outcome and kind.
    pub(super) fn record(&self, decoded: &Decoded) {
        let (outcome, kind) = match decoded {
            Decoded::Event(event) => ("accepted", event.name()),
            Decoded::Ignored(label) => ("ignored", *label),
            Decoded::Duplicate(_) => ("duplicate", "event_id"),
            Decoded::Rejected(rejection) => ("rejected", rejection.kind()),
        };
        self.messages.with_label_values(&[outcome, kind]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_message_ms.store(now, Ordering::Relaxed);
    }

    /// Unix milliseconds of the last message received from the bus, if any arrived yet.
    pub fn last_message_ms(&self) -> Option<i64> {
        Some(self.last_message_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub(super) fn count_reconnect(&self) {
        self.reconnects.inc();
    }

    /// Whether the bus session is up now; what Java's `LocalSessionMap.isReady()` reports.
    pub fn is_connected(&self) -> bool {
        self.connected.get() == 1
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.get()
    }

    /// The current count of one `messages_total` series (0 if never seen).
    pub fn messages(&self, outcome: &str, kind: &str) -> u64 {
        self.messages.with_label_values(&[outcome, kind]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Rejection;

    #[test]
    fn registers_once_and_tolerates_a_second_registration() {
        let registry = Registry::new();
        let first = EventMetrics::new(&registry);
        let second = EventMetrics::new(&registry);
        first.record(&Decoded::Rejected(Rejection::SecretMismatch));
        second.record(&Decoded::Ignored("other"));
        assert_eq!(first.messages("rejected", "secret_mismatch"), 1);
        assert_eq!(second.messages("ignored", "other"), 1);
        assert!(first.last_message_ms().is_some_and(|ms| ms > 0));
        assert_eq!(EventMetrics::new(&Registry::new()).last_message_ms(), None);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.get_name().to_owned())
            .collect();
        assert!(names.contains(&"gridraft_event_bus_messages_total".to_owned()));
        assert!(names.contains(&"gridraft_event_bus_connected".to_owned()));
    }
}
