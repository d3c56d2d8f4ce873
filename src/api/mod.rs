//! HTTP: the public Grid listener ([`grid`], with the status page of [`ui`]) and the
//! secret-guarded peer listener ([`peer`]), both served by [`server`] with the timeouts of
//! `conn` and caps fitted by [`fd_budget`].

mod conn;
pub mod error;
pub mod fd_budget;
pub mod grid;
pub mod peer;
pub mod peer_stream;
pub mod server;
pub mod ui;

use std::sync::Arc;

pub use conn::App;

use crate::cluster::Cluster;
use crate::telemetry::Metrics;

/// Shared by every handler of both listeners.
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub session_limits: crate::session::SessionLimits,
    pub secret: Arc<str>,
    pub cluster_name: String,
    /// The cluster id of a restored cluster (see `peer::CLUSTER_ID_HEADER`); `None` for one
    /// created by `serve`.
    pub cluster_id: Option<Arc<str>>,
    /// Requests refused as coming from another cluster, logged once per run.
    pub foreign_cluster_log: crate::telemetry::repeat::Repeated,
    /// The public port's 5xx answers, logged once per run (see [`error::FailureLog`]).
    pub failures: error::FailureLog,
    /// The event-bus subscriber's state, when the bus is configured.
    pub events: Option<crate::events::EventMetrics>,
    /// The status page (see [`ui`]).
    pub ui: ui::StatusPage,
    /// Peer streams accepted by the peer listener (see [`peer_stream`]).
    pub peer_streams: peer_stream::StreamMetrics,
}
