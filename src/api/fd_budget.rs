//! File descriptors: the open-file limit is raised to its hard limit at start, and the
//! listeners' connection caps are fitted under it so that a flood of public connections never
//! takes the descriptors Raft's storage (log segments, snapshots, sled, the vote) and the peer
//! port need. A storage write that fails for want of a descriptor stops Raft on this member.

use crate::config::HttpLimits;

/// Descriptors kept for everything but the listeners' connections: sled, log segments and
/// snapshot files, connections to peers, mirrors and the event bus, the runtime's own.
pub const RESERVED_FDS: u64 = 256;

/// The effective caps of both listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub public: usize,
    pub peer: usize,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, before, "open-file limit");
            limit
        }
        Err(e) => {
            let limit = before.unwrap_or(1024);
            tracing::warn!(limit, error = %e, "could not raise the open-file limit");
            limit
        }
    }
}

/// Caps that fit `fd_limit`: after [`RESERVED_FDS`], the peer port gets up to a quarter of the
/// rest, the public port what remains; neither above its configured maximum.
pub fn connection_caps(fd_limit: u64, limits: &HttpLimits) -> ConnectionCaps {
    let available = fd_limit.saturating_sub(RESERVED_FDS);
    let fit = |max: usize, room: u64| max.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1);
    let peer = fit(limits.peer_max_connections, available / 4);
    let public = fit(
        limits.max_connections,
        available.saturating_sub(peer as u64),
    );
    ConnectionCaps { public, peer }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(public: usize, peer: usize) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: public,
            peer_max_connections: peer,
        }
    }

    #[test]
    fn caps_leave_the_reserve_and_the_peer_share_free() {
        let l = limits(10_000, 1024);
        assert_eq!(
            connection_caps(1 << 20, &l),
            ConnectionCaps {
                public: 10_000,
                peer: 1024
            }
        );
        let caps = connection_caps(1024, &l);
        assert_eq!(
            caps,
            ConnectionCaps {
                public: 576,
                peer: 192
            }
        );
        assert!(caps.public as u64 + caps.peer as u64 + RESERVED_FDS <= 1024);
        assert_eq!(
            connection_caps(100, &l),
            ConnectionCaps { public: 1, peer: 1 }
        );
    }
}
