//! The peer protocol: the requests members send each other on the peer port and the types they
//! carry (bincode bodies). [`client::PeerClient`] sends them; `api::peer` serves them. Raft's own
//! RPCs (append, vote, snapshot) travel the same way (see `raft::network`). Between members they
//! travel on persistent peer streams ([`wire`], [`link`]); every one also has an HTTP route,
//! which members of earlier versions use.

pub mod client;
pub mod link;
pub mod metrics;
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
///
/// On the wire: `id` and `vote` in bincode, then `seen` (when there is one) in bincode after
/// them ([`ReadIndexFrom::encode`]). A member of an earlier version reads the first two and
/// ignores the rest; a request without `seen` is one from such a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadIndexFrom {
    pub id: MemberId,
    pub vote: openraft::Vote<MemberId>,
    /// The latest stamp the asking member received from a leader, read before `vote`: the
    /// request was built after that answer arrived (see `cluster::read_proof`).
    #[serde(skip)]
    pub seen: Option<ReadIndexStamp>,
}

/// The stamp a leader puts after each ReadIndex answer: the leader process's random id and the
/// answer's sequence number. A follower sends the latest one back with its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexStamp {
    pub leader: u64,
    pub seq: u64,
}

impl ReadIndexFrom {
    pub fn encode(&self) -> Vec<u8> {
        encode_stamped(self, self.seen).expect("votes and stamps always encode")
    }

    pub fn decode(body: &[u8]) -> Result<Self, bincode::Error> {
        let (from, seen) = decode_stamped::<ReadIndexFrom>(body)?;
        Ok(ReadIndexFrom { seen, ..from })
    }
}

/// A ReadIndex answer on the wire: the result in bincode, as earlier versions send and read it,
/// then the leader's stamp (when it gives one). Earlier versions ignore the stamp.
pub fn encode_read_index_answer(
    result: &Result<u64, Reject>,
    stamp: Option<ReadIndexStamp>,
) -> Result<Vec<u8>, bincode::Error> {
    encode_stamped(result, stamp)
}

/// Reads [`encode_read_index_answer`]'s bytes, or an earlier version's answer (no stamp).
pub fn decode_read_index_answer(
    body: &[u8],
) -> Result<(Result<u64, Reject>, Option<ReadIndexStamp>), bincode::Error> {
    decode_stamped(body)
}

/// `value` in bincode, then `stamp` in bincode when there is one.
fn encode_stamped<T: Serialize>(
    value: &T,
    stamp: Option<ReadIndexStamp>,
) -> Result<Vec<u8>, bincode::Error> {
    let mut body = bincode::serialize(value)?;
    if let Some(stamp) = &stamp {
        bincode::serialize_into(&mut body, stamp)?;
    }
    Ok(body)
}

/// Reads [`encode_stamped`]'s bytes: a value, then a stamp if any bytes are left (an earlier
/// version sends none).
fn decode_stamped<T: serde::de::DeserializeOwned>(
    mut body: &[u8],
) -> Result<(T, Option<ReadIndexStamp>), bincode::Error> {
    let value = bincode::deserialize_from(&mut body)?;
    let stamp = if body.is_empty() {
        None
    } else {
        Some(bincode::deserialize(body)?)
    };
    Ok((value, stamp))
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

    /// The request and answer as earlier versions declared them.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct EarlierReadIndexFrom {
        id: MemberId,
        vote: openraft::Vote<MemberId>,
    }

    #[test]
    fn read_index_requests_and_answers_read_across_versions() {
        let vote = openraft::Vote::new_committed(4, 1);
        let stamp = ReadIndexStamp { leader: 99, seq: 7 };
        let now = ReadIndexFrom {
            id: 2,
            vote,
            seen: Some(stamp),
        };
        let earlier = EarlierReadIndexFrom { id: 2, vote };

        // A request with a stamp, read here and by an earlier version.
        let decoded = ReadIndexFrom::decode(&now.encode()).unwrap();
        assert_eq!(
            (decoded.id, decoded.vote, decoded.seen),
            (2, vote, Some(stamp))
        );
        let by_earlier: EarlierReadIndexFrom = bincode::deserialize(&now.encode()).unwrap();
        assert_eq!(by_earlier, earlier);
        // An earlier version's request has no stamp.
        let from_earlier = ReadIndexFrom::decode(&bincode::serialize(&earlier).unwrap()).unwrap();
        assert_eq!(from_earlier.seen, None);

        // An answer with a stamp, read here and by an earlier version (a bare result).
        let answer = encode_read_index_answer(&Ok(41), Some(stamp)).unwrap();
        let (result, got) = decode_read_index_answer(&answer).unwrap();
        assert_eq!((result.unwrap(), got), (41, Some(stamp)));
        let by_earlier: Result<u64, Reject> = bincode::deserialize(&answer).unwrap();
        assert_eq!(by_earlier.unwrap(), 41);
        // An earlier version's answer, and a refusal, carry none.
        let (result, got) =
            decode_read_index_answer(&bincode::serialize(&Ok::<u64, Reject>(41)).unwrap()).unwrap();
        assert_eq!((result.unwrap(), got), (41, None));
        let refused = Err(Reject::NotLeader { leader: Some(3) });
        let (result, got) =
            decode_read_index_answer(&encode_read_index_answer(&refused, None).unwrap()).unwrap();
        assert!(matches!(result, Err(Reject::NotLeader { leader: Some(3) })) && got.is_none());
        // Bytes after the vote that are not a whole stamp are an error, not ignored.
        let cut = [bincode::serialize(&earlier).unwrap(), vec![1]].concat();
        assert!(ReadIndexFrom::decode(&cut).is_err());
    }
}
