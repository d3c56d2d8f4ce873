//! `[raft]`: timers and snapshot rules, handed to openraft, to the replication backoff
//! (`crate::raft::network`) and to the member's size-based snapshot trigger.

use std::time::Duration;

use openraft::SnapshotPolicy;
use serde::{Deserialize, Serialize};

use crate::raft::network::{RetrySettings, RETRY_CAP_WITHOUT_QUORUM};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_interval: String,
    pub election_timeout_min: String,
    pub election_timeout_max: String,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Also build one once the log written since the last grew past this many bytes (or a
    /// sixteenth of the last snapshot's size, if larger); 0 turns the byte rule off.
    pub snapshot_after_bytes: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_entries_after_snapshot: u64,
    /// Write the log's next segment full of zeros ahead of need (`store/segment_log/prealloc.rs`).
    /// Off by default: under sustained writes the zeros' write-back delays the log's own
    /// `fdatasync`s (decision 0012).
    pub preallocate_log_segments: bool,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: "100ms".into(),
            election_timeout_min: "500ms".into(),
            election_timeout_max: "1000ms".into(),
            snapshot_after_entries: 10_000,
            snapshot_after_bytes: 128 << 20,
            keep_entries_after_snapshot: 1_000,
            preallocate_log_segments: false,
        }
    }
}

/// `[raft]` after validation, in the shapes its three users take.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// openraft's settings (`crate::member` still runs openraft's own `validate` on them).
    pub openraft: openraft::Config,
    /// Replication retries to an unreachable member: from one heartbeat, doubling, up to the
    /// shortest election timeout.
    pub retry: RetrySettings,
    /// `snapshot-after-bytes` (0: off), a rule openraft has no policy for.
    pub snapshot_after_bytes: u64,
    /// `preallocate-log-segments`, for the log store.
    pub preallocate_log_segments: bool,
}

impl RaftSettings {
    /// Builds the tuning from the durations `validate` parsed and checked.
    pub(super) fn tuning(
        &self,
        cluster_name: &str,
        heartbeat: Duration,
        election_timeout: (Duration, Duration),
    ) -> RaftTuning {
        let openraft = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: heartbeat.as_millis() as u64,
            election_timeout_min: election_timeout.0.as_millis() as u64,
            election_timeout_max: election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        RaftTuning {
            openraft,
            retry: RetrySettings {
                first: heartbeat,
                cap: election_timeout.0,
                cap_alone: RETRY_CAP_WITHOUT_QUORUM,
            },
            snapshot_after_bytes: self.snapshot_after_bytes,
            preallocate_log_segments: self.preallocate_log_segments,
        }
    }
}
