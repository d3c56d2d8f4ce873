//! Raft RPC between members: bincode bodies over HTTP to the peer port, authenticated with the
//! cluster secret. The receiving side is `api::peer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
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
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
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
        self.call(APPEND_PATH, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(SNAPSHOT_PATH, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(VOTE_PATH, &rpc, option.hard_ttl()).await
    }
}
