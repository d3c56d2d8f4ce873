//! How long this member's requests to each peer take, and how many get no answer: the view of
//! the links between members that etcd gives as `etcd_network_peer_round_trip_time_seconds`
//! and `etcd_network_peer_sent_failures_total`. A slow disk or a congested link on one member
//! shows here first, as the time its peers wait for its answers.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::wire::Rpc;

/// The series of every member-to-member request a member's [`super::PeerClient`] sends.
/// Clones share the series.
#[derive(Clone)]
pub struct PeerMetrics {
    duration: HistogramVec,
    failures: IntCounterVec,
}

impl PeerMetrics {
    pub fn new() -> Self {
        PeerMetrics {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "gridraft_peer_request_duration_seconds",
                    "Time from sending a request to another member to its answer, by peer \
                     address and request kind",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["peer", "rpc"],
            )
            .expect("valid metric"),
            failures: IntCounterVec::new(
                Opts::new(
                    "gridraft_peer_request_failures_total",
                    "Requests to another member that got no answer (refused, timed out, or the \
                     connection lost with them in flight), by peer address and request kind",
                ),
                &["peer", "rpc"],
            )
            .expect("valid metric"),
        }
    }

    /// Exports the series in `registry` (a member's `/metrics`).
    pub fn register(&self, registry: &Registry) {
        for c in [
            Box::new(self.duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.failures.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
    }

    /// Records a request of kind `rpc` to `peer`, sent at `sent`: answered (whatever the
    /// answer says) or not.
    pub fn observe(&self, peer: &str, rpc: Rpc, sent: Instant, answered: bool) {
        let labels = [peer, rpc.name()];
        if answered {
            self.duration
                .with_label_values(&labels)
                .observe(sent.elapsed().as_secs_f64());
        } else {
            self.failures.with_label_values(&labels).inc();
        }
    }
}

impl Default for PeerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_timed_and_failures_counted_per_peer_and_kind() {
        let m = PeerMetrics::new();
        let registry = Registry::new();
        m.register(&registry);
        let sent = Instant::now();
        m.observe("10.0.0.2:5557", Rpc::Append, sent, true);
        m.observe("10.0.0.2:5557", Rpc::Append, sent, true);
        m.observe("10.0.0.3:5557", Rpc::ReadIndex, sent, false);
        let text = {
            let mut out = String::new();
            prometheus::TextEncoder::new()
                .encode_utf8(&registry.gather(), &mut out)
                .unwrap();
            out
        };
        assert!(text.contains(
            "gridraft_peer_request_duration_seconds_count{peer=\"10.0.0.2:5557\",rpc=\"append\"} 2"
        ));
        assert!(text.contains(
            "gridraft_peer_request_failures_total{peer=\"10.0.0.3:5557\",rpc=\"read_index\"} 1"
        ));
        // A failure is not timed, an answer not counted as a failure.
        assert!(!text.contains("duration_seconds_count{peer=\"10.0.0.3:5557\""));
        assert!(!text.contains("failures_total{peer=\"10.0.0.2:5557\""));
    }
}
