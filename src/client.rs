//! Typed HTTP client for the peer port: write forwarding, ReadIndex, admin. Used by members,
//! by the `gridraft cluster` CLI and by tests.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft::session_map::Tombstone;
use crate::raft::{Applied, NodeId, Proposal};

pub const WRITE_PATH: &str = "/peer/write";
pub const READ_INDEX_PATH: &str = "/peer/read-index";
pub const LOOKUP_PATH: &str = "/peer/lookup";
pub const INFO_PATH: &str = "/peer/info";
pub const TIMEOUT_NOW_PATH: &str = "/peer/timeout-now";

/// Why a member refused a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Reject {
    #[error("member is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Failed(String),
    /// The leader's write queue is full (`grid.max-pending-writes`). Last, so that the other
    /// variants keep their bincode tags: a member without it reads a decode error and retries.
    #[error("the leader's write queue is full ({limit} pending writes, grid.max-pending-writes)")]
    QueueFull { limit: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to {addr} failed: {source}")]
    Http {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("{addr} sent an undecodable answer: {detail}")]
    Decode { addr: String, detail: String },
    #[error(transparent)]
    Rejected(#[from] Reject),
}

/// A lookup's answer, here or from the leader (read mode `leader`). `Found` holds the
/// pre-rendered body itself (a reference-counted `Bytes`), so a local lookup copies nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerLookup {
    Found(#[serde(with = "bytes_as_vec")] bytes::Bytes),
    Removed(Tombstone),
    Missing,
}

/// `Bytes` on the wire exactly as the `Vec<u8>` it replaced (bincode: length, then the bytes).
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
    pub id: NodeId,
    pub vote: openraft::Vote<NodeId>,
}

/// What `GET /peer/info` says about a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node_id: NodeId,
    pub cluster: String,
    pub initialized: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMember {
    pub id: NodeId,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveMember {
    pub id: NodeId,
}

#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: Arc<str>,
}

impl PeerClient {
    pub fn new(http: reqwest::Client, secret: Arc<str>) -> Self {
        PeerClient { http, secret }
    }

    /// Sends a proposal to `addr` (the leader's peer address) and returns what applying it did.
    pub async fn forward_write(
        &self,
        addr: &str,
        p: &Proposal,
        timeout: Duration,
    ) -> Result<Applied, ClientError> {
        let body = bincode::serialize(p).expect("proposals always encode");
        self.bincode_call(addr, WRITE_PATH, body, timeout).await
    }

    /// Asks the leader at `addr` for a read index confirmed by a quorum. `from` is this
    /// member's id and its vote, read after every read in the batch arrived: when the two
    /// members make a quorum, the request itself confirms the leadership and the leader answers
    /// without a heartbeat round (see [`ReadIndexFrom`]).
    pub async fn read_index(
        &self,
        addr: &str,
        from: Option<&ReadIndexFrom>,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let body = match from {
            Some(f) => bincode::serialize(f).expect("votes always encode"),
            None => Vec::new(),
        };
        self.bincode_call(addr, READ_INDEX_PATH, body, timeout)
            .await
    }

    /// Looks a session up on the leader at `addr`, linearizably.
    pub async fn lookup(
        &self,
        addr: &str,
        id: &str,
        kind: LookupKind,
        timeout: Duration,
    ) -> Result<PeerLookup, ClientError> {
        let body = bincode::serialize(&(id, kind)).expect("lookups always encode");
        self.bincode_call(addr, LOOKUP_PATH, body, timeout).await
    }

    pub async fn timeout_now(&self, addr: &str) -> Result<(), ClientError> {
        self.bincode_call(addr, TIMEOUT_NOW_PATH, Vec::new(), Duration::from_secs(2))
            .await
    }

    pub async fn info(&self, addr: &str) -> Result<PeerInfo, ClientError> {
        self.json_call(addr, reqwest::Method::GET, INFO_PATH, None::<&()>)
            .await
    }

    /// Calls an admin route and returns its JSON answer.
    pub async fn admin<B: Serialize>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<serde_json::Value, ClientError> {
        self.json_call(addr, method, path, body).await
    }

    async fn bincode_call<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .post(format!("http://{addr}{path}"))
            .bearer_auth(&*self.secret)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|source| ClientError::Http {
                addr: addr.into(),
                source,
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| ClientError::Http {
            addr: addr.into(),
            source,
        })?;
        if !status.is_success() {
            return Err(ClientError::Status {
                addr: addr.into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        let result: Result<T, Reject> =
            bincode::deserialize(&bytes).map_err(|e| ClientError::Decode {
                addr: addr.into(),
                detail: e.to_string(),
            })?;
        Ok(result?)
    }

    async fn json_call<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(&*self.secret)
            .timeout(Duration::from_secs(120));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| ClientError::Http {
            addr: addr.into(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| ClientError::Http {
            addr: addr.into(),
            source,
        })?;
        if !status.is_success() {
            return Err(ClientError::Status {
                addr: addr.into(),
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            addr: addr.into(),
            detail: e.to_string(),
        })
    }
}
