//! The peer protocol: the requests members send each other on the peer port and the types they
//! carry (bincode bodies). [`client::PeerClient`] sends them; `api::peer` serves them. Raft's own
//! RPCs (append, vote, snapshot) travel the same way (see `raft::network`). Between members they
//! travel on persistent peer streams ([`wire`], [`link`]); every one also has an HTTP route,
//! which members of earlier versions use.

pub mod client;
pub mod link;
pub mod wire;

pub use client::{ClientError, NoAnswer, PeerClient};

use serde::{Deserialize, Serialize};

use crate::map::Tombstone;
use crate::raft::MemberId;
use crate::session::RemovalReason;

pub const WRITE_PATH: &str = "/peer/write";
pub const READ_INDEX_PATH: &str = "/peer/read-index";
pub const LOOKUP_PATH: &str = "/peer/lookup";
pub const INFO_PATH: &str = "/peer/info";
pub const TIMEOUT_NOW_PATH: &str = "/peer/timeout-now";
/// The admin route that streams a backup file (see `crate::backup`).
pub const BACKUP_PATH: &str = "/admin/backup";
/// The header a member of a restored cluster puts on every request to another member, and
/// checks on every request from one: its cluster id. Members of a cluster created by `serve`
/// have no id and send none, so two clusters never exchange Raft or forwarded requests.
pub const CLUSTER_ID_HEADER: &str = "x-gridraft-cluster-id";

/// Why a member refused a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Reject {
    #[error("member is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    #[error("{0}")]
    Failed(String),
    /// The leader's write queue is full (`grid.max-pending-writes`). Last, so that the other
    /// variants keep their bincode tags: a member without it reads a decode error and retries.
    #[error("the leader's write queue is full ({limit} pending writes, grid.max-pending-writes)")]
    QueueFull { limit: u64 },
}

/// A lookup's answer, here or from the leader (read mode `leader`). `Found` holds the
/// pre-rendered body itself (a reference-counted `Bytes`), so a local lookup copies nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerLookup {
    Found(#[serde(with = "bytes_as_vec")] bytes::Bytes),
    Removed(Removed),
    Missing,
}

/// A removed session as a lookup answers it: the tombstone without its source, in the three
/// fields earlier versions sent in this order (bincode is positional), so that members of two
/// versions still read each other's answers during a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub removed_at: i64,
    pub reason: RemovalReason,
    pub node: String,
}

impl From<Tombstone> for Removed {
    fn from(t: Tombstone) -> Self {
        Removed {
            removed_at: t.removed_at,
            reason: t.reason,
            node: t.node,
        }
    }
}

/// `Bytes` on the wire exactly as bincode writes a `Vec<u8>` (length, then the bytes), so the
/// encoding does not depend on the in-memory type.
mod bytes_as_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        Vec::<u8>::deserialize(d).map(bytes::Bytes::from)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum LookupKind {
    Session,
    Uri,
}

/// Who asks a leader for a read index, and the vote it held when it asked. An empty request
/// body (a member of an earlier version) asks for a full heartbeat round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadIndexFrom {
    pub id: MemberId,
    pub vote: openraft::Vote<MemberId>,
}

/// What `GET /peer/info` says about a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node_id: MemberId,
    pub cluster: String,
    pub initialized: bool,
    /// The cluster id (a cluster restored from a backup); absent from earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMember {
    pub id: MemberId,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveMember {
    pub id: MemberId,
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    /// The lookup answer as earlier versions declared it.
    #[derive(Serialize)]
    enum EarlierLookup {
        _Found(Vec<u8>),
        Removed {
            removed_at: i64,
            reason: RemovalReason,
            node: String,
        },
    }

    #[test]
    fn a_removed_answer_is_encoded_as_earlier_versions_encode_it() {
        let now = PeerLookup::Removed(Removed {
            removed_at: 42,
            reason: RemovalReason::NodeRestarted,
            node: "http://n:5555".into(),
        });
        let earlier = EarlierLookup::Removed {
            removed_at: 42,
            reason: RemovalReason::NodeRestarted,
            node: "http://n:5555".into(),
        };
        assert_eq!(
            bincode::serialize(&now).unwrap(),
            bincode::serialize(&earlier).unwrap()
        );
    }
}
