//! Low disk before no disk: each member watches the free space of its data directory and
//! reports a change through Raft, so that the cluster refuses new sessions before a disk fills
//! (etcd's NOSPACE alarm, replicated the same way).
//!
//! The rule, for every member alike: a member is low when its free space is below
//! `min(min-free-bytes, min-free-percent of the filesystem)`. A low member proposes
//! `Op::DiskAlarm { low: true }` (and `false` once space is back); the set of low members is
//! replicated state. While a quorum of voters is low, the cluster refuses adds (removals and
//! lookups go on: removals are what free space). A low member outside such a quorum only leaves
//! the load balancer, so one small disk never stops the Grid's adds.
//!
//! This module reads the filesystem's statistics and proposes; it never deletes anything.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::map::{now_nanos, Op, Proposal};
use crate::raft::MemberId;

/// Free and total bytes of the filesystem holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes an unprivileged process may still write (`f_bavail`).
    pub free: u64,
    pub total: u64,
}

/// Where the watcher reads free space: the filesystem ([`Statvfs`]), or a fake in tests.
pub trait FreeSpaceProbe: Send + Sync + std::fmt::Debug {
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace>;
}

/// The real probe: `statvfs(2)` of the data directory.
#[derive(Debug, Default)]
pub struct Statvfs;

impl FreeSpaceProbe for Statvfs {
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace> {
        let st = rustix::fs::statvfs(dir)?;
        Ok(FreeSpace {
            free: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
        })
    }
}

/// When free space counts as low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub min_free_bytes: u64,
    pub min_free_percent: u8,
}

impl Threshold {
    /// The free bytes below which `space` is low: the smaller of the absolute and the relative
    /// limit, so a large disk is not low at 5 % (still many GiB) and a small one is not low
    /// forever at 256 MiB. A zero in either limit turns the check off.
    pub fn limit(&self, space: FreeSpace) -> u64 {
        let percent = space.total / 100 * u64::from(self.min_free_percent)
            + space.total % 100 * u64::from(self.min_free_percent) / 100;
        self.min_free_bytes.min(percent)
    }

    pub fn is_low(&self, space: FreeSpace) -> bool {
        space.free < self.limit(space)
    }
}

/// What the watcher needs to know.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    pub dir: PathBuf,
    pub threshold: Threshold,
    pub interval: Duration,
    pub probe: Arc<dyn FreeSpaceProbe>,
}

impl Cluster {
    /// The low voters, when they are a quorum: the cluster then refuses new sessions.
    pub fn nospace_alarm(&self) -> Option<Vec<MemberId>> {
        let low = self.reader.low_disk_members();
        if low.is_empty() {
            return None;
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let voters: Vec<MemberId> = metrics.membership_config.membership().voter_ids().collect();
        let low_voters: Vec<MemberId> =
            voters.iter().copied().filter(|v| low.contains(v)).collect();
        (low_voters.len() * 2 > voters.len()).then_some(low_voters)
    }
}

/// Checks free space every `interval`, keeps this member's readiness and gauges current, and
/// proposes an alarm change whenever the replicated state disagrees with what it measures (so a
/// proposal lost to a leader change is made again at the next check).
pub async fn watch_disk(cluster: Arc<Cluster>, watch: DiskWatch, stop: CancellationToken) {
    let mut w = Watcher {
        cluster,
        watch,
        measured: None,
        alarm: None,
        probe_failed: false,
        propose_failed: false,
    };
    loop {
        w.check().await;
        w.note_alarm();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(w.watch.interval) => {}
        }
    }
}

/// The watcher's memory: what it last measured and reported, so each change is logged once.
struct Watcher {
    cluster: Arc<Cluster>,
    watch: DiskWatch,
    measured: Option<bool>,
    alarm: Option<Vec<MemberId>>,
    probe_failed: bool,
    propose_failed: bool,
}

impl Watcher {
    async fn check(&mut self) {
        let space = match self.watch.probe.free_space(&self.watch.dir) {
            Ok(space) => space,
            Err(e) => {
                if !std::mem::replace(&mut self.probe_failed, true) {
                    tracing::warn!(dir = %self.watch.dir.display(), error = %e, "could not read the data directory's free space");
                }
                return;
            }
        };
        self.probe_failed = false;
        let low = self.watch.threshold.is_low(space);
        let health = &self.cluster.health;
        health
            .metrics
            .disk_free_bytes
            .set(i64::try_from(space.free).unwrap_or(i64::MAX));
        if self.measured != Some(low) {
            // At start only a low reading is worth a line.
            if self.measured.is_some() || low {
                log_change(
                    self.cluster.id(),
                    low,
                    space,
                    self.watch.threshold.limit(space),
                );
            }
            self.measured = Some(low);
            health.set_disk_low(low);
        }
        let me = self.cluster.id();
        let replicated = self.cluster.reader.low_disk_members().contains(&me);
        if replicated != low && health.stopped().is_none() {
            self.replicate(low).await;
        }
    }

    async fn replicate(&mut self, low: bool) {
        let proposal = Proposal {
            at: now_nanos(),
            event_id: None,
            op: Op::DiskAlarm {
                member: self.cluster.id(),
                low,
            },
        };
        match self.cluster.propose(proposal).await {
            Ok(_) => self.propose_failed = false,
            Err(e) => {
                if !std::mem::replace(&mut self.propose_failed, true) {
                    tracing::warn!(error = %e, low, "could not replicate the disk alarm; retrying at every check");
                }
            }
        }
    }

    /// Logs (on every member) when the cluster starts or stops refusing adds.
    fn note_alarm(&mut self) {
        let now = self.cluster.nospace_alarm();
        if now == self.alarm {
            return;
        }
        match &now {
            Some(low) => tracing::warn!(
                members = ?low,
                "a quorum of members is low on disk space: the cluster refuses new sessions"
            ),
            None => tracing::info!("disk space alarm cleared: the cluster accepts new sessions"),
        }
        self.cluster
            .health
            .metrics
            .nospace_alarm
            .set(i64::from(now.is_some()));
        self.alarm = now;
    }
}

fn log_change(member: MemberId, low: bool, space: FreeSpace, limit: u64) {
    if low {
        tracing::warn!(
            member,
            free_bytes = space.free,
            limit_bytes = limit,
            "disk space low on this member: it leaves the load balancer; free space in its data directory"
        );
    } else {
        tracing::info!(
            member,
            free_bytes = space.free,
            limit_bytes = limit,
            "disk space on this member is above its threshold"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn space(free: u64, total: u64) -> FreeSpace {
        FreeSpace { free, total }
    }

    #[test]
    fn low_is_below_the_smaller_of_the_two_limits() {
        let t = Threshold {
            min_free_bytes: 256 * MIB,
            min_free_percent: 5,
        };
        // A large disk: 5 % is 50 GiB, so the 256 MiB limit applies.
        assert!(!t.is_low(space(GIB, 1000 * GIB)));
        assert!(!t.is_low(space(256 * MIB, 1000 * GIB)));
        assert!(t.is_low(space(256 * MIB - 1, 1000 * GIB)));
        // A small disk: 5 % of 1 GiB is about 51 MiB, below 256 MiB.
        assert_eq!(t.limit(space(0, GIB)), GIB / 20);
        assert!(!t.is_low(space(100 * MIB, GIB)));
        assert!(t.is_low(space(50 * MIB, GIB)));
        assert!(t.is_low(space(0, GIB)));
    }

    #[test]
    fn a_zero_limit_turns_the_check_off() {
        for t in [
            Threshold {
                min_free_bytes: 0,
                min_free_percent: 5,
            },
            Threshold {
                min_free_bytes: 256 * MIB,
                min_free_percent: 0,
            },
        ] {
            assert!(!t.is_low(space(0, GIB)), "{t:?}");
        }
    }

    #[test]
    fn the_real_probe_reads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = Statvfs.free_space(dir.path()).unwrap();
        assert!(s.total > 0 && s.free <= s.total, "{s:?}");
        assert!(Statvfs.free_space(&dir.path().join("missing")).is_err());
    }
}
