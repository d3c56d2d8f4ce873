//! Raft RPC between members: bincode bodies over HTTP to the peer port, authenticated with the
//! cluster secret. The receiving side is `api::peer`.
//!
//! The peer port refuses a body over its limit (256 MiB) with 413. A leader's requests stay far
//! below it: an `AppendEntries` carries at most 1 MiB of entries or one entry
//! (`log_store::MAX_APPEND_BYTES`), an entry is at most the log's record limit (64 MiB,
//! `segment_log::MAX_RECORD`), and a snapshot goes in chunks of openraft's 3 MiB. A 413 all the
//! same (a peer with a smaller limit) is openraft's payload-too-large for an `AppendEntries` of
//! several entries, so that replication sends half as many; it is a plain error otherwise, as
//! retrying an unsplittable request at once (what openraft does with payload-too-large) would
//! loop without a pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, TypeConfig};

/// Paths of the Raft RPC routes on the peer port.
pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// When each other member was last heard from: a Raft RPC it sent here, or its answer to one
/// sent from here. Readiness uses it to tell an election among members that still see each
/// other from a member cut off from the rest.
#[derive(Debug, Default)]
pub struct Contacts {
    seen: Mutex<HashMap<NodeId, Instant>>,
}

impl Contacts {
    pub fn note(&self, id: NodeId) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(id, Instant::now());
    }

    /// How many of `members` were heard from within `window`.
    pub fn heard_within(
        &self,
        members: impl IntoIterator<Item = NodeId>,
        window: Duration,
    ) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        members
            .into_iter()
            .filter(|id| seen.get(id).is_some_and(|t| t.elapsed() <= window))
            .count()
    }
}

/// Creates connections to other members. One HTTP client (and connection pool) is shared.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Arc<str>,
    contacts: Arc<Contacts>,
}

impl Network {
    pub fn new(client: reqwest::Client, secret: Arc<str>, contacts: Arc<Contacts>) -> Self {
        Network {
            client,
            secret,
            contacts,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            secret: self.secret.clone(),
            base: format!("http://{}", node.addr),
            target,
            contacts: self.contacts.clone(),
        }
    }
}

pub struct Connection {
    client: reqwest::Client,
    secret: Arc<str>,
    base: String,
    target: NodeId,
    contacts: Arc<Contacts>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    /// Sends `req`; `entries` is how many log entries it carries (an `AppendEntries`), which
    /// a 413 asks openraft to halve.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
        entries: Option<usize>,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&*self.secret)
            .timeout(ttl)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        self.contacts.note(self.target);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let e = std::io::Error::other(format!(
                "peer answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
            if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                if let Some(n) = entries.filter(|n| *n > 1) {
                    let hint = PayloadTooLarge::new_entries_hint(n as u64 / 2);
                    return Err(RPCError::PayloadTooLarge(hint.with_source_error(&e)));
                }
            }
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let entries = rpc.entries.len();
        self.call(APPEND_PATH, &rpc, option.hard_ttl(), Some(entries))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(SNAPSHOT_PATH, &rpc, option.hard_ttl(), None)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(VOTE_PATH, &rpc, option.hard_ttl(), None).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;
    use crate::raft::{Entry, LogId};

    /// A peer whose every Raft route answers 413, as the peer port does past its body limit.
    async fn refusing_peer() -> Connection {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let too_large = || async {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "length limit exceeded",
            )
        };
        let app = axum::Router::new()
            .route(APPEND_PATH, axum::routing::post(too_large))
            .route(SNAPSHOT_PATH, axum::routing::post(too_large));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut net = Network::new(reqwest::Client::new(), Arc::from("secret"), Arc::default());
        net.new_client(2, &BasicNode::new(addr.to_string())).await
    }

    fn append(n: u64) -> AppendEntriesRequest<TypeConfig> {
        let leader = CommittedLeaderId::new(1, 1);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (1..=n)
                .map(|i| Entry {
                    log_id: LogId::new(leader, i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: None,
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_413_for_several_entries_asks_openraft_to_send_fewer() {
        let mut conn = refusing_peer().await;
        match conn.append_entries(append(8), option()).await {
            Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 4),
            other => panic!("expected payload too large, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_413_for_one_entry_is_an_error_not_a_retry_at_once() {
        // openraft retries a payload-too-large at once, without a backoff: one entry cannot be
        // split, so asking for fewer would loop.
        let mut conn = refusing_peer().await;
        match conn.append_entries(append(1), option()).await {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("413"), "{e}"),
            other => panic!("expected a network error, got {other:?}"),
        }
    }
}
