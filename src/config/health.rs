//! `[health]` (what a member does when its Raft stops) and `[disk]` (when its data directory
//! counts as low on free space; see `crate::cluster::disk`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parse_duration;
use crate::cluster::disk::{DiskWatch, FreeSpaceProbe, Statvfs, Threshold};

/// Longest accepted `fatal-drain`: the balancer needs a few seconds, a restart should not wait.
const MAX_FATAL_DRAIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthSettings {
    /// Exit with a non-zero status once Raft has stopped on this member (a storage error, a
    /// panic in its core), after `fatal-drain`, so that docker or systemd restarts it.
    pub exit_on_fatal: bool,
    /// How long a member whose Raft stopped keeps answering 503 on `/readyz` before it exits.
    pub fatal_drain: String,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            exit_on_fatal: true,
            fatal_drain: "3s".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiskSettings {
    /// Low when free space is below the smaller of this and `min-free-percent`; 0: never low.
    pub min_free_bytes: u64,
    /// Percent of the data directory's filesystem; 0: never low.
    pub min_free_percent: u8,
    /// How often the free space is read.
    pub check_interval: String,
}

impl Default for DiskSettings {
    fn default() -> Self {
        DiskSettings {
            min_free_bytes: 256 << 20,
            min_free_percent: 5,
            check_interval: "1s".into(),
        }
    }
}

/// `[health]` and `[disk]` after validation.
#[derive(Debug, Clone)]
pub struct ResolvedHealth {
    pub exit_on_fatal: bool,
    pub fatal_drain: Duration,
    pub disk_threshold: Threshold,
    pub disk_check_interval: Duration,
    /// Where free space is read: `statvfs` of the data directory; tests put a fake here.
    pub disk_probe: Arc<dyn FreeSpaceProbe>,
}

impl ResolvedHealth {
    /// What the disk watcher of the member whose data is in `dir` needs.
    pub fn disk_watch(&self, dir: PathBuf) -> DiskWatch {
        DiskWatch {
            dir,
            threshold: self.disk_threshold,
            interval: self.disk_check_interval,
            probe: self.disk_probe.clone(),
        }
    }
}

pub(super) fn resolve(
    health: &HealthSettings,
    disk: &DiskSettings,
    problems: &mut Vec<String>,
) -> ResolvedHealth {
    let mut duration = |key: &str, value: &str| {
        parse_duration(value).unwrap_or_else(|e| {
            problems.push(format!("{key}: {e}"));
            Duration::ZERO
        })
    };
    let fatal_drain = duration("health.fatal-drain", &health.fatal_drain);
    let disk_check_interval = duration("disk.check-interval", &disk.check_interval);
    if fatal_drain > MAX_FATAL_DRAIN {
        problems.push(format!(
            "health.fatal-drain: {:?} is above {MAX_FATAL_DRAIN:?}",
            health.fatal_drain
        ));
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&disk_check_interval) {
        problems.push("disk.check-interval must be between 100ms and 60m".into());
    }
    if disk.min_free_percent > 50 {
        problems.push(format!(
            "disk.min-free-percent: {} is above 50",
            disk.min_free_percent
        ));
    }
    ResolvedHealth {
        exit_on_fatal: health.exit_on_fatal,
        fatal_drain,
        disk_threshold: Threshold {
            min_free_bytes: disk.min_free_bytes,
            min_free_percent: disk.min_free_percent,
        },
        disk_check_interval,
        disk_probe: Arc::new(Statvfs),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Settings};

    #[test]
    fn health_and_disk_keys_parse_and_validate() {
        let s: Settings = toml::from_str(
            "[health]\nexit-on-fatal = false\nfatal-drain = \"5s\"\n\
             [disk]\nmin-free-bytes = 1024\nmin-free-percent = 10\ncheck-interval = \"250ms\"\n",
        )
        .unwrap();
        let r = s.validate().unwrap().health;
        assert!(!r.exit_on_fatal);
        assert_eq!(r.fatal_drain.as_secs(), 5);
        assert_eq!(r.disk_threshold.min_free_bytes, 1024);
        assert_eq!(r.disk_threshold.min_free_percent, 10);
        assert_eq!(r.disk_check_interval.as_millis(), 250);
        let d = Settings::default().validate().unwrap().health;
        assert!(d.exit_on_fatal);
        assert_eq!(d.fatal_drain.as_secs(), 3);
        assert_eq!(d.disk_threshold.min_free_bytes, 256 << 20);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let s: Settings = toml::from_str(
            "[health]\nfatal-drain = \"2m\"\n[disk]\nmin-free-percent = 60\ncheck-interval = \"10ms\"\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(problems)) = s.validate() else {
            panic!("expected Invalid");
        };
        let text = problems.join("\n");
        for needle in ["fatal-drain", "min-free-percent", "check-interval"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
