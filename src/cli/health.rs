//! Flags of `[health]` and `[disk]` (see `crate::config::HealthSettings`, `DiskSettings`).

use clap::Args;

use crate::config::Settings;

#[derive(Debug, Default, Args)]
pub struct HealthArgs {
    /// Exit non-zero once Raft has stopped on this member, after --fatal-drain (true|false,
    /// default true).
    #[arg(long, env = "GRIDRAFT_EXIT_ON_FATAL", action = clap::ArgAction::Set)]
    pub exit_on_fatal: Option<bool>,
    /// How long a member whose Raft stopped answers 503 before it exits (default 3s).
    #[arg(long, env = "GRIDRAFT_FATAL_DRAIN")]
    pub fatal_drain: Option<String>,
    /// Low on disk below the smaller of this many free bytes and --disk-min-free-percent
    /// (default 268435456; 0 turns the check off).
    #[arg(long, env = "GRIDRAFT_DISK_MIN_FREE_BYTES")]
    pub disk_min_free_bytes: Option<u64>,
    /// Percent of the data directory's filesystem (default 5; 0 turns the check off).
    #[arg(long, env = "GRIDRAFT_DISK_MIN_FREE_PERCENT")]
    pub disk_min_free_percent: Option<u8>,
    /// How often the data directory's free space is read (default 1s).
    #[arg(long, env = "GRIDRAFT_DISK_CHECK_INTERVAL")]
    pub disk_check_interval: Option<String>,
}

impl HealthArgs {
    pub(crate) fn overlay(&self, s: &mut Settings) {
        if let Some(v) = self.exit_on_fatal {
            s.health.exit_on_fatal = v;
        }
        if let Some(v) = &self.fatal_drain {
            s.health.fatal_drain = v.clone();
        }
        if let Some(v) = self.disk_min_free_bytes {
            s.disk.min_free_bytes = v;
        }
        if let Some(v) = self.disk_min_free_percent {
            s.disk.min_free_percent = v;
        }
        if let Some(v) = &self.disk_check_interval {
            s.disk.check_interval = v.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn health_flags_overlay_the_file() {
        let cli = Cli::try_parse_from([
            "gridraft",
            "serve",
            "--exit-on-fatal",
            "false",
            "--fatal-drain",
            "1s",
            "--disk-min-free-bytes",
            "1000",
            "--disk-min-free-percent",
            "2",
            "--disk-check-interval",
            "500ms",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve");
        };
        let s = args.load().unwrap();
        assert!(!s.health.exit_on_fatal);
        assert_eq!(s.health.fatal_drain, "1s");
        assert_eq!(s.disk.min_free_bytes, 1000);
        assert_eq!(s.disk.min_free_percent, 2);
        assert_eq!(s.disk.check_interval, "500ms");
    }
}
