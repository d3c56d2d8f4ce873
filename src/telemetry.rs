//! Logging (tracing, text or JSON) and the Prometheus metrics registry served on the peer port.

pub mod repeat;

use std::sync::{Arc, OnceLock};

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` overrides the default filter.
pub fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("gridraft=info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Every metric gridraft exports. Raft gauges are refreshed when `/metrics` is scraped.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub term: IntGauge,
    pub leader: IntGauge,
    pub is_leader: IntGauge,
    pub last_log_index: IntGauge,
    pub applied_index: IntGauge,
    pub committed_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub live_sessions: IntGauge,
    pub ready: IntGauge,
    /// Committed entries the mirror has not written yet, by mirror.
    pub mirror_lag_entries: IntGaugeVec,
    /// Age of the oldest entry the mirror has not written yet, by mirror (leader only).
    pub mirror_lag_seconds: GaugeVec,
    /// 1 when the mirror's connection works, 0 when down or failed (leader only).
    pub mirror_up: IntGaugeVec,
    /// `sync` writes answered without the mirror's confirmation, by mirror.
    pub mirror_sync_timeouts: IntCounterVec,
    /// Grid requests refused for breaking an input limit, by limit.
    pub refused_requests: IntCounterVec,
    /// The series of `requests` (status 200) and `latency` of each public route, looked up
    /// once: hashing the labels on every request cost more than the rest of the accounting.
    routes: Arc<[OnceLock<(IntCounter, Histogram)>; MAX_ROUTES]>,
}

/// Public routes [`Metrics::request_done`] keeps the series of.
pub const MAX_ROUTES: usize = 16;

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gridraft_http_requests_total",
                "Public HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "gridraft_http_request_duration_seconds",
                "Public HTTP request latency by route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let m = Metrics {
            term: gauge("gridraft_raft_term", "Current Raft term"),
            leader: gauge("gridraft_raft_leader", "Id of the known leader, -1 if none"),
            is_leader: gauge("gridraft_raft_is_leader", "1 if this member is the leader"),
            last_log_index: gauge(
                "gridraft_raft_last_log_index",
                "Index of the last log entry",
            ),
            applied_index: gauge(
                "gridraft_raft_applied_index",
                "Index of the last applied entry",
            ),
            committed_index: gauge(
                "gridraft_raft_committed_index",
                "Index of the last entry known committed",
            ),
            snapshot_index: gauge(
                "gridraft_raft_snapshot_index",
                "Index covered by the latest snapshot",
            ),
            live_sessions: gauge("gridraft_live_sessions", "Sessions in the map"),
            ready: gauge("gridraft_ready", "1 while /readyz answers 204"),
            mirror_lag_entries: IntGaugeVec::new(
                Opts::new(
                    "gridraft_mirror_lag_entries",
                    "Committed entries not yet written to the mirror",
                ),
                &["mirror"],
            )
            .expect("valid metric"),
            mirror_lag_seconds: GaugeVec::new(
                Opts::new(
                    "gridraft_mirror_lag_seconds",
                    "Age of the oldest entry not yet written to the mirror",
                ),
                &["mirror"],
            )
            .expect("valid metric"),
            mirror_up: IntGaugeVec::new(
                Opts::new(
                    "gridraft_mirror_up",
                    "1 if the leader's connection to the mirror works",
                ),
                &["mirror"],
            )
            .expect("valid metric"),
            mirror_sync_timeouts: IntCounterVec::new(
                Opts::new(
                    "gridraft_mirror_sync_timeouts_total",
                    "Sync-mode writes answered without the mirror",
                ),
                &["mirror"],
            )
            .expect("valid metric"),
            refused_requests: IntCounterVec::new(
                Opts::new(
                    "gridraft_refused_requests_total",
                    "Grid requests refused for breaking an input limit",
                ),
                &["limit"],
            )
            .expect("valid metric"),
            registry,
            requests,
            latency,
            routes: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.latency.clone()),
            Box::new(m.term.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.is_leader.clone()),
            Box::new(m.last_log_index.clone()),
            Box::new(m.applied_index.clone()),
            Box::new(m.committed_index.clone()),
            Box::new(m.snapshot_index.clone()),
            Box::new(m.live_sessions.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.mirror_lag_entries.clone()),
            Box::new(m.mirror_lag_seconds.clone()),
            Box::new(m.mirror_up.clone()),
            Box::new(m.mirror_sync_timeouts.clone()),
            Box::new(m.refused_requests.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Counts a public request answered with `status` on `route` and records its latency.
    /// `index` is the route's own number below [`MAX_ROUTES`], the same for every call with
    /// that `route`; a 200's series are then found without hashing the labels.
    pub fn request_done(&self, index: usize, route: &'static str, status: &str, seconds: f64) {
        let (ok, latency) = self.routes[index].get_or_init(|| {
            (
                self.requests.with_label_values(&[route, "200"]),
                self.latency.with_label_values(&[route]),
            )
        });
        if status == "200" {
            ok.inc();
        } else {
            self.requests.with_label_values(&[route, status]).inc();
        }
        latency.observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("encoding to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn each_route_and_status_is_counted_in_its_own_series() {
        let m = Metrics::new();
        m.request_done(1, "get", "200", 0.001);
        m.request_done(1, "get", "200", 0.002);
        m.request_done(1, "get", "404", 0.003);
        m.request_done(0, "add", "200", 0.004);
        m.request_done(0, "add", "500", 0.005);
        let count =
            |route: &str, status: &str| m.requests.with_label_values(&[route, status]).get();
        assert_eq!(count("get", "200"), 2);
        assert_eq!(count("get", "404"), 1);
        assert_eq!(count("add", "200"), 1);
        assert_eq!(count("add", "500"), 1);
        let latency = |route: &str| m.latency.with_label_values(&[route]);
        assert_eq!(latency("get").get_sample_count(), 3);
        assert!((latency("get").get_sample_sum() - 0.006).abs() < 1e-9);
        assert_eq!(latency("add").get_sample_count(), 2);
        // Served on /metrics under the names operators know.
        let page = m.render();
        assert!(page.contains(r#"gridraft_http_requests_total{route="get",status="404"} 1"#));
        assert!(page.contains(r#"gridraft_http_request_duration_seconds_count{route="add"} 2"#));
    }
}
